"""Adapter for Soisy (instalment loans, the shop API `/api/shops/{shopId}`).

What Soisy offers and how it maps here (docs/providers/soisy.md):
* pay: a loan request (`POST /orders`), answered with the order's `token`; the payer is sent to Soisy's
  loan page (`https://shop[.sandbox].soisy.it/{shopId}#/loan-request?token=...`) to apply. The answer is
  always REDIRECT_TO_URL: the outcome (approved, verified, disbursed, refused, cancelled) comes later;
* status: `GET /orders/{token}`;
* callbacks: Soisy form-POSTs `{eventId, eventMessage, eventDate, orderToken, orderReference, amount}` to
  the `callbackUrl` given with the order. They are **unsigned**: the PGM reads the order back and trusts
  only that answer, so a forged or replayed callback changes nothing;
* refunds: Soisy has none in its API (a loan is cancelled with Soisy's merchant support), so refunds
  answer 501, as every operation Soisy lacks.

The order token is the payment id. Soisy takes no idempotency key: a loan request whose answer was
lost is found again by its `orderReference` (the shopTransactionId), see `find_payment`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

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

REQUIRED_VARIABLES: tuple[str, ...] = ("SOISY_SHOP_ID", "SOISY_PARTNER_KEY", "SOISY_BASE_URL")

SANDBOX_BASE_URL = "https://api.sandbox.soisy.it"
PRODUCTION_BASE_URL = "https://api.soisy.it"
# Soisy's published sandbox demo credentials (docs/providers/soisy.md).
SANDBOX_SHOP_ID = "partnershop"
SANDBOX_PARTNER_KEY = "partnerkey"
AUTH_HEADER = "X-Auth-Token"
PAYMENT_METHOD = "soisy"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SHOP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Soisy's event names are short CamelCase words; anything else is not a Soisy callback.
_EVENT_ID = re.compile(r"^[A-Za-z]{1,64}$")
# Soisy finances loans between these amounts (euro cents); outside them it refuses the request anyway,
# so the PGM says so at once instead of sending the payer to a page that cannot work.
MIN_AMOUNT = 100_00
MAX_AMOUNT = 30_000_00
MIN_INSTALMENTS = 3
MAX_INSTALMENTS = 60

CAPABILITIES = Capabilities(
    operations=frozenset({Operation.PAY, Operation.STATUS, Operation.CALLBACK}),
    payment_methods=frozenset({PAYMENT_METHOD}),
    currencies=frozenset({"EUR"}),
    # Soisy has one method: `/v3/soisy/pay` means `/v3/soisy/soisy/pay`.
    default_payment_method=PAYMENT_METHOD,
)

# The order's `status` (Soisy's API reference) → our status. The loan is the payment: once Soisy has
# verified it (waiting_for_disbursement) Soisy owes the merchant the amount, so the payment is ACCEPTED;
# a request the payer abandoned or Soisy refused ends cancelled (or rejected) and FAILED; everything
# before verification is still PENDING.
PAYMENT_STATUS: dict[str, Status] = {
    "quote": Status.PENDING,
    "request_received": Status.PENDING,
    "request_accepted": Status.PENDING,
    "waiting_for_verification": Status.PENDING,
    "waiting_for_disbursement": Status.ACCEPTED,
    "disbursed": Status.ACCEPTED,
    "cancelled": Status.FAILED,
    "rejected": Status.FAILED,
}

# providerData fields Soisy's order takes (Mia's list): name → (type, Soisy's field).
_TEXT_FIELDS: dict[str, str] = {
    "email": "email",
    "firstname": "firstname",
    "lastname": "lastname",
    "vatId": "vatId",
    "vatCountry": "vatCountry",
    "fiscalCode": "fiscalCode",
    "mobilePhone": "mobilePhone",
    "city": "city",
    "province": "province",
    "address": "address",
    "civicNumber": "civicNumber",
    "postalCode": "postalCode",
}
TEXT_MAX_LENGTH = 255


@dataclass(frozen=True)
class SoisyConfig:
    """Everything the adapter needs, read from SOISY_* variables."""

    base_url: str
    shop_id: str
    partner_key: str
    callback_url: str
    timeout_seconds: float


def loan_page_url(base_url: str, shop_id: str, token: str) -> str:
    """Where the payer applies for the loan: Soisy's shop site beside its API host (`api.` → `shop.`);
    a base URL on another host (a proxy, a test server) serves the page on its own origin."""
    url = URL(base_url)
    host = url.host or ""
    origin = f"{url.scheme}://shop.{host.removeprefix('api.')}" if host.startswith("api.") else f"{base_url}/shop"
    return f"{origin}/{shop_id}#/loan-request?token={token}"


class SoisyAdapter(ProviderAdapter):
    """Soisy behind the common adapter interface."""

    name = "soisy"
    capabilities = CAPABILITIES

    def __init__(self, config: SoisyConfig, *, transport: Transport | None = None) -> None:
        self._config = config
        self._client = provider_client(
            f"{config.base_url}/api/shops/{config.shop_id}",
            config.timeout_seconds,
            headers={AUTH_HEADER: config.partner_key, "Accept": "application/json"},
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Refuse what Soisy would refuse, before anything is stored."""
        if isinstance(request, RefundRequest):
            return
        if not request.success_redirect_url:
            raise InvalidProviderData(
                "successRedirectUrl is required: Soisy's loan page sends the payer back to it",
                field="successRedirectUrl",
            )
        if not MIN_AMOUNT <= request.amount <= MAX_AMOUNT:
            raise InvalidProviderData(
                f"amount must be between {MIN_AMOUNT} and {MAX_AMOUNT} cents: the loans Soisy finances",
                field="amount",
            )
        _order_fields(request.provider_data)

    async def pay(self, request: PayRequest) -> PayResult:
        """A loan request; the payer applies on Soisy's loan page."""
        body: dict[str, Any] = {
            "amount": request.amount,
            "orderReference": request.shop_transaction_id,
            "successUrl": request.success_redirect_url,
            "errorUrl": request.failure_redirect_url or request.success_redirect_url,
            "callbackUrl": self._config.callback_url,
            **_order_fields(request.provider_data),
        }
        answer = json_body(await send(self._client, "POST", "/orders", json=body))
        token = answer.get("token")
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise OutcomeUnknown("Soisy answered a loan request without its order token")
        page = loan_page_url(self._config.base_url, self._config.shop_id, token)
        return PayResult(
            result=PayResultCode.REDIRECT_TO_URL,
            description="The payer must apply for the loan on Soisy's page",
            payment_id=token,
            redirect_url=page,
            redirect_url_mobile=page,
        )

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Read the order back: its status says where the loan stands."""
        if not _TOKEN.match(payment_id):
            raise ProviderRejected(f"{payment_id[:80]!r} is not a Soisy order token")
        response = await send(self._client, "GET", f"/orders/{path_segment(payment_id)}")
        if response.status_code == 404:
            raise ProviderRejected(f"Soisy has no order {payment_id}")
        return _lookup(json_body(response), payment_id)

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Soisy takes no idempotency key: a loan request whose answer was lost is found by its
        orderReference (our shopTransactionId) in the shop's orders; None when Soisy has none."""
        response = await send(self._client, "GET", "/orders", params={"orderReference": shop_transaction_id})
        answer = json_body(response)
        orders = answer.get("orders")
        if not isinstance(orders, list):
            raise OutcomeUnknown("Soisy answered an order search without its list of orders")
        matching = [
            order
            for order in orders
            if isinstance(order, Mapping) and order.get("orderReference") == shop_transaction_id
        ]
        if not matching:
            return None
        token = matching[-1].get("token")
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise OutcomeUnknown("Soisy answered an order without its token")
        return _lookup(matching[-1], token)

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Read which order the (unsigned) callback is about; its status is read back from Soisy."""
        if callback.method != "POST":
            raise InvalidCallback("Soisy callbacks are POSTed")
        try:
            form = parse_qs(callback.body.decode("utf-8"), strict_parsing=False, max_num_fields=20)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidCallback("the body is not a Soisy callback form") from exc
        token = (form.get("orderToken") or [""])[0]
        event = (form.get("eventId") or [""])[0]
        date = (form.get("eventDate") or [""])[0][:40]
        if not _TOKEN.match(token):
            raise InvalidCallback("the callback names no usable orderToken")
        if not _EVENT_ID.match(event):
            raise InvalidCallback("the callback has no eventId")
        # Soisy sends each event once per order (a retry repeats it): order token, event and its date
        # identify it, so a duplicate is recognised. Nothing in it is trusted but the token.
        return [Notification(f"{token}:{event}:{date}", Subject.PAYMENT, payment_id=token, status=None)]

    def callback_answer(self) -> CallbackAnswer:
        """Any 2xx stops Soisy's retries; it reads no body."""
        return CallbackAnswer(status_code=200, body=b"", media_type="text/plain")


