"""Adapter for Fnmpay (card payments on Fnmpay's hosted page).

What the PGM uses of Fnmpay and how it maps here (docs/providers/fnmpay.md):
* pay: `POST /merchants/{merchantId}/payments` (a SALE or an AUTH), answered with the payment's id and
  the hosted page the payer is sent to (where Fnmpay runs 3-D Secure). The answer is REDIRECT_TO_URL,
  or KO when Fnmpay refuses the request;
* pay-by-link: `POST /merchants/{merchantId}/payment-links`, the same body, answered with a link the
  merchant hands to the payer;
* status: `GET /merchants/{merchantId}/payments/{paymentId}`; its `transactionCode` is the outcome;
* callbacks: Fnmpay POSTs `{eventId, paymentId, orderId, transactionCode}` signed with HMAC-SHA256 of
  the body under the API key (`X-Fnmpay-Signature`). A callback with a wrong signature is refused; a
  signed one is still only a hint: the PGM reads the payment back and trusts that answer;
* refunds: Mia's Fnmpay page documents none, so refunds answer 501, as every operation not offered.

Fnmpay takes no idempotency key: a payment whose answer was lost is found again by its `orderId` (the
shopTransactionId), see `find_payment`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    Subject,
)
from pgm.providers.http import json_body, path_segment, provider_client, send

REQUIRED_VARIABLES: tuple[str, ...] = ("FNMPAY_BASE_URL", "FNMPAY_API_KEY", "FNMPAY_MERCHANT_ID", "FNMPAY_SHOP_ID")

AUTH_HEADER = "X-Api-Key"
SIGNATURE_HEADER = "X-Fnmpay-Signature"
PAYMENT_METHOD = "credit-cards"
TRANSACTION_TYPES = frozenset({"SALE", "AUTH"})
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_TRANSACTION_CODE = re.compile(r"^[A-Za-z0-9]{1,8}$")
TEXT_MAX_LENGTH = 255
MAX_PRODUCTS = 100
# A callback larger than this is not Fnmpay's (its notifications are a handful of short fields).
MAX_CALLBACK_BYTES = 16_384

CAPABILITIES = Capabilities(
    operations=frozenset({Operation.PAY, Operation.PAY_BY_LINK, Operation.STATUS, Operation.CALLBACK}),
    payment_methods=frozenset({PAYMENT_METHOD}),
    currencies=frozenset({"EUR"}),
)

# Mia's Fnmpay page maps the payment's `transactionCode`: "00" → ACCEPTED, any other code → FAILED;
# no code yet (the payer has not finished on the hosted page) → PENDING.
ACCEPTED_CODE = "00"


def status_of(transaction_code: object) -> Status:
    """Our status for Fnmpay's transactionCode (None or empty: no outcome yet)."""
    if transaction_code is None or transaction_code == "":
        return Status.PENDING
    return Status.ACCEPTED if str(transaction_code) == ACCEPTED_CODE else Status.FAILED


# Optional providerData text fields Mia's page lists, sent to Fnmpay under the same name.
_TEXT_FIELDS = ("description", "walletId", "paymentToken", "createPaymentToken", "language")
_CUSTOMER_FIELDS = ("name", "lastname", "email", "phone", "company")
_ADDRESS_FIELDS = ("country", "city", "streetAddress1", "streetAddress2", "zip", "state")
_PRODUCT_FIELDS = ("productName", "quantity", "amount", "imageUrl", "discountType", "discountAmount")


@dataclass(frozen=True)
class FnmpayConfig:
    """Everything the adapter needs, read from FNMPAY_* variables."""

    base_url: str
    api_key: str
    merchant_id: str
    shop_id: str
    callback_url: str
    timeout_seconds: float


def signature(api_key: str, body: bytes) -> str:
    """Fnmpay's callback signature: hex HMAC-SHA256 of the raw body under the API key."""
    return hmac.new(api_key.encode("utf-8"), body, hashlib.sha256).hexdigest()


