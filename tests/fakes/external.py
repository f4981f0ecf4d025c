"""An external provider service (spec 02, EXTERNAL_PROVIDERS_CONFIG): it implements the PGM's own
operation set under its base URL, keeps state, replays idempotency keys, and verifies its provider's
callbacks itself (here: a shared token in the query), answering with the PaymentStatus it establishes."""

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

from pgm.devstack.testing import run_server_in_thread

CALLBACK_TOKEN = "acme-callback-token"


class ExternalService:
    """The state of the fake external provider."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.payments: dict[str, dict[str, Any]] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self.received: list[tuple[str, str, dict[str, Any] | None]] = []
        self.base_url = ""
        # While True the service cannot read callbacks (it answers 503), as during an outage.
        self.callbacks_down = False
        self.app = Starlette(
            routes=[
                Route("/{method}/pay", self.pay, methods=["POST"]),
                Route("/refund", self.refund, methods=["POST"]),
                Route("/status", self.status, methods=["GET"]),
                Route("/callback", self.callback, methods=["GET", "POST"]),
                Route("/subscription/status/{token}", self.subscription_status, methods=["GET"]),
            ]
        )

    def payments_for(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """Payments for a merchant reference."""
        with self.lock:
            return [dict(p) for p in self.payments.values() if p["shopTransactionId"] == shop_transaction_id]

    async def pay(self, request: Request) -> JSONResponse:
        body = await request.json()
        key = request.headers.get("idempotency-key", "")
        self.received.append(("POST", request.url.path, body))
        with self.lock:
            if key in self.replies:
                return JSONResponse(self.replies[key])
            payment_id = f"acme_{uuid.uuid4().hex[:12]}"
            outcome = body.get("providerData", {}).get("acmeOutcome", "REDIRECT_TO_URL")
            status = {"OK": "ACCEPTED", "KO": "FAILED"}.get(outcome, "PENDING")
            self.payments[payment_id] = {
                "paymentId": payment_id,
                "shopTransactionId": body["shopTransactionId"],
                "amount": body["amount"],
                "status": status,
                "refunded": 0,
            }
            reply = {"result": outcome, "resultDescription": f"acme says {outcome}", "paymentId": payment_id}
            if outcome == "REDIRECT_TO_URL":
                reply["redirectToUrl"] = f"{self.base_url}/checkout/{payment_id}"
            self.replies[key] = reply
            return JSONResponse(reply)

    async def refund(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self.lock:
            payment = self.payments.get(body["paymentId"])
            if payment is None:
                return JSONResponse({"message": "no such payment"}, status_code=404)
            payment["refunded"] += body["amount"]
            return JSONResponse(
                {"result": "OK", "resultDescription": "refunded", "refundId": f"acme_ref_{uuid.uuid4().hex[:8]}"}
            )

    async def status(self, request: Request) -> JSONResponse:
        with self.lock:
            payment = self.payments.get(request.query_params.get("paymentId", ""))
        if payment is None:
            return JSONResponse({"message": "no such payment"}, status_code=404)
        return JSONResponse({k: payment[k] for k in ("status", "paymentId", "shopTransactionId")})

    async def callback(self, request: Request) -> JSONResponse:
        if self.callbacks_down:
            return JSONResponse({"message": "down for maintenance"}, status_code=503)
        if request.query_params.get("token") != CALLBACK_TOKEN:
            return JSONResponse({"message": "not from our provider"}, status_code=401)
        payment_id = request.query_params.get("payment", "")
        with self.lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                return JSONResponse({"message": "unknown payment"}, status_code=404)
            payment["status"] = request.query_params.get("status", "ACCEPTED")
            answer = {k: payment[k] for k in ("status", "paymentId", "shopTransactionId")}
        return JSONResponse({**answer, "eventId": request.query_params.get("event", "")})

    async def subscription_status(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ACTIVE", "subscriptionToken": request.path_params["token"]})


@contextmanager
def running_external_service() -> Iterator[ExternalService]:
    """Start the external provider service on a free port."""
    service = ExternalService()
    with run_server_in_thread(service.app) as (url, _):
        service.base_url = url
        yield service