def build(settings: Settings, transport: Transport | None = None) -> ProviderAdapter:
    """The Soisy adapter from SOISY_* variables; raise ConfigurationError naming a bad one."""
    env = settings.provider_env
    base_url = env.get("SOISY_BASE_URL", "").strip().rstrip("/")
    if not base_url.startswith(("http://", "https://")) or "?" in base_url or "#" in base_url:
        raise ConfigurationError(f"SOISY_BASE_URL must be an http(s) URL, e.g. {SANDBOX_BASE_URL}")
    if base_url.endswith("/api") or "/api/shops" in base_url:
        raise ConfigurationError(
            f"SOISY_BASE_URL is the API host only, e.g. {SANDBOX_BASE_URL}: the PGM adds /api/shops/{{shopId}}"
        )
    shop_id = env.get("SOISY_SHOP_ID", "").strip()
    if not _SHOP_ID.match(shop_id):
        raise ConfigurationError("SOISY_SHOP_ID must be Soisy's shop id (letters, digits, - and _)")
    partner_key = env.get("SOISY_PARTNER_KEY", "").strip()
    if not partner_key:
        raise ConfigurationError("SOISY_PARTNER_KEY is empty")
    return SoisyAdapter(
        SoisyConfig(
            base_url=base_url,
            shop_id=shop_id,
            partner_key=partner_key,
            callback_url=f"{settings.public_url}/v3/soisy/callback",
            timeout_seconds=settings.provider_timeout_seconds,
        ),
        transport=transport,
    )


