"""Adapter for the built-in sandbox provider (docs/sandbox.md). It talks to the sandbox over HTTP with an API
key, exactly as it would to a remote provider, and verifies the sandbox's signed callbacks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pgm.crypto import timestamped_hmac
from pgm.domain.statuses import Status
from pgm.outbound import Transport
from pgm.providers.base import (
    CallbackRequest,
    Capabilities,
    Interval,
    InvalidCallback,
    InvalidProviderData,
    ListedRefund,
    Notification,
    Operation,
    OutcomeUnknown,
    PaymentLookup,
    PayRequest,
    PayResult,
    PayResultCode,
    ProviderAdapter,
    RefundRequest,
    RefundResult,
    Subject,
    SubscriptionLookup,
    SubscriptionState,
)
from pgm.providers.http import json_body, path_segment, provider_client, send

SIGNATURE_HEADER = "sandbox-signature"
SIGNATURE_TOLERANCE_SECONDS = 300
OUTCOMES = frozenset({"OK", "KO", "PENDING", "REDIRECT_TO_URL", "ERROR", "TIMEOUT"})
REFUND_OUTCOMES = frozenset({"OK", "KO", "PENDING"})
MAX_DELAY_MS = 120_000

CAPABILITIES = Capabilities(
    # Every operation: the sandbox is where each flow can be tried without an account.
    operations=frozenset(Operation),
    payment_methods=frozenset({"credit-cards", "pay-pal", "satispay", "sandbox"}),
    intervals=frozenset(Interval),
    currencies=frozenset({"EUR", "USD", "GBP", "CHF"}),
    lists_refunds=True,
)

# Sandbox payment and token statuses → ours (docs/sandbox.md pins PENDING, ACCEPTED, FAILED).
PAYMENT_STATUS = {"PENDING": Status.PENDING, "ACCEPTED": Status.ACCEPTED, "FAILED": Status.FAILED}
TOKEN_STATUS = {
    "PENDING": Status.PENDING,
    "ACTIVE": Status.ACCEPTED,
    "CANCELED": Status.FAILED,
    "EXPIRED": Status.ACCEPTED,
}
SUBSCRIPTION_STATE = {
    "PENDING": SubscriptionState.PENDING,
    "ACTIVE": SubscriptionState.ACTIVE,
    "CANCELED": SubscriptionState.CANCELED,
    "EXPIRED": SubscriptionState.EXPIRED,
}


class SandboxAdapter(ProviderAdapter):
    """The sandbox provider behind the common adapter interface."""

    name = "sandbox"
    capabilities = CAPABILITIES

    def __init__(
        self,
        base_url: str,
        api_key: str,
        webhook_secret: Callable[[], str],
        timeout_seconds: float,
        *,
        transport: Transport | None = None,
    ) -> None:
        self._client = provider_client(
            f"{base_url.rstrip('/')}/api/v1",
            timeout_seconds,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
        )
        self._webhook_secret = webhook_secret

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Validate `sandboxOutcome` and `sandboxDelayMs` before anything is stored."""
        if isinstance(request, RefundRequest):
            _refund_outcome(request.provider_data)
            _delay(request.provider_data)
        else:
            self._body("payment", request)

    async def pay(self, request: PayRequest) -> PayResult:
        """A one-off payment."""
        return await self._create("payment", request)

    async def schedule_subscription(self, request: PayRequest) -> PayResult:
        """A provider-managed subscription and its first payment."""
        return await self._create("subscription_schedule", request)

    async def start_subscription(self, request: PayRequest) -> PayResult:
        """A merchant-managed mandate and its first payment."""
        return await self._create("subscription_start", request)

    async def pay_subscription(self, request: PayRequest) -> PayResult:
        """One more payment on a stored token."""
        if request.subscription is None or not request.subscription.token:
            raise InvalidProviderData("subscriptionInfo.token is required", field="subscriptionInfo.token")
        return await self._create("subscription_pay", request)

    async def pay_by_link(self, request: PayRequest) -> PayResult:
        """A payment link: the hosted page, shared with the payer."""
        return await self._create("link", request)

    async def authorization_token(self, request: PayRequest) -> PayResult:
        """A payer authorization for later merchant-initiated payments."""
        body = self._body("payment", request)
        response = await send(
            self._client, "POST", "/authorizations", json=body, headers={"Idempotency-Key": request.idempotency_key}
        )
        token = json_body(response)
        status = TOKEN_STATUS.get(str(token.get("status")))
        if status is None or not isinstance(token.get("token"), str):
            raise OutcomeUnknown("the sandbox answered an authorization without a token or status")
        code = {Status.ACCEPTED: PayResultCode.OK, Status.FAILED: PayResultCode.KO}.get(status)
        if code is None:
            code = PayResultCode.REDIRECT_TO_URL if token.get("nextAction") == "redirect" else PayResultCode.PENDING
        return PayResult(
            result=code,
            description=_describe(code, "authorization"),
            payment_id=token["token"],
            redirect_url=token.get("approvalUrl"),
            redirect_url_mobile=token.get("approvalUrlMobile"),
            subscription_token=token["token"],
        )

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part of a payment; the outcome comes from `providerData.sandboxOutcome`."""
        body = {
            "amount": request.amount,
            "outcome": _refund_outcome(request.provider_data),
            "delayMs": _delay(request.provider_data),
        }
        response = await send(
            self._client,
            "POST",
            f"/payments/{path_segment(request.payment_id)}/refunds",
            json=body,
            headers={"Idempotency-Key": request.idempotency_key},
        )
        return _refund_result(json_body(response))

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Look a payment (or an authorization token) up."""
        path = (
            f"/tokens/{path_segment(payment_id)}"
            if payment_id.startswith("sbx_auth")
            else f"/payments/{path_segment(payment_id)}"
        )
        response = await send(self._client, "GET", path)
        if payment_id.startswith("sbx_auth"):
            return _token_lookup(json_body(response))
        return _payment_lookup(json_body(response))

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Find the payment (or authorization) we created with this idempotency key, if the sandbox has it."""
        for path, parse in (("/payments", _payment_lookup), ("/tokens", _token_lookup)):
            response = await send(self._client, "GET", path, params={"idempotencyKey": idempotency_key})
            found = json_body(response).get("data")
            if isinstance(found, list) and found:
                return parse(found[0])
        return None

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """Look a refund up, by its id or by the idempotency key it was created with."""
        if refund_id:
            return _refund_result(json_body(await send(self._client, "GET", f"/refunds/{path_segment(refund_id)}")))
        response = await send(self._client, "GET", "/refunds", params={"idempotencyKey": idempotency_key})
        found = json_body(response).get("data")
        return _refund_result(found[0]) if isinstance(found, list) and found else None

    async def list_refunds(self, payment_id: str) -> list[ListedRefund]:
        """The refunds the sandbox lists with the payment (`GET /payments/{id}`), however they were made."""
        payment = json_body(await send(self._client, "GET", f"/payments/{path_segment(payment_id)}"))
        return _listed_refunds(payment)

    async def subscription_status(self, token: str) -> SubscriptionLookup:
        """Where a subscription or mandate stands."""
        return _subscription(json_body(await send(self._client, "GET", f"/tokens/{path_segment(token)}")))

    async def update_subscription(self, token: str, request: PayRequest) -> SubscriptionLookup:
        """Change amount or interval of a subscription."""
        body: dict[str, Any] = {"amount": request.amount}
        if request.subscription and request.subscription.interval:
            body["interval"] = request.subscription.interval.value
            body["intervalCount"] = request.subscription.interval_count
        return _subscription(json_body(await send(self._client, "POST", f"/tokens/{path_segment(token)}", json=body)))

    async def expire_subscription(self, token: str, shop_transaction_id: str | None) -> SubscriptionLookup:
        """Stop a subscription."""
        return _subscription(json_body(await send(self._client, "POST", f"/tokens/{path_segment(token)}/cancel")))

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Verify `Sandbox-Signature` over the raw body and read the event."""
        try:
            timestamped_hmac.verify(
                callback.headers.get(SIGNATURE_HEADER),
                callback.body,
                [self._webhook_secret()],
                now=callback.received_at,
                tolerance_seconds=SIGNATURE_TOLERANCE_SECONDS,
            )
        except timestamped_hmac.SignatureError as exc:
            raise InvalidCallback(str(exc)) from exc
        try:
            event = json.loads(callback.body)
            event_id, event_type, data = str(event["id"]), str(event["type"]), event["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCallback("the signed callback is not a sandbox event") from exc
        if event_type == "payment.updated":
            status = PAYMENT_STATUS.get(str(data.get("status")))
            return [Notification(event_id, Subject.PAYMENT, payment_id=str(data["id"]), status=status)]
        if event_type == "refund.updated":
            status = PAYMENT_STATUS.get(str(data.get("status")))
            return [
                Notification(
                    event_id,
                    Subject.REFUND,
                    payment_id=str(data["paymentId"]),
                    status=status,
                    refund_id=str(data["id"]),
                    amount=_amount(data.get("amount")),
                )
            ]
        if event_type == "token.updated" and data.get("kind") == "authorization":
            status = TOKEN_STATUS.get(str(data.get("status")))
            token = str(data["token"])
            return [Notification(event_id, Subject.AUTHORIZATION, payment_id=token, status=status, token=token)]
        return []

    async def _create(self, kind: str, request: PayRequest) -> PayResult:
        body = self._body(kind, request)
        response = await send(
            self._client, "POST", "/payments", json=body, headers={"Idempotency-Key": request.idempotency_key}
        )
        payment = json_body(response)
        status = PAYMENT_STATUS.get(str(payment.get("status")))
        if status is None or not isinstance(payment.get("id"), str):
            raise OutcomeUnknown("the sandbox answered a payment without an id or a known status")
        if status is Status.ACCEPTED:
            code = PayResultCode.OK
        elif status is Status.FAILED:
            code = PayResultCode.KO
        elif payment.get("nextAction") == "redirect":
            code = PayResultCode.REDIRECT_TO_URL
        else:
            code = PayResultCode.PENDING
        description = payment.get("declineReason") if code is PayResultCode.KO else None
        return PayResult(
            result=code,
            description=description or _describe(code, "payment"),
            payment_id=payment["id"],
            redirect_url=payment.get("checkoutUrl") if kind != "link" else None,
            redirect_url_mobile=payment.get("checkoutUrlMobile") if kind != "link" else None,
            subscription_token=payment.get("token"),
            link=payment.get("checkoutUrl") if kind == "link" else None,
        )

    def _body(self, kind: str, request: PayRequest) -> dict[str, Any]:
        outcome = request.provider_data.get("sandboxOutcome", "REDIRECT_TO_URL")
        if not isinstance(outcome, str) or outcome not in OUTCOMES:
            raise InvalidProviderData(
                f"providerData.sandboxOutcome must be one of {sorted(OUTCOMES)}", field="providerData.sandboxOutcome"
            )
        body: dict[str, Any] = {
            "kind": kind,
            "amount": request.amount,
            "currency": request.currency,
            "reference": request.shop_transaction_id,
            "outcome": outcome,
            "delayMs": _delay(request.provider_data),
            "successUrl": request.success_redirect_url,
            "failureUrl": request.failure_redirect_url,
        }
        if request.subscription is not None:
            body["token"] = request.subscription.token
            body["interval"] = request.subscription.interval.value if request.subscription.interval else None
            body["intervalCount"] = request.subscription.interval_count
        return body


def _amount(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _refund_outcome(provider_data: Mapping[str, Any]) -> str:
    outcome = provider_data.get("sandboxOutcome", "OK")
    if not isinstance(outcome, str) or outcome not in REFUND_OUTCOMES:
        raise InvalidProviderData(
            f"providerData.sandboxOutcome for a refund must be one of {sorted(REFUND_OUTCOMES)}",
            field="providerData.sandboxOutcome",
        )
    return outcome


def _delay(provider_data: Mapping[str, Any]) -> int:
    delay = provider_data.get("sandboxDelayMs", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY_MS:
        raise InvalidProviderData(
            f"providerData.sandboxDelayMs must be an integer from 0 to {MAX_DELAY_MS}",
            field="providerData.sandboxDelayMs",
        )
    return delay


def _describe(code: PayResultCode, what: str) -> str:
    return {
        PayResultCode.OK: f"The {what} was accepted",
        PayResultCode.KO: f"The {what} was refused",
        PayResultCode.PENDING: f"The {what} was created; its outcome comes later",
        PayResultCode.REDIRECT_TO_URL: f"The payer must complete the {what} on the hosted page",
    }[code]


def _listed_refunds(payment: Mapping[str, Any]) -> list[ListedRefund]:
    listed = payment.get("refunds")
    return [
        ListedRefund(str(refund["id"]), refund["amount"], PAYMENT_STATUS[refund["status"]])
        for refund in (listed if isinstance(listed, list) else [])
        if isinstance(refund, dict)
        and isinstance(refund.get("id"), str)
        and isinstance(refund.get("amount"), int)
        and refund.get("status") in PAYMENT_STATUS
    ]


def _payment_lookup(payment: Mapping[str, Any]) -> PaymentLookup:
    refunds = tuple(
        (refund.refund_id, refund.amount) for refund in _listed_refunds(payment) if refund.status is Status.ACCEPTED
    )
    status = PAYMENT_STATUS.get(str(payment.get("status")))
    if status is None or not isinstance(payment.get("id"), str):
        raise OutcomeUnknown("the sandbox answered a payment without an id or a known status")
    return PaymentLookup(
        status=status,
        payment_id=payment["id"],
        shop_transaction_id=payment.get("reference"),
        amount=payment.get("amount"),
        subscription_token=payment.get("token"),
        metadata={"sandboxStatus": payment["status"]},
        currency=payment.get("currency"),
        refunded_amount=sum(amount for _, amount in refunds) if isinstance(payment.get("refunds"), list) else None,
        refunds=refunds,
    )


def _token_lookup(token: Mapping[str, Any]) -> PaymentLookup:
    status = TOKEN_STATUS.get(str(token.get("status")))
    if status is None or not isinstance(token.get("token"), str):
        raise OutcomeUnknown("the sandbox answered a token without a known status")
    return PaymentLookup(
        status=status,
        payment_id=token["token"],
        shop_transaction_id=token.get("reference"),
        subscription_token=token["token"],
        metadata={"sandboxStatus": token["status"]},
    )


def _refund_result(refund: Mapping[str, Any]) -> RefundResult:
    status = PAYMENT_STATUS.get(str(refund.get("status")))
    if status is None:
        raise OutcomeUnknown("the sandbox answered a refund without a known status")
    descriptions = {
        Status.ACCEPTED: "The refund was executed",
        Status.FAILED: "The refund was refused by the provider",
        Status.PENDING: "The refund was accepted; its outcome comes later",
    }
    return RefundResult(status=status, refund_id=refund.get("id"), description=descriptions[status])


def _subscription(token: Mapping[str, Any]) -> SubscriptionLookup:
    state = SUBSCRIPTION_STATE.get(str(token.get("status")), SubscriptionState.UNKNOWN)
    return SubscriptionLookup(
        status=state,
        token=str(token.get("token")),
        metadata={"interval": token.get("interval"), "intervalCount": token.get("intervalCount")},
    )
