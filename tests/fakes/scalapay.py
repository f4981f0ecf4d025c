"""A stateful fake of Scalapay's Online API v2, written from Scalapay's API reference:

* Authentication: every call needs `Authorization: Bearer <api key>`; otherwise 401.
* Orders: `POST /v2/orders` (totalAmount{amount "12.00", currency}, consumer, items, merchant
  {redirectConfirmUrl, redirectCancelUrl}, merchantReference, ...) answers `{token, expires, checkoutUrl}`;
  a repeated `Idempotency-Key` answers the first answer again and creates nothing.
* The payer on the checkout approves (the order is `authorized`), or cancels / abandons it (it `expired`s).
  `POST /v2/payments/capture {token, merchantReference}` charges an authorized order (`charged`,
  answer `{status: "APPROVED"}`), or answers `DECLINED` when Scalapay's final check refuses the payer.
* `GET /v2/payments/{token}` answers `{token, status, totalAmount, orderDetails{merchantReference},
  refunds[...]}`; `POST /v2/payments/{token}/refund {refundAmount, merchantReference}` refunds part or
  all of a charged order (more than is left: 400).
* Webhooks: a JSON POST `{orderToken, status, merchantReference, totalAmount}` to `webhook_url` on each
  event (authorized, charged, refunded, expired), with `x-scalapay-timestamp` and `x-scalapay-hmac-v1` =
  hex HMAC-SHA256(api key, `V1:{timestamp}:{body}`), retried while the answer is not 2xx.

Test API: `running_scalapay_fake()`, `env()`, `webhook_url`, `approve`, `decline_next_capture`,
`abandon`, `create_charged_order`, `order(token)`, `payments(reference)`, `requests`, `notifications`,
`resend(notification)`, and the fault switches `fail_next`, `delay_next`.
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
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import run_server_in_thread


@dataclass(frozen=True)
class RecordedCall:
    """One API request the fake received (after the authentication check)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def _cents(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        cents = Decimal(value) * 100
    except InvalidOperation:
        return None
    return int(cents) if cents == cents.to_integral_value() and cents >= 0 else None


def _money(cents: int) -> dict[str, str]:
    return {"amount": f"{Decimal(cents) / 100:.2f}", "currency": "EUR"}


class ScalapayFake:
    """The fake's state and its test API; `app` is the ASGI application serving the API."""

    def __init__(self) -> None:
        self.api_key = "fake-scalapay-" + secrets.token_hex(16)
        self.base_url = ""
        self.webhook_url: str | None = None
        self.callback_retry_delays: tuple[float, ...] = (0.2, 0.4, 0.8)
        self.requests: list[RecordedCall] = []
        self.notifications: list[dict[str, Any]] = []
        self._orders: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, dict[str, Any]] = {}
        self._fail: list[tuple[str, int]] = []
        self._delay: list[tuple[str, float]] = []
        self._decline_captures = 0
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route("/v2/orders", self._create_order, methods=["POST"]),
                Route("/v2/payments/capture", self._capture, methods=["POST"]),
                Route("/v2/payments/{token}", self._get_payment, methods=["GET"]),
                Route("/v2/payments/{token}/refund", self._refund, methods=["POST"]),
            ]
        )

    # ---- test API -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The PGM's SCALAPAY_* variables for this fake."""
        return {
            "SCALAPAY_BASE_PATH": self.base_url,
            "SCALAPAY_API_KEY": self.api_key,
            "SCALAPAY_SUCCESS_REDIRECT_URL": "https://shop.example/scalapay/ok",
            "SCALAPAY_FAILURE_REDIRECT_URL": "https://shop.example/scalapay/ko",
        }

    def create_charged_order(self, shop_transaction_id: str, amount: int) -> str:
        """An order charged long ago, made through another PGM; its token."""
        with self._lock:
            token = secrets.token_hex(8).upper()
            self._orders[token] = self._new(token, shop_transaction_id, amount, {}, "charged")
            return token

    def approve(self, token: str) -> None:
        """The payer approves the instalment plan on the checkout: the order is authorized."""
        self._event(token, "authorized", {"created"})

    def abandon(self, token: str) -> None:
        """The payer leaves the checkout; Scalapay expires the order and says so."""
        self._event(token, "expired", {"created", "authorized"})

    def decline_next_capture(self) -> None:
        """Scalapay's final check at capture refuses the payer."""
        with self._lock:
            self._decline_captures += 1

    def order(self, token: str) -> dict[str, Any]:
        """One order as `GET /v2/payments/{token}` shows it."""
        with self._lock:
            return self._public(self._orders[token])

    def payments(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """The orders made for a merchant reference."""
        with self._lock:
            return [self._public(o) for o in self._orders.values() if o["merchantReference"] == shop_transaction_id]

    def sign(self, body: bytes, timestamp: str | None = None, key: str | None = None) -> dict[str, str]:
        """The headers Scalapay signs a webhook with."""
        stamp = timestamp or str(int(time.time()))
        digest = hmac.new((key or self.api_key).encode(), b"V1:" + stamp.encode() + b":" + body, hashlib.sha256)
        return {
            "x-scalapay-timestamp": stamp,
            "x-scalapay-hmac-v1": digest.hexdigest(),
            "content-type": "application/json",
        }

    def resend(self, notification: dict[str, Any]) -> int:
        """Deliver a webhook sent before once more, as Scalapay's retry does; the PGM's answer status."""
        assert self.webhook_url is not None
        body = notification["body"]
        return httpx.post(self.webhook_url, content=body, headers=self.sign(body), timeout=10).status_code

    def fail_next(self, status_code: int, method: str = "POST") -> None:
        """The next API request (of this method) answers this status without doing anything."""
        with self._lock:
            self._fail.append((method, status_code))

    def delay_next(self, seconds: float, method: str = "POST") -> None:
        """The next API request (of this method) is done, but answered only after `seconds` (lost answer)."""
        with self._lock:
            self._delay.append((method, seconds))

    # ---- behaviour ------------------------------------------------------------------------------

    def _new(self, token: str, reference: str, amount: int, document: dict[str, Any], status: str) -> dict[str, Any]:
        return {
            "token": token,
            "merchantReference": reference,
            "amount": amount,
            "status": status,
            "refunds": [],
            "consumer": document.get("consumer"),
            "items": document.get("items"),
        }

    def _event(self, token: str, status: str, allowed_from: set[str]) -> None:
        with self._lock:
            order = self._orders[token]
            if order["status"] not in allowed_from:
                raise ValueError(f"order {token} is {order['status']}: it cannot become {status}")
            order["status"] = status
        self._notify(order)

    def _notify(self, order: dict[str, Any]) -> None:
        body = json.dumps(
            {
                "orderToken": order["token"],
                "status": order["status"],
                "merchantReference": order["merchantReference"],
                "totalAmount": _money(order["amount"]),
                "eventId": secrets.token_hex(8),
            }
        ).encode()
        notification = {"body": body}
        with self._lock:
            self.notifications.append(notification)
        if self.webhook_url is not None:
            threading.Thread(target=self._deliver, args=(notification,), daemon=True).start()

    def _deliver(self, notification: dict[str, Any]) -> None:
        for delay in (0.0, *self.callback_retry_delays):
            time.sleep(delay)
            try:
                if 200 <= self.resend(notification) < 300:
                    return
            except httpx.HTTPError:
                continue

    def _public(self, order: dict[str, Any]) -> dict[str, Any]:
        return {
            "token": order["token"],
            "status": order["status"],
            "totalAmount": _money(order["amount"]),
            "orderDetails": {"merchantReference": order["merchantReference"], "consumer": order["consumer"]},
            "refunds": [{k: v for k, v in refund.items() if not k.startswith("_")} for refund in order["refunds"]],
        }

    async def _enter(self, request: Request) -> tuple[Any, Response | None, float]:
        body = await request.body()
        if not secrets.compare_digest(request.headers.get("authorization", ""), f"Bearer {self.api_key}"):
            return None, JSONResponse({"message": "Unauthorized"}, status_code=401), 0.0
        with self._lock:
            self.requests.append(RecordedCall(request.method, request.url.path, dict(request.headers), body))
            for index, (method, code) in enumerate(self._fail):
                if method == request.method:
                    del self._fail[index]
                    return None, JSONResponse({"message": "Internal error"}, status_code=code), 0.0
            delay = 0.0
            for index, (method, seconds) in enumerate(self._delay):
                if method == request.method:
                    del self._delay[index]
                    delay = seconds
                    break
        try:
            document = json.loads(body) if body else {}
        except ValueError:
            return None, JSONResponse({"message": "the body must be JSON"}, status_code=400), 0.0
        return document, None, delay

    async def _finish(self, response: Response, delay: float) -> Response:
        if delay:
            await asyncio.sleep(delay)
        return response

    async def _create_order(self, request: Request) -> Response:
        document, early, delay = await self._enter(request)
        if early is not None:
            return early
        key = request.headers.get("idempotency-key")
        with self._lock:
            if key and key in self._keys:
                return await self._finish(JSONResponse(self._keys[key]), delay)
        problem = self._order_problem(document)
        if problem:
            return JSONResponse({"message": problem}, status_code=400)
        token = secrets.token_hex(8).upper()
        amount = _cents(document["totalAmount"]["amount"])
        assert amount is not None
        answer = {
            "token": token,
            "expires": "2099-01-01T00:00:00Z",
            "checkoutUrl": f"{self.base_url}/checkout?token={token}",
        }
        with self._lock:
            self._orders[token] = self._new(token, document["merchantReference"], amount, document, "created")
            if key:
                self._keys[key] = answer
        return await self._finish(JSONResponse(answer), delay)

    def _order_problem(self, document: Any) -> str | None:
        if not isinstance(document, dict):
            return "the body must be a JSON object"
        total = document.get("totalAmount")
        if not isinstance(total, dict) or _cents(total.get("amount")) is None or total.get("currency") != "EUR":
            return "totalAmount must be {amount: decimal string, currency: EUR}"
        consumer = document.get("consumer")
        if not isinstance(consumer, dict) or not consumer.get("givenNames") or not consumer.get("surname"):
            return "consumer.givenNames and consumer.surname are required"
        merchant = document.get("merchant")
        if not isinstance(merchant, dict) or not all(
            str(merchant.get(name, "")).startswith(("http://", "https://"))
            for name in ("redirectConfirmUrl", "redirectCancelUrl")
        ):
            return "merchant.redirectConfirmUrl and merchant.redirectCancelUrl are required"
        items = document.get("items")
        if not isinstance(items, list) or not items:
            return "items are required"
        if not isinstance(document.get("merchantReference"), str) or not document["merchantReference"]:
            return "merchantReference is required"
        return None

    async def _capture(self, request: Request) -> Response:
        document, early, delay = await self._enter(request)
        if early is not None:
            return early
        token = document.get("token") if isinstance(document, dict) else None
        with self._lock:
            order = self._orders.get(str(token))
            if order is None:
                return JSONResponse({"message": "Order not found"}, status_code=404)
            if order["status"] == "charged":
                answer = {"token": token, "status": "APPROVED"}
            elif order["status"] != "authorized":
                return JSONResponse({"message": f"the order is {order['status']}"}, status_code=400)
            elif self._decline_captures:
                self._decline_captures -= 1
                order["status"] = "declined"
                answer = {"token": token, "status": "DECLINED"}
            else:
                order["status"] = "charged"
                answer = {"token": token, "status": "APPROVED", "totalAmount": _money(order["amount"])}
        if order["status"] == "charged" and answer.get("totalAmount"):
            self._notify(order)
        return await self._finish(JSONResponse(answer), delay)

    async def _get_payment(self, request: Request) -> Response:
        _, early, delay = await self._enter(request)
        if early is not None:
            return early
        with self._lock:
            order = self._orders.get(request.path_params["token"])
            public = self._public(order) if order else None
        if public is None:
            return await self._finish(JSONResponse({"message": "Order not found"}, status_code=404), delay)
        return await self._finish(JSONResponse(public), delay)

    async def _refund(self, request: Request) -> Response:
        document, early, delay = await self._enter(request)
        if early is not None:
            return early
        refund_amount = document.get("refundAmount") if isinstance(document, dict) else None
        cents = _cents(refund_amount.get("amount")) if isinstance(refund_amount, dict) else None
        key = request.headers.get("idempotency-key")
        with self._lock:
            order = self._orders.get(request.path_params["token"])
            if order is None:
                return JSONResponse({"message": "Order not found"}, status_code=404)
            for refund in order["refunds"]:
                if key and refund["_key"] == key:
                    return await self._finish(JSONResponse(self._refund_answer(order, refund)), delay)
            refunded = sum(_cents(refund["amount"]["amount"]) or 0 for refund in order["refunds"])
            if order["status"] not in ("charged", "partially_refunded"):
                return JSONResponse({"message": f"the order is {order['status']}"}, status_code=400)
            if not cents or cents + refunded > order["amount"]:
                return JSONResponse({"message": "the refund exceeds the amount left"}, status_code=400)
            refund = {
                "refundToken": secrets.token_hex(8).upper(),
                "amount": _money(cents),
                "merchantReference": document.get("merchantReference"),
                "refundedAt": "2026-12-03T10:00:00Z",
                "_key": key,
            }
            order["refunds"].append(refund)
            order["status"] = "refunded" if cents + refunded == order["amount"] else "partially_refunded"
        self._notify(order)
        return await self._finish(JSONResponse(self._refund_answer(order, refund)), delay)

    def _refund_answer(self, order: dict[str, Any], refund: dict[str, Any]) -> dict[str, Any]:
        return {"token": order["token"], **{key: value for key, value in refund.items() if not key.startswith("_")}}


@contextmanager
def running_scalapay_fake() -> Iterator[ScalapayFake]:
    """A Scalapay fake serving on a free loopback port."""
    fake = ScalapayFake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.base_url = base_url
        yield fake
