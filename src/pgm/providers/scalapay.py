"""Adapter for Scalapay (Online API v2, pay in instalments): Scalapay has no Python SDK.

What Scalapay offers and how it maps here (docs/providers/scalapay.md):
* pay: an order (`POST /v2/orders`), answered with its `token` and the `checkoutUrl` the payer is sent
  to. The answer is always REDIRECT_TO_URL;
* capture on approval: once the payer approves the instalment plan the order is `authorized`, and
  Scalapay charges nothing until the merchant captures it (`POST /v2/payments/capture`); an order left
  uncaptured expires. Whenever the PGM reads an authorized order (the callback, /status, /check,
  reconciliation) it captures it, so the payment becomes ACCEPTED only once Scalapay has charged;
* status: `GET /v2/payments/{token}`;
* refunds: `POST /v2/payments/{token}/refund`, partial or total, synchronous;
* callbacks: Scalapay POSTs JSON `{orderToken, status, merchantReference, ...}` signed with
  `x-scalapay-hmac-v1` = hex HMAC-SHA256(API key, `V1:{x-scalapay-timestamp}:{raw body}`). A callback
  that is not signed so, or is stale, is refused; a signed one is still only a hint: the PGM reads the
  order back (and captures it when it is authorized).

The order token is the payment id. A request whose answer was lost is asked again with the same
`Idempotency-Key` (Scalapay answers it with what it did the first time), see `find_payment`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

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
)
from pgm.providers.http import json_body, path_segment, provider_client, send

REQUIRED_VARIABLES: tuple[str, ...] = (
    "SCALAPAY_BASE_PATH",
    "SCALAPAY_API_KEY",
    "SCALAPAY_SUCCESS_REDIRECT_URL",
    "SCALAPAY_FAILURE_REDIRECT_URL",
)

# Mia's SCALAPAY_BASE_PATH names an environment or gives the URL itself.
ENVIRONMENTS: dict[str, str] = {
    "integration": "https://integration.api.scalapay.com",
    "staging": "https://staging.api.scalapay.com",
    "production": "https://api.scalapay.com",
}
SANDBOX_BASE_URL = ENVIRONMENTS["integration"]
PAYMENT_METHOD = "scalapay"
SIGNATURE_HEADER = "x-scalapay-hmac-v1"
TIMESTAMP_HEADER = "x-scalapay-timestamp"
# A signed callback older (or newer) than this is refused: a captured one cannot be replayed for long.
CALLBACK_TOLERANCE_SECONDS = 300
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_STATUS_WORD = re.compile(r"^[a-z_]{1,40}$")
TEXT_MAX_LENGTH = 255
MAX_ITEMS = 100
# Requests remembered for asking again with their key after a lost answer (one process's recent ones).
_REMEMBERED = 10_000

CAPABILITIES = Capabilities(
    operations=frozenset({Operation.PAY, Operation.REFUND, Operation.STATUS, Operation.CALLBACK}),
    payment_methods=frozenset({PAYMENT_METHOD}),
    currencies=frozenset({"EUR"}),
    # Scalapay has one method: `/v3/scalapay/pay` means `/v3/scalapay/scalapay/pay`.
    default_payment_method=PAYMENT_METHOD,
)

# The order's `status` (Scalapay's "Get Payment Info") → our status. Mia's mapping, except that a
# refunded order stays ACCEPTED: the PGM records refunds on their own (a payment is not undone by a
# refund), and `refunded_amount` says how much went back. `authorized`/`approved` are captured first.
PAYMENT_STATUS: dict[str, Status] = {
    "created": Status.PENDING,
    "pending": Status.PENDING,
    "authorized": Status.PENDING,
    "approved": Status.PENDING,
    "charged": Status.ACCEPTED,
    "partially_refunded": Status.ACCEPTED,
    "refunded": Status.ACCEPTED,
    "refunded_not_charged": Status.FAILED,
    "expired": Status.FAILED,
    "declined": Status.FAILED,
    "voided": Status.FAILED,
}
NEEDS_CAPTURE = frozenset({"authorized", "approved"})
# The capture answer's `status`.
CAPTURE_STATUS: dict[str, Status] = {"APPROVED": Status.ACCEPTED, "DECLINED": Status.FAILED}


@dataclass(frozen=True)
class ScalapayConfig:
    """Everything the adapter needs, read from SCALAPAY_* variables."""

    base_url: str
    api_key: str
    success_redirect_url: str
    failure_redirect_url: str
    timeout_seconds: float


def to_decimal(amount: int) -> str:
    """Minor units → Scalapay's decimal string (`1200` → `"12.00"`)."""
    return f"{Decimal(amount) / 100:.2f}"


