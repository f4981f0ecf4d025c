"""Adapter for Nexi XPay (the API-key REST API, "phoenix" `/api/phoenix-0.0/psp/api/v1`).

What Nexi offers and how it maps here (docs/providers/nexi.md):
* pay: an order on Nexi's hosted payment page (`POST /orders/hpp`), answered REDIRECT_TO_URL with the
  `hostedPage`; the payer pays there (3-D Secure included) or cancels;
* refunds: `POST /operations/{operationId}/refunds` on the order's paid operation, partial or total,
  several; an authorization not yet captured is cancelled instead (`/operations/{id}/cancels`, total only);
* merchant-managed subscriptions: `subscription/start` is a hosted-page order that also creates a
  recurring contract (`recurrence.action: CONTRACT_CREATION`, type MIT_UNSCHEDULED); the contract id is
  the subscription token, and `subscription/pay` charges it with a merchant-initiated order
  (`POST /orders/mit`), settled in the answer;
* status: `GET /orders/{orderId}`;
* notifications: Nexi POSTs `{eventId, eventTime, securityToken, operation}` to the `notificationUrl`
  given with the order. They are hints: the PGM reads the order back and trusts only that answer.

The order id is ours: Nexi lets the merchant choose it (at most 27 characters). It is derived from the
operation's idempotency key, so an order whose creation answer was lost is found again with
`GET /orders/{orderId}`, and a retry can never create a second order.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
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

REQUIRED_VARIABLES: tuple[str, ...] = ("NEXI_BASE_URL", "NEXI_API_KEY")

SANDBOX_BASE_URL = "https://xpaysandbox.nexigroup.com/api/phoenix-0.0/psp/api/v1"
API_KEY_HEADER = "X-Api-Key"
CORRELATION_HEADER = "Correlation-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Nexi: orderId at most 27 characters. Ours: a prefix and 26 hex characters of a hash of the key.
ORDER_ID_LENGTH = 27
_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,27}$")
_CONTRACT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LANGUAGE = re.compile(r"^[a-z]{3}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_LANGUAGE = "ita"
# Nexi's `description` and `customField` are free text of limited length.
DESCRIPTION_MAX_LENGTH = 127
CUSTOM_FIELD_MAX_LENGTH = 255
# The query parameter of our notificationUrl carrying our signature of the order id.
SIGNATURE_PARAMETER = "pgmSignature"
# Replays of a refund whose answer was lost, and the securityTokens of orders created by this process.
REMEMBERED_MAX = 10_000
REPLAY_TTL_SECONDS = 24 * 3600.0

CAPABILITIES = Capabilities(
    operations=frozenset(
        {
            Operation.PAY,
            Operation.REFUND,
            Operation.SUBSCRIPTION_START,
            Operation.SUBSCRIPTION_PAY,
            Operation.STATUS,
            Operation.CALLBACK,
        }
    ),
    payment_methods=frozenset({"credit-cards"}),
    # Merchant-managed (MIT_UNSCHEDULED): the merchant charges on its own schedule; the v3 contract
    # offers DAY and MONTH.
    intervals=frozenset({Interval.DAY, Interval.MONTH}),
    currencies=frozenset({"EUR"}),
)

# The payment operation's `operationResult` → our status (the existing PGM's Nexi table). VOIDED and
# REFUNDED mean the payment was made and later given back: the payment itself stays ACCEPTED.
PAYMENT_STATUS: dict[str, Status] = {
    "AUTHORIZED": Status.ACCEPTED,
    "EXECUTED": Status.ACCEPTED,
    "VOIDED": Status.ACCEPTED,
    "REFUNDED": Status.ACCEPTED,
    "DECLINED": Status.FAILED,
    "DENIED_BY_RISK": Status.FAILED,
    "THREEDS_FAILED": Status.FAILED,
    "CANCELED": Status.FAILED,
    "CANCELLED": Status.FAILED,
    "FAILED": Status.FAILED,
    "THREEDS_VALIDATED": Status.PENDING,
    "PENDING": Status.PENDING,
}
# A refund or cancel operation's `operationResult` → the refund's status.
REFUND_STATUS: dict[str, Status] = {
    "EXECUTED": Status.ACCEPTED,
    "REFUNDED": Status.ACCEPTED,
    "VOIDED": Status.ACCEPTED,
    "PENDING": Status.PENDING,
    "DECLINED": Status.FAILED,
    "DENIED_BY_RISK": Status.FAILED,
    "FAILED": Status.FAILED,
    "CANCELED": Status.FAILED,
    "CANCELLED": Status.FAILED,
}
PAYMENT_OPERATION_TYPES = frozenset({"AUTHORIZATION", "CAPTURE"})
REFUND_OPERATION_TYPES = frozenset({"REFUND", "VOID", "CANCEL"})


@dataclass(frozen=True)
class NexiConfig:
    """Everything the adapter needs, read from NEXI_* variables."""

    base_url: str
    api_key: str
    callback_url: str
    timeout_seconds: float


@dataclass(frozen=True)
class _SentRefund:
    path: str
    body: dict[str, Any]
    sent_at: float


def order_id_for(idempotency_key: str) -> str:
    """Our Nexi orderId for an operation: the same key always gives the same order."""
    return "P" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[: ORDER_ID_LENGTH - 1]


def contract_id_for(order_id: str) -> str:
    """The recurring contract created by a `subscription/start` order (its subscription token)."""
    return "C" + order_id[1:]


def notification_signature(api_key: str, order_id: str) -> str:
    """Our signature of an order id, carried by the notificationUrl we give Nexi for that order.

    Nexi's own proof (the order's securityToken) is only known to the process that created the order;
    this one is checked by any replica, after any restart."""
    return hmac.new(api_key.encode("utf-8"), f"pgm-nexi-notification:{order_id}".encode(), hashlib.sha256).hexdigest()


class NexiAdapter(ProviderAdapter):
    """Nexi XPay behind the common adapter interface."""

    name = "nexi"
    capabilities = CAPABILITIES

    def __init__(self, config: NexiConfig, *, transport: Transport | None = None) -> None:
        self._config = config
        self._client = provider_client(
            config.base_url,
            config.timeout_seconds,
            headers={API_KEY_HEADER: config.api_key, "Accept": "application/json"},
            transport=transport,
        )
        self._security_tokens: OrderedDict[str, str] = OrderedDict()
        self._contracts: OrderedDict[str, str] = OrderedDict()
        self._refunds: OrderedDict[str, _SentRefund] = OrderedDict()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Refuse what Nexi would refuse, before anything is stored."""
        if isinstance(request, RefundRequest):
            return
        if operation is Operation.SUBSCRIPTION_PAY:
            token = request.subscription.token if request.subscription else None
            if not token or not _CONTRACT_ID.match(token):
                raise InvalidProviderData(
                    "subscriptionInfo.token must be the Nexi contract id returned by subscription/start",
                    field="subscriptionInfo.token",
                )
            return
        if not request.success_redirect_url:
            raise InvalidProviderData(
                "successRedirectUrl is required: Nexi's hosted page sends the payer back to it",
                field="successRedirectUrl",
            )
        _language(request.provider_data)
        _capture_type(request.provider_data)
        expiration = request.provider_data.get("expirationDate")
        if expiration is not None and (not isinstance(expiration, str) or not _DATE.match(expiration)):
            raise InvalidProviderData(
                "providerData.expirationDate must be a date YYYY-MM-DD", field="providerData.expirationDate"
            )

    async def pay(self, request: PayRequest) -> PayResult:
        """An order on Nexi's hosted payment page."""
        return await self._hosted_order(request, recurring=False)

    async def start_subscription(self, request: PayRequest) -> PayResult:
        """The first payment of a merchant-managed subscription, creating the recurring contract."""
        return await self._hosted_order(request, recurring=True)

    async def pay_subscription(self, request: PayRequest) -> PayResult:
        """A merchant-initiated charge on the contract (`POST /orders/mit`), settled in the answer."""
        token = request.subscription.token if request.subscription else None
        if not token:
            raise InvalidProviderData("subscriptionInfo.token is required", field="subscriptionInfo.token")
        order_id = order_id_for(request.idempotency_key)
        body = {
            "order": _order(order_id, request),
            "contractId": token,
            "captureType": "IMPLICIT",
        }
        answer = await self._post("/orders/mit", body, request.idempotency_key)
        operation = answer.get("operation")
        if not isinstance(operation, Mapping):
            raise OutcomeUnknown("Nexi answered a merchant-initiated order without its operation")
        status = _operation_status(operation, PAYMENT_STATUS)
        code = {Status.ACCEPTED: PayResultCode.OK, Status.FAILED: PayResultCode.KO}.get(status, PayResultCode.PENDING)
        return PayResult(
            result=code,
            description=_describe(code, operation),
            payment_id=order_id,
            subscription_token=token,
            metadata=_operation_metadata(operation),
        )

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund the order's paid operation; cancel an authorization that was never captured."""
        try:
            order = await self._order(request.payment_id)
        except OutcomeUnknown as exc:
            # Nothing was sent yet: the refund surely does not exist, and a retry may ask again.
            raise ProviderRejected(f"Nexi could not be asked for the order, so nothing was refunded ({exc})") from exc
        paid = _payment_operation(order)
        if paid is None or _operation_status(paid, PAYMENT_STATUS) is not Status.ACCEPTED:
            raise ProviderRejected(f"Nexi order {request.payment_id} has no paid operation to refund")
        operation_id = _operation_id(paid)
        body: dict[str, Any] = {"amount": str(request.amount), "currency": request.currency}
        if paid.get("operationResult") == "AUTHORIZED":
            # Never captured: Nexi releases the whole authorization (a cancel), it cannot take part of it.
            if request.amount != _amount(paid.get("operationAmount"), order):
                raise ProviderRejected(
                    "Nexi cannot partially refund an authorization that was not captured: only a total cancel"
                )
            path, body = f"/operations/{operation_id}/cancels", {}
        else:
            path = f"/operations/{operation_id}/refunds"
        self._remember_refund(request.idempotency_key, _SentRefund(path, body, time.time()))
        return _refund_answer(await self._post(path, body, request.idempotency_key))

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Read the order back: its payment operation says where the payment stands."""
        if not _ORDER_ID.match(payment_id):
            raise ProviderRejected(f"{payment_id[:80]!r} is not a Nexi order id")
        return self._lookup(await self._order(payment_id), None)

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """The order id comes from the key: ask Nexi for that order; None when Nexi has none."""
        response = await send(self._client, "GET", f"/orders/{order_id_for(idempotency_key)}", headers=_correlation())
        if response.status_code == 404:
            return None
        return self._lookup(_body(response), self._contracts.get(idempotency_key))

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """A refund by its operation id in the order; one whose answer was lost, by asking again with its key."""
        if refund_id:
            if not _ORDER_ID.match(payment_id):
                raise ProviderRejected(f"{payment_id[:80]!r} is not a Nexi order id")
            for operation in _operations(await self._order(payment_id)):
                if operation.get("operationId") == refund_id:
                    return RefundResult(_operation_status(operation, REFUND_STATUS), refund_id, "Nexi's refund")
            return None
        sent = self._recall_refund(idempotency_key)
        if sent is None:
            raise NotSupported("Nexi has no refund lookup by key, and the refund is no longer known here")
        # Nexi answers a request repeated with the same Idempotency-Key with what it did the first time.
        return _refund_answer(await self._post(sent.path, sent.body, idempotency_key))

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """Check the notification belongs to one of our orders (our signature in the URL, Nexi's
        securityToken when known here) and read which order it is about; the status is read back."""
        if callback.method != "POST":
            raise InvalidCallback("Nexi notifications are POSTed")
        try:
            document = json.loads(callback.body)
        except ValueError as exc:
            raise InvalidCallback("the body is not a Nexi notification") from exc
        operation = document.get("operation") if isinstance(document, dict) else None
        if not isinstance(operation, dict):
            raise InvalidCallback("the notification has no operation")
        order_id = operation.get("orderId")
        event_id = document.get("eventId")
        token = document.get("securityToken")
        if not isinstance(order_id, str) or not _ORDER_ID.match(order_id):
            raise InvalidCallback("the notification names no usable orderId")
        if not isinstance(event_id, str) or not event_id or len(event_id) > 200:
            raise InvalidCallback("the notification has no eventId")
        if not isinstance(token, str) or not token:
            raise InvalidCallback("the notification has no securityToken")
        expected = notification_signature(self._config.api_key, order_id)
        if not hmac.compare_digest(expected, callback.query.get(SIGNATURE_PARAMETER, "")):
            raise InvalidCallback("the notification URL does not carry our signature of this order")
        known = self._security_tokens.get(order_id)
        if known is not None and not hmac.compare_digest(known, token):
            raise InvalidCallback("the securityToken is not the one Nexi gave for this order")
        operation_type = str(operation.get("operationType") or "")
        operation_id = operation.get("operationId")
        if operation_type in REFUND_OPERATION_TYPES and isinstance(operation_id, str) and operation_id:
            return [
                Notification(f"{event_id}", Subject.REFUND, payment_id=order_id, status=None, refund_id=operation_id)
            ]
        return [Notification(f"{event_id}", Subject.PAYMENT, payment_id=order_id, status=None)]

    def callback_answer(self) -> CallbackAnswer:
        """Any 2xx stops Nexi's retries."""
        return CallbackAnswer(status_code=200, body=b"", media_type="text/plain")

    async def _hosted_order(self, request: PayRequest, recurring: bool) -> PayResult:
        order_id = order_id_for(request.idempotency_key)
        session: dict[str, Any] = {
            "actionType": "PAY",
            "amount": str(request.amount),
            "language": _language(request.provider_data),
            "resultUrl": request.success_redirect_url,
            "cancelUrl": request.failure_redirect_url or request.success_redirect_url,
            "notificationUrl": self._notification_url(order_id),
            "captureType": _capture_type(request.provider_data),
        }
        contract_id = contract_id_for(order_id) if recurring else None
        if contract_id is not None:
            session["recurrence"] = {
                "action": "CONTRACT_CREATION",
                "contractId": contract_id,
                "contractType": "MIT_UNSCHEDULED",
            }
            self._remember(self._contracts, request.idempotency_key, contract_id)
        body = {"order": _order(order_id, request), "paymentSession": session}
        answer = await self._post("/orders/hpp", body, request.idempotency_key)
        hosted_page = answer.get("hostedPage")
        security_token = answer.get("securityToken")
        if not isinstance(hosted_page, str) or not hosted_page.startswith(("http://", "https://")):
            raise OutcomeUnknown("Nexi answered an order without its hostedPage")
        if isinstance(security_token, str) and security_token:
            self._remember(self._security_tokens, order_id, security_token)
        return PayResult(
            result=PayResultCode.REDIRECT_TO_URL,
            description="The payer must pay on Nexi's hosted page",
            payment_id=order_id,
            redirect_url=hosted_page,
            redirect_url_mobile=hosted_page,
            subscription_token=contract_id,
        )

    def _notification_url(self, order_id: str) -> str:
        query = urlencode({SIGNATURE_PARAMETER: notification_signature(self._config.api_key, order_id)})
        return f"{self._config.callback_url}?{query}"

    async def _order(self, order_id: str) -> dict[str, Any]:
        response = await send(self._client, "GET", f"/orders/{order_id}", headers=_correlation())
        if response.status_code == 404:
            raise ProviderRejected(f"Nexi has no order {order_id}")
        return _body(response)

    async def _post(self, path: str, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        headers = {**_correlation(), IDEMPOTENCY_HEADER: idempotency_key}
        return _body(await send(self._client, "POST", path, json=body, headers=headers))

    def _lookup(self, document: Mapping[str, Any], contract_id: str | None) -> PaymentLookup:
        order = _order_of(document)
        order_id = order.get("orderId")
        if not isinstance(order_id, str) or not _ORDER_ID.match(order_id):
            raise OutcomeUnknown("Nexi answered an order without its orderId")
        paid = _payment_operation(document)
        status = _operation_status(paid, PAYMENT_STATUS) if paid is not None else Status.PENDING
        reference = order.get("customField")
        # What was given back already, so that a payment made before the switch is adopted with the
        # right refundable amount: executed refunds, and a cancel (it releases the whole authorization).
        refunds = tuple(
            (str(operation["operationId"]), refunded)
            for operation in _operations(document)
            if operation.get("operationType") in REFUND_OPERATION_TYPES
            and REFUND_STATUS.get(str(operation.get("operationResult"))) is Status.ACCEPTED
            and isinstance(operation.get("operationId"), str)
            and (refunded := _amount(operation.get("operationAmount"), None)) is not None
        )
        currency = order.get("currency")
        return PaymentLookup(
            status=status,
            payment_id=order_id,
            shop_transaction_id=reference if isinstance(reference, str) and reference else None,
            amount=_amount(order.get("amount"), None),
            subscription_token=contract_id,
            metadata=_operation_metadata(paid) if paid is not None else {},
            currency=currency if isinstance(currency, str) and currency else None,
            refunded_amount=sum(amount for _, amount in refunds),
            payment_method="credit-cards",
            refunds=refunds,
        )

    def _remember(self, memory: OrderedDict[str, str], key: str, value: str) -> None:
        memory[key] = value
        memory.move_to_end(key)
        while len(memory) > REMEMBERED_MAX:
            memory.popitem(last=False)

    def _remember_refund(self, key: str, sent: _SentRefund) -> None:
        self._refunds[key] = sent
        self._refunds.move_to_end(key)
        while len(self._refunds) > REMEMBERED_MAX:
            self._refunds.popitem(last=False)

    def _recall_refund(self, key: str) -> _SentRefund | None:
        sent = self._refunds.get(key)
        if sent is None or time.time() - sent.sent_at > REPLAY_TTL_SECONDS:
            return None
        return sent


def build(settings: Settings, transport: Transport | None = None) -> ProviderAdapter:
    """The Nexi adapter from NEXI_* variables; raise ConfigurationError naming a bad one."""
    env = settings.provider_env
    base_url = env.get("NEXI_BASE_URL", "").strip().rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"NEXI_BASE_URL must be an http(s) URL, e.g. {SANDBOX_BASE_URL}")
    callback_url = env.get("NEXI_CALLBACK_URL", "").strip() or f"{settings.public_url}/v3/nexi/callback"
    if not callback_url.startswith(("http://", "https://")) or "?" in callback_url or "#" in callback_url:
        raise ConfigurationError(
            "NEXI_CALLBACK_URL must be the PGM's callback endpoint without a query, e.g. "
            "https://pgm.example.com/v3/nexi/callback"
        )
    api_key = env.get("NEXI_API_KEY", "").strip()
    if not api_key:
        raise ConfigurationError("NEXI_API_KEY is empty")
    return NexiAdapter(
        NexiConfig(
            base_url=base_url,
            api_key=api_key,
            callback_url=callback_url.rstrip("/"),
            timeout_seconds=settings.provider_timeout_seconds,
        ),
        transport=transport,
    )


