"""Adapter for Axerve (ex GestPay, Banca Sella) through its REST API v1.

What Axerve offers and how it maps here (docs/providers/axerve.md):
* pay, in Axerve's two steps: `POST /payment/create` opens the payment (it answers a paymentToken and
  Axerve's paymentID), then `POST /payment/submit` (authenticated by that paymentToken) pays it:
  - credit-cards with a card token (`POST /shop/token`), apple pay with the PKPaymentToken and google pay
    with its signed message: submitted at once. Axerve answers OK or KO, or PENDING with a `userRedirect`
    when the card needs 3-D Secure (answered REDIRECT_TO_URL; the payment settles after the challenge);
  - pay-pal and satispay: the payer pays on Axerve's page (REDIRECT_TO_URL to the `userRedirect`);
* pay-by-link: a payment created for the email channel; its `userRedirect` is the link;
* refunds: `POST /payment/refund`, partial or total, several, settled in the answer;
* merchant-managed subscriptions: `subscription/start` opens a recurrent payment and `subscription/pay`
  charges its token again (merchant-initiated) with no payer present. credit-cards: the card token is
  the subscription token. pay-pal: the payer approves on Axerve's page like a PayPal payment, and
  Axerve gives the PayPal method's token (`methodToken`) in the payment's detail once it is paid; it is
  submitted as `paymentTypeDetails.payPal.recurrenceToken`;
* status: `POST /payment/detail` by paymentID;
* server-to-server notifications are not signed by Axerve: they are hints. The PGM checks its own
  signature in the notification URL it gave for the payment, reads the payment back from Axerve and
  trusts only that answer.

The shopTransactionID Axerve holds is ours, derived from the operation's idempotency key (the merchant's
shopTransactionId travels in `customInfo`): a payment whose creation answer was lost is found again with
`/payment/detail` by that reference, and a retry never creates a second payment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

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
)
from pgm.providers.http import provider_client, send

# Mia's variable names; the v2 PGM's GESTPAY_* names are accepted as aliases (docs/providers/axerve.md).
REQUIRED_VARIABLES: tuple[str, ...] = ("AXERVE_API_KEY", "AXERVE_SHOP_LOGIN")
ALIASES: dict[str, tuple[str, ...]] = {
    "AXERVE_API_KEY": ("GESTPAY_API_KEY",),
    "AXERVE_SHOP_LOGIN": ("GESTPAY_SHOP_LOGIN",),
    "AXERVE_IS_SANDBOX": ("GESTPAY_IS_SANDBOX",),
    "AXERVE_BASE_URL": ("GESTPAY_BASE_URL",),
}

SANDBOX_BASE_URL = "https://sandbox.gestpay.net/api/v1"
PRODUCTION_BASE_URL = "https://ecomms2s.sella.it/api/v1"
PAYMENT_TOKEN_HEADER = "paymentToken"
# Axerve's shopTransactionID is at most 50 characters; ours is a prefix and 40 hex characters.
REFERENCE_LENGTH = 44
_REFERENCE = re.compile(r"^[A-Za-z0-9_-]{1,50}$")
_PAYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CARD_TOKEN = re.compile(r"^[A-Za-z0-9_-]{4,64}$")
_SHOP_LOGIN = re.compile(r"^[A-Za-z0-9_-]{1,30}$")
# The query parameters of our notification URL: the payment's reference and our signature of it.
REFERENCE_PARAMETER = "pgmReference"
SIGNATURE_PARAMETER = "pgmSignature"
# providerData limits: Axerve's buyerName is 50 characters, buyerEmail 50; wallet tokens are JSON strings.
BUYER_NAME_MAX = 50
BUYER_EMAIL_MAX = 50
WALLET_TOKEN_MAX = 20_000
# Axerve's success code in the answer envelope.
OK_CODE = "0"

CAPABILITIES = Capabilities(
    operations=frozenset(
        {
            Operation.PAY,
            Operation.REFUND,
            Operation.SUBSCRIPTION_START,
            Operation.SUBSCRIPTION_PAY,
            Operation.PAY_BY_LINK,
            Operation.STATUS,
            Operation.CALLBACK,
        }
    ),
    payment_methods=frozenset({"credit-cards", "applepay", "googlepay", "pay-pal", "satispay"}),
    # Mia's Axerve subscriptions are merchant-managed with a DAY interval only.
    intervals=frozenset({Interval.DAY}),
    currencies=frozenset({"EUR"}),
)

# Axerve's `transactionResult` → our status (the existing PGM's Axerve table; XX is GestPay's classic
# "not yet known" result).
PAYMENT_STATUS: dict[str, Status] = {
    "APPROVED": Status.ACCEPTED,
    "OK": Status.ACCEPTED,
    "DECLINED": Status.FAILED,
    "KO": Status.FAILED,
    "PENDING": Status.PENDING,
    "WAITING": Status.PENDING,
    "UNSUBMITTED": Status.PENDING,
    "XX": Status.PENDING,
}
# Methods paid on Axerve's page (the payer is redirected) and the paymentTypes that name them there.
REDIRECT_METHODS: dict[str, str] = {"pay-pal": "PAYPAL", "satispay": "SATISPAY"}
# Methods whose providerData.token is submitted at once, and where Axerve expects it.
TOKEN_METHODS = ("credit-cards", "applepay", "googlepay")
APPLE_PAY_KEYS = ("paymentData", "transactionIdentifier", "paymentMethod")
GOOGLE_PAY_KEYS = ("signature", "protocolVersion", "signedMessage")
# Mia's subscriptions on Axerve: the card token, or the PayPal method token Axerve gives once the payer
# approved the first payment on its page, is what is charged again.
SUBSCRIPTION_METHODS = frozenset({"credit-cards", "pay-pal"})
# Axerve wants a description of the charge shown to the PayPal payer (at most 127 characters).
PAYPAL_DESCRIPTION_MAX = 127


@dataclass(frozen=True)
class AxerveConfig:
    """Everything the adapter needs, read from AXERVE_* (or GESTPAY_*) variables."""

    base_url: str
    api_key: str
    shop_login: str
    callback_url: str
    timeout_seconds: float


def reference_for(idempotency_key: str) -> str:
    """Our Axerve shopTransactionID for an operation: the same key always gives the same reference."""
    return "PGM" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[: REFERENCE_LENGTH - 3]


def notification_signature(api_key: str, reference: str) -> str:
    """Our signature of a payment's reference, carried by the notification URL given to Axerve with it.

    Axerve signs nothing: this proves a notification reached us through the URL we gave for this
    payment (anyone else cannot make it), and any replica can check it after any restart."""
    return hmac.new(
        api_key.encode("utf-8"), f"pgm-axerve-notification:{reference}".encode(), hashlib.sha256
    ).hexdigest()


def to_decimal(amount: int) -> str:
    """Minor units as Axerve's decimal string (EUR has two decimals)."""
    return f"{amount // 100}.{amount % 100:02d}"


