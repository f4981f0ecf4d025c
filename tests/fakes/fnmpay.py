"""A stateful fake of Fnmpay's merchant API (`/merchants/{merchantId}`), written from the shape the
adapter documents (docs/providers/fnmpay.md: Mia's Fnmpay page for the fields and the status mapping):

* Authentication: every call needs `X-Api-Key` (the API key) and a merchant id in the path that the key
  belongs to; otherwise 401 `{"message": ...}`.
* Payments: `POST /payments` and `POST /payment-links` (JSON: shopId, transactionType SALE|AUTH, amount
  in cents, currency EUR, orderId, successUrl, cancelUrl, callbackUrl, optional details) answer
  `{paymentId, redirectUrl}` / `{paymentId, linkUrl}`. The shop must be one of the merchant's shops.
  `GET /payments/{paymentId}` answers the payment with its `transactionCode` (null until the payer has
  finished: "00" paid, "05" declined, "17" the payer cancelled). `GET /payments?orderId=` lists them.
* Callbacks: a JSON POST of `{eventId, paymentId, orderId, transactionCode}` to the payment's callbackUrl,
  signed in `X-Fnmpay-Signature` (hex HMAC-SHA256 of the body under the API key), retried while the
  answer is not 2xx.

Test API: `running_fnmpay_fake()`, `env()`, `webhook_url`, `pay` / `approve` (the payer pays, 3-D Secure passed),
`decline`, `abandon`, `create_paid_payment`, `payment(id)`, `payments(orderId)`, `requests`,
`notifications`, `resend(notification)`, `deliveries` and the fault switches `fail_next`, `delay_next`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.recording import MethodFaults, RecordedCall
from tests.support.servers import run_server_in_thread


class FnmpayFake:
    """The fake's state and its test API; `app` is the ASGI application serving the API."""

    def __init__(self) -> None:
        self.merchant_id = "merchant-" + secrets.token_hex(4)
        self.shop_id = "shop-" + secrets.token_hex(4)
        self.other_shop_id = "shop-" + secrets.token_hex(4)
        self.api_key = "fake-fnmpay-" + secrets.token_hex(16)
        self.base_url = ""
        self.webhook_url: str | None = None
        self.callback_retry_delays: tuple[float, ...] = (0.2, 0.4, 0.8)
        self.requests: list[RecordedCall] = []
        self.notifications: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self._payments: dict[str, dict[str, Any]] = {}
        self._faults = MethodFaults()
        self._lock = threading.RLock()
        prefix = "/merchants/{merchant_id}"
        self.app = Starlette(
            routes=[
                Route(f"{prefix}/payments", self._create_payment, methods=["POST"]),
                Route(f"{prefix}/payment-links", self._create_link, methods=["POST"]),
                Route(f"{prefix}/payments", self._search, methods=["GET"]),
                Route(f"{prefix}/payments/{{payment_id}}", self._get_payment, methods=["GET"]),
            ]
        )

    # ---- test API -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The PGM's FNMPAY_* variables for this fake."""
        return {
            "FNMPAY_BASE_URL": self.base_url,
            "FNMPAY_API_KEY": self.api_key,
            "FNMPAY_MERCHANT_ID": self.merchant_id,
            "FNMPAY_SHOP_ID": self.shop_id,
        }

    def create_paid_payment(self, order_id: str, amount: int) -> str:
        """A payment made long ago through another PGM; its id."""
        with self._lock:
            payment_id = secrets.token_hex(12)
            self._payments[payment_id] = {
                "paymentId": payment_id,
                "orderId": order_id,
                "shopId": self.shop_id,
                "transactionType": "SALE",
                "amount": amount,
                "currency": "EUR",
                "transactionCode": "00",
                "_callbackUrl": None,
            }
            return payment_id

    def pay(self, payment_id: str) -> None:
        """The payer pays on the hosted page (3-D Secure passed)."""
        self._finish_payment(payment_id, "00")

    def approve(self, payment_id: str) -> None:
        """The name the docs' examples use for the payer paying (`doc-test: approve`)."""
        self.pay(payment_id)

    def decline(self, payment_id: str) -> None:
        """The card is declined (or 3-D Secure fails): ISO 8583 "do not honour"."""
        self._finish_payment(payment_id, "05")

    def abandon(self, payment_id: str) -> None:
        """The payer presses cancel on the hosted page: ISO 8583 "customer cancellation"."""
        self._finish_payment(payment_id, "17")

    def payment(self, payment_id: str) -> dict[str, Any]:
        """One payment as `GET /payments/{id}` shows it."""
        with self._lock:
            return _public(self._payments[payment_id])

    def payments(self, order_id: str) -> list[dict[str, Any]]:
        """The payments made for a merchant reference."""
        with self._lock:
            return [_public(p) for p in self._payments.values() if p["orderId"] == order_id]

    def callback_url_of(self, payment_id: str) -> str | None:
        """Where Fnmpay notifies for this payment."""
        with self._lock:
            url: str | None = self._payments[payment_id]["_callbackUrl"]
            return url

    def resend(self, notification: dict[str, Any]) -> int:
        """Deliver a callback sent before once more, now; the PGM's answer status."""
        return self._post(notification).status_code

    def sign(self, body: bytes) -> str:
        """The X-Fnmpay-Signature of a body."""
        return hmac.new(self.api_key.encode(), body, hashlib.sha256).hexdigest()

    def fail_next(self, status_code: int, method: str = "POST") -> None:
        """The next API request (of this method) answers this status without doing anything."""
        with self._lock:
            self._faults.fail.append((method, status_code))

    def delay_next(self, seconds: float, method: str = "POST") -> None:
        """The next API request (of this method) is done, but answered only after `seconds` (lost answer)."""
        with self._lock:
            self._faults.delay.append((method, seconds))

    # ---- behaviour ------------------------------------------------------------------------------

    def _finish_payment(self, payment_id: str, code: str) -> None:
        with self._lock:
            payment = self._payments[payment_id]
            if payment["transactionCode"] is not None:
                raise ValueError(f"payment {payment_id} is already finished ({payment['transactionCode']})")
            payment["transactionCode"] = code
            url = payment["_callbackUrl"]
            notification = {
                "body": json.dumps(
                    {
                        "eventId": "evt_" + secrets.token_hex(8),
                        "paymentId": payment_id,
                        "orderId": payment["orderId"],
                        "transactionCode": code,
                    }
                ).encode(),
                "_url": url,
            }
            self.notifications.append(notification)
        if self.webhook_url is not None and url:
            threading.Thread(target=self._deliver, args=(notification,), daemon=True).start()

    def _target(self, url: str) -> str:
        # The PGM gave its public URL; the fake reaches the test's PGM on its loopback port instead.
        assert self.webhook_url is not None
        base, given = httpx.URL(self.webhook_url), httpx.URL(url)
        return str(given.copy_with(scheme=base.scheme, host=base.host, port=base.port))

    def _post(self, notification: dict[str, Any]) -> httpx.Response:
        body: bytes = notification["body"]
        headers = {"Content-Type": "application/json", "X-Fnmpay-Signature": self.sign(body)}
        return httpx.post(self._target(notification["_url"]), content=body, headers=headers, timeout=10)

    def _deliver(self, notification: dict[str, Any]) -> None:
        for delay in (0.0, *self.callback_retry_delays):
            time.sleep(delay)
            try:
                status: int | None = self._post(notification).status_code
            except httpx.HTTPError:
                status = None
            self.deliveries.append({"body": notification["body"], "status": status})
            if status is not None and 200 <= status < 300:
                return

    async def _enter(self, request: Request) -> tuple[bytes, Response | None, float]:
        """Authenticate, record, and take this request's fault: (body, early answer, delay)."""
        body = await request.body()
        if request.path_params["merchant_id"] != self.merchant_id or not secrets.compare_digest(
            request.headers.get("x-api-key", ""), self.api_key
        ):
            return body, JSONResponse({"message": "Invalid API key"}, status_code=401), 0.0
        with self._lock:
            self.requests.append(RecordedCall(request.method, request.url.path, dict(request.headers), body))
            code = self._faults.take(self._faults.fail, request.method)
            if code is not None:
                return body, JSONResponse({"message": "Internal error"}, status_code=code), 0.0
            delay = self._faults.take(self._faults.delay, request.method) or 0.0
        return body, None, delay

    async def _create(self, request: Request, answer_key: str, page: str) -> Response:
        body, early, delay = await self._enter(request)
        if early is not None:
            return early
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        problem = self._problem(document)
        if problem:
            return JSONResponse({"message": problem}, status_code=400)
        assert isinstance(document, dict)
        payment_id = secrets.token_hex(12)
        with self._lock:
            self._payments[payment_id] = {
                "paymentId": payment_id,
                "transactionCode": None,
                **{key: value for key, value in document.items() if key != "callbackUrl"},
                "_callbackUrl": document["callbackUrl"],
            }
        if delay:
            await asyncio.sleep(delay)
        return JSONResponse({"paymentId": payment_id, answer_key: f"{self.base_url}/{page}/{payment_id}"}, 201)

    async def _create_payment(self, request: Request) -> Response:
        return await self._create(request, "redirectUrl", "checkout")

    async def _create_link(self, request: Request) -> Response:
        return await self._create(request, "linkUrl", "link")

    def _problem(self, document: object) -> str | None:
        if not isinstance(document, dict):
            return "the body must be a JSON object"
        if document.get("shopId") not in (self.shop_id, self.other_shop_id):
            return "shopId is not a shop of this merchant"
        if document.get("transactionType") not in ("SALE", "AUTH"):
            return "transactionType must be SALE or AUTH"
        amount = document.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
            return "amount must be a positive number of cents"
        if document.get("currency") != "EUR":
            return "currency must be EUR"
        if not isinstance(document.get("orderId"), str) or not document["orderId"]:
            return "orderId is required"
        for name in ("successUrl", "cancelUrl", "callbackUrl"):
            value = document.get(name)
            if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                return f"{name} must be a URL"
        return None

    async def _get_payment(self, request: Request) -> Response:
        _, early, delay = await self._enter(request)
        if early is not None:
            return early
        with self._lock:
            payment = self._payments.get(request.path_params["payment_id"])
            public = _public(payment) if payment else None
        if delay:
            await asyncio.sleep(delay)
        if public is None:
            return JSONResponse({"message": "Payment not found"}, status_code=404)
        return JSONResponse(public)

    async def _search(self, request: Request) -> Response:
        _, early, _delay = await self._enter(request)
        if early is not None:
            return early
        return JSONResponse({"payments": self.payments(request.query_params.get("orderId", ""))})


def _public(payment: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payment.items() if not key.startswith("_")}


@contextmanager
def running_fnmpay_fake() -> Iterator[FnmpayFake]:
    """A Fnmpay fake serving on a free loopback port."""
    fake = FnmpayFake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.base_url = base_url
        yield fake