def to_minor(value: object) -> int | None:
    """Scalapay's decimal amount (string or number) → minor units; None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        cents = Decimal(str(value)) * 100
    except InvalidOperation:
        return None
    if not cents.is_finite() or cents != cents.to_integral_value():
        return None
    return int(cents)


def signature(api_key: str, timestamp: str, body: bytes) -> str:
    """Scalapay's webhook signature: hex HMAC-SHA256 keyed by the API key over `V1:{timestamp}:{body}`."""
    message = b"V1:" + timestamp.encode() + b":" + body
    return hmac.new(api_key.encode(), message, hashlib.sha256).hexdigest()


class ScalapayAdapter(ProviderAdapter):
    """Scalapay behind the common adapter interface."""

    name = "scalapay"
    capabilities = CAPABILITIES

    def __init__(self, config: ScalapayConfig, *, transport: Transport | None = None) -> None:
        self._config = config
        self._client = provider_client(
            config.base_url,
            config.timeout_seconds,
            headers={"Authorization": f"Bearer {config.api_key}", "Accept": "application/json"},
            transport=transport,
        )
        self._orders: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @property
    def base_url(self) -> str:
        """The Scalapay API host this adapter calls (from SCALAPAY_BASE_PATH)."""
        return self._config.base_url

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Refuse what Scalapay would refuse, before anything is stored."""
        if isinstance(request, PayRequest):
            _order_fields(request.provider_data, request.amount)

    async def pay(self, request: PayRequest) -> PayResult:
        """An order; the payer approves the instalment plan on Scalapay's checkout page."""
        body: dict[str, Any] = {
            "totalAmount": {"amount": to_decimal(request.amount), "currency": request.currency},
            "merchant": {
                "redirectConfirmUrl": request.success_redirect_url or self._config.success_redirect_url,
                "redirectCancelUrl": request.failure_redirect_url or self._config.failure_redirect_url,
            },
            "merchantReference": request.shop_transaction_id,
            "type": "online",
            "product": "pay-in-3",
            **_order_fields(request.provider_data, request.amount),
        }
        self._remember(request.idempotency_key, body)
        return self._order_answer(await self._create(body, request.idempotency_key))

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Read the order back; an order the payer approved is captured first (Scalapay charges then)."""
        if not _TOKEN.match(payment_id):
            raise ProviderRejected(f"{payment_id[:80]!r} is not a Scalapay order token")
        payment = await self._payment(payment_id)
        raw_status = str(payment.get("status", "")).lower()
        if raw_status in NEEDS_CAPTURE:
            captured = await self._capture(payment_id, _merchant_reference(payment))
            if captured is Status.FAILED:
                return _lookup(payment, payment_id, Status.FAILED)
            payment = await self._payment(payment_id)
        return _lookup(payment, payment_id, None)

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Ask for the order again with the key it was sent with: Scalapay answers a repeated key with the
        order it created the first time. A request this process no longer remembers is None: an order
        nobody captures is never charged and expires, so treating it as absent loses no money."""
        body = self._orders.get(idempotency_key)
        if body is None:
            return None
        answer = self._order_answer(await self._create(body, idempotency_key))
        assert answer.payment_id is not None
        return await self.payment_status(answer.payment_id)

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of a charged order; the key travels as the refund's merchantReference."""
        if not _TOKEN.match(request.payment_id):
            raise ProviderRejected(f"{request.payment_id[:80]!r} is not a Scalapay order token")
        body = {
            "refundAmount": {"amount": to_decimal(request.amount), "currency": request.currency},
            "merchantReference": request.idempotency_key,
        }
        response = await send(
            self._client,
            "POST",
            f"/v2/payments/{path_segment(request.payment_id)}/refund",
            json=body,
            headers={"Idempotency-Key": request.idempotency_key},
        )
        answer = json_body(response)
        refund_token = answer.get("refundToken")
        if not isinstance(refund_token, str) or not refund_token:
            raise OutcomeUnknown("Scalapay answered a refund without its refundToken")
        return RefundResult(Status.ACCEPTED, refund_token, "Scalapay refunded the amount")

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """A refund in the order's list of refunds, by its token or by the key sent as merchantReference."""
        if not _TOKEN.match(payment_id):
            raise ProviderRejected(f"{payment_id[:80]!r} is not a Scalapay order token")
        for refund in _refunds(await self._payment(payment_id)):
            if (refund_id and refund.get("refundToken") == refund_id) or (
                idempotency_key and refund.get("merchantReference") == idempotency_key
            ):
                return RefundResult(Status.ACCEPTED, str(refund.get("refundToken")), "Scalapay's refund")
        return None

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Verify Scalapay's HMAC over the raw body and read which order it is about."""
        if callback.method != "POST":
            raise InvalidCallback("Scalapay callbacks are POSTed")
        headers = {key.lower(): value for key, value in callback.headers.items()}
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        given = headers.get(SIGNATURE_HEADER, "")
        if not timestamp.isdigit() or len(timestamp) > 13 or not given:
            raise InvalidCallback("the callback is not signed the way Scalapay signs")
        seconds = int(timestamp) / 1000 if len(timestamp) == 13 else int(timestamp)
        if abs(callback.received_at - seconds) > CALLBACK_TOLERANCE_SECONDS:
            raise InvalidCallback("the callback's timestamp is stale")
        if not hmac.compare_digest(signature(self._config.api_key, timestamp, callback.body), given.lower()):
            raise InvalidCallback("the callback's signature does not match")
        try:
            document = json.loads(callback.body)
        except ValueError as exc:
            raise InvalidCallback("the body is not a Scalapay callback") from exc
        token = document.get("orderToken") if isinstance(document, dict) else None
        status = document.get("status") if isinstance(document, dict) else None
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise InvalidCallback("the callback names no usable orderToken")
        if not isinstance(status, str) or not _STATUS_WORD.match(status.lower()):
            raise InvalidCallback("the callback has no status")
        # A retry repeats the same body: order, status and the body's digest identify the event, so a
        # duplicate is recognised while two refunds (two bodies) are not mistaken for one.
        digest = hashlib.sha256(callback.body).hexdigest()[:16]
        return [Notification(f"{token}:{status.lower()}:{digest}", Subject.PAYMENT, payment_id=token, status=None)]

    def callback_answer(self) -> CallbackAnswer:
        """Any 2xx stops Scalapay's retries."""
        return CallbackAnswer(status_code=200, body=b"", media_type="text/plain")

    async def _create(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        response = await send(
            self._client, "POST", "/v2/orders", json=body, headers={"Idempotency-Key": idempotency_key}
        )
        return json_body(response)

    def _order_answer(self, answer: Mapping[str, Any]) -> PayResult:
        token, checkout = answer.get("token"), answer.get("checkoutUrl")
        if not isinstance(token, str) or not _TOKEN.match(token) or not isinstance(checkout, str) or not checkout:
            raise OutcomeUnknown("Scalapay answered an order without its token and checkoutUrl")
        return PayResult(
            result=PayResultCode.REDIRECT_TO_URL,
            description="The payer must approve the instalment plan on Scalapay's checkout",
            payment_id=token,
            redirect_url=checkout,
            redirect_url_mobile=checkout,
        )

    async def _payment(self, token: str) -> dict[str, Any]:
        response = await send(self._client, "GET", f"/v2/payments/{path_segment(token)}")
        if response.status_code == 404:
            raise ProviderRejected(f"Scalapay has no order {token}")
        return json_body(response)

    async def _capture(self, token: str, merchant_reference: str | None) -> Status:
        body: dict[str, Any] = {"token": token}
        if merchant_reference:
            body["merchantReference"] = merchant_reference
        # Capturing twice is harmless with the same key: Scalapay answers what it did the first time.
        response = await send(
            self._client, "POST", "/v2/payments/capture", json=body, headers={"Idempotency-Key": f"capture-{token}"}
        )
        answer = json_body(response)
        status = CAPTURE_STATUS.get(str(answer.get("status", "")).upper())
        if status is None:
            raise OutcomeUnknown(f"Scalapay answered a capture with status {str(answer.get('status'))[:40]!r}")
        return status

    def _remember(self, key: str, body: dict[str, Any]) -> None:
        self._orders[key] = body
        self._orders.move_to_end(key)
        while len(self._orders) > _REMEMBERED:
            self._orders.popitem(last=False)


def build(settings: Settings, transport: Transport | None = None) -> ProviderAdapter:
    """The Scalapay adapter from SCALAPAY_* variables; raise ConfigurationError naming a bad one."""
    env = settings.provider_env
    given = env.get("SCALAPAY_BASE_PATH", "").strip().rstrip("/")
    base_url = ENVIRONMENTS.get(given.lower(), given)
    if not base_url.startswith(("http://", "https://")) or "?" in base_url or "#" in base_url:
        raise ConfigurationError(
            f"SCALAPAY_BASE_PATH must be integration, staging, production or an http(s) URL, e.g. {SANDBOX_BASE_URL}"
        )
    if base_url.endswith("/v2"):
        raise ConfigurationError(f"SCALAPAY_BASE_PATH is the API host only, e.g. {SANDBOX_BASE_URL}: the PGM adds /v2")
    api_key = env.get("SCALAPAY_API_KEY", "").strip()
    if not api_key:
        raise ConfigurationError("SCALAPAY_API_KEY is empty")
    redirects = {}
    for variable in ("SCALAPAY_SUCCESS_REDIRECT_URL", "SCALAPAY_FAILURE_REDIRECT_URL"):
        value = env.get(variable, "").strip()
        if not value.startswith(("http://", "https://")):
            raise ConfigurationError(f"{variable} must be an http(s) URL the payer returns to")
        redirects[variable] = value
    return ScalapayAdapter(
        ScalapayConfig(
            base_url=base_url,
            api_key=api_key,
            success_redirect_url=redirects["SCALAPAY_SUCCESS_REDIRECT_URL"],
            failure_redirect_url=redirects["SCALAPAY_FAILURE_REDIRECT_URL"],
            timeout_seconds=settings.provider_timeout_seconds,
        ),
        transport=transport,
    )


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > TEXT_MAX_LENGTH:
        raise InvalidProviderData(
            f"providerData.{name} must be a text of 1 to {TEXT_MAX_LENGTH} characters", field=f"providerData.{name}"
        )
    return value.strip()


def _order_fields(provider_data: Mapping[str, Any], amount: int) -> dict[str, Any]:
    """The consumer, shipping address and items Scalapay's order needs; raise InvalidProviderData naming
    a bad field. Without items the order has one line of the whole amount (Scalapay needs one)."""
    consumer = provider_data.get("consumer")
    if not isinstance(consumer, Mapping):
        raise InvalidProviderData(
            "providerData.consumer {givenNames, surname} is required: Scalapay checks the payer",
            field="providerData.consumer",
        )
    fields: dict[str, Any] = {
        "consumer": {
            "givenNames": _text(consumer.get("givenNames"), "consumer.givenNames"),
            "surname": _text(consumer.get("surname"), "consumer.surname"),
            **{key: _text(consumer[key], f"consumer.{key}") for key in ("email", "phoneNumber") if key in consumer},
        }
    }
    shipping = provider_data.get("shipping")
    if shipping is not None:
        if not isinstance(shipping, Mapping):
            raise InvalidProviderData("providerData.shipping must be an object", field="providerData.shipping")
        # Mia's docs spell the postcode both ways; Scalapay's is `postcode`.
        postcode = shipping.get("postcode", shipping.get("postCode"))
        fields["shipping"] = {
            "countryCode": _text(shipping.get("countryCode"), "shipping.countryCode"),
            "name": _text(shipping.get("name"), "shipping.name"),
            "postcode": _text(postcode, "shipping.postcode"),
            "line1": _text(shipping.get("line1"), "shipping.line1"),
        }
    items = provider_data.get("items")
    if items is None:
        fields["items"] = [
            {"quantity": 1, "price": {"amount": to_decimal(amount), "currency": "EUR"}, "name": "Order", "sku": "order"}
        ]
    else:
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
            raise InvalidProviderData(
                f"providerData.items must be a list of 1 to {MAX_ITEMS} items", field="providerData.items"
            )
        fields["items"] = [_item(item, index) for index, item in enumerate(items)]
    travel_date = provider_data.get("travelDate")
    if travel_date is not None:
        fields["travelDate"] = _text(travel_date, "travelDate")
    return fields


def _item(item: object, index: int) -> dict[str, Any]:
    name = f"items[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidProviderData(f"providerData.{name} must be an object", field=f"providerData.{name}")
    quantity = item.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 10_000:
        raise InvalidProviderData(
            f"providerData.{name}.quantity must be a whole number from 1 to 10000",
            field=f"providerData.{name}.quantity",
        )
    price = item.get("price")
    cents = to_minor(price.get("amount")) if isinstance(price, Mapping) else None
    if cents is None or cents < 0 or not isinstance(price, Mapping) or price.get("currency", "EUR") != "EUR":
        raise InvalidProviderData(
            f'providerData.{name}.price must be {{"amount": "12.50", "currency": "EUR"}}',
            field=f"providerData.{name}.price",
        )
    result: dict[str, Any] = {
        "quantity": quantity,
        "price": {"amount": to_decimal(cents), "currency": "EUR"},
        "name": _text(item.get("name"), f"{name}.name"),
    }
    for key in ("category", "sku"):
        if key in item:
            result[key] = _text(item[key], f"{name}.{key}")
    return result


def _merchant_reference(payment: Mapping[str, Any]) -> str | None:
    details = payment.get("orderDetails")
    reference = details.get("merchantReference") if isinstance(details, Mapping) else None
    reference = reference or payment.get("merchantReference")
    return reference if isinstance(reference, str) and reference else None


def _refunds(payment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    refunds = payment.get("refunds")
    return [refund for refund in refunds if isinstance(refund, Mapping)] if isinstance(refunds, list) else []


def _lookup(payment: Mapping[str, Any], token: str, status: Status | None) -> PaymentLookup:
    raw_status = str(payment.get("status", "")).lower()
    if status is None:
        status = PAYMENT_STATUS.get(raw_status)
    if status is None:
        # Mia's rule: a status it does not know is still pending (Scalapay adds intermediate ones).
        status = Status.PENDING
    total = payment.get("totalAmount")
    amount = to_minor(total.get("amount")) if isinstance(total, Mapping) else None
    refunds: list[tuple[str, int]] = []
    for refund in _refunds(payment):
        refund_amount = refund.get("amount")
        cents = to_minor(refund_amount.get("amount") if isinstance(refund_amount, Mapping) else refund_amount)
        if isinstance(refund.get("refundToken"), str) and cents is not None:
            refunds.append((str(refund["refundToken"]), cents))
    return PaymentLookup(
        status=status,
        payment_id=token,
        shop_transaction_id=_merchant_reference(payment),
        amount=amount,
        metadata={"scalapayStatus": raw_status[:40]},
        currency="EUR",
        refunded_amount=sum(cents for _, cents in refunds),
        payment_method=PAYMENT_METHOD,
        refunds=tuple(refunds),
    )
