"""FlowPay's current API generation, the public v2 API (package docstring: how the generation is chosen).

FlowPay has two API generations (docs/providers/flowpay.md). FLOWPAY_CORE_BASE_URL selects the older
OAuth one (legacy.py); otherwise this adapter speaks the current one, the public v2 API
(`https://api.sandbox.flowpay.it/v2`), with Mia's variables:
* authentication: `X-API-Key`, whose value is FLOWPAY_CLIENT_SECRET (the secret FlowPay issues to the
  merchant; v2 has no separate client id);
* pay: `POST /payment-requests` with an `Idempotency-Key`, a PIS payment request answered with the
  FlowPay checkout page the payer is sent to (REDIRECT_TO_URL); the payer authorises the transfer at
  their bank there, or gives up;
* status: `GET /payment-requests/{id}`: pending, succeeded, rejected, onHold;
* notifications: `payment.status_change` events POSTed with `X-FlowPay-Timestamp` and
  `X-FlowPay-Signature`, an Ed25519 signature (base64url, no padding) of `"{timestamp}.{raw body}"`,
  verified with FLOWPAY_PUBLIC_KEY; events older than five minutes are refused. The payer's browser
  coming back (a GET on the callback URL) carries nothing signed: the PGM reads the status back;
* refunds: a SEPA transfer cannot be pulled back by the initiating party, and neither generation has a
  refund operation, so refunds answer 501.

A payment request whose creation answer was lost is found again by its merchant reference
(`GET /payment-requests?reference=...`) and the idempotency key we stored in its metadata.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from pgm.domain.statuses import Status
from pgm.outbound import Transport
from pgm.providers.base import (
    CallbackRequest,
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
    Subject,
)
from pgm.providers.flowpay.rules import CAPABILITIES, PAYMENT_METHOD, REMITTANCE_MAX_LENGTH, check_request
from pgm.providers.http import json_body, path_segment, provider_client, send

SANDBOX_BASE_URL = "https://api.sandbox.flowpay.it/v2"
API_KEY_HEADER = "X-API-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_ID_HEADER = "x-flowpay-event-id"
EVENT_TYPE_HEADER = "x-flowpay-event-type"
TIMESTAMP_HEADER = "x-flowpay-timestamp"
SIGNATURE_HEADER = "x-flowpay-signature"
STATUS_CHANGE_EVENT = "payment.status_change"
# FlowPay: reject events older than five minutes (replays of a captured event).
MAX_EVENT_AGE_SECONDS = 300.0
# The query parameter naming the payment request when the payer's browser comes back to the callback URL.
RETURN_PARAMETER = "paymentRequestId"
METADATA_KEY = "pgmIdempotencyKey"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
# FlowPay v2 payment-request status → ours (FlowPay's API reference, "Payment request statuses"). Mia's
# rule for the older generation is the same: only the final ones settle, everything else is PENDING.
PAYMENT_STATUS: dict[str, Status] = {
    "succeeded": Status.ACCEPTED,
    "rejected": Status.FAILED,
    "pending": Status.PENDING,
    "onHold": Status.PENDING,
}


def payment_status_of(value: object) -> Status:
    """Our status for a FlowPay status: an unknown one is still under way (PENDING), never a failure."""
    return PAYMENT_STATUS.get(str(value), Status.PENDING)


@dataclass(frozen=True)
class FlowPayConfig:
    """Everything the adapter needs, read from FLOWPAY_* variables."""

    api_base_url: str
    api_key: str
    public_key: Ed25519PublicKey
    callback_url: str
    timeout_seconds: float


def parse_public_key(text: str) -> Ed25519PublicKey:
    """FLOWPAY_PUBLIC_KEY: a PEM Ed25519 public key, or its 32 raw bytes in base64 / base64url (a JWK's `x`)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.replace("\\n", "\n").encode("ascii"))
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM key is not an Ed25519 public key")
        return key
    raw = _b64decode(text)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc


class FlowPayAdapter(ProviderAdapter):
    """FlowPay (v2 API) behind the common adapter interface."""

    name = "flowpay"
    capabilities = CAPABILITIES

    def __init__(self, config: FlowPayConfig, *, transport: Transport | None = None) -> None:
        self._config = config
        self._client = provider_client(
            config.api_base_url,
            config.timeout_seconds,
            headers={API_KEY_HEADER: config.api_key, "Accept": "application/json"},
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Refuse what FlowPay would refuse, before anything is stored."""
        check_request(request)

    async def pay(self, request: PayRequest) -> PayResult:
        """A PIS payment request; the payer authorises the transfer on FlowPay's checkout."""
        data = request.provider_data
        remittance = data.get("remittanceDescription") or f"Order {request.shop_transaction_id}"
        body: dict[str, Any] = {
            "type": "pis",
            "amount": request.amount,
            "currency": request.currency,
            "reference": request.shop_transaction_id,
            "remittanceInformation": str(remittance)[:REMITTANCE_MAX_LENGTH],
            "creditor": {"iban": data["creditorIban"], "fiscalCode": data["creditorFiscalCode"]},
            "debtor": {"fiscalCode": data["debtorFiscalCode"]},
            "redirectUrls": {
                "success": request.success_redirect_url,
                "failure": request.failure_redirect_url or request.success_redirect_url,
            },
            "webhookUrl": self._config.callback_url,
            # So a payment request whose answer was lost is recognised among the reference's.
            "metadata": {METADATA_KEY: request.idempotency_key},
        }
        if data.get("transferDate"):
            body["executionDate"] = data["transferDate"]
        response = await send(
            self._client,
            "POST",
            "/payment-requests",
            json=body,
            headers={IDEMPOTENCY_HEADER: request.idempotency_key},
        )
        answer = json_body(response)
        payment_id = answer.get("id")
        checkout = answer.get("checkoutUrl")
        if not isinstance(payment_id, str) or not _ID.match(payment_id):
            raise OutcomeUnknown("FlowPay answered a payment request without its id")
        status = payment_status_of(answer.get("status"))
        if status is Status.FAILED:
            return PayResult(PayResultCode.KO, "FlowPay rejected the payment request", payment_id)
        if not isinstance(checkout, str) or not checkout.startswith(("http://", "https://")):
            raise OutcomeUnknown("FlowPay answered a payment request without its checkoutUrl")
        return PayResult(
            result=PayResultCode.REDIRECT_TO_URL,
            description="The payer must authorise the transfer on FlowPay's checkout",
            payment_id=payment_id,
            redirect_url=checkout,
            redirect_url_mobile=checkout,
        )

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Read the payment request back."""
        if not _ID.match(payment_id):
            raise ProviderRejected(f"{payment_id[:80]!r} is not a FlowPay payment request id")
        response = await send(self._client, "GET", f"/payment-requests/{path_segment(payment_id)}")
        if response.status_code == 404:
            raise ProviderRejected(f"FlowPay has no payment request {payment_id}")
        return _lookup(json_body(response))

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """The payment request of this reference made with this key; None when FlowPay has none."""
        response = await send(self._client, "GET", "/payment-requests", params={"reference": shop_transaction_id})
        listed = json_body(response).get("data")
        if not isinstance(listed, list):
            raise OutcomeUnknown("FlowPay answered a payment-request search without its data list")
        for document in listed:
            metadata = document.get("metadata") if isinstance(document, dict) else None
            if isinstance(metadata, dict) and metadata.get(METADATA_KEY) == idempotency_key:
                return _lookup(document)
        return None

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """A signed webhook event (POST), or the payer coming back from the checkout (GET, read back)."""
        if callback.method == "GET":
            returned = callback.query.get(RETURN_PARAMETER, "")
            if not _ID.match(returned):
                raise InvalidCallback(f"the return names no usable {RETURN_PARAMETER}")
            # Nothing here is signed: the status is read back from FlowPay (status None).
            return [Notification(f"return:{returned}:{callback.received_at}", Subject.PAYMENT, returned, None)]
        if callback.method != "POST":
            raise InvalidCallback("FlowPay webhooks are POSTed")
        self._verify(callback)
        try:
            document = json.loads(callback.body)
        except ValueError as exc:
            raise InvalidCallback("the body is not a FlowPay event") from exc
        data = document.get("data") if isinstance(document, dict) else None
        event_id = callback.headers.get(EVENT_ID_HEADER) or (document.get("id") if isinstance(document, dict) else None)
        if not isinstance(data, dict) or not isinstance(event_id, str) or not 0 < len(event_id) <= 200:
            raise InvalidCallback("the event has no id or no data")
        event_type = callback.headers.get(EVENT_TYPE_HEADER) or document.get("type")
        if event_type != STATUS_CHANGE_EVENT:
            # Signed, but about something the PGM does not follow: acknowledged, nothing to do.
            return []
        payment_id = data.get("id")
        if not isinstance(payment_id, str) or not _ID.match(payment_id):
            raise InvalidCallback("the event names no usable payment request id")
        amount = data.get("amount")
        reference = data.get("reference")
        currency = data.get("currency")
        return [
            Notification(
                event_id=event_id,
                subject=Subject.PAYMENT,
                payment_id=payment_id,
                status=payment_status_of(data.get("status")),
                amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
                currency=currency if isinstance(currency, str) else None,
                shop_transaction_id=reference if isinstance(reference, str) and reference else None,
            )
        ]

    def _verify(self, callback: CallbackRequest) -> None:
        timestamp = callback.headers.get(TIMESTAMP_HEADER, "")
        signature = callback.headers.get(SIGNATURE_HEADER, "")
        if not timestamp.isdigit() or not signature:
            raise InvalidCallback("the event carries no FlowPay timestamp or signature")
        if abs(callback.received_at - int(timestamp)) > MAX_EVENT_AGE_SECONDS:
            raise InvalidCallback("the event is older than five minutes (or from the future)")
        try:
            self._config.public_key.verify(_b64decode(signature), timestamp.encode("ascii") + b"." + callback.body)
        except (InvalidSignature, ValueError) as exc:
            raise InvalidCallback("the signature is not FlowPay's") from exc


def _lookup(document: Mapping[str, Any]) -> PaymentLookup:
    payment_id = document.get("id")
    if not isinstance(payment_id, str) or not _ID.match(payment_id):
        raise OutcomeUnknown("FlowPay answered a payment request without its id")
    amount = document.get("amount")
    reference = document.get("reference")
    currency = document.get("currency")
    raw_status = document.get("status")
    return PaymentLookup(
        status=payment_status_of(raw_status),
        payment_id=payment_id,
        shop_transaction_id=reference if isinstance(reference, str) and reference else None,
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        redirect_url=document.get("checkoutUrl") if isinstance(document.get("checkoutUrl"), str) else None,
        metadata={"flowpayStatus": str(raw_status)[:40]},
        currency=currency if isinstance(currency, str) and currency else None,
        # FlowPay gives nothing back by itself: a payment made before the switch has nothing refunded.
        refunded_amount=0,
        payment_method=PAYMENT_METHOD,
    )