def _correlation() -> dict[str, str]:
    # Nexi requires a fresh UUID v4 on every call, to trace it on their side.
    return {CORRELATION_HEADER: str(uuid.uuid4())}


def _language(provider_data: Mapping[str, Any]) -> str:
    language = provider_data.get("language", DEFAULT_LANGUAGE)
    if not isinstance(language, str) or not _LANGUAGE.match(language):
        raise InvalidProviderData(
            "providerData.language must be an ISO 639-2 code of three lower-case letters, e.g. ita or eng",
            field="providerData.language",
        )
    return language


def _capture_type(provider_data: Mapping[str, Any]) -> str:
    capture = provider_data.get("captureType", "IMPLICIT")
    if capture not in ("IMPLICIT", "EXPLICIT"):
        raise InvalidProviderData(
            "providerData.captureType must be IMPLICIT (captured at once) or EXPLICIT (captured later in "
            "Nexi's back office)",
            field="providerData.captureType",
        )
    return str(capture)


def _order(order_id: str, request: PayRequest) -> dict[str, Any]:
    description = request.provider_data.get("description")
    if not isinstance(description, str) or not description.strip():
        description = f"Order {request.shop_transaction_id}"
    return {
        "orderId": order_id,
        "amount": str(request.amount),
        "currency": request.currency,
        "description": description[:DESCRIPTION_MAX_LENGTH],
        # The merchant's reference travels with the order, so a lookup can name it.
        "customField": request.shop_transaction_id[:CUSTOM_FIELD_MAX_LENGTH],
    }


