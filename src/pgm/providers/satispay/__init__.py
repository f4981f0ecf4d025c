"""Adapter for Satispay, over its GBusiness API v1 (https://developers.satispay.com).

* Pay: a MATCH_CODE payment; the payer approves it on Satispay's web page or in the app, so the
  answer is REDIRECT_TO_URL (web page, plus the same page returning to the app's link for mobile).
* Refund: a payment with flow REFUND and `parent_payment_uid`; Satispay settles it synchronously.
* Subscriptions: a pre-authorized payment token (`/utility/satispay/subscription/token`) that the payer
  approves once; `subscription/pay` then charges it with a PRE_AUTHORIZED payment.
* Every request is signed (see `signing`); every creating POST carries `Idempotency-Key`.
* Callbacks are an unsigned GET carrying only an id: they are hints. Notifications leave the status
  empty, so the PGM asks Satispay (payment or token) and trusts only that answer.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from pgm.config import ConfigurationError, Settings
from pgm.domain.statuses import Status
from pgm.outbound import Transport
from pgm.providers.base import (
    CallbackAnswer,
    CallbackRequest,
    Capabilities,
    InvalidCallback,
    InvalidProviderData,
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
from pgm.providers.satispay.signing import SatispaySignature, UnusableKey, load_private_key

REQUIRED_VARIABLES: tuple[str, ...] = ("SATISPAY_IS_SANDBOX", "SATISPAY_KEY_ID", "SATISPAY_PRIVATE_KEY")

STAGING_URL = "https://staging.authservices.satispay.com"
PRODUCTION_URL = "https://authservices.satispay.com"
API_PREFIX = "/g_business/v1"
# Satispay caps `x-satispay-response-wait-time` at 60 s and `external_code` at 50 characters.
MAX_WAITING_SECONDS = 60
EXTERNAL_CODE_MAX_LENGTH = 50
REASON_MAX_LENGTH = 255
# Our idempotency key also travels in the payment's metadata: the payment list has no other way to
# find a payment whose creation answer was lost.
IDEMPOTENCY_METADATA_KEY = "pgm_idempotency_key"
LIST_PAGE_SIZE = 100
LIST_MAX_PAGES = 20
KNOWN_TOKENS_MAX = 10_000
# Satispay ids are UUIDs; anything else never reaches a URL path.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")

CAPABILITIES = Capabilities(
    operations=frozenset(
        {
            Operation.PAY,
            Operation.REFUND,
            Operation.SUBSCRIPTION_PAY,
            Operation.SUBSCRIPTION_STATUS,
            Operation.SUBSCRIPTION_EXPIRE,
            Operation.AUTHORIZATION_TOKEN,
            Operation.STATUS,
            Operation.CALLBACK,
        }
    ),
    payment_methods=frozenset({"satispay"}),
    # The token is charged when the merchant decides: Satispay has no billing interval to set.
    intervals=frozenset(),
    currencies=frozenset({"EUR"}),
)

# Satispay payment status → ours (the existing PGM's table: ACCEPTED, CANCELED → FAILED, PENDING).
PAYMENT_STATUS: dict[str, Status] = {
    "PENDING": Status.PENDING,
    "ACCEPTED": Status.ACCEPTED,
    "CANCELED": Status.FAILED,
}
# Pre-authorized token status → the status of the PGM's authorization record.
TOKEN_STATUS: dict[str, Status] = {
    "PENDING": Status.PENDING,
    "ACCEPTED": Status.ACCEPTED,
    "CANCELED": Status.FAILED,
}
# Pre-authorized token status → subscription status (PENDING, ACTIVE, CANCELED in the existing PGM).
SUBSCRIPTION_STATE: dict[str, SubscriptionState] = {
    "PENDING": SubscriptionState.PENDING,
    "ACCEPTED": SubscriptionState.ACTIVE,
    "CANCELED": SubscriptionState.CANCELED,
}


@dataclass(frozen=True)
class SatispayConfig:
    """Everything the adapter needs, read from SATISPAY_* variables."""

    base_url: str
    key_id: str
    private_key: rsa.RSAPrivateKey
    callback_url: str
    timeout_seconds: float
    waiting_seconds: int = 0
    web_redirect_url: str | None = None
    mobile_redirect_url: str | None = None


def payment_status_of(payment: Mapping[str, Any]) -> Status:
    """Our status for a Satispay payment; an expired PENDING payment can no longer be paid: FAILED."""
    status = PAYMENT_STATUS.get(str(payment.get("status")))
    if status is None:
        raise OutcomeUnknown("Satispay answered a payment with an unknown status")
    if status is Status.PENDING and payment.get("expired") is True:
        return Status.FAILED
    return status


class SatispayAdapter(ProviderAdapter):
    """Satispay behind the common adapter interface."""

    name = "satispay"
    capabilities = CAPABILITIES

    def __init__(
        self, config: SatispayConfig, clock: Callable[[], float] | None = None, *, transport: Transport | None = None
    ) -> None:
        self._config = config
        self._client = provider_client(
            f"{config.base_url.rstrip('/')}{API_PREFIX}",
            config.timeout_seconds,
            headers={"Accept": "application/json"},
            auth=SatispaySignature(config.key_id, config.private_key, clock or time.time),
            transport=transport,
        )
        # Ids known to be authorization tokens, so their lookups skip the payments endpoint. Only an
        # optimisation: after a restart an unknown id is tried as a payment first, then as a token.
        self._tokens: OrderedDict[str, None] = OrderedDict()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Refuse what Satispay would refuse, before anything is stored: long references, no return URL."""
        if isinstance(request, RefundRequest):
            return
        if len(request.shop_transaction_id) > EXTERNAL_CODE_MAX_LENGTH:
            raise InvalidProviderData(
                f"Satispay accepts a shopTransactionId of at most {EXTERNAL_CODE_MAX_LENGTH} characters",
                field="shopTransactionId",
            )
        if operation in (Operation.PAY, Operation.AUTHORIZATION_TOKEN) and not self._web_redirect(request):
            raise InvalidProviderData(
                "successRedirectUrl is required: Satispay needs a page to send the payer back to "
                "and SATISPAY_AFTER_BUY_WEB_REDIRECT_URL is not set",
                field="successRedirectUrl",
            )
        if operation is Operation.AUTHORIZATION_TOKEN:
            _reason(request)

    async def pay(self, request: PayRequest) -> PayResult:
        """A one-off MATCH_CODE payment that the payer approves on Satispay's page or app."""
        body = {
            "flow": "MATCH_CODE",
            "amount_unit": request.amount,
            "currency": request.currency,
            "external_code": request.shop_transaction_id,
            "callback_url": self._callback_url(Subject.PAYMENT),
            "redirect_url": self._web_redirect(request),
            "metadata": {IDEMPOTENCY_METADATA_KEY: request.idempotency_key},
        }
        return self._pay_result(await self._create("/payments", body, request.idempotency_key), "payment")

    async def pay_subscription(self, request: PayRequest) -> PayResult:
        """Charge an approved pre-authorized token (flow PRE_AUTHORIZED): settled in the answer."""
        token = request.subscription.token if request.subscription else None
        if not token:
            raise InvalidProviderData("subscriptionInfo.token is required", field="subscriptionInfo.token")
        body = {
            "flow": "PRE_AUTHORIZED",
            "token": token,
            "amount_unit": request.amount,
            "currency": request.currency,
            "external_code": request.shop_transaction_id,
            "callback_url": self._callback_url(Subject.PAYMENT),
            "metadata": {IDEMPOTENCY_METADATA_KEY: request.idempotency_key},
        }
        result = self._pay_result(await self._create("/payments", body, request.idempotency_key), "payment")
        return PayResult(
            result=result.result,
            description=result.description,
            payment_id=result.payment_id,
            subscription_token=token,
        )

    async def authorization_token(self, request: PayRequest) -> PayResult:
        """Ask the payer to pre-authorize later payments; `payment_id` and the token are the token id."""
        body = {
            "reason": _reason(request),
            "callback_url": self._callback_url(Subject.AUTHORIZATION),
            "redirect_url": self._web_redirect(request),
            "metadata": {
                IDEMPOTENCY_METADATA_KEY: request.idempotency_key,
                "external_code": request.shop_transaction_id,
            },
        }
        token = await self._create("/pre_authorized_payment_tokens", body, request.idempotency_key)
        token_id = _identifier(token, "authorization")
        status = _token_status(token)
        self._remember_token(token_id)
        code = _code(status, token.get("redirect_url"))
        return PayResult(
            result=code,
            description=_describe(code, "authorization"),
            payment_id=token_id,
            redirect_url=_text(token.get("redirect_url")) if code is PayResultCode.REDIRECT_TO_URL else None,
            redirect_url_mobile=self._mobile(token.get("redirect_url"))
            if code is PayResultCode.REDIRECT_TO_URL
            else None,
            subscription_token=token_id,
        )

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of a payment: a REFUND payment whose parent is the original one."""
        _check_id(request.payment_id, ProviderRejected)
        body = {
            "flow": "REFUND",
            "parent_payment_uid": request.payment_id,
            "amount_unit": request.amount,
            "currency": request.currency,
            "metadata": {IDEMPOTENCY_METADATA_KEY: request.idempotency_key},
        }
        return _refund_result(await self._create("/payments", body, request.idempotency_key))

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Look a payment up; an authorization token id (our authorization records) is looked up as a token."""
        _check_id(payment_id, ProviderRejected)
        if payment_id in self._tokens:
            return _token_lookup(await self._get_token(payment_id))
        response = await send(self._client, "GET", f"/payments/{path_segment(payment_id)}", **self._waiting())
        if response.status_code != 404:
            return _payment_lookup(json_body(response))
        response = await send(self._client, "GET", f"/pre_authorized_payment_tokens/{path_segment(payment_id)}")
        if response.status_code == 404:
            raise ProviderRejected(f"Satispay has no payment or authorization {payment_id}")
        token = json_body(response)
        self._remember_token(payment_id)
        return _token_lookup(token)

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Find the payment created with this idempotency key in the shop's payment list (newest first)."""
        found = await self._scan(
            lambda item: _created_with(item, idempotency_key) and item.get("type") != "REFUND_TO_BUSINESS"
        )
        return _payment_lookup(found) if found is not None else None

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """Look a refund up by its id (a Satispay payment of its own), or by the key it was created with."""
        if refund_id:
            _check_id(refund_id, ProviderRejected)
            response = await send(self._client, "GET", f"/payments/{path_segment(refund_id)}")
            return None if response.status_code == 404 else _refund_result(json_body(response))
        found = await self._scan(
            lambda item: _created_with(item, idempotency_key) and item.get("type") == "REFUND_TO_BUSINESS"
        )
        return _refund_result(found) if found is not None else None

    async def subscription_status(self, token: str) -> SubscriptionLookup:
        """Where a pre-authorized token stands: PENDING, ACTIVE (approved) or CANCELED."""
        _check_id(token, ProviderRejected)
        return _subscription(await self._get_token(token))

    async def expire_subscription(self, token: str, shop_transaction_id: str | None) -> SubscriptionLookup:
        """Revoke a pre-authorized token; revoking one already revoked answers its current state."""
        _check_id(token, ProviderRejected)
        response = await send(
            self._client, "PUT", f"/pre_authorized_payment_tokens/{path_segment(token)}", json={"status": "CANCELED"}
        )
        try:
            return _subscription(json_body(response))
        except ProviderRejected:
            # Satispay refuses an illegal transition (already CANCELED) with a 4xx: look before failing.
            current = _subscription(await self._get_token(token))
            if current.status is SubscriptionState.CANCELED:
                return current
            raise

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Read the id Satispay put in our callback URL; the status is left to a lookup (unsigned callback)."""
        authorization = callback.path.rstrip("/").endswith("/callback/authorization")
        names = ("authorization_id", "id", "uuid") if authorization else ("payment_id", "id", "uuid")
        identifier = next((callback.query[name] for name in names if callback.query.get(name)), None)
        if identifier is None or not _ID.match(identifier):
            raise InvalidCallback("a Satispay callback must carry the id of a payment or authorization")
        # Each delivery is its own hint: Satispay calls again on every status change (a token can be
        # approved, then revoked), so de-duplicating on the id alone would drop real changes. Replaying
        # a hint is harmless: it only triggers one more lookup.
        event_id = f"{'authorization' if authorization else 'payment'}:{identifier}:{callback.received_at:.6f}"
        if authorization:
            self._remember_token(identifier)
            return [Notification(event_id, Subject.AUTHORIZATION, payment_id=identifier, status=None, token=identifier)]
        return [Notification(event_id, Subject.PAYMENT, payment_id=identifier, status=None)]

    def callback_answer(self) -> CallbackAnswer:
        """Any 2xx stops Satispay's retries; it reads no body."""
        return CallbackAnswer(status_code=200, body=b"", media_type="text/plain")

    async def _create(self, path: str, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        response = await send(
            self._client, "POST", path, json=_without_none(body), headers={"Idempotency-Key": idempotency_key}
        )
        return json_body(response)

    async def _get_token(self, token: str) -> dict[str, Any]:
        return json_body(await send(self._client, "GET", f"/pre_authorized_payment_tokens/{path_segment(token)}"))

    async def _scan(self, match: Callable[[Mapping[str, Any]], bool]) -> dict[str, Any] | None:
        """The first payment of the list that matches; None only when the whole list was read."""
        starting_after: str | None = None
        for _ in range(LIST_MAX_PAGES):
            params: dict[str, str | int] = {"limit": LIST_PAGE_SIZE}
            if starting_after:
                params["starting_after"] = starting_after
            page = json_body(await send(self._client, "GET", "/payments", params=params))
            raw = page.get("data")
            if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
                raise OutcomeUnknown("Satispay answered a payment list without a list of payments")
            data: list[dict[str, Any]] = raw
            for item in data:
                if match(item):
                    return item
            if not data or page.get("has_more") is not True:
                return None
            starting_after = str(data[-1].get("id"))
        raise OutcomeUnknown(
            f"no match among the newest {LIST_PAGE_SIZE * LIST_MAX_PAGES} Satispay payments; older ones were not read"
        )

    def _pay_result(self, payment: Mapping[str, Any], what: str) -> PayResult:
        payment_id = _identifier(payment, what)
        code = _code(payment_status_of(payment), payment.get("redirect_url"))
        redirect = code is PayResultCode.REDIRECT_TO_URL
        return PayResult(
            result=code,
            description=_describe(code, what),
            payment_id=payment_id,
            redirect_url=_text(payment.get("redirect_url")) if redirect else None,
            redirect_url_mobile=self._mobile(payment.get("redirect_url")) if redirect else None,
        )

    def _callback_url(self, subject: Subject) -> str:
        # Satispay replaces the literal {uuid} with the payment or token id.
        if subject is Subject.AUTHORIZATION:
            return f"{self._config.callback_url}/authorization?authorization_id={{uuid}}"
        return f"{self._config.callback_url}?payment_id={{uuid}}"

    def _web_redirect(self, request: PayRequest) -> str | None:
        return request.success_redirect_url or self._config.web_redirect_url

    def _mobile(self, page_url: object) -> str | None:
        """The same Satispay page, sending the payer back to the app's link instead of the web page."""
        if not isinstance(page_url, str) or not self._config.mobile_redirect_url:
            return None
        return str(URL(page_url).update_query(redirect_url=self._config.mobile_redirect_url))

    def _waiting(self) -> dict[str, Any]:
        """Long polling: Satispay holds a lookup of a pending payment up to this long for a change."""
        if not self._config.waiting_seconds:
            return {}
        return {
            "headers": {"x-satispay-response-wait-time": str(self._config.waiting_seconds)},
            "timeout_seconds": self._config.timeout_seconds + self._config.waiting_seconds,
        }

    def _remember_token(self, token: str) -> None:
        self._tokens[token] = None
        self._tokens.move_to_end(token)
        while len(self._tokens) > KNOWN_TOKENS_MAX:
            self._tokens.popitem(last=False)


def build(settings: Settings, transport: Transport | None = None) -> ProviderAdapter:
    """The Satispay adapter from SATISPAY_* variables; raise ConfigurationError naming a bad one."""
    env = settings.provider_env
    sandbox = _flag(env, "SATISPAY_IS_SANDBOX")
    try:
        private_key = load_private_key(env.get("SATISPAY_PRIVATE_KEY", ""))
    except UnusableKey as exc:
        raise ConfigurationError(f"SATISPAY_PRIVATE_KEY {exc}") from exc
    base_url = _http_url(env, "SATISPAY_BASE_URL") or (STAGING_URL if sandbox else PRODUCTION_URL)
    callback_url = _http_url(env, "SATISPAY_CALLBACK_URL") or f"{settings.public_url}/v3/satispay/callback"
    if "?" in callback_url or "{" in callback_url:
        raise ConfigurationError(
            "SATISPAY_CALLBACK_URL must be the PGM's callback endpoint without a query, e.g. "
            "https://pgm.example.com/v3/satispay/callback"
        )
    config = SatispayConfig(
        base_url=base_url,
        key_id=env.get("SATISPAY_KEY_ID", "").strip(),
        private_key=private_key,
        callback_url=callback_url.rstrip("/"),
        timeout_seconds=settings.provider_timeout_seconds,
        waiting_seconds=_waiting_seconds(env),
        web_redirect_url=_http_url(env, "SATISPAY_AFTER_BUY_WEB_REDIRECT_URL"),
        mobile_redirect_url=_app_link(env, "SATISPAY_AFTER_BUY_MOBILE_REDIRECT_URL"),
    )
    return SatispayAdapter(config, transport=transport)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in ("true", "false"):
        raise ConfigurationError(f'{name} must be "true" or "false"')
    return raw == "true"


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise ConfigurationError(f"{name} must be an http(s) URL")
    return raw.rstrip("/") if name in ("SATISPAY_BASE_URL", "SATISPAY_CALLBACK_URL") else raw


def _app_link(env: Mapping[str, str], name: str) -> str | None:
    # A universal/app link (https) or a custom URL scheme (myapp://...): both are valid app targets.
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", raw):
        raise ConfigurationError(f"{name} must be a URL or an app URL scheme such as myapp://paid")
    return raw


def _waiting_seconds(env: Mapping[str, str]) -> int:
    raw = env.get("SATISPAY_WAITING_SECONDS", "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > MAX_WAITING_SECONDS:
        raise ConfigurationError(f"SATISPAY_WAITING_SECONDS must be an integer from 0 to {MAX_WAITING_SECONDS}")
    return int(raw)


def _reason(request: PayRequest) -> str:
    reason = request.provider_data.get("reason")
    if reason is None:
        return f"Automatic payments for {request.shop_transaction_id}"
    if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX_LENGTH:
        raise InvalidProviderData(
            f"providerData.reason must be a non-empty string of at most {REASON_MAX_LENGTH} characters",
            field="providerData.reason",
        )
    return reason


def _check_id(identifier: str, error: type[Exception]) -> None:
    if not _ID.match(identifier):
        raise error(f"{identifier[:80]!r} is not a Satispay id")


def _identifier(document: Mapping[str, Any], what: str) -> str:
    identifier = document.get("id")
    if not isinstance(identifier, str) or not _ID.match(identifier):
        raise OutcomeUnknown(f"Satispay answered a {what} without a usable id")
    return identifier


def _created_with(item: Mapping[str, Any], idempotency_key: str) -> bool:
    metadata = item.get("metadata")
    return isinstance(metadata, dict) and metadata.get(IDEMPOTENCY_METADATA_KEY) == idempotency_key


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}


def _token_status(token: Mapping[str, Any]) -> Status:
    status = TOKEN_STATUS.get(str(token.get("status")))
    if status is None:
        raise OutcomeUnknown("Satispay answered an authorization with an unknown status")
    return status


def _code(status: Status, redirect_url: object) -> PayResultCode:
    if status is Status.ACCEPTED:
        return PayResultCode.OK
    if status is Status.FAILED:
        return PayResultCode.KO
    return PayResultCode.REDIRECT_TO_URL if _text(redirect_url) else PayResultCode.PENDING


def _describe(code: PayResultCode, what: str) -> str:
    return {
        PayResultCode.OK: f"The {what} was accepted by Satispay",
        PayResultCode.KO: f"The {what} was canceled or refused by Satispay",
        PayResultCode.PENDING: f"The {what} was created; its outcome comes later",
        PayResultCode.REDIRECT_TO_URL: f"The payer must approve the {what} on Satispay's page or app",
    }[code]


def _payment_lookup(payment: Mapping[str, Any]) -> PaymentLookup:
    amount = payment.get("amount_unit")
    return PaymentLookup(
        status=payment_status_of(payment),
        payment_id=_identifier(payment, "payment"),
        shop_transaction_id=_text(payment.get("external_code")),
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        metadata={"satispayStatus": payment.get("status"), "expired": payment.get("expired") is True},
        currency=_text(payment.get("currency")),
        payment_method="satispay",
    )


def _token_lookup(token: Mapping[str, Any]) -> PaymentLookup:
    token_id = _identifier(token, "authorization")
    metadata = token.get("metadata")
    reference = metadata.get("external_code") if isinstance(metadata, dict) else None
    return PaymentLookup(
        status=_token_status(token),
        payment_id=token_id,
        shop_transaction_id=_text(reference),
        subscription_token=token_id,
        metadata={"satispayStatus": token.get("status")},
    )


def _refund_result(refund: Mapping[str, Any]) -> RefundResult:
    status = PAYMENT_STATUS.get(str(refund.get("status")))
    if status is None:
        raise OutcomeUnknown("Satispay answered a refund with an unknown status")
    descriptions = {
        Status.ACCEPTED: "The refund was executed by Satispay",
        Status.FAILED: "The refund was canceled by Satispay",
        Status.PENDING: "The refund was accepted; its outcome comes later",
    }
    return RefundResult(status=status, refund_id=_identifier(refund, "refund"), description=descriptions[status])


def _subscription(token: Mapping[str, Any]) -> SubscriptionLookup:
    state = SUBSCRIPTION_STATE.get(str(token.get("status")), SubscriptionState.UNKNOWN)
    return SubscriptionLookup(
        status=state,
        token=_identifier(token, "authorization"),
        metadata={"satispayStatus": token.get("status")},
    )