def from_decimal(value: object) -> int | None:
    """Axerve's decimal string (or number) as minor units; None when it is not an amount."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        amount = Decimal(str(value)) * 100
    except InvalidOperation:
        return None
    if amount != amount.to_integral_value() or amount < 0:
        return None
    return int(amount)


class AxerveAdapter(ProviderAdapter):
    """Axerve's REST API behind the common adapter interface, plus the payment-token utility."""

    name = "axerve"
    capabilities = CAPABILITIES

    def __init__(self, config: AxerveConfig, *, transport: Transport | None = None) -> None:
        self._config = config
        self._client = provider_client(
            config.base_url,
            config.timeout_seconds,
            headers={"Accept": "application/json"},
            transport=transport,
        )
        # Every call but payment/submit carries the merchant's API key; submit carries the payment's token.
        self._api_key_header = {"Authorization": f"apikey {config.api_key}"}

    @property
    def shop_login(self) -> str:
        """The merchant's Axerve shop login."""
        return self._config.shop_login

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Refuse what Axerve would refuse, before anything is stored."""
        if isinstance(request, RefundRequest):
            return
        data = request.provider_data
        for name, limit in (("buyerName", BUYER_NAME_MAX), ("buyerEmail", BUYER_EMAIL_MAX)):
            value = data.get(name)
            if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > limit):
                raise InvalidProviderData(
                    f"providerData.{name} must be a text of at most {limit} characters", field=f"providerData.{name}"
                )
        server_redirect = data.get("serverRedirect")
        if server_redirect is not None and not isinstance(server_redirect, bool):
            raise InvalidProviderData(
                "providerData.serverRedirect must be true or false", field="providerData.serverRedirect"
            )
        subscription = operation in (Operation.SUBSCRIPTION_START, Operation.SUBSCRIPTION_PAY)
        if subscription and request.payment_method not in SUBSCRIPTION_METHODS:
            raise InvalidProviderData(
                f"Axerve subscriptions take credit-cards or pay-pal (their token is charged again), "
                f"not {request.payment_method}",
                field="paymentMethod",
            )
        if operation is Operation.SUBSCRIPTION_PAY:
            token = request.subscription.token if request.subscription else None
            if not token or not _CARD_TOKEN.match(token):
                raise InvalidProviderData(
                    "subscriptionInfo.token must be the Axerve token of the subscription's first payment "
                    "(the card token, or the PayPal token given in its status)",
                    field="subscriptionInfo.token",
                )
            return
        if operation is Operation.SUBSCRIPTION_START:
            authentication = data.get("authenticationAmount")
            if (
                isinstance(authentication, bool)
                or not isinstance(authentication, int)
                or authentication < request.amount
            ):
                raise InvalidProviderData(
                    "providerData.authenticationAmount is required: the largest amount (minor units) a later "
                    "payment of the subscription may charge, at least this payment's amount",
                    field="providerData.authenticationAmount",
                )
        if operation is Operation.PAY_BY_LINK:
            return
        if request.payment_method in TOKEN_METHODS:
            _payment_type_details(request.payment_method, data)

    async def pay(self, request: PayRequest) -> PayResult:
        """Create the payment, then submit it with its token, or send the payer to Axerve's page."""
        return await self._pay(request, recurrent=False)

    async def start_subscription(self, request: PayRequest) -> PayResult:
        """The first payment of a merchant-managed subscription: a recurrent card payment, or a recurrent
        PayPal payment on Axerve's page (its token comes with the notification, once the payer approved)."""
        result = await self._pay(request, recurrent=True)
        token = str(request.provider_data["token"]) if request.payment_method == "credit-cards" else None
        return PayResult(
            result=result.result,
            description=result.description,
            payment_id=result.payment_id,
            redirect_url=result.redirect_url,
            redirect_url_mobile=result.redirect_url_mobile,
            subscription_token=token,
            metadata=result.metadata,
        )

    async def pay_subscription(self, request: PayRequest) -> PayResult:
        """Charge the stored card or PayPal token once more, merchant-initiated."""
        token = request.subscription.token if request.subscription else None
        if not token:
            raise InvalidProviderData("subscriptionInfo.token is required", field="subscriptionInfo.token")
        data = {**request.provider_data, "token": token}
        if request.payment_method == "pay-pal":
            paid = await self._pay(request, recurrent=True, paypal_token=token)
            return PayResult(
                result=paid.result,
                description=paid.description,
                payment_id=paid.payment_id,
                redirect_url=paid.redirect_url,
                subscription_token=token,
                metadata=paid.metadata,
            )
        charged = PayRequest(
            amount=request.amount,
            currency=request.currency,
            shop_transaction_id=request.shop_transaction_id,
            payment_method=request.payment_method,
            idempotency_key=request.idempotency_key,
            success_redirect_url=request.success_redirect_url,
            failure_redirect_url=request.failure_redirect_url,
            provider_data=data,
            subscription=request.subscription,
        )
        result = await self._pay(charged, recurrent=True)
        return PayResult(
            result=result.result,
            description=result.description,
            payment_id=result.payment_id,
            redirect_url=result.redirect_url,
            subscription_token=token,
            metadata=result.metadata,
        )

    async def pay_by_link(self, request: PayRequest) -> PayResult:
        """A payment for the email channel: Axerve's page for it is the link the payer opens."""
        created = await self._create(request, recurrent=False, channel=True)
        href = _redirect(created)
        if href is None:
            raise OutcomeUnknown("Axerve answered a payment link without its userRedirect")
        return PayResult(
            result=PayResultCode.PENDING,
            description="The payment link was created; the payment settles when the payer pays",
            payment_id=_payment_id(created),
            link=href,
        )

    async def create_payment_token(self, amount: int, currency: str, shop_transaction_id: str) -> dict[str, str]:
        """The utility of the existing PGM: a payment opened at Axerve whose paymentToken a client-side
        Axerve SDK uses to pay it (`payment/create` only)."""
        body = {
            "shopLogin": self._config.shop_login,
            "amount": to_decimal(amount),
            "currency": currency,
            "shopTransactionID": shop_transaction_id,
        }
        payload = await self._post("/payment/create", body)
        token = payload.get("paymentToken")
        if not isinstance(token, str) or not token:
            raise OutcomeUnknown("Axerve answered payment/create without a paymentToken")
        return {"paymentToken": token, "paymentId": _payment_id(payload)}

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund (part of) the payment; Axerve settles a refund in its answer."""
        if not _PAYMENT_ID.match(request.payment_id):
            raise ProviderRejected(f"{request.payment_id[:80]!r} is not an Axerve paymentID")
        body = {
            "shopLogin": self._config.shop_login,
            "amount": to_decimal(request.amount),
            "currency": request.currency,
            "paymentID": request.payment_id,
        }
        payload = await self._post("/payment/refund", body)
        result = str(payload.get("transactionResult", ""))
        if PAYMENT_STATUS.get(result) is not Status.ACCEPTED:
            raise ProviderRejected(f"Axerve refused the refund: {_error_of(payload) or result or 'no result'}")
        refund_id = payload.get("refundID") or payload.get("bankTransactionID")
        return RefundResult(Status.ACCEPTED, str(refund_id) if refund_id else None, "The refund was executed by Axerve")

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Read the payment back with `payment/detail`."""
        if not _PAYMENT_ID.match(payment_id):
            raise ProviderRejected(f"{payment_id[:80]!r} is not an Axerve paymentID")
        payload = await self._detail({"paymentID": payment_id})
        if payload is None:
            raise ProviderRejected(f"Axerve has no payment {payment_id}")
        return _lookup(payload)

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Our reference comes from the key: ask Axerve for it; None when Axerve has no such payment."""
        payload = await self._detail({"shopTransactionID": reference_for(idempotency_key)})
        return _lookup(payload) if payload is not None else None

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """Axerve keeps no refund of its own id or key: a lost refund answer cannot be looked up."""
        raise NotSupported("Axerve cannot look a refund up; its outcome is confirmed in Axerve's back office")

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Check our signature in the URL, read the payment back by its reference to learn its paymentID;
        the status is left to the PGM's own lookup (Axerve's notification is a hint)."""
        reference = callback.query.get(REFERENCE_PARAMETER, "")
        if not _REFERENCE.match(reference):
            raise InvalidCallback("an Axerve notification must come through the URL the PGM gave for the payment")
        expected = notification_signature(self._config.api_key, reference)
        if not hmac.compare_digest(expected, callback.query.get(SIGNATURE_PARAMETER, "")):
            raise InvalidCallback("the notification URL does not carry our signature of this payment")
        payload = await self._detail({"shopTransactionID": reference})
        if payload is None:
            raise InvalidCallback("Axerve has no payment for this notification")
        payment_id = _payment_id(payload)
        # A recurrent PayPal payment's token is known only from Axerve's answer, read back here.
        token = _method_token(payload)
        # Each delivery is its own hint (Axerve notifies again on every change); a replay only costs one
        # more lookup, and the status read back decides.
        event_id = f"payment:{payment_id}:{callback.received_at:.6f}"
        return [Notification(event_id, Subject.PAYMENT, payment_id=payment_id, status=None, token=token)]

    def callback_answer(self) -> CallbackAnswer:
        """Axerve expects a 200 with an HTML body to stop retrying."""
        return CallbackAnswer(status_code=200, body=b"<html><body>OK</body></html>", media_type="text/html")

    async def _pay(self, request: PayRequest, recurrent: bool, paypal_token: str | None = None) -> PayResult:
        """Create, then submit with the token, or send the payer to Axerve's page; a `paypal_token` charges
        an approved PayPal subscription without the payer."""
        created = await self._create(request, recurrent=recurrent, channel=False)
        payment_id = _payment_id(created)
        if request.payment_method in REDIRECT_METHODS and paypal_token is None:
            href = _redirect(created)
            if href is None:
                raise OutcomeUnknown("Axerve answered payment/create without the page the payer pays on")
            return PayResult(
                result=PayResultCode.REDIRECT_TO_URL,
                description="The payer must pay on Axerve's page",
                payment_id=payment_id,
                redirect_url=href,
                redirect_url_mobile=href,
            )
        token = created.get("paymentToken")
        if not isinstance(token, str) or not token:
            raise OutcomeUnknown("Axerve answered payment/create without a paymentToken")
        if paypal_token is not None:
            description = f"Subscription payment {request.shop_transaction_id}"[:PAYPAL_DESCRIPTION_MAX]
            details = {"payPal": {"recurrenceToken": paypal_token, "payPalDescription": description}}
        else:
            details = _payment_type_details(request.payment_method, request.provider_data)
        body: dict[str, Any] = {
            "shopLogin": self._config.shop_login,
            "paymentTypeDetails": details,
            "responseURLs": self._response_urls(request, reference_for(request.idempotency_key)),
        }
        buyer = _buyer(request.provider_data)
        if buyer:
            body["buyer"] = buyer
        submitted = await self._post(
            "/payment/submit", body, headers={PAYMENT_TOKEN_HEADER: token}, authenticated=False
        )
        return _submit_result(submitted, payment_id)

    async def _create(self, request: PayRequest, recurrent: bool, channel: bool) -> dict[str, Any]:
        reference = reference_for(request.idempotency_key)
        body: dict[str, Any] = {
            "shopLogin": self._config.shop_login,
            "amount": to_decimal(request.amount),
            "currency": request.currency,
            "shopTransactionID": reference,
            "customInfo": {"pgmShopTransactionId": request.shop_transaction_id[:200]},
            "responseURLs": self._response_urls(request, reference),
        }
        body.update(_buyer_fields(request.provider_data))
        if request.payment_method in REDIRECT_METHODS:
            body["paymentTypes"] = [REDIRECT_METHODS[request.payment_method]]
        if recurrent:
            body["recurrent"] = True
            authentication = request.provider_data.get("authenticationAmount")
            if isinstance(authentication, int) and not isinstance(authentication, bool):
                body["authenticationAmount"] = to_decimal(authentication)
        if channel:
            body["paymentChannel"] = {"channelType": ["EMAIL"]}
        return await self._post("/payment/create", body)

    def _response_urls(self, request: PayRequest, reference: str) -> dict[str, str]:
        query = urlencode(
            {
                REFERENCE_PARAMETER: reference,
                SIGNATURE_PARAMETER: notification_signature(self._config.api_key, reference),
            }
        )
        urls = {"serverNotificationURL": f"{self._config.callback_url}?{query}"}
        if request.success_redirect_url:
            urls["buyerOK"] = request.success_redirect_url
            urls["buyerKO"] = request.failure_redirect_url or request.success_redirect_url
        return urls

    async def _detail(self, selector: dict[str, str]) -> dict[str, Any] | None:
        """`payment/detail`; None when Axerve has no such payment."""
        body = {"shopLogin": self._config.shop_login, **selector}
        response = await send(self._client, "POST", "/payment/detail", json=body, headers=self._api_key_header)
        if response.status_code == 404:
            return None
        document = _envelope(response)
        if _code(document) != OK_CODE:
            if response.status_code == 404 or _code(document) in NOT_FOUND_CODES:
                return None
            raise ProviderRejected(f"Axerve refused the payment lookup: {_error_text(document)}")
        return _payload(document)

    async def _post(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None, authenticated: bool = True
    ) -> dict[str, Any]:
        # payment/submit is authenticated by the payment's own token, not the merchant's API key.
        extra = {**(self._api_key_header if authenticated else {}), **(headers or {})}
        response = await send(self._client, "POST", path, json=body, headers=extra)
        document = _envelope(response)
        if _code(document) != OK_CODE:
            payload = document.get("payload")
            if path == "/payment/submit" and isinstance(payload, dict) and payload.get("transactionResult"):
                # A declined card is an answer (KO), not a refusal of the request.
                return payload
            raise ProviderRejected(f"Axerve refused the request: {_error_text(document)}")
        return _payload(document)


