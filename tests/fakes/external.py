"""An external provider service written to Mia-Platform's external-provider contract
(docs/api.md#external-providers): `POST /pay`, `/refund`, `GET /status?paymentId=`,
`GET /check?paymentId=`, `GET /callback?paymentId=`, `/subscription/schedule|start|pay`,
`/subscription/update/{token}`, `/subscription/status/{token}`, `DELETE /subscription/expire/{token}`,
plus the older form with a payment-method segment (`/credit-cards/pay`). It keeps state, replays
idempotency keys, refuses refunds beyond what is left, and verifies its provider's callbacks itself
(here: a shared token in the query), answering with the PaymentStatus it establishes.

Switches make it behave like the services found in the field: one that does not implement `/callback`
or `/check` (the PGM then asks `/status`), one whose `/status` does not report amounts (Mia's
PaymentStatus has none), one that cannot read callbacks for a while.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.servers import run_server_in_thread

CALLBACK_TOKEN = "acme-callback-token"
PAY_OUTCOMES = {"OK": "ACCEPTED", "KO": "FAILED"}


class ExternalService:
    """The state of the fake external provider."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.payments: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self.received: list[tuple[str, str, dict[str, Any] | None]] = []
        self.base_url = ""
        # While True the service cannot read callbacks (it answers 503), as during an outage.
        self.callbacks_down = False
        # While True its /status answers 503.
        self.status_down = False
        # A service written only to the minimum of the contract: no /callback, no /check.
        self.implements_callback = True
        self.implements_check = True
        # Mia's PaymentStatus carries no amount; a richer service adds amount, currency, refundedAmount.
        self.reports_amounts = True
        self.app = Starlette(
            routes=[
                Route("/pay", self.pay, methods=["POST"]),
                Route("/refund", self.refund, methods=["POST"]),
                Route("/status", self.status, methods=["GET"]),
                Route("/check", self.check, methods=["GET"]),
                Route("/callback", self.callback, methods=["GET", "POST"]),
                Route("/subscription/schedule", self.pay, methods=["POST"]),
                Route("/subscription/start", self.pay, methods=["POST"]),
                Route("/subscription/pay", self.pay, methods=["POST"]),
                Route("/subscription/update/{token}", self.subscription_update, methods=["POST"]),
                Route("/subscription/status/{token}", self.subscription_status, methods=["GET"]),
                Route("/subscription/expire/{token}", self.subscription_expire, methods=["DELETE"]),
                # The older form, with a payment-method segment.
                Route("/{method}/pay", self.pay, methods=["POST"]),
                Route("/{method}/subscription/{action}", self.pay, methods=["POST"]),
            ]
        )

    def payments_for(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """Payments for a merchant reference."""
        with self.lock:
            return [dict(p) for p in self.payments.values() if p["shopTransactionId"] == shop_transaction_id]

    def create_payment(self, shop_transaction_id: str, amount: int, status: str = "ACCEPTED", refunded: int = 0) -> str:
        """A payment made at the service directly (as the old PGM did before the switch); its id."""
        payment_id = f"acme_{uuid.uuid4().hex[:12]}"
        with self.lock:
            self.payments[payment_id] = {
                "paymentId": payment_id,
                "shopTransactionId": shop_transaction_id,
                "amount": amount,
                "currency": "EUR",
                "status": status,
                "refunded": refunded,
                "refunds": [],
            }
        return payment_id

    def payment(self, payment_id: str) -> dict[str, Any]:
        """A copy of one payment's state."""
        with self.lock:
            return dict(self.payments[payment_id])

    def set_status(self, payment_id: str, status: str) -> None:
        """The payer acted at the provider: the payment's status changed."""
        with self.lock:
            self.payments[payment_id]["status"] = status

    async def pay(self, request: Request) -> JSONResponse:
        body = await request.json()
        key = request.headers.get("idempotency-key", "")
        self.received.append(("POST", request.url.path, body))
        with self.lock:
            if key in self.replies:
                return JSONResponse(self.replies[key])
            payment_id = f"acme_{uuid.uuid4().hex[:12]}"
            outcome = body.get("providerData", {}).get("acmeOutcome", "REDIRECT_TO_URL")
            self.payments[payment_id] = {
                "paymentId": payment_id,
                "shopTransactionId": body["shopTransactionId"],
                "amount": body["amount"],
                "currency": body["currency"],
                "status": PAY_OUTCOMES.get(outcome, "PENDING"),
                "refunded": 0,
                "refunds": [],
            }
            reply: dict[str, Any] = {
                "result": outcome,
                "resultDescription": f"acme says {outcome}",
                "paymentId": payment_id,
            }
            if outcome == "REDIRECT_TO_URL":
                reply["redirectToUrl"] = f"{self.base_url}/checkout/{payment_id}"
            if "/subscription/" in request.url.path and not request.url.path.endswith("/subscription/pay"):
                token = f"acme_sub_{uuid.uuid4().hex[:8]}"
                self.subscriptions[token] = {"status": "ACTIVE", "amount": body["amount"]}
                reply["subscriptionToken"] = token
            self.replies[key] = reply
            return JSONResponse(reply)

    async def refund(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.received.append(("POST", request.url.path, body))
        with self.lock:
            payment = self.payments.get(body["paymentId"])
            if payment is None:
                return JSONResponse({"message": "no such payment"}, status_code=404)
            if payment["status"] != "ACCEPTED" or payment["refunded"] + body["amount"] > payment["amount"]:
                return JSONResponse({"result": "KO", "resultDescription": "acme: nothing left to refund"})
            payment["refunded"] += body["amount"]
            refund_id = f"acme_ref_{uuid.uuid4().hex[:8]}"
            payment["refunds"].append({"refundId": refund_id, "amount": body["amount"]})
            return JSONResponse({"result": "OK", "resultDescription": "refunded", "refundId": refund_id})

    def _payment_status(self, payment_id: str) -> dict[str, Any] | None:
        with self.lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                return None
            answer: dict[str, Any] = {
                "status": payment["status"],
                "paymentId": payment["paymentId"],
                "shopTransactionId": payment["shopTransactionId"],
                "providerName": "acme",
                "paymentMethod": "external",
                "action": "PAYMENT",
            }
            if self.reports_amounts:
                answer["metadata"] = {
                    "amount": payment["amount"],
                    "currency": payment["currency"],
                    "refundedAmount": payment["refunded"],
                }
            return answer

    async def status(self, request: Request) -> JSONResponse:
        self.received.append(("GET", request.url.path, dict(request.query_params)))
        if self.status_down:
            return JSONResponse({"message": "down for maintenance"}, status_code=503)
        answer = self._payment_status(request.query_params.get("paymentId", ""))
        if answer is None:
            return JSONResponse({"message": "no such payment"}, status_code=404)
        return JSONResponse(answer)

    async def check(self, request: Request) -> JSONResponse:
        if not self.implements_check:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        self.received.append(("GET", request.url.path, dict(request.query_params)))
        answer = self._payment_status(request.query_params.get("paymentId", ""))
        if answer is None:
            return JSONResponse({"message": "no such payment"}, status_code=404)
        return JSONResponse(answer)

    async def callback(self, request: Request) -> JSONResponse:
        if not self.implements_callback:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        if self.callbacks_down:
            return JSONResponse({"message": "down for maintenance"}, status_code=503)
        if request.query_params.get("token") != CALLBACK_TOKEN:
            return JSONResponse({"message": "not from our provider"}, status_code=401)
        payment_id = request.query_params.get("payment") or request.query_params.get("paymentId", "")
        with self.lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                return JSONResponse({"message": "unknown payment"}, status_code=404)
            if "payment" in request.query_params:
                # The provider's own notification format: it says what happened (approved by default).
                payment["status"] = request.query_params.get("status", "ACCEPTED")
        answer = self._payment_status(payment_id)
        assert answer is not None
        return JSONResponse({**answer, "eventId": request.query_params.get("event", "")})

    async def subscription_update(self, request: Request) -> JSONResponse:
        body = await request.json()
        token = request.path_params["token"]
        self.received.append(("POST", request.url.path, body))
        with self.lock:
            if token not in self.subscriptions:
                return JSONResponse({"message": "no such subscription"}, status_code=404)
            self.subscriptions[token]["amount"] = body["amount"]
        return JSONResponse({"result": "OK", "resultDescription": "updated", "subscriptionToken": token})

    async def subscription_status(self, request: Request) -> JSONResponse:
        token = request.path_params["token"]
        with self.lock:
            subscription = self.subscriptions.get(token, {"status": "ACTIVE"})
        return JSONResponse({"status": subscription["status"], "subscriptionToken": token})

    async def subscription_expire(self, request: Request) -> JSONResponse:
        token = request.path_params["token"]
        self.received.append(("DELETE", request.url.path, dict(request.query_params)))
        with self.lock:
            if token not in self.subscriptions:
                return JSONResponse({"message": "no such subscription"}, status_code=404)
            self.subscriptions[token]["status"] = "EXPIRED"
        return JSONResponse({"result": "OK", "resultDescription": "expired"})


@contextmanager
def running_external_service() -> Iterator[ExternalService]:
    """Start the external provider service on a free port."""
    service = ExternalService()
    with run_server_in_thread(service.app) as (url, _):
        service.base_url = url
        yield service
