"""A stateful fake of Soisy's shop API (`/api/shops/{shopId}`), written from Soisy's API reference:

* Authentication: every call needs `X-Auth-Token` (the partner key) and a shop id in the path that the
  key belongs to; otherwise 401 `{"message": ...}`.
* Orders: `POST /orders` (JSON: amount in cents, orderReference, successUrl, errorUrl, callbackUrl,
  optional payer details, instalments, zeroInterestRate) answers `{token}`. `GET /orders/{token}` answers
  the order with its `status` (quote → request_received → request_accepted → waiting_for_verification →
  waiting_for_disbursement → disbursed, or cancelled). `GET /orders?orderReference=` lists the shop's
  orders with that reference (how a loan request whose answer was lost is found again).
* Callbacks: a form POST of `{eventId, eventMessage, eventDate, orderToken, orderReference, amount}` to the
  order's callbackUrl on each event (LoanWasApproved, RequestCompleted, LoanWasVerified,
  LoanWasDisbursed, UserWasRejected), unsigned, retried while the answer is not 2xx.
* No refunds: Soisy's API has none.

Test API (the shape of the other provider fakes): `running_soisy_fake()`, `env()`, `webhook_url`,
`complete` (the payer sends the loan request), `approve`, `verify`, `disburse`, `reject`, `abandon` (the
payer leaves the page; Soisy cancels the quote later, without a callback), `create_paid_order`,
`set_status`, `callback_url`, `error_url`, `order(token)`, `payments(reference)`, `requests`,
`notifications`, `resend(notification)` and the fault switches `fail_next`, `delay_next`,
`malformed_next`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.recording import MethodFaults, RecordedCall
from tests.support.servers import run_server_in_thread

_PAYER_FIELDS = (
    "email",
    "firstname",
    "lastname",
    "vatId",
    "vatCountry",
    "fiscalCode",
    "mobilePhone",
    "city",
    "province",
    "address",
    "civicNumber",
    "postalCode",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class SoisyFake:
    """The fake's state and its test API; `app` is the ASGI application serving the API."""

    def __init__(self) -> None:
        self.shop_id = "shop-" + secrets.token_hex(4)
        self.partner_key = "fake-soisy-" + secrets.token_hex(16)
        self.base_url = ""
        self.webhook_url: str | None = None
        self.callback_retry_delays: tuple[float, ...] = (0.2, 0.4, 0.8)
        self.requests: list[RecordedCall] = []
        self.notifications: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self._orders: dict[str, dict[str, Any]] = {}
        self._faults = MethodFaults()
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route("/api/shops/{shop_id}/orders", self._create_order, methods=["POST"]),
                Route("/api/shops/{shop_id}/orders", self._search_orders, methods=["GET"]),
                Route("/api/shops/{shop_id}/orders/{token}", self._get_order, methods=["GET"]),
            ]
        )

    # ---- test API -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The PGM's SOISY_* variables for this fake."""
        return {"SOISY_BASE_URL": self.base_url, "SOISY_SHOP_ID": self.shop_id, "SOISY_PARTNER_KEY": self.partner_key}

    def create_paid_order(self, shop_transaction_id: str, amount: int) -> str:
        """A loan disbursed long ago, requested through another PGM; its token."""
        with self._lock:
            token = secrets.token_hex(16)
            self._orders[token] = {
                "token": token,
                "orderReference": shop_transaction_id,
                "amount": amount,
                "status": "disbursed",
                "_callbackUrl": None,
            }
            return token

    def complete(self, token: str) -> None:
        """The payer fills in and sends the loan request on Soisy's page."""
        self._event(token, "RequestCompleted", "request_received", {"quote"})

    def approve(self, token: str) -> None:
        """Soisy's credit check approves the loan (documents still to verify)."""
        self._event(token, "LoanWasApproved", "request_accepted", {"quote", "request_received"})

    def verify(self, token: str) -> None:
        """Soisy verifies the payer's documents: the loan is granted, the merchant will be paid."""
        self._event(token, "LoanWasVerified", "waiting_for_disbursement", {"request_accepted"})

    def disburse(self, token: str) -> None:
        """Soisy pays the merchant."""
        self._event(token, "LoanWasDisbursed", "disbursed", {"waiting_for_disbursement"})

    def reject(self, token: str) -> None:
        """Soisy's credit check refuses the payer."""
        self._event(token, "UserWasRejected", "cancelled", {"quote", "request_received", "request_accepted"})

    def abandon(self, token: str) -> None:
        """The payer leaves the loan page; Soisy cancels the stale quote later and calls nobody."""
        with self._lock:
            order = self._orders[token]
            if order["status"] != "quote":
                raise ValueError(f"order {token} is {order['status']}, not a quote")
            order["status"] = "cancelled"

    def set_status(self, token: str, status: str) -> None:
        """Put an order in any status Soisy's back office could show (no callback)."""
        with self._lock:
            self._orders[token]["status"] = status

    def callback_url(self, token: str) -> str | None:
        """The callbackUrl the merchant gave with the order."""
        with self._lock:
            url: str | None = self._orders[token]["_callbackUrl"]
            return url

    def error_url(self, token: str) -> str | None:
        """The errorUrl the merchant gave with the order."""
        with self._lock:
            url: str | None = self._orders[token].get("_errorUrl")
            return url

    def order(self, token: str) -> dict[str, Any]:
        """One order as `GET /orders/{token}` shows it."""
        with self._lock:
            return self._public(self._orders[token])

    def payments(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """The orders made for a merchant reference."""
        with self._lock:
            return [self._public(o) for o in self._orders.values() if o["orderReference"] == shop_transaction_id]

    def resend(self, notification: dict[str, Any]) -> int:
        """Deliver a callback sent before once more, now; the PGM's answer status."""
        return httpx.post(self._target(notification["_url"]), data=notification["body"], timeout=10).status_code

    def fail_next(self, status_code: int, method: str = "POST") -> None:
        """The next API request (of this method) answers this status without doing anything."""
        with self._lock:
            self._faults.fail.append((method, status_code))

    def delay_next(self, seconds: float, method: str = "POST") -> None:
        """The next API request (of this method) is done, but answered only after `seconds` (lost answer)."""
        with self._lock:
            self._faults.delay.append((method, seconds))

    def malformed_next(self, method: str = "POST") -> None:
        """The next API request (of this method) is done, but answered 200 with a body that is not JSON."""
        with self._lock:
            self._faults.malformed.append((method, True))

    # ---- behaviour ------------------------------------------------------------------------------

    def _event(self, token: str, event: str, status: str, allowed_from: set[str]) -> None:
        with self._lock:
            order = self._orders[token]
            if order["status"] not in allowed_from:
                raise ValueError(f"order {token} is {order['status']}: {event} cannot happen now")
            order["status"] = status
            url = order["_callbackUrl"]
            if not url:
                return
            notification = {
                "body": {
                    "eventId": event,
                    "eventMessage": f"{event} for order {order['orderReference']}",
                    "eventDate": _now(),
                    "orderToken": token,
                    "orderReference": order["orderReference"],
                    "amount": str(order["amount"]),
                },
                "_url": url,
            }
            self.notifications.append(notification)
        if self.webhook_url is not None:
            threading.Thread(target=self._deliver, args=(notification,), daemon=True).start()

    def _public(self, order: dict[str, Any]) -> dict[str, Any]:
        public = {key: value for key, value in order.items() if not key.startswith("_")}
        public["loanAmount"] = order["amount"]
        public["instalmentsNumber"] = order.get("instalments", 10)
        return public

    def _target(self, url: str) -> str:
        # The PGM gave its public URL; the fake reaches the test's PGM on its loopback port instead.
        assert self.webhook_url is not None
        base, given = httpx.URL(self.webhook_url), httpx.URL(url)
        return str(given.copy_with(scheme=base.scheme, host=base.host, port=base.port))

    def _deliver(self, notification: dict[str, Any]) -> None:
        for delay in (0.0, *self.callback_retry_delays):
            time.sleep(delay)
            try:
                status: int | None = httpx.post(
                    self._target(notification["_url"]), data=notification["body"], timeout=10
                ).status_code
            except httpx.HTTPError:
                status = None
            self.deliveries.append({"eventId": notification["body"]["eventId"], "status": status})
            if status is not None and 200 <= status < 300:
                return

    async def _enter(self, request: Request) -> tuple[bytes, Response | None, float, bool]:
        """Authenticate, record, and take this request's fault: (body, early answer, delay, malformed)."""
        body = await request.body()
        if request.path_params["shop_id"] != self.shop_id or not secrets.compare_digest(
            request.headers.get("x-auth-token", ""), self.partner_key
        ):
            return body, JSONResponse({"message": "Invalid authentication token"}, status_code=401), 0.0, False
        with self._lock:
            self.requests.append(RecordedCall(request.method, request.url.path, dict(request.headers), body))
            code = self._faults.take(self._faults.fail, request.method)
            if code is not None:
                return body, JSONResponse({"message": "Internal error"}, status_code=code), 0.0, False
            delay = self._faults.take(self._faults.delay, request.method) or 0.0
            malformed = bool(self._faults.take(self._faults.malformed, request.method))
        return body, None, delay, malformed

    async def _finish(self, response: Response, delay: float, malformed: bool) -> Response:
        if delay:
            await asyncio.sleep(delay)
        if malformed:
            return Response(b"<html><body>502 Bad Gateway</body>", status_code=200, media_type="text/html")
        return response

    async def _create_order(self, request: Request) -> Response:
        body, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        problem = self._order_problem(document)
        if problem:
            return JSONResponse({"message": problem}, status_code=400)
        assert isinstance(document, dict)
        token = secrets.token_hex(16)
        with self._lock:
            self._orders[token] = {
                "token": token,
                "orderReference": document["orderReference"],
                "amount": document["amount"],
                "status": "quote",
                **{
                    key: document[key] for key in (*_PAYER_FIELDS, "instalments", "zeroInterestRate") if key in document
                },
                "_callbackUrl": document["callbackUrl"],
                "_successUrl": document["successUrl"],
                "_errorUrl": document["errorUrl"],
            }
        return await self._finish(JSONResponse({"token": token}), delay, malformed)

    def _order_problem(self, document: object) -> str | None:
        if not isinstance(document, dict):
            return "the body must be a JSON object"
        amount = document.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or not 100_00 <= amount <= 30_000_00:
            return "amount must be a number of cents between 10000 and 3000000"
        reference = document.get("orderReference")
        if not isinstance(reference, str) or not reference:
            return "orderReference is required"
        for name in ("successUrl", "errorUrl", "callbackUrl"):
            value = document.get(name)
            if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                return f"{name} must be a URL"
        instalments = document.get("instalments")
        if instalments is not None and (not isinstance(instalments, int) or not 3 <= instalments <= 60):
            return "instalments must be between 3 and 60"
        if "zeroInterestRate" in document and not isinstance(document["zeroInterestRate"], bool):
            return "zeroInterestRate must be a boolean"
        for name in _PAYER_FIELDS:
            if name in document and not isinstance(document[name], str):
                return f"{name} must be a string"
        return None

    async def _get_order(self, request: Request) -> Response:
        _, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        with self._lock:
            order = self._orders.get(request.path_params["token"])
            public = self._public(order) if order else None
        if public is None:
            return await self._finish(JSONResponse({"message": "Order not found"}, status_code=404), delay, malformed)
        return await self._finish(JSONResponse(public), delay, malformed)

    async def _search_orders(self, request: Request) -> Response:
        _, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        reference = request.query_params.get("orderReference", "")
        return await self._finish(JSONResponse({"orders": self.payments(reference)}), delay, malformed)


@contextmanager
def running_soisy_fake() -> Iterator[SoisyFake]:
    """A Soisy fake serving on a free loopback port."""
    fake = SoisyFake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.base_url = base_url
        yield fake
