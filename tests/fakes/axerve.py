"""A stateful fake of Axerve's (ex GestPay) REST API v1 (`/api/v1`), written from Axerve's REST
documentation (api.axerve.com) and the existing PGM's Axerve page:

* Authentication: every call needs `Authorization: apikey <API key>` and the merchant's `shopLogin` in
  the body, except `payment/submit`, which is authenticated by the `paymentToken` header that
  `payment/create` answered for that payment. A wrong key or token answers 401. Every answer is Axerve's
  envelope `{error: {code, description}, payload}`; code "0" means done.
* `POST /payment/create {shopLogin, amount (decimal string), currency, shopTransactionID, buyerName?,
  buyerEmail?, customInfo?, paymentTypes?, recurrent?, paymentChannel?, responseURLs{buyerOK, buyerKO,
  serverNotificationURL}}` → `{paymentToken, paymentID, userRedirect{href}}` (Axerve's page).
* `POST /payment/submit {shopLogin, paymentTypeDetails{creditcard{token} | applePay{PKPaymentToken} |
  googlePay{paymentToken} | payPal{recurrenceToken, payPalDescription}}, buyer?}` → `{transactionResult
  OK | KO | PENDING, transactionErrorCode, bankTransactionID, paymentID, userRedirect?}`: a card needing
  3-D Secure answers PENDING, code 8006 and the authentication page; a declined card answers the error
  envelope with the KO payload.
* Recurrent PayPal: a `recurrent` payment created with `paymentTypes: [PAYPAL]` that the payer pays on
  the page gets a `methodToken` (in its detail); a later recurrent PAYPAL payment is submitted with
  `payPal.recurrenceToken` = that token (and a `payPalDescription`), without the payer. Any other token,
  or a payment that is not a recurrent PAYPAL one, is refused (1132).
* `POST /shop/token {shopLogin, creditcard{number, expMonth, expYear, CVV}}` → `{token}`.
* `POST /payment/detail {shopLogin, paymentID | shopTransactionID}` → the payment (1142 when unknown).
* `POST /payment/refund {shopLogin, amount, currency, paymentID}`: partial allowed up to what is left.
* Server-to-server notifications: a GET of the payment's serverNotificationURL with `a` (shopLogin) and
  `b` (GestPay's encrypted string, opaque here), retried while the answer is not 2xx. Not signed.

Test cards (numbers given to `card_token`): APPROVED_CARD, DECLINED_CARD, THREE_DS_CARD.
Test API: `running_axerve_fake()`, `env()`, `webhook_url`, `card_token`, `complete_three_ds`,
`fail_three_ds`, `payer_pays`, `payer_abandons`, `decline_next_submit`, `payments(reference)`,
`payment(payment_id)`, `create_paid_payment`, `requests`, `notifications`, `resend`, and the fault
switches `fail_next`, `delay_next`, `malformed_next` (each for the next call to a path suffix).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import run_server_in_thread

API = "/api/v1"
APPROVED_CARD = "4111111111111111"

# Apple Pay and Google Pay tokens in the shape a payer's device hands them over, for the wallet tests.
APPLE_PAY_TOKEN = json.dumps(
    {
        "paymentData": {
            "data": "ZmFrZQ==",
            "signature": "c2ln",
            "version": "EC_v1",
            "header": {"ephemeralPublicKey": "a2V5", "publicKeyHash": "aGFzaA==", "transactionId": "abc123"},
        },
        "transactionIdentifier": "ABC123",
        "paymentMethod": {"network": "Visa", "type": "debit", "displayName": "Visa 0121"},
    }
)
GOOGLE_PAY_TOKEN = json.dumps({"signature": "MEUCIQ==", "protocolVersion": "ECv2", "signedMessage": "{}"})

DECLINED_CARD = "4000000000000002"
THREE_DS_CARD = "4000000000003220"
_DECIMAL = re.compile(r"^\d{1,9}\.\d{2}$")


@dataclass(frozen=True)
class RecordedCall:
    """One API request the fake received (after the authentication check)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Faults:
    # Each fault waits for the next call to its path (a suffix such as "/payment/submit").
    fail: list[tuple[str, int]] = field(default_factory=list)
    delay: list[tuple[str, float]] = field(default_factory=list)
    malformed: list[tuple[str, bool]] = field(default_factory=list)

    def take(self, queue: list[Any], path: str) -> Any:
        for index, (wanted, value) in enumerate(queue):
            if path.endswith(wanted):
                del queue[index]
                return value
        return None


