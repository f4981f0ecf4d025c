"""External providers (docs/api.md#external-providers): a service named in EXTERNAL_PROVIDERS_CONFIG
that implements Mia-Platform's external-provider contract under its base URL, so users can plug in a
provider the PGM does not ship, and services written for Mia's PGM keep working unchanged.

`/v3/<name>/<rest>` maps to `<baseUrl>/<rest>` with the same JSON bodies. Mia's paths have no
payment-method segment (`/pay`, `/subscription/start`...): a request without one, or a saga with
`paymentMethod: external`, is forwarded to those; the older form with a segment (`/credit-cards/pay`)
is kept as an alias and forwarded with its segment. `providerData` passes through untouched; our
idempotency key travels as `Idempotency-Key`. A callback is forwarded as it came (method, query,
body, content type); the service verifies it the provider's way and answers with the PaymentStatus it
establishes, which the PGM applies (the service is trusted: the operator configured it). A service that
does not implement `/callback` is asked `GET /status?paymentId=` instead. A notification's event id is
the answer's `eventId` when given, else a digest of the callback and of the status it reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pgm.config import ExternalService
from pgm.domain.statuses import Status
from pgm.outbound import Transport
from pgm.providers.base import (
    CallbackRequest,
    Capabilities,
    Interval,
    InvalidCallback,
    Notification,
    Operation,
    OutcomeUnknown,
    PaymentLookup,
    PayRequest,
    PayResult,
    PayResultCode,
    ProviderAdapter,
    ProviderRejected,
    RefundRequest,
    RefundResult,
    Subject,
    SubscriptionLookup,
    SubscriptionState,
)
from pgm.providers.http import json_body, path_segment, provider_client, send

FORWARDED_HEADERS = ("content-type", "user-agent")
# The payment method of Mia's external contract: its paths carry no method segment.
EXTERNAL_METHOD = "external"
# What a service answers for a path it does not implement.
NOT_IMPLEMENTED = frozenset({404, 405, 501})
STATUS = {"ACCEPTED": Status.ACCEPTED, "FAILED": Status.FAILED, "PENDING": Status.PENDING}
REFUND_RESULT = {"OK": Status.ACCEPTED, "KO": Status.FAILED, "PENDING": Status.PENDING}


def _capabilities() -> Capabilities:
    # An external service speaks the whole operation set; it answers for itself what it does not do.
    methods = frozenset(
        {
            EXTERNAL_METHOD,
            "credit-cards",
            "pay-pal",
            "satispay",
            "applepay",
            "googlepay",
            "wire-transfer",
            "pay-by-link",
        }
    )
    return Capabilities(
        operations=frozenset(Operation),
        payment_methods=methods,
        intervals=frozenset(Interval),
        currencies=frozenset({"EUR"}),
        default_payment_method=EXTERNAL_METHOD,
    )


def _method_path(payment_method: str, rest: str) -> str:
    """Mia's path for the external method, the alias's path (with its segment) for any other."""
    return f"/{rest}" if payment_method == EXTERNAL_METHOD else f"/{payment_method}/{rest}"


class ExternalAdapter(ProviderAdapter):
    """Forwards every operation to an external provider service."""

    capabilities = _capabilities()

    def __init__(self, service: ExternalService, timeout_seconds: float, *, transport: Transport | None = None) -> None:
        self.name = service.name
        self._client = provider_client(service.base_url, timeout_seconds, transport=transport)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def pay(self, request: PayRequest) -> PayResult:
        """POST <base>/pay (or <base>/<method>/pay for the alias)."""
        return await self._pay_like(_method_path(request.payment_method, "pay"), request)

    async def schedule_subscription(self, request: PayRequest) -> PayResult:
        """POST <base>/subscription/schedule (or <base>/<method>/subscription/schedule for the alias)."""
        return await self._pay_like(_method_path(request.payment_method, "subscription/schedule"), request)

    async def start_subscription(self, request: PayRequest) -> PayResult:
        """POST <base>/subscription/start (or <base>/<method>/subscription/start for the alias)."""
        return await self._pay_like(_method_path(request.payment_method, "subscription/start"), request)

    async def pay_subscription(self, request: PayRequest) -> PayResult:
        """POST <base>/subscription/pay (or <base>/<method>/subscription/pay for the alias)."""
        return await self._pay_like(_method_path(request.payment_method, "subscription/pay"), request)

    async def authorization_token(self, request: PayRequest) -> PayResult:
        """POST <base>/utility/<method>/subscription/token."""
        answer = await self._post(f"/utility/{request.payment_method}/subscription/token", request)
        code = _code(answer.get("result"))
        token = answer.get("token")
        return PayResult(
            result=code,
            description=str(answer.get("resultDescription") or ""),
            payment_id=token if isinstance(token, str) else None,
            redirect_url=answer.get("redirectToUrl"),
            redirect_url_mobile=answer.get("redirectToUrlMobile"),
            subscription_token=token if isinstance(token, str) else None,
        )

    async def pay_by_link(self, request: PayRequest) -> PayResult:
        """POST <base>/pay-by-link."""
        answer = await self._post("/pay-by-link", request)
        ok = answer.get("resultCode") == "OK"
        return PayResult(
            result=PayResultCode.PENDING if ok else PayResultCode.KO,
            description=str(answer.get("resultDescription") or ""),
            payment_id=answer.get("paymentId"),
            link=answer.get("link"),
        )

    async def refund(self, request: RefundRequest) -> RefundResult:
        """POST <base>/refund."""
        body = {
            "amount": request.amount,
            "currency": request.currency,
            "paymentId": request.payment_id,
            "providerData": dict(request.provider_data),
        }
        answer = json_body(
            await send(self._client, "POST", "/refund", json=body, headers={"Idempotency-Key": request.idempotency_key})
        )
        status = REFUND_RESULT.get(str(answer.get("result")))
        if status is None:
            raise OutcomeUnknown("the external provider answered a refund without a known result")
        return RefundResult(status, answer.get("refundId"), str(answer.get("resultDescription") or ""))

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """GET <base>/status?paymentId=."""
        answer = json_body(await send(self._client, "GET", "/status", params={"paymentId": payment_id}))
        return _lookup(answer, payment_id)

    async def check_payment(self, payment_id: str) -> PaymentLookup:
        """GET <base>/check?paymentId=; a service without /check is asked /status instead."""
        response = await send(self._client, "GET", "/check", params={"paymentId": payment_id})
        if response.status_code in NOT_IMPLEMENTED:
            return await self.payment_status(payment_id)
        return _lookup(json_body(response), payment_id)

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """The external contract has no lookup by idempotency key: only reconciliation's schedule can end it."""
        raise OutcomeUnknown("the external provider cannot be asked about a payment whose id we never learned")

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """The external contract has no refund lookup."""
        raise OutcomeUnknown("the external provider cannot be asked about refunds")

    async def subscription_status(self, token: str) -> SubscriptionLookup:
        """GET <base>/subscription/status/<token>."""
        answer = json_body(await send(self._client, "GET", f"/subscription/status/{_segment(token)}"))
        return _subscription(answer, token)

    async def update_subscription(self, token: str, request: PayRequest) -> SubscriptionLookup:
        """POST <base>/subscription/update/<token>."""
        answer = await self._post(f"/subscription/update/{_segment(token)}", request)
        if answer.get("result") != "OK":
            raise ProviderRejected(str(answer.get("resultDescription") or "the external provider refused the update"))
        return SubscriptionLookup(SubscriptionState.ACTIVE, str(answer.get("subscriptionToken") or token))

    async def expire_subscription(self, token: str, shop_transaction_id: str | None) -> SubscriptionLookup:
        """DELETE <base>/subscription/expire/<token>."""
        params = {"shopTransactionId": shop_transaction_id} if shop_transaction_id else None
        answer = json_body(await send(self._client, "DELETE", f"/subscription/expire/{_segment(token)}", params=params))
        if answer.get("result") != "OK":
            raise ProviderRejected(str(answer.get("resultDescription") or "the external provider refused the expiry"))
        return SubscriptionLookup(SubscriptionState.EXPIRED, token)

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Forward the callback; the service's PaymentStatus answer is the verified fact. A service that
        does not implement the callback path is asked for the payment's status instead (Mia's services
        call `GET /callback?paymentId=` to say "look this payment up")."""
        headers = {k: v for k, v in callback.headers.items() if k in FORWARDED_HEADERS or k.startswith("x-")}
        suffix = "/callback/authorization" if callback.path.endswith("/authorization") else "/callback"
        response = await send(
            self._client, callback.method, suffix, params=dict(callback.query), content=callback.body, headers=headers
        )
        if response.status_code in NOT_IMPLEMENTED:
            answer = await self._status_for_callback(callback)
        elif response.status_code in (400, 401, 403):
            raise InvalidCallback(f"the external provider refused the callback (HTTP {response.status_code})")
        else:
            answer = json_body(response)
        lookup = _lookup(answer, None)
        # Without the service's event id, the same "look it up" callback reporting a new status is new
        # news: the digest covers the status the service reported, so only true repeats are duplicates.
        digest = hashlib.sha256(
            callback.method.encode()
            + callback.body
            + str(sorted(callback.query.items())).encode()
            + lookup.status.value.encode()
        )
        event_id = str(answer.get("eventId") or digest.hexdigest())
        if answer.get("action") == "REFUND":
            refund_id = (answer.get("metadata") or {}).get("refundId")
            return [Notification(event_id, Subject.REFUND, lookup.payment_id, lookup.status, refund_id=refund_id)]
        return [Notification(event_id, Subject.PAYMENT, lookup.payment_id, lookup.status)]

    async def _status_for_callback(self, callback: CallbackRequest) -> dict[str, Any]:
        payment_id = callback.query.get("paymentId")
        if not payment_id:
            raise InvalidCallback(
                "the external provider does not implement /callback and the callback names no paymentId to look up"
            )
        return json_body(await send(self._client, "GET", "/status", params={"paymentId": payment_id}))

    async def _pay_like(self, path: str, request: PayRequest) -> PayResult:
        answer = await self._post(path, request)
        return PayResult(
            result=_code(answer.get("result")),
            description=str(answer.get("resultDescription") or ""),
            payment_id=answer.get("paymentId"),
            redirect_url=answer.get("redirectToUrl"),
            redirect_url_mobile=answer.get("redirectToUrlMobile"),
            subscription_token=answer.get("subscriptionToken"),
            metadata=answer.get("metadata") or {},
        )

    async def _post(self, path: str, request: PayRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency,
            "shopTransactionId": request.shop_transaction_id,
            "successRedirectUrl": request.success_redirect_url,
            "failureRedirectUrl": request.failure_redirect_url,
            "providerData": dict(request.provider_data),
        }
        if request.subscription is not None:
            info = request.subscription
            body["subscriptionInfo"] = {
                "token": info.token,
                "interval": info.interval.value if info.interval else None,
                "intervalCount": info.interval_count,
                "expiresAfter": info.expires_after,
            }
        response = await send(
            self._client, "POST", _path(path), json=body, headers={"Idempotency-Key": request.idempotency_key}
        )
        return json_body(response)


def _segment(value: str) -> str:
    # Identifiers come from clients: never let one change the path we call.
    return path_segment(value)


def _path(path: str) -> str:
    return "/" + "/".join(_segment(part) for part in path.strip("/").split("/"))


def _code(value: Any) -> PayResultCode:
    try:
        return PayResultCode(str(value))
    except ValueError as exc:
        raise OutcomeUnknown(f"the external provider answered an unknown result {value!r}") from exc


def _lookup(answer: Mapping[str, Any], payment_id: str | None) -> PaymentLookup:
    status = STATUS.get(str(answer.get("status")))
    found_id = answer.get("paymentId") or payment_id
    if status is None or not isinstance(found_id, str):
        raise OutcomeUnknown("the external provider answered a status without a known status or paymentId")
    raw_metadata = answer.get("metadata")
    metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
    return PaymentLookup(
        status=status,
        payment_id=found_id,
        shop_transaction_id=answer.get("shopTransactionId"),
        metadata=metadata,
        # Mia's PaymentStatus has no amount; a service may add these, at the top or in metadata, so
        # that a payment made before the switch is adopted with its amount (docs/api.md#external-providers).
        amount=_whole(answer, metadata, "amount"),
        currency=_word(answer, metadata, "currency"),
        refunded_amount=_whole(answer, metadata, "refundedAmount"),
        payment_method=_word(answer, metadata, "paymentMethod"),
    )


def _whole(answer: Mapping[str, Any], metadata: Mapping[str, Any], key: str) -> int | None:
    value = answer.get(key, metadata.get(key))
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _word(answer: Mapping[str, Any], metadata: Mapping[str, Any], key: str) -> str | None:
    value = answer.get(key, metadata.get(key))
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def _subscription(answer: Mapping[str, Any], token: str) -> SubscriptionLookup:
    try:
        state = SubscriptionState(str(answer.get("status")))
    except ValueError:
        state = SubscriptionState.UNKNOWN
    return SubscriptionLookup(state, str(answer.get("subscriptionToken") or token), answer.get("metadata") or {})