class FnmpayAdapter(ProviderAdapter):
    """Fnmpay behind the common adapter interface."""

    name = "fnmpay"
    capabilities = CAPABILITIES

    def __init__(self, config: FnmpayConfig, *, transport: Transport | None = None) -> None:
        self._config = config
        self._client = provider_client(
            f"{config.base_url}/merchants/{config.merchant_id}",
            config.timeout_seconds,
            headers={AUTH_HEADER: config.api_key, "Accept": "application/json"},
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Refuse what Fnmpay would refuse, before anything is stored."""
        if isinstance(request, RefundRequest):
            return
        if operation is Operation.PAY_BY_LINK and request.payment_method not in (PAYMENT_METHOD, "pay-by-link"):
            raise InvalidProviderData(f"paymentMethod must be {PAYMENT_METHOD} for Fnmpay", field="paymentMethod")
        if not request.success_redirect_url:
            raise InvalidProviderData(
                "successRedirectUrl is required: Fnmpay's payment page sends the payer back to it",
                field="successRedirectUrl",
            )
        self._payment_body(request)

    async def pay(self, request: PayRequest) -> PayResult:
        """A payment on Fnmpay's hosted page; the payer is redirected there."""
        answer = await self._create("/payments", request)
        redirect = answer.get("redirectUrl")
        if not isinstance(redirect, str) or not redirect.startswith(("http://", "https://")):
            raise OutcomeUnknown("Fnmpay answered a payment without its redirectUrl")
        return PayResult(
            result=PayResultCode.REDIRECT_TO_URL,
            description="The payer must pay on Fnmpay's page",
            payment_id=_payment_id(answer),
            redirect_url=redirect,
            redirect_url_mobile=redirect,
        )

    async def pay_by_link(self, request: PayRequest) -> PayResult:
        """A payment link; the payment settles when the payer pays through it."""
        self.check(Operation.PAY_BY_LINK, request)
        answer = await self._create("/payment-links", request)
        link = answer.get("linkUrl")
        if not isinstance(link, str) or not link.startswith(("http://", "https://")):
            raise OutcomeUnknown("Fnmpay answered a payment link without its linkUrl")
        return PayResult(
            result=PayResultCode.PENDING,
            description="The payment link was created; the payment settles when the payer pays",
            payment_id=_payment_id(answer),
            link=link,
        )

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Read the payment back: its transactionCode is the outcome."""
        if not _ID.match(payment_id):
            raise ProviderRejected(f"{payment_id[:80]!r} is not a Fnmpay payment id")
        response = await send(self._client, "GET", f"/payments/{path_segment(payment_id)}")
        if response.status_code == 404:
            raise ProviderRejected(f"Fnmpay has no payment {payment_id}")
        return _lookup(json_body(response), payment_id)

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Fnmpay takes no idempotency key: a payment whose answer was lost is found by its orderId
        (our shopTransactionId); None when Fnmpay has none."""
        response = await send(self._client, "GET", "/payments", params={"orderId": shop_transaction_id})
        payments = json_body(response).get("payments")
        if not isinstance(payments, list):
            raise OutcomeUnknown("Fnmpay answered a payment search without its list of payments")
        matching = [p for p in payments if isinstance(p, Mapping) and p.get("orderId") == shop_transaction_id]
        if not matching:
            return None
        payment_id = matching[-1].get("paymentId")
        if not isinstance(payment_id, str) or not _ID.match(payment_id):
            raise OutcomeUnknown("Fnmpay answered a payment without its paymentId")
        return _lookup(matching[-1], payment_id)

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Verify the callback's signature and read which payment it is about; its outcome is read back
        from Fnmpay, never taken from the callback."""
        if callback.method != "POST":
            raise InvalidCallback("Fnmpay callbacks are POSTed")
        if len(callback.body) > MAX_CALLBACK_BYTES:
            raise InvalidCallback("the body is too large for a Fnmpay callback")
        given = next((v for k, v in callback.headers.items() if k.lower() == SIGNATURE_HEADER.lower()), "")
        if not hmac.compare_digest(given.strip().lower(), signature(self._config.api_key, callback.body)):
            raise InvalidCallback(f"the callback's {SIGNATURE_HEADER} does not match its body")
        try:
            document = json.loads(callback.body)
        except ValueError as exc:
            raise InvalidCallback("the body is not JSON") from exc
        if not isinstance(document, dict):
            raise InvalidCallback("the body is not a Fnmpay callback")
        payment_id, event_id = document.get("paymentId"), document.get("eventId")
        if not isinstance(payment_id, str) or not _ID.match(payment_id):
            raise InvalidCallback("the callback names no usable paymentId")
        if not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
            raise InvalidCallback("the callback has no eventId")
        # Fnmpay retries a callback with the same eventId: that identifies a duplicate.
        return [Notification(event_id, Subject.PAYMENT, payment_id=payment_id, status=None)]

    def callback_answer(self) -> CallbackAnswer:
        """Any 2xx stops Fnmpay's retries; it reads no body."""
        return CallbackAnswer(status_code=200, body=b"", media_type="text/plain")

    async def _create(self, path: str, request: PayRequest) -> dict[str, Any]:
        response = await send(self._client, "POST", path, json=self._payment_body(request))
        return json_body(response)

    def _payment_body(self, request: PayRequest) -> dict[str, Any]:
        """Fnmpay's payment request; raise InvalidProviderData naming a bad providerData field.
        providerData.shopId and .callbackUrl win over FNMPAY_SHOP_ID and FNMPAY_CALLBACK_URL (Mia's rule)."""
        data = request.provider_data
        # Mia's page names the field transactionType in its text and transactionsType in its schema:
        # both spellings are accepted, the first wins.
        transaction_type = data.get("transactionType", data.get("transactionsType"))
        if transaction_type not in TRANSACTION_TYPES:
            raise InvalidProviderData(
                "providerData.transactionType is required: SALE or AUTH", field="providerData.transactionType"
            )
        shop_id = _text(data, "shopId") or self._config.shop_id
        callback_url = _url(data, "callbackUrl") or self._config.callback_url
        cancel_url = _url(data, "cancelUrl") or request.failure_redirect_url or request.success_redirect_url
        body: dict[str, Any] = {
            "shopId": shop_id,
            "transactionType": transaction_type,
            "amount": request.amount,
            "currency": request.currency,
            "orderId": request.shop_transaction_id,
            "successUrl": request.success_redirect_url,
            "cancelUrl": cancel_url,
            "callbackUrl": callback_url,
        }
        for name in _TEXT_FIELDS:
            value = _text(data, name)
            if value is not None:
                body[name] = value
        for name, fields in (("customer", _CUSTOMER_FIELDS), ("addressDetail", _ADDRESS_FIELDS)):
            if data.get(name) is not None:
                body[name] = _object(data[name], fields, f"providerData.{name}")
        products = data.get("products")
        if products is not None:
            if not isinstance(products, list) or len(products) > MAX_PRODUCTS:
                raise InvalidProviderData(
                    f"providerData.products must be a list of at most {MAX_PRODUCTS} products",
                    field="providerData.products",
                )
            body["products"] = [
                _object(p, _PRODUCT_FIELDS, f"providerData.products[{i}]") for i, p in enumerate(products)
            ]
        return body


def build(settings: Settings, transport: Transport | None = None) -> ProviderAdapter:
    """The Fnmpay adapter from FNMPAY_* variables; raise ConfigurationError naming a bad one."""
    env = settings.provider_env
    base_url = env.get("FNMPAY_BASE_URL", "").strip().rstrip("/")
    if not base_url.startswith(("http://", "https://")) or "?" in base_url or "#" in base_url:
        raise ConfigurationError("FNMPAY_BASE_URL must be an http(s) URL: Fnmpay's API host")
    api_key = env.get("FNMPAY_API_KEY", "").strip()
    if not api_key:
        raise ConfigurationError("FNMPAY_API_KEY is empty")
    merchant_id = env.get("FNMPAY_MERCHANT_ID", "").strip()
    if not _ID.match(merchant_id):
        raise ConfigurationError("FNMPAY_MERCHANT_ID must be Fnmpay's merchant id (letters, digits, - and _)")
    shop_id = env.get("FNMPAY_SHOP_ID", "").strip()
    if not shop_id or len(shop_id) > TEXT_MAX_LENGTH:
        raise ConfigurationError("FNMPAY_SHOP_ID must be Fnmpay's shop id")
    callback_url = env.get("FNMPAY_CALLBACK_URL", "").strip() or f"{settings.public_url}/v3/fnmpay/callback"
    if not callback_url.startswith(("http://", "https://")):
        raise ConfigurationError("FNMPAY_CALLBACK_URL must be an http(s) URL (unset: PGM_PUBLIC_URL's callback)")
    return FnmpayAdapter(
        FnmpayConfig(
            base_url=base_url,
            api_key=api_key,
            merchant_id=merchant_id,
            shop_id=shop_id,
            callback_url=callback_url,
            timeout_seconds=settings.provider_timeout_seconds,
        ),
        transport=transport,
    )


def _text(data: Mapping[str, Any], name: str, prefix: str = "providerData") -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > TEXT_MAX_LENGTH:
        raise InvalidProviderData(
            f"{prefix}.{name} must be a text of 1 to {TEXT_MAX_LENGTH} characters", field=f"{prefix}.{name}"
        )
    return value.strip()


def _url(data: Mapping[str, Any], name: str) -> str | None:
    value = _text(data, name)
    if value is None:
        return None
    # The URL parser refuses some malformed URLs with an exception: a client's bad URL is a 400, never a 500.
    try:
        url = URL(value)
        scheme, host = url.scheme, url.host
    except ValueError:
        scheme, host = "", ""
    if scheme not in ("http", "https") or not host or " " in value:
        raise InvalidProviderData(f"providerData.{name} must be an http(s) URL", field=f"providerData.{name}")
    return value


def _object(value: object, fields: tuple[str, ...], where: str) -> dict[str, str]:
    """A flat object of the named text fields (Mia's schema types them all as strings)."""
    if not isinstance(value, Mapping):
        raise InvalidProviderData(f"{where} must be an object", field=where)
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise InvalidProviderData(f"{where} has unknown fields: {', '.join(unknown)[:100]}", field=where)
    return {name: text for name in fields if (text := _text(value, name, where)) is not None}


def _payment_id(answer: Mapping[str, Any]) -> str:
    payment_id = answer.get("paymentId")
    if not isinstance(payment_id, str) or not _ID.match(payment_id):
        raise OutcomeUnknown("Fnmpay answered without the payment's id")
    return payment_id


def _lookup(payment: Mapping[str, Any], payment_id: str) -> PaymentLookup:
    code = payment.get("transactionCode")
    if code is not None and not (isinstance(code, str) and (code == "" or _TRANSACTION_CODE.match(code))):
        raise OutcomeUnknown(f"Fnmpay answered a payment with an unreadable transactionCode {str(code)[:20]!r}")
    reference = payment.get("orderId")
    amount = payment.get("amount")
    properties = {
        key: payment[key]
        for key in ("transactionCode", "transactionType", "shopId")
        if isinstance(payment.get(key), str)
    }
    return PaymentLookup(
        status=status_of(code),
        payment_id=payment_id,
        shop_transaction_id=reference if isinstance(reference, str) and reference else None,
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        metadata={"providerSpecificProperties": properties},
        currency="EUR",
        # Refunds are not made through this PGM for Fnmpay: nothing was given back through it.
        refunded_amount=0,
        payment_method=PAYMENT_METHOD,
    )