def _body(response: Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; 5xx and malformed answers leave the outcome unknown, 4xx is a refusal."""
    if response.status_code >= 500:
        raise OutcomeUnknown(f"Nexi answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        if response.status_code >= 400:
            raise ProviderRejected(f"Nexi refused the request (HTTP {response.status_code})") from exc
        raise OutcomeUnknown(f"Nexi answered HTTP {response.status_code} with a body that is not JSON") from exc
    if response.status_code >= 400:
        raise ProviderRejected(f"Nexi refused the request (HTTP {response.status_code}){_errors(body)}")
    if not isinstance(body, dict):
        raise OutcomeUnknown("Nexi answered with JSON that is not an object")
    return body


def _errors(body: object) -> str:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return ""
    texts = [
        f"{error.get('code', '')} {error.get('description', '')}".strip() for error in errors if isinstance(error, dict)
    ]
    return (": " + "; ".join(text for text in texts if text))[:500] if any(texts) else ""


def _order_of(document: Mapping[str, Any]) -> Mapping[str, Any]:
    status = document.get("orderStatus")
    order = status.get("order") if isinstance(status, Mapping) else None
    if not isinstance(order, Mapping):
        raise OutcomeUnknown("Nexi answered an order lookup without orderStatus.order")
    return order


def _operations(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # The operations list sits beside orderStatus; older examples nest it inside: read either.
    raw = document.get("operations")
    if raw is None and isinstance(document.get("orderStatus"), Mapping):
        raw = document["orderStatus"].get("operations")
    return [operation for operation in raw if isinstance(operation, Mapping)] if isinstance(raw, list) else []


def _payment_operation(document: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The order's latest authorization or capture: the payment itself (refunds are other operations)."""
    payments = [op for op in _operations(document) if op.get("operationType") in PAYMENT_OPERATION_TYPES]
    return payments[-1] if payments else None


def _operation_status(operation: Mapping[str, Any], table: Mapping[str, Status]) -> Status:
    result = operation.get("operationResult")
    status = table.get(str(result))
    if status is None:
        raise OutcomeUnknown(f"Nexi answered an operation with an unknown result {str(result)[:40]!r}")
    return status


def _operation_id(operation: Mapping[str, Any]) -> str:
    operation_id = operation.get("operationId")
    if not isinstance(operation_id, str) or not _CONTRACT_ID.match(operation_id):
        raise OutcomeUnknown("Nexi answered an operation without a usable operationId")
    return operation_id


def _amount(value: object, order: Mapping[str, Any] | None) -> int | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if order is not None:
        return _amount(_order_of(order).get("amount"), None)
    return None


def _operation_metadata(operation: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: operation[key]
        for key in ("operationId", "operationResult", "operationType", "paymentCircuit")
        if isinstance(operation.get(key), str)
    }


def _describe(code: PayResultCode, operation: Mapping[str, Any]) -> str:
    result = str(operation.get("operationResult", ""))[:40]
    return {
        PayResultCode.OK: "The payment was executed by Nexi",
        PayResultCode.KO: f"Nexi refused the payment ({result})",
        PayResultCode.PENDING: f"Nexi has not settled the payment yet ({result})",
        PayResultCode.REDIRECT_TO_URL: "The payer must pay on Nexi's hosted page",
    }[code]


def _refund_answer(answer: Mapping[str, Any]) -> RefundResult:
    """Nexi answers an accepted refund or cancel with the new operation's id; a refusal is a 4xx."""
    operation_id = answer.get("operationId")
    if not isinstance(operation_id, str) or not operation_id:
        raise OutcomeUnknown("Nexi answered a refund without its operationId")
    return RefundResult(Status.ACCEPTED, operation_id, "The refund was executed by Nexi")