def _order_fields(provider_data: Mapping[str, Any]) -> dict[str, Any]:
    """The payer's details Soisy pre-fills its loan form with; raise InvalidProviderData naming a bad one."""
    fields: dict[str, Any] = {}
    for name, soisy_name in _TEXT_FIELDS.items():
        value = provider_data.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or len(value) > TEXT_MAX_LENGTH:
            raise InvalidProviderData(
                f"providerData.{name} must be a text of 1 to {TEXT_MAX_LENGTH} characters", field=f"providerData.{name}"
            )
        fields[soisy_name] = value.strip()
    instalments = provider_data.get("instalments")
    if instalments is not None:
        if (
            not isinstance(instalments, int)
            or isinstance(instalments, bool)
            or not MIN_INSTALMENTS <= instalments <= MAX_INSTALMENTS
        ):
            raise InvalidProviderData(
                f"providerData.instalments must be a whole number from {MIN_INSTALMENTS} to {MAX_INSTALMENTS}",
                field="providerData.instalments",
            )
        fields["instalments"] = instalments
    zero_interest = provider_data.get("zeroInterestRate")
    if zero_interest is not None:
        if not isinstance(zero_interest, bool):
            raise InvalidProviderData(
                "providerData.zeroInterestRate must be true or false", field="providerData.zeroInterestRate"
            )
        fields["zeroInterestRate"] = zero_interest
    return fields


def _lookup(order: Mapping[str, Any], token: str) -> PaymentLookup:
    raw_status = order.get("status")
    status = PAYMENT_STATUS.get(str(raw_status))
    if status is None:
        raise OutcomeUnknown(f"Soisy answered an order with an unknown status {str(raw_status)[:40]!r}")
    reference = order.get("orderReference")
    amount = order.get("amount")
    properties = {
        key: order[key]
        for key in ("status", "loanAmount", "instalmentsNumber", "zeroInterestRate")
        if isinstance(order.get(key), (str, int, bool))
    }
    return PaymentLookup(
        status=status,
        payment_id=token,
        shop_transaction_id=reference if isinstance(reference, str) and reference else None,
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        metadata={"providerSpecificProperties": properties},
        currency="EUR",
        # Soisy has no refunds: nothing was ever given back through its API.
        refunded_amount=0,
        payment_method=PAYMENT_METHOD,
    )
