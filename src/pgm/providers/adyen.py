"""Adapter for Adyen (Checkout API v71) over HTTP, following the existing PGM's Adyen contract.

What Adyen offers and how it maps here (docs/providers/adyen.md):
* card payments with client-side-encrypted fields (`POST /payments`), automatic capture;
* merchant-initiated subscriptions: `start` stores the card for a `shopperReference`
  (`storePaymentMethod` + `recurringProcessingModel: Subscription`), `pay` charges the stored token;
  their status and expiry go through `/storedPaymentMethods`;
* asynchronous refunds (`POST /payments/{pspReference}/refunds` answers `received`; the outcome is a
  REFUND notification);
* payment links (`POST /paymentLinks`);
* HMAC-SHA256-signed standard notifications, acknowledged with `[accepted]`.

Adyen has no "get payment" endpoint, so `/status` and `/check` answer 501 as in the existing PGM.
A lost answer is resolved the way Adyen documents it: the same request is sent again with the same
`Idempotency-Key`, and Adyen answers what it did the first time. The requests are kept in memory for
that; after a restart only the notifications can settle such a payment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgm.config import ConfigurationError, Settings
from pgm.domain.statuses import Status
from pgm.outbound import Response, Transport
from pgm.providers.base import (
    CallbackAnswer,
    CallbackRequest,
    Capabilities,
    Interval,
    InvalidCallback,
    InvalidProviderData,
    Notification,
    NotSupported,
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

REQUIRED_VARIABLES: tuple[str, ...] = ("ADYEN_PRIVATE_KEY", "ADYEN_MERCHANT_ACCOUNT", "ADYEN_HMAC_KEY")

TEST_BASE_URL = "https://checkout-test.adyen.com/v71"
LIVE_BASE_URL = "https://{prefix}-checkout-live.adyenpayments.com/checkout/v71"
API_KEY_HEADER = "X-API-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ACKNOWLEDGEMENT = b"[accepted]"
ENCRYPTED_CARD_FIELDS = (
    "encryptedCardNumber",
    "encryptedExpiryMonth",
    "encryptedExpiryYear",
    "encryptedSecurityCode",
)
# The fields Adyen's notification HMAC covers, in order (Adyen "Verify HMAC signatures").
HMAC_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
)
# Adyen: shopperReference is 3-256 characters; ours travels inside the subscription token, whose
# path segment the PGM limits to 255 characters, so it is kept shorter.
SHOPPER_REFERENCE_MAX_BYTES = 150
SHOPPER_REFERENCE_MIN_LENGTH = 3
TOKEN_SEPARATOR = "."
# Adyen keeps idempotency keys for at least 7 days; a replay is only useful while ours is this fresh.
REPLAY_TTL_SECONDS = 24 * 3600.0
REPLAY_MAX_ENTRIES = 10_000
IN_PROGRESS_ERROR_CODE = "704"

CAPABILITIES = Capabilities(
    # The reference's matrix: pay, refund (async), manual start/pay, pay-by-link; no /status or /check.
    operations=frozenset(
        {
            Operation.PAY,
            Operation.REFUND,
            Operation.SUBSCRIPTION_START,
            Operation.SUBSCRIPTION_PAY,
            Operation.SUBSCRIPTION_STATUS,
            Operation.SUBSCRIPTION_EXPIRE,
            Operation.PAY_BY_LINK,
            Operation.CALLBACK,
        }
    ),
    payment_methods=frozenset({"credit-cards"}),
    # Merchant-managed: the merchant charges on its own schedule; the v3 contract offers DAY and MONTH.
    intervals=frozenset({Interval.DAY, Interval.MONTH}),
    currencies=frozenset({"EUR"}),
)

# /payments `resultCode` → our status. Action codes wait for the shopper (3-D Secure, redirect).
RESULT_CODE_STATUS: dict[str, Status] = {
    "Authorised": Status.ACCEPTED,
    "Refused": Status.FAILED,
    "Error": Status.FAILED,
    "Cancelled": Status.FAILED,
    "Pending": Status.PENDING,
    "Received": Status.PENDING,
    "RedirectShopper": Status.PENDING,
    "IdentifyShopper": Status.PENDING,
    "ChallengeShopper": Status.PENDING,
    "PresentToShopper": Status.PENDING,
}

# /paymentLinks `status` → our status of the payment the link asks for.
PAYMENT_LINK_STATUS: dict[str, Status] = {
    "active": Status.PENDING,
    "paymentPending": Status.PENDING,
    "completed": Status.ACCEPTED,
    "paid": Status.ACCEPTED,
    "expired": Status.FAILED,
}


@dataclass(frozen=True)
class EventRule:
    """How one notification `eventCode` reads: what it is about and the status for success true/false."""

    subject: Subject
    on_success: Status
    on_failure: Status | None


# Notification `eventCode` → meaning. Only automatic capture is supported, so AUTHORISATION with
# success "true" means the money was taken. Codes not listed are acknowledged and ignored.
EVENT_RULES: dict[str, EventRule] = {
    "AUTHORISATION": EventRule(Subject.PAYMENT, Status.ACCEPTED, Status.FAILED),
    "OFFER_CLOSED": EventRule(Subject.PAYMENT, Status.FAILED, None),
    "CAPTURE_FAILED": EventRule(Subject.PAYMENT, Status.FAILED, None),
    "REFUND": EventRule(Subject.REFUND, Status.ACCEPTED, Status.FAILED),
    "REFUND_FAILED": EventRule(Subject.REFUND, Status.FAILED, None),
    "REFUNDED_REVERSED": EventRule(Subject.REFUND, Status.FAILED, None),
}

# Events whose `pspReference` is the payment itself; for the others it is a modification of
# `originalReference`.
PAYMENT_EVENTS_ON_OWN_REFERENCE = frozenset({"AUTHORISATION", "OFFER_CLOSED"})


def notification_signature(item: Mapping[str, Any], hmac_key: str) -> str:
    """Adyen's HMAC of one NotificationRequestItem: base64(HMAC-SHA256(hex-decoded key, signing string))."""
    raw_amount = item.get("amount")
    amount: Mapping[str, Any] = raw_amount if isinstance(raw_amount, Mapping) else {}
    values = {**item, "value": amount.get("value", ""), "currency": amount.get("currency", "")}
    signing_string = ":".join(_text(values.get(name)) for name in HMAC_FIELDS)
    digest = hmac.new(binascii.unhexlify(hmac_key), signing_string.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _text(value: Any) -> str:
    # Adyen signs the values as they appear in the JSON: strings as is, numbers in decimal, absent as "".
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def subscription_token(stored_payment_method_id: str, shopper_reference: str) -> str:
    """Our subscription token: Adyen's stored payment method id plus the shopper it belongs to.

    Adyen looks stored methods up and deletes them only together with the shopperReference, so the
    token carries both (base64url keeps any reference safe in a URL path segment)."""
    encoded = base64.urlsafe_b64encode(shopper_reference.encode("utf-8")).decode("ascii").rstrip("=")
    return f"{stored_payment_method_id}{TOKEN_SEPARATOR}{encoded}"


def parse_subscription_token(token: str) -> tuple[str, str | None]:
    """(storedPaymentMethodId, shopperReference or None) from our token or from a bare Adyen id."""
    stored_id, separator, encoded = token.partition(TOKEN_SEPARATOR)
    if not separator:
        return token, None
    try:
        reference = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return token, None
    return stored_id, reference


def is_payment_link_id(identifier: str) -> bool:
    """Adyen payment link ids are "PL" + 16 characters; pspReferences are 16 characters."""
    return identifier.startswith("PL") and len(identifier) == 18


def is_test_mode(env: Mapping[str, str]) -> bool:
    """ADYEN_IS_TEST, true unless set to false: a forgotten variable must never reach the live platform."""
    flag = (env.get("ADYEN_IS_TEST") or "true").strip().lower()
    if flag not in {"true", "false", "1", "0", "yes", "no"}:
        raise ConfigurationError("ADYEN_IS_TEST must be true or false")
    return flag in {"true", "1", "yes"}


def base_url_from(env: Mapping[str, str]) -> str:
    """The Checkout API base: ADYEN_BASE_URL, else test or live (ADYEN_LIVE_URL prefix or URL) per ADYEN_IS_TEST."""
    override = (env.get("ADYEN_BASE_URL") or "").strip()
    if override:
        if not override.startswith(("http://", "https://")):
            raise ConfigurationError("ADYEN_BASE_URL must be an http(s) URL")
        return override.rstrip("/")
    if is_test_mode(env):
        return TEST_BASE_URL
    live = (env.get("ADYEN_LIVE_URL") or "").strip()
    if not live:
        raise ConfigurationError("ADYEN_LIVE_URL is required when ADYEN_IS_TEST is false")
    if live.startswith("https://"):
        return live.rstrip("/")
    if not live.replace("-", "").isalnum():
        raise ConfigurationError("ADYEN_LIVE_URL must be the live URL prefix or an https URL")
    return LIVE_BASE_URL.format(prefix=live)


def build(settings: Settings, transport: Transport | None = None) -> ProviderAdapter:
    """The Adyen adapter for this environment."""
    env = settings.provider_env
    hmac_key = env.get("ADYEN_HMAC_KEY", "").strip()
    try:
        binascii.unhexlify(hmac_key)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError("ADYEN_HMAC_KEY must be the hexadecimal key shown in the Customer Area") from exc
    return AdyenAdapter(
        base_url=base_url_from(env),
        api_key=env.get("ADYEN_PRIVATE_KEY", ""),
        merchant_account=env.get("ADYEN_MERCHANT_ACCOUNT", ""),
        hmac_key=hmac_key,
        is_test=is_test_mode(env),
        return_url=settings.public_url,
        timeout_seconds=settings.provider_timeout_seconds,
        transport=transport,
    )


@dataclass(frozen=True)
class _SentRequest:
    """A creating request kept so that a lost answer can be asked for again with the same key."""

    path: str
    body: dict[str, Any]
    kind: str
    shopper_reference: str | None
    sent_at: float


class AdyenAdapter(ProviderAdapter):
    """Adyen Checkout API v71 behind the common adapter interface."""

    name = "adyen"
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        merchant_account: str,
        hmac_key: str,
        is_test: bool,
        return_url: str,
        timeout_seconds: float,
        transport: Transport | None = None,
    ) -> None:
        self._client = provider_client(
            base_url,
            timeout_seconds,
            headers={API_KEY_HEADER: api_key, "Content-Type": "application/json"},
            transport=transport,
        )
        self._merchant_account = merchant_account
        self._hmac_key = hmac_key
        self._is_test = is_test
        self._return_url = return_url
        self._sent: OrderedDict[str, _SentRequest] = OrderedDict()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Validate the providerData each operation needs before anything is stored."""
        if isinstance(request, RefundRequest):
            if is_payment_link_id(request.payment_id):
                _string(request.provider_data, "pspReference", "a payment link's refund needs the payment's")
            return
        if operation is Operation.PAY:
            _card_fields(request.provider_data, "providerData")
        elif operation is Operation.SUBSCRIPTION_START:
            method = request.provider_data.get("paymentMethod")
            if not isinstance(method, Mapping):
                raise InvalidProviderData(
                    "providerData.paymentMethod with the encrypted card fields is required",
                    field="providerData.paymentMethod",
                )
            _card_fields(method, "providerData.paymentMethod")
            _shopper_reference(request.provider_data)
        elif operation is Operation.SUBSCRIPTION_PAY:
            token = request.subscription.token if request.subscription else None
            if not token:
                raise InvalidProviderData("subscriptionInfo.token is required", field="subscriptionInfo.token")
            _, from_token = parse_subscription_token(token)
            if from_token is None or "shopperReference" in request.provider_data:
                given = _shopper_reference(request.provider_data)
                if from_token is not None and given != from_token:
                    raise InvalidProviderData(
                        "providerData.shopperReference is not the shopper of this subscription token",
                        field="providerData.shopperReference",
                    )

    async def pay(self, request: PayRequest) -> PayResult:
        """A card payment with client-side-encrypted card fields."""
        card = {name: request.provider_data[name] for name in ENCRYPTED_CARD_FIELDS}
        body = {
            **self._payment_body(request),
            "paymentMethod": {"type": "scheme", **card},
            "shopperInteraction": "Ecommerce",
        }
        return await self._create("/payments", body, request.idempotency_key, "payment", None)

    async def start_subscription(self, request: PayRequest) -> PayResult:
        """The first payment of a merchant-managed subscription, storing the card for later charges."""
        shopper = _shopper_reference(request.provider_data)
        method = request.provider_data["paymentMethod"]
        body = {
            **self._payment_body(request),
            "paymentMethod": {"type": "scheme", **{name: method[name] for name in ENCRYPTED_CARD_FIELDS}},
            "shopperReference": shopper,
            "storePaymentMethod": True,
            "shopperInteraction": "Ecommerce",
            "recurringProcessingModel": "Subscription",
        }
        return await self._create("/payments", body, request.idempotency_key, "subscription", shopper)

    async def pay_subscription(self, request: PayRequest) -> PayResult:
        """A merchant-initiated charge of the stored card."""
        token = request.subscription.token if request.subscription else None
        if not token:
            raise InvalidProviderData("subscriptionInfo.token is required", field="subscriptionInfo.token")
        stored_id, shopper = parse_subscription_token(token)
        shopper = shopper or _shopper_reference(request.provider_data)
        body = {
            **self._payment_body(request),
            "paymentMethod": {"type": "scheme", "storedPaymentMethodId": stored_id},
            "shopperReference": shopper,
            "shopperInteraction": "ContAuth",
            "recurringProcessingModel": "Subscription",
        }
        return await self._create("/payments", body, request.idempotency_key, "subscription", shopper)

    async def pay_by_link(self, request: PayRequest) -> PayResult:
        """A payment link: Adyen's hosted page for this amount, shared with the payer."""
        body: dict[str, Any] = {
            "merchantAccount": self._merchant_account,
            "reference": request.shop_transaction_id,
            "amount": {"value": request.amount, "currency": request.currency},
        }
        if request.success_redirect_url:
            body["returnUrl"] = request.success_redirect_url
        return await self._create("/paymentLinks", body, request.idempotency_key, "link", None)

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Ask Adyen to refund; it answers `received` and the REFUND notification brings the outcome."""
        psp = request.payment_id
        if is_payment_link_id(psp):
            psp = str(request.provider_data["pspReference"])
        path = f"/payments/{path_segment(psp)}/refunds"
        body = {
            "merchantAccount": self._merchant_account,
            "amount": {"value": request.amount, "currency": request.currency},
            # Our key doubles as the refund's merchant reference: it finds the refund in the Customer Area.
            "reference": request.idempotency_key,
        }
        self._remember(request.idempotency_key, _SentRequest(path, body, "refund", None, time.time()))
        return _refund_result(await self._post(path, body, request.idempotency_key))

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Only payment links can be looked up at Adyen; payments are settled by their notifications."""
        if not is_payment_link_id(payment_id):
            raise NotSupported("Adyen has no payment lookup: the AUTHORISATION notification settles this payment")
        link = json_body(await send(self._client, "GET", f"/paymentLinks/{path_segment(payment_id)}"))
        return _link_lookup(link)

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Ask again with the same Idempotency-Key: Adyen answers what it did the first time, once only."""
        sent = self._recall(idempotency_key)
        if sent is None:
            raise OutcomeUnknown("Adyen has no payment lookup and the request is no longer known here")
        answer = await self._post(sent.path, sent.body, idempotency_key)
        if sent.kind == "link":
            return _link_lookup(answer)
        result = _pay_result(answer, sent.kind, sent.shopper_reference)
        assert result.payment_id is not None
        return PaymentLookup(
            status=result.result.status,
            payment_id=result.payment_id,
            shop_transaction_id=shop_transaction_id,
            amount=int(sent.body["amount"]["value"]),
            subscription_token=result.subscription_token,
            metadata=result.metadata,
        )

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """A refund whose answer was lost is asked for again with its key; Adyen has no refund lookup."""
        sent = self._recall(idempotency_key) if idempotency_key and refund_id is None else None
        if sent is None:
            raise NotSupported("Adyen has no refund lookup: the REFUND notification settles this refund")
        return _refund_result(await self._post(sent.path, sent.body, idempotency_key))

    async def subscription_status(self, token: str) -> SubscriptionLookup:
        """ACTIVE while Adyen still holds the stored card for the shopper, UNKNOWN otherwise."""
        stored_id, shopper = parse_subscription_token(token)
        if shopper is None:
            # A bare Adyen id (issued by the older PGM) cannot be looked up without its shopper.
            return SubscriptionLookup(SubscriptionState.UNKNOWN, token, {"reason": "no shopperReference in the token"})
        params = {"shopperReference": shopper, "merchantAccount": self._merchant_account}
        found = json_body(await send(self._client, "GET", "/storedPaymentMethods", params=params))
        methods = found.get("storedPaymentMethods")
        for method in methods if isinstance(methods, list) else []:
            if isinstance(method, Mapping) and method.get("id") == stored_id:
                details = {
                    key: method[key] for key in ("brand", "lastFour", "expiryMonth", "expiryYear") if key in method
                }
                return SubscriptionLookup(SubscriptionState.ACTIVE, token, details)
        return SubscriptionLookup(SubscriptionState.UNKNOWN, token)

    async def expire_subscription(self, token: str, shop_transaction_id: str | None) -> SubscriptionLookup:
        """Delete the stored card; a bare Adyen id takes the shopperReference from `?shopTransactionId=`."""
        stored_id, shopper = parse_subscription_token(token)
        shopper = shopper or shop_transaction_id
        if not shopper:
            raise ProviderRejected("this token needs its shopperReference: pass it as ?shopTransactionId=")
        params = {"shopperReference": shopper, "merchantAccount": self._merchant_account}
        response = await send(self._client, "DELETE", f"/storedPaymentMethods/{path_segment(stored_id)}", params=params)
        if response.status_code != 204:
            json_body(response)  # raises for 4xx/5xx; any other 2xx is still a deletion
        return SubscriptionLookup(SubscriptionState.EXPIRED, token)

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Verify every item's HMAC (and the live flag) and read what each says."""
        if callback.method != "POST":
            raise InvalidCallback("Adyen notifications are POSTed")
        try:
            document = json.loads(callback.body)
            items = [entry["NotificationRequestItem"] for entry in document["notificationItems"]]
            live = str(document.get("live", "")).lower()
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCallback("the body is not an Adyen notification") from exc
        if not items or not all(isinstance(item, dict) for item in items):
            raise InvalidCallback("the notification has no items")
        if live != ("false" if self._is_test else "true"):
            # A test notification must never settle a live payment, nor the reverse.
            raise InvalidCallback(f"a notification with live={live or 'missing'} does not belong to this environment")
        notifications = []
        for item in items:
            self._verify(item)
            notification = _notification(item)
            if notification is not None:
                notifications.append(notification)
        return notifications

    def callback_answer(self) -> CallbackAnswer:
        """Adyen expects `[accepted]` (any 2xx stops its retries)."""
        return CallbackAnswer(200, ACKNOWLEDGEMENT, "text/plain")

    def _verify(self, item: Mapping[str, Any]) -> None:
        additional = item.get("additionalData")
        signature = additional.get("hmacSignature") if isinstance(additional, Mapping) else None
        if not isinstance(signature, str) or not signature:
            raise InvalidCallback("the notification item has no hmacSignature")
        if item.get("merchantAccountCode") != self._merchant_account:
            raise InvalidCallback("the notification is for another merchant account")
        try:
            expected = notification_signature(item, self._hmac_key)
        except (TypeError, AttributeError) as exc:
            raise InvalidCallback("the notification item is malformed") from exc
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise InvalidCallback("the HMAC signature does not match")

    def _payment_body(self, request: PayRequest) -> dict[str, Any]:
        return {
            "merchantAccount": self._merchant_account,
            "reference": request.shop_transaction_id,
            "amount": {"value": request.amount, "currency": request.currency},
            # Where Adyen sends the shopper back after 3-D Secure or a redirect.
            "returnUrl": request.success_redirect_url or request.failure_redirect_url or self._return_url,
            "channel": "Web",
        }

    async def _create(
        self, path: str, body: dict[str, Any], key: str, kind: str, shopper_reference: str | None
    ) -> PayResult:
        self._remember(key, _SentRequest(path, body, kind, shopper_reference, time.time()))
        answer = await self._post(path, body, key)
        if kind == "link":
            return _link_result(answer)
        return _pay_result(answer, kind, shopper_reference)

    async def _post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        response = await send(self._client, "POST", path, json=body, headers={IDEMPOTENCY_HEADER: key})
        if response.status_code == 422 and _error_code(response) == IN_PROGRESS_ERROR_CODE:
            # The same key is still being processed at Adyen: the outcome is not known yet.
            raise OutcomeUnknown("Adyen is still processing the request with this idempotency key")
        return json_body(response)

    def _remember(self, key: str, sent: _SentRequest) -> None:
        self._sent[key] = sent
        self._sent.move_to_end(key)
        while len(self._sent) > REPLAY_MAX_ENTRIES:
            self._sent.popitem(last=False)

    def _recall(self, key: str) -> _SentRequest | None:
        sent = self._sent.get(key)
        if sent is None or time.time() - sent.sent_at > REPLAY_TTL_SECONDS:
            return None
        return sent


