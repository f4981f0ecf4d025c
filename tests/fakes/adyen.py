"""A stateful fake of Adyen's Checkout API v71 and its standard webhooks, for tests on loopback.

Written from Adyen's public documentation (Checkout API v71 reference: /payments,
/payments/{paymentPspReference}/refunds, /paymentLinks, /storedPaymentMethods; "API idempotency";
"Tokenization"; "Refund" (asynchronous, REFUND webhook); "Webhooks: standard notification structure"
and "Verify HMAC signatures"; "Error codes" / "HTTP status codes"). Only the subset the PGM uses:

* authentication with `X-API-Key` (a wrong key gets Adyen's 401 security error body), and the
  merchant account checked on every call (403 "Invalid Merchant Account");
* JSON bodies only, amounts as integer minor units, required fields checked (422 validation errors);
* `Idempotency-Key` (at most 64 characters) required on every creating POST here, so tests prove the
  adapter sends it; a repeat answers the stored response, a repeat while the first is still being
  answered gets 422 error 704, as Adyen documents;
* card numbers in Adyen's test form (`test_<PAN>`, or client-side-encrypted `adyenjs_...` blobs):
  `test_4111111111111111` is authorised, `test_4000000000000002` refused, `test_4212345678901237`
  asks for 3-D Secure (RedirectShopper) until `approve()`/`decline()`;
* tokenization: `storePaymentMethod` + `shopperReference` + `recurringProcessingModel` stores the card,
  reported in `additionalData` (tokenization.* and recurring.*) and a RECURRING_CONTRACT webhook;
  `ContAuth` payments with `storedPaymentMethodId`; GET/DELETE `/storedPaymentMethods`;
* refunds answered `received`, settled by `complete_refund()` (or refused at once, asynchronously, when
  they exceed what is left, as Adyen's accounting rules do) with a REFUND webhook;
* payment links with Adyen's `PL...` ids, paid or refused through `approve()`/`decline()`;
* webhooks sent as Adyen sends them: one JSON notification per POST, HMAC-SHA256 per item in
  `additionalData.hmacSignature`, retried until the endpoint answers 2xx.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import queue
import secrets
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import run_server_in_thread

API_KEY = "AQE_fake_adyen_api_key_for_tests"
MERCHANT_ACCOUNT = "PgmTestMerchantECOM"
HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
API_PREFIX = "/v71"
AUTHORISED_CARD = "test_4111111111111111"
REFUSED_CARD = "test_4000000000000002"
THREE_DS_CARD = "test_4212345678901237"
CARD_FIELDS = ("encryptedCardNumber", "encryptedExpiryMonth", "encryptedExpiryYear", "encryptedSecurityCode")
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
MAX_IDEMPOTENCY_KEY = 64
WEBHOOK_ATTEMPTS = 20
_ALPHABET = string.ascii_uppercase + string.digits


def sign_item(item: dict[str, Any], hmac_key: str = HMAC_KEY) -> str:
    """Adyen's notification HMAC, computed independently of the adapter (for the fake and for tests)."""
    values = {**item, "value": item["amount"]["value"], "currency": item["amount"]["currency"]}
    signing = ":".join(str(values.get(name, "")) for name in HMAC_FIELDS)
    digest = hmac.new(binascii.unhexlify(hmac_key), signing.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def notification_body(items: list[dict[str, Any]], hmac_key: str = HMAC_KEY, live: str = "false") -> bytes:
    """A standard notification with each item signed, as Adyen POSTs it."""
    signed = []
    for item in items:
        extra = {k: v for k, v in item.get("additionalData", {}).items() if k != "hmacSignature"}
        body = {**item, "additionalData": {**extra, "hmacSignature": sign_item(item, hmac_key)}}
        signed.append({"NotificationRequestItem": body})
    return json.dumps({"live": live, "notificationItems": signed}).encode()


def _psp() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(16))


def _error(status: int, code: str, message: str, error_type: str) -> JSONResponse:
    # Adyen's error body shape (ServiceError).
    body = {"status": status, "errorCode": code, "message": message, "errorType": error_type, "pspReference": _psp()}
    return JSONResponse(body, status_code=status)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class FakeRefund:
    """A refund as Adyen holds it."""

    psp: str
    amount: int
    reference: str
    status: str = "received"  # received → refunded | failed