# Axerve's error codes for "no such transaction" in payment/detail.
NOT_FOUND_CODES = frozenset({"1142", "404"})


def build(settings: Settings, transport: Transport | None = None) -> ProviderAdapter:
    """The Axerve adapter from AXERVE_* (or GESTPAY_*) variables; raise ConfigurationError naming a bad one."""
    env = settings.provider_env

    def read(name: str) -> str:
        for candidate in (name, *ALIASES.get(name, ())):
            value = env.get(candidate, "").strip()
            if value:
                return value
        return ""

    api_key, shop_login = read("AXERVE_API_KEY"), read("AXERVE_SHOP_LOGIN")
    if not api_key:
        raise ConfigurationError("AXERVE_API_KEY is empty")
    if not _SHOP_LOGIN.match(shop_login):
        raise ConfigurationError("AXERVE_SHOP_LOGIN must be the Axerve shop login, e.g. GESPAY12345")
    sandbox_flag = read("AXERVE_IS_SANDBOX").lower()
    if sandbox_flag not in ("", "true", "false"):
        raise ConfigurationError("AXERVE_IS_SANDBOX must be true or false")
    base_url = read("AXERVE_BASE_URL").rstrip("/") or (
        PRODUCTION_BASE_URL if sandbox_flag == "false" else SANDBOX_BASE_URL
    )
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"AXERVE_BASE_URL must be an http(s) URL, e.g. {SANDBOX_BASE_URL}")
    callback_url = f"{settings.public_url.rstrip('/')}/v3/axerve/callback"
    return AxerveAdapter(
        AxerveConfig(
            base_url=base_url,
            api_key=api_key,
            shop_login=shop_login,
            callback_url=callback_url,
            timeout_seconds=settings.provider_timeout_seconds,
        ),
        transport=transport,
    )