def _card_fields(data: Mapping[str, Any], where: str) -> None:
    for name in ENCRYPTED_CARD_FIELDS:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidProviderData(
                f"{where}.{name} is required (the client-side-encrypted card field)", field=f"{where}.{name}"
            )


def _string(data: Mapping[str, Any], name: str, why: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidProviderData(f"providerData.{name} is required: {why} {name}", field=f"providerData.{name}")
    return value


def _shopper_reference(data: Mapping[str, Any]) -> str:
    value = data.get("shopperReference")
    if (
        not isinstance(value, str)
        or len(value.strip()) < SHOPPER_REFERENCE_MIN_LENGTH
        or len(value.encode("utf-8")) > SHOPPER_REFERENCE_MAX_BYTES
    ):
        raise InvalidProviderData(
            f"providerData.shopperReference is required: {SHOPPER_REFERENCE_MIN_LENGTH} to "
            f"{SHOPPER_REFERENCE_MAX_BYTES} bytes identifying the shopper",
            field="providerData.shopperReference",
        )
    return value


def _error_code(response: Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("errorCode")) if isinstance(body, dict) else None


def _pay_result(answer: Mapping[str, Any], kind: str, shopper_reference: str | None) -> PayResult:
    code = answer.get("resultCode")
    psp = answer.get("pspReference")
    status = RESULT_CODE_STATUS.get(str(code))
    if status is None or not isinstance(psp, str) or not psp:
        raise OutcomeUnknown("Adyen answered a payment without a pspReference or a known resultCode")
    action = answer.get("action") if isinstance(answer.get("action"), Mapping) else None
    redirect = action.get("url") if action and action.get("type") == "redirect" else None
    if status is Status.ACCEPTED:
        result = PayResultCode.OK
    elif status is Status.FAILED:
        result = PayResultCode.KO
    elif isinstance(redirect, str):
        result = PayResultCode.REDIRECT_TO_URL
    else:
        result = PayResultCode.PENDING
    metadata: dict[str, Any] = {"resultCode": code}
    if action and not redirect:
        # 3-D Secure 2 actions are handled by Adyen's client components, which need the action object.
        metadata["action"] = dict(action)
    token = None
    if kind == "subscription" and shopper_reference and status is not Status.FAILED:
        stored_id = _stored_payment_method_id(answer)
        token = subscription_token(stored_id, shopper_reference) if stored_id else None
    return PayResult(
        result=result,
        description=_describe(result, answer.get("refusalReason")),
        payment_id=psp,
        redirect_url=redirect if isinstance(redirect, str) else None,
        subscription_token=token,
        metadata=metadata,
    )


def _stored_payment_method_id(answer: Mapping[str, Any]) -> str | None:
    additional = answer.get("additionalData")
    if not isinstance(additional, Mapping):
        return None
    # Current accounts report tokenization.*; older ones the recurring.* name of the same token.
    for key in ("tokenization.storedPaymentMethodId", "recurring.recurringDetailReference"):
        value = additional.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _describe(result: PayResultCode, refusal: Any) -> str:
    if result is PayResultCode.KO:
        return f"Adyen refused the payment: {refusal}" if isinstance(refusal, str) and refusal else "Adyen refused"
    return {
        PayResultCode.OK: "Adyen authorised the payment",
        PayResultCode.PENDING: "Adyen received the payment; its outcome comes with a notification",
        PayResultCode.REDIRECT_TO_URL: "The shopper must complete the payment on the page Adyen redirects to",
    }[result]


def _link_result(link: Mapping[str, Any]) -> PayResult:
    lookup = _link_lookup(link)
    url = link.get("url")
    if not isinstance(url, str) or not url:
        raise OutcomeUnknown("Adyen answered a payment link without its url")
    return PayResult(
        result=PayResultCode.PENDING if lookup.status is Status.PENDING else PayResultCode.OK,
        description="Adyen created the payment link; the payment settles when the shopper pays",
        payment_id=lookup.payment_id,
        link=url,
        metadata=lookup.metadata,
    )


def _link_lookup(link: Mapping[str, Any]) -> PaymentLookup:
    status = PAYMENT_LINK_STATUS.get(str(link.get("status")))
    identifier = link.get("id")
    if status is None or not isinstance(identifier, str) or not identifier:
        raise OutcomeUnknown("Adyen answered a payment link without an id or a known status")
    amount = link.get("amount")
    value = amount.get("value") if isinstance(amount, Mapping) else None
    return PaymentLookup(
        status=status,
        payment_id=identifier,
        shop_transaction_id=link.get("reference") if isinstance(link.get("reference"), str) else None,
        amount=value if isinstance(value, int) else None,
        metadata={"linkStatus": link["status"], "expiresAt": link.get("expiresAt")},
    )


def _refund_result(answer: Mapping[str, Any]) -> RefundResult:
    psp = answer.get("pspReference")
    if answer.get("status") != "received" or not isinstance(psp, str) or not psp:
        raise OutcomeUnknown("Adyen answered a refund without a pspReference or status received")
    return RefundResult(
        status=Status.PENDING,
        refund_id=psp,
        description="Adyen received the refund; its outcome comes with the REFUND notification",
    )


def _notification(item: Mapping[str, Any]) -> Notification | None:
    event = str(item.get("eventCode"))
    rule = EVENT_RULES.get(event)
    psp = item.get("pspReference")
    if rule is None or not isinstance(psp, str) or not psp:
        return None
    success = _text(item.get("success")).lower() == "true"
    status = rule.on_success if success else rule.on_failure
    if status is None:
        # e.g. REFUND_FAILED with success "false": nothing happened to the refund.
        return None
    original = item.get("originalReference") if isinstance(item.get("originalReference"), str) else None
    # Adyen sends duplicates with the same code, reference and success flag: that triple is the event.
    event_id = f"{event}:{psp}:{original or ''}:{'true' if success else 'false'}"
    if rule.subject is Subject.REFUND:
        amount = item.get("amount")
        value = amount.get("value") if isinstance(amount, Mapping) else None
        # The amount lets the PGM record a refund made in Adyen's Customer Area, which it never asked for.
        minor = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
        return Notification(event_id, Subject.REFUND, payment_id=original, status=status, refund_id=psp, amount=minor)
    payment_id = psp if event in PAYMENT_EVENTS_ON_OWN_REFERENCE else original
    additional = item.get("additionalData")
    link_id = additional.get("paymentLinkId") if isinstance(additional, Mapping) else None
    if isinstance(link_id, str) and link_id:
        if not success:
            # A refused attempt leaves the link open: the shopper may pay with another card.
            return None
        # A payment made through a link is known to us by the link's id.
        payment_id = link_id
    if not payment_id:
        return None
    # Signed terms: enough to adopt a payment made before the switch (Adyen has no payment lookup).
    terms = item.get("amount")
    value = terms.get("value") if isinstance(terms, Mapping) else None
    currency = terms.get("currency") if isinstance(terms, Mapping) else None
    reference = item.get("merchantReference")
    return Notification(
        event_id,
        Subject.PAYMENT,
        payment_id=payment_id,
        status=status,
        amount=value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None,
        currency=currency if isinstance(currency, str) and len(currency) == 3 else None,
        shop_transaction_id=reference if isinstance(reference, str) and reference else None,
    )