@dataclass
class FakePayment:
    """A payment as Adyen holds it."""

    psp: str
    reference: str
    amount: int
    currency: str
    result_code: str
    shopper_reference: str | None = None
    store: bool = False
    stored_payment_method_id: str | None = None
    payment_link_id: str | None = None
    idempotency_key: str | None = None
    refunds: list[FakeRefund] = field(default_factory=list)


@dataclass
class FakeLink:
    """A payment link as Adyen holds it."""

    id: str
    reference: str
    amount: int
    currency: str
    return_url: str | None
    expires_at: str
    status: str = "active"


@dataclass
class Delivery:
    """One webhook POST the fake made, and how the endpoint answered."""

    body: bytes
    status: int
    answer: bytes


class _Answer(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class Fake:
    """The running fake: state, test controls and fault switches."""

    def __init__(self) -> None:
        self.url = ""
        self.webhook_url: str | None = None
        self.api_key = API_KEY
        self.merchant_account = MERCHANT_ACCOUNT
        self.hmac_key = HMAC_KEY
        self.deliveries: list[Delivery] = []
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self._lock = threading.Lock()
        self._payments: dict[str, FakePayment] = {}
        self._links: dict[str, FakeLink] = {}
        self._stored: dict[tuple[str, str], dict[str, Any]] = {}
        self._idempotent: dict[str, tuple[int, bytes] | None] = {}
        self._faults: list[tuple[str, Any]] = []
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._deliver_forever, name="adyen-fake-webhooks", daemon=True)
        self.app = Starlette(
            routes=[
                Route(f"{API_PREFIX}/payments", self._payments_endpoint, methods=["POST"]),
                Route(f"{API_PREFIX}/payments/{{psp}}/refunds", self._refunds_endpoint, methods=["POST"]),
                Route(f"{API_PREFIX}/paymentLinks", self._links_endpoint, methods=["POST"]),
                Route(f"{API_PREFIX}/paymentLinks/{{link_id}}", self._link_endpoint, methods=["GET"]),
                Route(f"{API_PREFIX}/storedPaymentMethods", self._stored_list_endpoint, methods=["GET"]),
                Route(f"{API_PREFIX}/storedPaymentMethods/{{stored_id}}", self._stored_delete, methods=["DELETE"]),
                Route("/hpp/{kind}/{identifier}", self._hosted_page, methods=["GET"]),
            ]
        )

    # ----- the uniform test API -----

    def env(self) -> dict[str, str]:
        """The PGM environment for Adyen pointing at this fake (without ENABLED_PROVIDERS)."""
        return {
            "ADYEN_IS_TEST": "true",
            "ADYEN_PRIVATE_KEY": self.api_key,
            "ADYEN_MERCHANT_ACCOUNT": self.merchant_account,
            "ADYEN_HMAC_KEY": self.hmac_key,
            "ADYEN_BASE_URL": f"{self.url}{API_PREFIX}",
        }

    def approve(self, payment_id: str) -> None:
        """The shopper completes 3-D Secure, or pays a payment link; the AUTHORISATION webhook follows."""
        self._shopper_decides(payment_id, approved=True)

    def decline(self, payment_id: str) -> None:
        """The shopper fails 3-D Secure, or a link payment is refused; the AUTHORISATION webhook follows."""
        self._shopper_decides(payment_id, approved=False)

    def complete_refund(self, refund_id: str, ok: bool) -> None:
        """Adyen settles a received refund; the REFUND webhook follows."""
        with self._lock:
            payment, refund = self._refund(refund_id)
            if refund.status != "received":
                raise ValueError(f"refund {refund_id} is already {refund.status}")
            refund.status = "refunded" if ok else "failed"
        self._notify_refund(payment, refund, ok, "" if ok else "Refund declined by the acquirer")

    def payments(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """What Adyen holds for a merchant reference, with refunds."""
        with self._lock:
            return [
                {
                    "pspReference": p.psp,
                    "reference": p.reference,
                    "amount": p.amount,
                    "currency": p.currency,
                    "resultCode": p.result_code,
                    "shopperReference": p.shopper_reference,
                    "storedPaymentMethodId": p.stored_payment_method_id,
                    "paymentLinkId": p.payment_link_id,
                    "refunds": [{"pspReference": r.psp, "amount": r.amount, "status": r.status} for r in p.refunds],
                }
                for p in self._payments.values()
                if p.reference == shop_transaction_id
            ]

    def links(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """The payment links Adyen holds for a merchant reference."""
        with self._lock:
            return [
                {"id": link.id, "status": link.status, "amount": link.amount}
                for link in self._links.values()
                if link.reference == shop_transaction_id
            ]

    def fail_next(self, status_code: int) -> None:
        """The next API call answers this status without being processed."""
        self._faults.append(("fail", status_code))

    def delay_next(self, seconds: float) -> None:
        """The next API call is processed, then answered this late."""
        self._faults.append(("delay", seconds))

    def malformed_next(self) -> None:
        """The next API call is processed, then answered with a body that is not JSON."""
        self._faults.append(("malformed", None))

    def send_raw(self, body: bytes) -> httpx.Response:
        """POST a notification body to the webhook URL now, as Adyen would (for forged/duplicate tests)."""
        assert self.webhook_url, "set fake.webhook_url first"
        return httpx.post(self.webhook_url, content=body, headers={"Content-Type": "application/json"}, timeout=10)

    def delivered(self, event_code: str, psp: str) -> list[Delivery]:
        """Webhook deliveries carrying this event for this pspReference."""
        found = []
        for delivery in list(self.deliveries):
            items = json.loads(delivery.body)["notificationItems"]
            if any(
                i["NotificationRequestItem"]["eventCode"] == event_code
                and psp
                in (
                    i["NotificationRequestItem"]["pspReference"],
                    i["NotificationRequestItem"].get("originalReference"),
                )
                for i in items
            ):
                found.append(delivery)
        return found

    # ----- API endpoints -----

    async def _payments_endpoint(self, request: Request) -> Response:
        return await self._handle(request, creating=True, action=self._create_payment)

    async def _refunds_endpoint(self, request: Request) -> Response:
        return await self._handle(request, creating=True, action=self._create_refund)

    async def _links_endpoint(self, request: Request) -> Response:
        return await self._handle(request, creating=True, action=self._create_link)

    async def _link_endpoint(self, request: Request) -> Response:
        return await self._handle(request, creating=False, action=self._get_link)

    async def _stored_list_endpoint(self, request: Request) -> Response:
        return await self._handle(request, creating=False, action=self._list_stored)

    async def _stored_delete(self, request: Request) -> Response:
        return await self._handle(request, creating=False, action=self._delete_stored)

    async def _hosted_page(self, request: Request) -> Response:
        identifier = request.path_params["identifier"]
        return HTMLResponse(f"<html><body><h1>Adyen test page</h1><p>{identifier}</p></body></html>")

    async def _handle(self, request: Request, *, creating: bool, action: Any) -> Response:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append((request.method, request.url.path, headers, raw))
        fault = self._faults.pop(0) if self._faults else None
        if fault and fault[0] == "fail":
            return _error(fault[1], "905", "Internal error, please retry", "internal")
        if headers.get("x-api-key") != self.api_key:
            return JSONResponse(
                {
                    "status": 401,
                    "errorCode": "000",
                    "message": "HTTP Status Response - Unauthorized",
                    "errorType": "security",
                },
                status_code=401,
            )
        key = headers.get("idempotency-key")
        try:
            body = self._parse(request, raw) if request.method == "POST" else {}
            if creating:
                if not key:
                    raise _Answer(_error(422, "702", "Idempotency-Key header is required by this fake", "validation"))
                if len(key) > MAX_IDEMPOTENCY_KEY:
                    raise _Answer(_error(422, "702", "Idempotency-Key is longer than 64 characters", "validation"))
                with self._lock:
                    if key in self._idempotent:
                        stored = self._idempotent[key]
                        if stored is None:
                            raise _Answer(_error(422, "704", "request already processed or in progress", "validation"))
                        return Response(stored[1], status_code=stored[0], media_type="application/json")
                    self._idempotent[key] = None
            try:
                status, answer = action(request, body, key)
            except _Answer as refused:
                if creating and key:
                    with self._lock:
                        # A refused request is not stored: the same key may be used again.
                        self._idempotent.pop(key, None)
                raise refused
        except _Answer as refused:
            return refused.response
        encoded = b"" if answer is None else json.dumps(answer).encode()
        if creating and key:
            with self._lock:
                self._idempotent[key] = (status, encoded)
        if fault and fault[0] == "delay":
            await asyncio.sleep(fault[1])
        if fault and fault[0] == "malformed":
            return Response(b"<html>502 Bad Gateway</html>", status_code=200, media_type="application/json")
        return Response(encoded, status_code=status, media_type="application/json" if encoded else None)

    def _parse(self, request: Request, raw: bytes) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise _Answer(_error(415, "702", "Unsupported Media Type: JSON is required", "validation"))
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Answer(_error(400, "702", "Unexpected input: the body is not JSON", "validation")) from None
        if not isinstance(body, dict):
            raise _Answer(_error(400, "702", "Unexpected input: expected a JSON object", "validation"))
        if body.get("merchantAccount") != self.merchant_account:
            raise _Answer(_error(403, "901", "Invalid Merchant Account", "security"))
        return body

    def _amount(self, body: dict[str, Any]) -> tuple[int, str]:
        amount = body.get("amount")
        if not isinstance(amount, dict) or "value" not in amount:
            raise _Answer(_error(422, "100", "Required field 'amount' is not provided.", "validation"))
        value, currency = amount.get("value"), amount.get("currency")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _Answer(_error(422, "137", "Invalid amount specified: minor units as an integer", "validation"))
        if not isinstance(currency, str) or len(currency) != 3:
            raise _Answer(_error(422, "702", "Invalid currency", "validation"))
        return value, currency

    def _required(self, body: dict[str, Any], *names: str) -> None:
        for name in names:
            if not body.get(name):
                raise _Answer(_error(422, "130", f"Required field '{name}' is not provided.", "validation"))

    def _create_payment(self, request: Request, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        self._required(body, "reference", "paymentMethod", "returnUrl")
        value, currency = self._amount(body)
        method = body["paymentMethod"]
        if not isinstance(method, dict) or method.get("type") != "scheme":
            raise _Answer(_error(422, "702", "paymentMethod.type must be scheme", "validation"))
        shopper = body.get("shopperReference")
        model = body.get("recurringProcessingModel")
        stored_id = method.get("storedPaymentMethodId")
        if stored_id:
            if body.get("shopperInteraction") != "ContAuth" or not model or not shopper:
                raise _Answer(
                    _error(422, "702", "A stored method needs shopperReference, ContAuth and a model", "validation")
                )
            with self._lock:
                if (shopper, stored_id) not in self._stored:
                    raise _Answer(_error(422, "800", "Contract not found", "validation"))
            outcome = "Authorised"
        else:
            for name in CARD_FIELDS:
                if not isinstance(method.get(name), str) or not method[name]:
                    raise _Answer(_error(422, "702", f"Required field 'paymentMethod.{name}' missing", "validation"))
            number = method["encryptedCardNumber"]
            if not number.startswith(("test_", "adyenjs_")):
                raise _Answer(_error(422, "174", "Unable to decrypt data", "validation"))
            outcome = {REFUSED_CARD: "Refused", THREE_DS_CARD: "RedirectShopper"}.get(number, "Authorised")
        store = bool(body.get("storePaymentMethod"))
        if store and (not shopper or not model):
            raise _Answer(_error(422, "702", "storePaymentMethod needs shopperReference and a model", "validation"))
        payment = FakePayment(
            psp=_psp(),
            reference=body["reference"],
            amount=value,
            currency=currency,
            result_code=outcome,
            shopper_reference=shopper,
            store=store,
            stored_payment_method_id=stored_id,
            idempotency_key=key,
        )
        with self._lock:
            self._payments[payment.psp] = payment
        answer: dict[str, Any] = {
            "pspReference": payment.psp,
            "resultCode": outcome,
            "merchantReference": payment.reference,
            "amount": {"value": value, "currency": currency},
        }
        if outcome == "Refused":
            answer["refusalReason"] = "Refused"
            answer["refusalReasonCode"] = "2"
        if outcome == "RedirectShopper":
            answer["action"] = {
                "type": "redirect",
                "method": "GET",
                "url": f"{self.url}/hpp/checkout/{payment.psp}",
                "paymentMethodType": "scheme",
            }
        if outcome == "Authorised":
            additional = self._stored_on_success(payment)
            if additional:
                answer["additionalData"] = additional
        if outcome != "RedirectShopper":
            self._notify_authorisation(payment, outcome == "Authorised")
        return 200, answer

    def _stored_on_success(self, payment: FakePayment) -> dict[str, str]:
        if not payment.store or not payment.shopper_reference:
            return {}
        stored_id = _psp()
        payment.stored_payment_method_id = stored_id
        with self._lock:
            self._stored[(payment.shopper_reference, stored_id)] = {
                "id": stored_id,
                "type": "scheme",
                "brand": "visa",
                "lastFour": "1111",
                "expiryMonth": "03",
                "expiryYear": "2030",
                "supportedShopperInteractions": ["Ecommerce", "ContAuth"],
                "supportedRecurringProcessingModels": ["Subscription"],
            }
        self._emit(
            {
                "eventCode": "RECURRING_CONTRACT",
                "success": "true",
                "pspReference": stored_id,
                "originalReference": payment.psp,
                "merchantReference": payment.reference,
                "amount": {"value": payment.amount, "currency": payment.currency},
                "additionalData": {"shopperReference": payment.shopper_reference},
            }
        )
        return {
            "tokenization.storedPaymentMethodId": stored_id,
            "tokenization.shopperReference": payment.shopper_reference,
            "tokenization.store.operationType": "created",
            "recurring.recurringDetailReference": stored_id,
            "recurring.shopperReference": payment.shopper_reference,
        }

    def _create_refund(self, request: Request, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        value, currency = self._amount(body)
        psp = request.path_params["psp"]
        with self._lock:
            payment = self._payments.get(psp)
            if payment is None:
                raise _Answer(_error(422, "167", "Original pspReference required for this operation", "validation"))
            if payment.result_code != "Authorised":
                raise _Answer(_error(422, "702", "The payment was not authorised", "validation"))
            if currency != payment.currency:
                raise _Answer(_error(422, "702", "Currency differs from the payment's", "validation"))
            refund = FakeRefund(psp=_psp(), amount=value, reference=str(body.get("reference") or ""))
            left = payment.amount - sum(r.amount for r in payment.refunds if r.status != "failed")
            payment.refunds.append(refund)
            over = value > left
            if over:
                # Adyen accepts the request and refuses the refund asynchronously (accounting rules).
                refund.status = "failed"
        if over:
            self._notify_refund(payment, refund, False, "Insufficient balance on payment")
        answer = {
            "merchantAccount": self.merchant_account,
            "paymentPspReference": psp,
            "pspReference": refund.psp,
            "reference": refund.reference,
            "status": "received",
            "amount": {"value": value, "currency": currency},
        }
        return 201, answer

    def _create_link(self, request: Request, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        self._required(body, "reference")
        value, currency = self._amount(body)
        link = FakeLink(
            id="PL" + _psp(),
            reference=body["reference"],
            amount=value,
            currency=currency,
            return_url=body.get("returnUrl"),
            expires_at=(datetime.now(UTC) + timedelta(hours=24)).isoformat(timespec="seconds"),
        )
        with self._lock:
            self._links[link.id] = link
        return 201, self._link_json(link)

    def _get_link(self, request: Request, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
        with self._lock:
            link = self._links.get(request.path_params["link_id"])
        if link is None:
            raise _Answer(_error(422, "702", "Payment link not found", "validation"))
        return 200, self._link_json(link)

    def _link_json(self, link: FakeLink) -> dict[str, Any]:
        return {
            "id": link.id,
            "url": f"{self.url}/hpp/link/{link.id}",
            "status": link.status,
            "reference": link.reference,
            "merchantAccount": self.merchant_account,
            "amount": {"value": link.amount, "currency": link.currency},
            "expiresAt": link.expires_at,
            "reusable": False,
        }

    def _query_owner(self, request: Request) -> str:
        if request.query_params.get("merchantAccount") != self.merchant_account:
            raise _Answer(_error(403, "901", "Invalid Merchant Account", "security"))
        shopper = request.query_params.get("shopperReference")
        if not shopper:
            raise _Answer(_error(422, "130", "Required field 'shopperReference' is not provided.", "validation"))
        return shopper

    def _list_stored(self, request: Request, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
        shopper = self._query_owner(request)
        with self._lock:
            methods = [dict(m) for (owner, _), m in self._stored.items() if owner == shopper]
        return 200, {
            "merchantAccount": self.merchant_account,
            "shopperReference": shopper,
            "storedPaymentMethods": methods,
        }

    def _delete_stored(self, request: Request, body: dict[str, Any], key: str | None) -> tuple[int, None]:
        shopper = self._query_owner(request)
        with self._lock:
            if self._stored.pop((shopper, request.path_params["stored_id"]), None) is None:
                raise _Answer(_error(422, "800", "Contract not found", "validation"))
        return 204, None

    # ----- the shopper, settlement and webhooks -----

    def _shopper_decides(self, identifier: str, approved: bool) -> None:
        with self._lock:
            link = self._links.get(identifier)
            payment = self._payments.get(identifier)
            if link is not None:
                if link.status != "active":
                    raise ValueError(f"link {identifier} is {link.status}")
                payment = FakePayment(
                    psp=_psp(),
                    reference=link.reference,
                    amount=link.amount,
                    currency=link.currency,
                    result_code="Authorised" if approved else "Refused",
                    payment_link_id=link.id,
                )
                self._payments[payment.psp] = payment
                if approved:
                    link.status = "completed"
            elif payment is None or payment.result_code != "RedirectShopper":
                raise ValueError(f"{identifier} is not waiting for the shopper")
            else:
                payment.result_code = "Authorised" if approved else "Refused"
        if approved and payment.store:
            self._stored_on_success(payment)
        self._notify_authorisation(payment, approved)

    def _notify_authorisation(self, payment: FakePayment, success: bool) -> None:
        additional: dict[str, Any] = {}
        if payment.payment_link_id:
            additional["paymentLinkId"] = payment.payment_link_id
        if payment.shopper_reference:
            additional["shopperReference"] = payment.shopper_reference
        self._emit(
            {
                "eventCode": "AUTHORISATION",
                "success": "true" if success else "false",
                "pspReference": payment.psp,
                "merchantReference": payment.reference,
                "amount": {"value": payment.amount, "currency": payment.currency},
                "paymentMethod": "visa",
                "reason": "" if success else "Refused",
                "additionalData": additional,
            }
        )

    def _notify_refund(self, payment: FakePayment, refund: FakeRefund, success: bool, reason: str) -> None:
        self._emit(
            {
                "eventCode": "REFUND",
                "success": "true" if success else "false",
                "pspReference": refund.psp,
                "originalReference": payment.psp,
                "merchantReference": refund.reference,
                "amount": {"value": refund.amount, "currency": payment.currency},
                "paymentMethod": "visa",
                "reason": reason,
                "additionalData": {},
            }
        )

    def _emit(self, fields: dict[str, Any]) -> None:
        item = {"merchantAccountCode": self.merchant_account, "eventDate": _now(), "operations": [], **fields}
        self._outbox.put(notification_body([item], self.hmac_key))

    def _refund(self, refund_id: str) -> tuple[FakePayment, FakeRefund]:
        for payment in self._payments.values():
            for refund in payment.refunds:
                if refund.psp == refund_id:
                    return payment, refund
        raise KeyError(refund_id)

    def _deliver_forever(self) -> None:
        # One at a time, in order, each retried until the endpoint answers 2xx (Adyen's retry queue).
        with httpx.Client(timeout=10) as client:
            while True:
                body = self._outbox.get()
                if body is None:
                    return
                for attempt in range(WEBHOOK_ATTEMPTS):
                    while self.webhook_url is None and not self._stopping.is_set():
                        time.sleep(0.05)
                    if self._stopping.is_set() or self.webhook_url is None:
                        return
                    try:
                        answer = client.post(
                            self.webhook_url, content=body, headers={"Content-Type": "application/json"}
                        )
                        self.deliveries.append(Delivery(body, answer.status_code, answer.content))
                        if answer.is_success:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(min(0.1 * 2**attempt, 1.0))

    def start_worker(self) -> None:
        """Start sending webhooks."""
        self._worker.start()

    def stop_worker(self) -> None:
        """Stop sending webhooks."""
        self._stopping.set()
        self._outbox.put(None)
        self._worker.join(timeout=5)


@contextmanager
def running_adyen_fake() -> Iterator[Fake]:
    """Start the fake on a free loopback port; stop it at the end."""
    fake = Fake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.url = base_url
        fake.start_worker()
        try:
            yield fake
        finally:
            fake.stop_worker()