def _payment_type_details(method: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """What `payment/submit` needs for a token method; raise InvalidProviderData when the token is unusable."""
    token = data.get("token")
    if method == "credit-cards":
        if not isinstance(token, str) or not _CARD_TOKEN.match(token):
            raise InvalidProviderData(
                "providerData.token is required: the card token from Axerve's /shop/token", field="providerData.token"
            )
        return {"creditcard": {"token": token}}
    keys = APPLE_PAY_KEYS if method == "applepay" else GOOGLE_PAY_KEYS
    wallet = "Apple Pay PKPaymentToken" if method == "applepay" else "Google Pay payment token"
    parsed: object = None
    if isinstance(token, str) and len(token) <= WALLET_TOKEN_MAX:
        try:
            parsed = json.loads(token)
        except ValueError:
            parsed = None
    if not isinstance(parsed, dict) or any(key not in parsed for key in keys):
        raise InvalidProviderData(
            f"providerData.token must be the JSON string of the {wallet} ({', '.join(keys)})",
            field="providerData.token",
        )
    if method == "applepay":
        return {"applePay": {"PKPaymentToken": parsed}}
    return {"googlePay": {"paymentToken": parsed}}


def _buyer_fields(data: Mapping[str, Any]) -> dict[str, str]:
    fields = {}
    for name in ("buyerName", "buyerEmail"):
        value = data.get(name)
        if isinstance(value, str) and value.strip():
            fields[name] = value.strip()
    return fields


def _buyer(data: Mapping[str, Any]) -> dict[str, str]:
    fields = _buyer_fields(data)
    return {
        key: value
        for key, value in {"name": fields.get("buyerName"), "email": fields.get("buyerEmail")}.items()
        if value
    }


def _envelope(response: Response) -> dict[str, Any]:
    """Axerve's `{error, payload}` envelope of any answer; 5xx and malformed answers leave the outcome unknown."""
    if response.status_code >= 500:
        raise OutcomeUnknown(f"Axerve answered HTTP {response.status_code}")
    try:
        document = response.json()
    except ValueError as exc:
        if response.status_code >= 400:
            raise ProviderRejected(f"Axerve refused the request (HTTP {response.status_code})") from exc
        raise OutcomeUnknown(f"Axerve answered HTTP {response.status_code} with a body that is not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("error"), dict):
        if response.status_code >= 400:
            raise ProviderRejected(f"Axerve refused the request (HTTP {response.status_code})")
        raise OutcomeUnknown("Axerve answered without its error envelope")
    if response.status_code >= 400 and _code(document) == OK_CODE:
        raise ProviderRejected(f"Axerve refused the request (HTTP {response.status_code})")
    return document


def _code(document: Mapping[str, Any]) -> str:
    return str(document["error"].get("code", ""))


def _error_text(document: Mapping[str, Any]) -> str:
    error = document["error"]
    return f"{str(error.get('code', ''))[:20]} {str(error.get('description', ''))[:300]}".strip()


def _payload(document: Mapping[str, Any]) -> dict[str, Any]:
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise OutcomeUnknown("Axerve answered without a payload")
    return payload


def _payment_id(payload: Mapping[str, Any]) -> str:
    payment_id = payload.get("paymentID")
    if not isinstance(payment_id, str) or not _PAYMENT_ID.match(payment_id):
        raise OutcomeUnknown("Axerve answered without a usable paymentID")
    return payment_id


def _redirect(payload: Mapping[str, Any]) -> str | None:
    redirect = payload.get("userRedirect")
    href = redirect.get("href") if isinstance(redirect, Mapping) else None
    return href if isinstance(href, str) and href.startswith(("http://", "https://")) else None


def _method_token(payload: Mapping[str, Any]) -> str | None:
    """The PayPal method token Axerve gives for a paid recurrent PayPal payment; None otherwise."""
    token = payload.get("methodToken")
    return token if isinstance(token, str) and _CARD_TOKEN.match(token) else None


def _error_of(payload: Mapping[str, Any]) -> str:
    code, description = payload.get("transactionErrorCode"), payload.get("transactionErrorDescription")
    return f"{str(code or '')[:20]} {str(description or '')[:300]}".strip()


def _submit_result(payload: Mapping[str, Any], payment_id: str) -> PayResult:
    result = str(payload.get("transactionResult", ""))
    status = PAYMENT_STATUS.get(result)
    if status is None:
        raise OutcomeUnknown(f"Axerve answered a payment with an unknown result {result[:40]!r}")
    metadata = {
        key: payload[key]
        for key in ("bankTransactionID", "authorizationCode", "transactionErrorCode", "paymentMethod")
        if isinstance(payload.get(key), str) and payload[key]
    }
    href = _redirect(payload)
    if status is Status.PENDING and href is not None:
        # 3-D Secure: the payer authenticates on the issuer's page; Axerve notifies the outcome.
        return PayResult(
            result=PayResultCode.REDIRECT_TO_URL,
            description="The payer must authenticate the card (3-D Secure)",
            payment_id=payment_id,
            redirect_url=href,
            redirect_url_mobile=href,
            metadata=metadata,
        )
    code = {Status.ACCEPTED: PayResultCode.OK, Status.FAILED: PayResultCode.KO}.get(status, PayResultCode.PENDING)
    description = {
        PayResultCode.OK: "The payment was executed by Axerve",
        PayResultCode.KO: f"Axerve refused the payment ({_error_of(payload) or result})",
        PayResultCode.PENDING: "Axerve has not settled the payment yet",
    }[code]
    return PayResult(result=code, description=description, payment_id=payment_id, metadata=metadata)


def _lookup(payload: Mapping[str, Any]) -> PaymentLookup:
    result = str(payload.get("transactionResult", ""))
    status = PAYMENT_STATUS.get(result)
    if status is None:
        raise OutcomeUnknown(f"Axerve answered a payment with an unknown result {result[:40]!r}")
    custom = payload.get("customInfo")
    reference = custom.get("pgmShopTransactionId") if isinstance(custom, Mapping) else None
    if not isinstance(reference, str) or not reference:
        # A payment made by another PGM carries the merchant's reference as its own shopTransactionID.
        reference = payload.get("shopTransactionID")
    refunded = from_decimal(payload.get("refundedAmount"))
    currency = payload.get("currency")
    method = payload.get("paymentMethod")
    return PaymentLookup(
        status=status,
        payment_id=_payment_id(payload),
        shop_transaction_id=reference if isinstance(reference, str) and reference else None,
        amount=from_decimal(payload.get("authorizedAmount") or payload.get("amount")),
        subscription_token=_method_token(payload),
        redirect_url=_redirect(payload),
        metadata={
            key: payload[key]
            for key in ("bankTransactionID", "transactionState", "authorizationCode")
            if isinstance(payload.get(key), str) and payload[key]
        },
        currency=currency if isinstance(currency, str) and currency else None,
        refunded_amount=refunded if refunded is not None else 0,
        payment_method=PAYMENT_METHODS.get(str(method)) if method else None,
    )


# Axerve's paymentMethod in a detail → our payment method names.
PAYMENT_METHODS: dict[str, str] = {
    "CREDITCARD": "credit-cards",
    "APPLEPAY": "applepay",
    "GOOGLEPAY": "googlepay",
    "PAYPAL": "pay-pal",
    "SATISPAY": "satispay",
}