def _answer(
    payload: dict[str, Any] | None, code: str = "0", description: str = "request correctly processed", status: int = 200
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "description": description}, "payload": payload}, status_code=status)


def _minor(value: object) -> int | None:
    if not isinstance(value, str) or not _DECIMAL.match(value):
        return None
    try:
        return int(Decimal(value) * 100)
    except InvalidOperation:
        return None


def _decimal(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


class AxerveFake:
    """The fake's state and its test API; `app` is the ASGI application serving the API."""

    def __init__(self) -> None:
        self.api_key = "fake-axerve-" + secrets.token_hex(16)
        self.shop_login = "GESPAY" + str(secrets.randbelow(90000) + 10000)
        self.base_url = ""
        self.webhook_url: str | None = None
        self.callback_retry_delays: tuple[float, ...] = (0.2, 0.4, 0.8)
        self.requests: list[RecordedCall] = []
        self.notifications: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self._payments: dict[str, dict[str, Any]] = {}
        self._cards: dict[str, str] = {}
        self._recurring_cards: set[str] = set()
        self._paypal_tokens: set[str] = set()
        self._decline_next_submit = False
        self._faults = _Faults()
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route(f"{API}/payment/create", self._create, methods=["POST"]),
                Route(f"{API}/payment/submit", self._submit, methods=["POST"]),
                Route(f"{API}/payment/detail", self._detail, methods=["POST"]),
                Route(f"{API}/payment/refund", self._refund, methods=["POST"]),
                Route(f"{API}/shop/token", self._token, methods=["POST"]),
            ]
        )

    # ---- test API -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The PGM's AXERVE_* variables for this fake (AXERVE_BASE_URL points the adapter here)."""
        return {
            "AXERVE_BASE_URL": f"{self.base_url}{API}",
            "AXERVE_API_KEY": self.api_key,
            "AXERVE_SHOP_LOGIN": self.shop_login,
            "AXERVE_IS_SANDBOX": "true",
        }

    def card_token(self, number: str = APPROVED_CARD) -> str:
        """A card token as `POST /shop/token` makes it (what a client-side tokenisation gives the shop)."""
        with self._lock:
            token = "TK" + secrets.token_hex(10).upper()
            self._cards[token] = number
            return token

    def complete_three_ds(self, payment_id: str) -> None:
        """The payer passes the 3-D Secure challenge; Axerve authorizes the card and notifies."""
        self._settle(payment_id, "OK", expected="PENDING")

    def fail_three_ds(self, payment_id: str) -> None:
        """The payer fails (or abandons) the 3-D Secure challenge."""
        self._settle(payment_id, "KO", expected="PENDING")

    def payer_pays(self, payment_id: str) -> None:
        """The payer pays on Axerve's page (PayPal, Satispay, a payment link)."""
        self._settle(payment_id, "OK", expected="")

    def payer_abandons(self, payment_id: str) -> None:
        """The payer gives up on Axerve's page (its cancel button, or the page expires)."""
        self._settle(payment_id, "KO", expected="")

    def approve(self, payment_id: str) -> None:
        """The payer completes whatever the payment waits for: 3-D Secure, or paying on Axerve's page."""
        with self._lock:
            waiting = self._payments[payment_id]["transactionResult"]
        self._settle(payment_id, "OK", expected=waiting)

    def decline(self, payment_id: str) -> None:
        """The payer fails 3-D Secure, or gives up on Axerve's page."""
        with self._lock:
            waiting = self._payments[payment_id]["transactionResult"]
        self._settle(payment_id, "KO", expected=waiting)

    def decline_next_submit(self) -> None:
        """The next submitted payment is declined by the issuer, whatever the card."""
        with self._lock:
            self._decline_next_submit = True

    def payments(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """The payments made for a merchant reference (the PGM's in customInfo, or Axerve's own)."""
        with self._lock:
            return [
                self._view(p)
                for p in self._payments.values()
                if p["customInfo"].get("pgmShopTransactionId", p["shopTransactionID"]) == shop_transaction_id
            ]

    def payment(self, payment_id: str) -> dict[str, Any]:
        """One payment as the fake holds it."""
        with self._lock:
            return self._view(self._payments[payment_id])

    def create_paid_payment(self, shop_transaction_id: str, amount: int) -> str:
        """A card payment made long ago through another PGM (the merchant's own shopTransactionID)."""
        with self._lock:
            payment = self._new(shop_transaction_id, amount, {}, None, [], False)
            payment.update(transactionResult="OK", paymentMethod="CREDITCARD", bankTransactionID=self._bank_id())
            return str(payment["paymentID"])

    def resend(self, notification: dict[str, Any]) -> int:
        """Deliver a notification sent before once more, now; the PGM's answer status."""
        return httpx.get(self._target(notification["url"]), timeout=10).status_code

    def fail_next(self, status_code: int, path: str = "/payment/submit") -> None:
        """The next call to `path` answers this status without doing anything."""
        with self._lock:
            self._faults.fail.append((path, status_code))

    def delay_next(self, seconds: float, path: str = "/payment/submit") -> None:
        """The next call to `path` is done, but answered only after `seconds` (a lost answer)."""
        with self._lock:
            self._faults.delay.append((path, seconds))

    def malformed_next(self, path: str = "/payment/submit") -> None:
        """The next call to `path` is done, but answered 200 with a body that is not JSON."""
        with self._lock:
            self._faults.malformed.append((path, True))

    # ---- behaviour ------------------------------------------------------------------------------

    def _bank_id(self) -> str:
        return str(secrets.randbelow(10**9) + 10**9)

    def _new(
        self,
        reference: str,
        amount: int,
        custom: dict[str, Any],
        notify_url: str | None,
        types: list[str],
        recurrent: bool,
    ) -> dict[str, Any]:
        payment_id = str(secrets.randbelow(10**12) + 10**12)
        payment: dict[str, Any] = {
            "paymentID": payment_id,
            "paymentToken": secrets.token_hex(16),
            "shopTransactionID": reference,
            "amount": amount,
            "currency": "EUR",
            "customInfo": custom,
            "transactionResult": "",
            "transactionErrorCode": "",
            "bankTransactionID": "",
            "paymentMethod": types[0] if types else "",
            "paymentTypes": types,
            "recurrent": recurrent,
            "refunds": [],
            "_notify": notify_url,
        }
        self._payments[payment_id] = payment
        return payment

    def _view(self, payment: dict[str, Any]) -> dict[str, Any]:
        return {key: (list(value) if isinstance(value, list) else value) for key, value in payment.items()}

    def _detail_payload(self, payment: dict[str, Any]) -> dict[str, Any]:
        refunded = sum(payment["refunds"])
        state = {"OK": "MOV", "KO": "ANN", "PENDING": "ATT", "": "UNSUBMITTED"}[payment["transactionResult"]]
        return {
            "transactionType": "detail",
            "transactionResult": payment["transactionResult"] or "UNSUBMITTED",
            "transactionState": "RES" if refunded else state,
            "transactionErrorCode": payment["transactionErrorCode"],
            "paymentID": payment["paymentID"],
            "shopTransactionID": payment["shopTransactionID"],
            "bankTransactionID": payment["bankTransactionID"],
            "authorizedAmount": _decimal(payment["amount"]),
            "refundedAmount": _decimal(refunded),
            "currency": payment["currency"],
            "customInfo": dict(payment["customInfo"]),
            "paymentMethod": payment["paymentMethod"],
            **({"methodToken": payment["_method_token"]} if payment.get("_method_token") else {}),
        }

    def _settle(self, payment_id: str, result: str, expected: str) -> None:
        with self._lock:
            payment = self._payments[payment_id]
            if payment["transactionResult"] != expected:
                raise ValueError(f"payment {payment_id} is {payment['transactionResult'] or 'unsubmitted'}")
            payment["transactionResult"] = result
            payment["transactionErrorCode"] = "" if result == "OK" else "74"
            if result == "OK":
                payment["bankTransactionID"] = self._bank_id()
                if payment["recurrent"] and payment.get("_card"):
                    self._recurring_cards.add(payment["_card"])
                if payment["recurrent"] and payment["paymentTypes"] == ["PAYPAL"]:
                    # The payer approved recurring PayPal charges on the page: Axerve gives the method token.
                    payment["_method_token"] = "PP" + secrets.token_hex(12).upper()
                    self._paypal_tokens.add(payment["_method_token"])
            if not payment["paymentMethod"]:
                payment["paymentMethod"] = "PAYPAL"
        self._notify(payment_id)

    def _notify(self, payment_id: str) -> None:
        with self._lock:
            url = self._payments[payment_id]["_notify"]
            if not url:
                return
            separator = "&" if "?" in url else "?"
            notification = {
                "paymentID": payment_id,
                "url": f"{url}{separator}a={self.shop_login}&b={secrets.token_hex(24).upper()}",
            }
            self.notifications.append(notification)
        if self.webhook_url is None:
            return
        threading.Thread(target=self._deliver, args=(notification,), daemon=True).start()

    def _target(self, url: str) -> str:
        # The PGM gave its public URL; the fake reaches the test's PGM on its loopback port instead.
        assert self.webhook_url is not None
        base, given = httpx.URL(self.webhook_url), httpx.URL(url)
        return str(given.copy_with(scheme=base.scheme, host=base.host, port=base.port))

    def _deliver(self, notification: dict[str, Any]) -> None:
        for delay in (0.0, *self.callback_retry_delays):
            time.sleep(delay)
            try:
                status: int | None = httpx.get(self._target(notification["url"]), timeout=10).status_code
            except httpx.HTTPError:
                status = None
            self.deliveries.append({"paymentID": notification["paymentID"], "status": status})
            if status is not None and 200 <= status < 300:
                return

    async def _enter(self, request: Request, by_token: bool = False) -> tuple[dict[str, Any] | None, Response | None]:
        """Authenticate, record, parse, and apply this call's fault: (document, early answer)."""
        body = await request.body()
        path = request.url.path
        if by_token:
            token = request.headers.get("paymenttoken", "")
            with self._lock:
                known = any(secrets.compare_digest(token, p["paymentToken"]) for p in self._payments.values())
            if not token or not known:
                return None, _answer(None, "2001", "paymentToken is not valid", 401)
        elif not secrets.compare_digest(request.headers.get("authorization", ""), f"apikey {self.api_key}"):
            return None, _answer(None, "2000", "Unauthorized: the apikey is not valid", 401)
        with self._lock:
            self.requests.append(RecordedCall(request.method, path, dict(request.headers), body))
            code = self._faults.take(self._faults.fail, path)
            delay = self._faults.take(self._faults.delay, path) or 0.0
            malformed = bool(self._faults.take(self._faults.malformed, path))
        if code is not None:
            return None, _answer(None, "9999", "Internal error", code)
        if delay:
            # Lost answer: the work is done now, the answer arrives after the PGM gave up waiting.
            request.state.delay = delay
        request.state.malformed = malformed
        try:
            document = json.loads(body)
        except ValueError:
            return None, _answer(None, "1000", "the body must be JSON", 400)
        if not isinstance(document, dict):
            return None, _answer(None, "1000", "the body must be a JSON object", 400)
        if document.get("shopLogin") != self.shop_login:
            return None, _answer(None, "1101", "shopLogin is not the one of this apikey", 400)
        return document, None

    async def _finish(self, request: Request, response: Response) -> Response:
        delay = getattr(request.state, "delay", 0.0)
        if delay:
            await asyncio.sleep(delay)
        if getattr(request.state, "malformed", False):
            return Response(b"<html><body>502 Bad Gateway</body>", status_code=200, media_type="text/html")
        return response

    async def _create(self, request: Request) -> Response:
        document, early = await self._enter(request)
        if early is not None:
            return early
        assert document is not None
        amount = _minor(document.get("amount"))
        if amount is None or amount <= 0:
            return _answer(None, "1119", "amount must be a decimal string such as 10.00", 400)
        if document.get("currency") != "EUR":
            return _answer(None, "1120", "currency is not enabled for this shop", 400)
        reference = document.get("shopTransactionID")
        if not isinstance(reference, str) or not 1 <= len(reference) <= 50:
            return _answer(None, "1121", "shopTransactionID must be 1-50 characters", 400)
        urls = document.get("responseURLs") or {}
        notify_url = urls.get("serverNotificationURL") if isinstance(urls, dict) else None
        custom = document.get("customInfo") or {}
        types = document.get("paymentTypes") or []
        if not isinstance(custom, dict) or not isinstance(types, list):
            return _answer(None, "1122", "customInfo must be an object and paymentTypes a list", 400)
        if (
            document.get("recurrent")
            and "authenticationAmount" in document
            and _minor(document["authenticationAmount"]) is None
        ):
            return _answer(None, "1123", "authenticationAmount must be a decimal string", 400)
        with self._lock:
            payment = self._new(
                reference, amount, custom, notify_url, [str(t) for t in types], bool(document.get("recurrent"))
            )
            payment["paymentChannel"] = document.get("paymentChannel")
            answer = {
                "paymentToken": payment["paymentToken"],
                "paymentID": payment["paymentID"],
                "userRedirect": {"href": f"{self.base_url}/pagam/{payment['paymentID']}"},
            }
        return await self._finish(request, _answer(answer))

    async def _submit(self, request: Request) -> Response:
        document, early = await self._enter(request, by_token=True)
        if early is not None:
            return early
        assert document is not None
        token = request.headers["paymenttoken"]
        details = document.get("paymentTypeDetails")
        if not isinstance(details, dict) or len(details) != 1:
            return _answer(None, "1130", "paymentTypeDetails must name one payment type", 400)
        with self._lock:
            payment = next(p for p in self._payments.values() if p["paymentToken"] == token)
            if payment["transactionResult"]:
                return _answer(None, "1131", "the payment was already submitted", 400)
            kind, detail = next(iter(details.items()))
            if kind == "payPal" and not (payment["recurrent"] and payment["paymentTypes"] == ["PAYPAL"]):
                return _answer(None, "1132", "payPal.recurrenceToken needs a recurrent PAYPAL payment", 400)
            method, number = self._method(kind, detail)
            if method is None:
                return _answer(None, "1132", f"paymentTypeDetails.{kind} is not valid", 400)
            payment["paymentMethod"] = method
            payment["_card"] = str(detail.get("token")) if kind == "creditcard" and isinstance(detail, dict) else None
            declined = self._decline_next_submit or number == DECLINED_CARD
            self._decline_next_submit = False
            payload: dict[str, Any] = {"transactionType": "submit", "paymentID": payment["paymentID"]}
            if declined:
                payment.update(transactionResult="KO", transactionErrorCode="74")
                payload.update(
                    transactionResult="KO",
                    transactionErrorCode="74",
                    transactionErrorDescription="Authorization denied",
                )
                return await self._finish(request, _answer(payload, "74", "Authorization denied"))
            card = str(detail.get("token")) if kind == "creditcard" and isinstance(detail, dict) else None
            # 3-D Secure for a payer-present payment; a recurrent card already authenticated is charged
            # merchant-initiated, without the payer.
            if number == THREE_DS_CARD and card not in self._recurring_cards:
                payment.update(transactionResult="PENDING", transactionErrorCode="8006")
                payload.update(
                    transactionResult="PENDING",
                    transactionErrorCode="8006",
                    transactionErrorDescription="Verified By Visa",
                    userRedirect={"href": f"{self.base_url}/3ds/{payment['paymentID']}"},
                )
                return await self._finish(request, _answer(payload))
            payment.update(transactionResult="OK", bankTransactionID=self._bank_id())
            if payment["recurrent"] and card:
                self._recurring_cards.add(card)
            payload.update(
                transactionResult="OK",
                bankTransactionID=payment["bankTransactionID"],
                authorizationCode="A" + secrets.token_hex(3).upper(),
                paymentMethod=method,
            )
            notify = payment["paymentID"]
        self._notify(notify)
        return await self._finish(request, _answer(payload))

    def _method(self, kind: str, detail: object) -> tuple[str | None, str | None]:
        if not isinstance(detail, dict):
            return None, None
        if kind == "creditcard":
            number = self._cards.get(str(detail.get("token")))
            return ("CREDITCARD", number) if number else (None, None)
        if kind == "applePay":
            token = detail.get("PKPaymentToken")
            keys = ("paymentData", "transactionIdentifier", "paymentMethod")
            return ("APPLEPAY", None) if isinstance(token, dict) and all(k in token for k in keys) else (None, None)
        if kind == "googlePay":
            token = detail.get("paymentToken")
            keys = ("signature", "protocolVersion", "signedMessage")
            return ("GOOGLEPAY", None) if isinstance(token, dict) and all(k in token for k in keys) else (None, None)
        if kind == "payPal":
            described = isinstance(detail.get("payPalDescription"), str) and bool(detail["payPalDescription"])
            known = detail.get("recurrenceToken") in self._paypal_tokens
            return ("PAYPAL", None) if described and known else (None, None)
        return None, None

    async def _token(self, request: Request) -> Response:
        document, early = await self._enter(request)
        if early is not None:
            return early
        assert document is not None
        card = document.get("creditcard")
        number = card.get("number") if isinstance(card, dict) else None
        if not isinstance(number, str) or not number.isdigit() or not 12 <= len(number) <= 19:
            return _answer(None, "1140", "creditcard.number is not valid", 400)
        return await self._finish(request, _answer({"token": self.card_token(number)}))

    async def _detail(self, request: Request) -> Response:
        document, early = await self._enter(request)
        if early is not None:
            return early
        assert document is not None
        with self._lock:
            found = None
            if document.get("paymentID"):
                found = self._payments.get(str(document["paymentID"]))
            elif document.get("shopTransactionID"):
                found = next(
                    (p for p in self._payments.values() if p["shopTransactionID"] == document["shopTransactionID"]),
                    None,
                )
            payload = self._detail_payload(found) if found else None
        if payload is None:
            return await self._finish(request, _answer(None, "1142", "transaction not found", 404))
        return await self._finish(request, _answer(payload))

    async def _refund(self, request: Request) -> Response:
        document, early = await self._enter(request)
        if early is not None:
            return early
        assert document is not None
        amount = _minor(document.get("amount"))
        with self._lock:
            payment = self._payments.get(str(document.get("paymentID")))
            if payment is None:
                return _answer(None, "1142", "transaction not found", 404)
            if payment["transactionResult"] != "OK":
                return _answer(None, "1150", "only an authorized payment can be refunded", 400)
            if amount is None or amount <= 0 or document.get("currency") != payment["currency"]:
                return _answer(None, "1151", "amount and currency must match the payment", 400)
            if sum(payment["refunds"]) + amount > payment["amount"]:
                return _answer(None, "1152", "the amount exceeds what is left to refund", 400)
            payment["refunds"].append(amount)
            payload = {
                "transactionType": "refund",
                "transactionResult": "OK",
                "paymentID": payment["paymentID"],
                "bankTransactionID": payment["bankTransactionID"],
            }
        return await self._finish(request, _answer(payload))


@contextmanager
def running_axerve_fake() -> Iterator[AxerveFake]:
    """An Axerve fake serving on a free loopback port."""
    fake = AxerveFake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.base_url = base_url
        yield fake
