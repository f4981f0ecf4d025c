"""A stateful fake of FlowPay's current public API (v2, `https://api.sandbox.flowpay.it/v2`), written from
FlowPay's developer documentation:

* Authentication: every call needs `X-API-Key`; a wrong or missing key answers 401 with FlowPay's error
  body `{"error": {"code", "message"}}`.
* `POST /payment-requests` (JSON, mandatory `Idempotency-Key`: a repeated key answers what the first call
  did) creates a PIS payment request `{id, status: pending, checkoutUrl, ...}`; `GET /payment-requests/{id}`
  reads one back; `GET /payment-requests?reference=` lists a merchant reference's as `{data: [...]}`.
  Statuses: pending, succeeded, rejected, onHold.
* Webhooks: `payment.status_change` events POSTed to the request's `webhookUrl` with `X-FlowPay-Event-Id`,
  `-Event-Type`, `-Timestamp` (UNIX seconds), `-Signature` (Ed25519, base64url without padding, over
  `"{timestamp}.{raw body}"`), `-Key-Id` and `-Retry-Count`, retried while the answer is not 2xx. The key
  is served as a JWKS at `/.well-known/jwks.json`.

Test API: `running_flowpay_fake()`, `env()`, `webhook_url`, `approve` (the payer authorises the transfer
and the bank executes it), `reject` (the bank refuses it), `abandon` (the payer gives up on the checkout:
FlowPay rejects the request), `hold` (onHold), `payments(reference)`, `payment(id)`, `create_paid`
(a payment made before the switch), `requests`, `notifications`, `resend(notification)`,
`signed(body, timestamp)` and the fault switches `fail_next`, `delay_next`, `malformed_next`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.recording import MethodFaults, RecordedCall
from tests.support.servers import run_server_in_thread

API = "/v2"


def b64url(raw: bytes) -> str:
    """base64url without padding, FlowPay's encoding of signatures and keys."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class FlowPayFake:
    """The fake's state and its test API; `app` is the ASGI application serving the API."""

    def __init__(self) -> None:
        self.api_key = "fp_test_" + secrets.token_hex(16)
        self.key_id = "fp-key-" + secrets.token_hex(4)
        self.private_key = Ed25519PrivateKey.generate()
        self.public_key = b64url(self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        self.base_url = ""
        self.webhook_url: str | None = None
        self.callback_retry_delays: tuple[float, ...] = (0.2, 0.4, 0.8)
        self.requests: list[RecordedCall] = []
        self.notifications: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self._payments: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, tuple[int, bytes]] = {}
        self._faults = MethodFaults()
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route(f"{API}/payment-requests", self._create, methods=["POST"]),
                Route(f"{API}/payment-requests", self._search, methods=["GET"]),
                Route(f"{API}/payment-requests/{{payment_id}}", self._get, methods=["GET"]),
                Route("/.well-known/jwks.json", self._jwks, methods=["GET"]),
            ]
        )

    # ---- test API -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The PGM's FLOWPAY_* variables for this fake (the callback URL defaults to the PGM's own)."""
        return {
            "FLOWPAY_API_BASE_URL": f"{self.base_url}{API}",
            "FLOWPAY_CLIENT_SECRET": self.api_key,
            "FLOWPAY_PUBLIC_KEY": self.public_key,
        }

    def approve(self, payment_id: str) -> None:
        """The payer authorises the transfer at their bank and the bank executes it."""
        self._change(payment_id, "succeeded")

    def reject(self, payment_id: str) -> None:
        """The payer's bank refuses the transfer (insufficient funds, SCA failed)."""
        self._change(payment_id, "rejected")

    def abandon(self, payment_id: str) -> None:
        """The payer gives up on the checkout: FlowPay rejects the request once the session expires."""
        self._change(payment_id, "rejected")

    def hold(self, payment_id: str) -> None:
        """The bank holds the transfer for checks (onHold), to be executed or refused later."""
        self._change(payment_id, "onHold")

    def create_paid(self, reference: str, amount: int) -> str:
        """A payment request paid long ago through another PGM; its id."""
        with self._lock:
            payment_id = "pr_" + secrets.token_hex(10)
            self._payments[payment_id] = {
                "id": payment_id,
                "type": "pis",
                "status": "succeeded",
                "amount": amount,
                "currency": "EUR",
                "reference": reference,
                "checkoutUrl": f"{self.base_url}/checkout/{payment_id}",
                "metadata": {},
                "_webhookUrl": None,
            }
            return payment_id

    def payment(self, payment_id: str) -> dict[str, Any]:
        """One payment request as `GET /payment-requests/{id}` shows it."""
        with self._lock:
            return self._public(self._payments[payment_id])

    def payments(self, reference: str) -> list[dict[str, Any]]:
        """The payment requests made for a merchant reference."""
        with self._lock:
            return [self._public(p) for p in self._payments.values() if p["reference"] == reference]

    def signed(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers FlowPay sends with an event body (signed now, or at `timestamp`)."""
        moment = str(int(time.time()) if timestamp is None else timestamp)
        signature = b64url(self.private_key.sign(moment.encode("ascii") + b"." + body))
        return {
            "Content-Type": "application/json",
            "X-FlowPay-Event-Id": "evt_" + uuid.uuid4().hex,
            "X-FlowPay-Event-Type": "payment.status_change",
            "X-FlowPay-Timestamp": moment,
            "X-FlowPay-Signature": signature,
            "X-FlowPay-Key-Id": self.key_id,
            "X-FlowPay-Retry-Count": "0",
        }

    def resend(self, notification: dict[str, Any]) -> int:
        """Deliver a notification sent before once more, now, with its original headers; the PGM's answer."""
        return httpx.post(
            self._target(notification["_url"]),
            content=notification["body"],
            headers=notification["headers"],
            timeout=10,
        ).status_code

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

    def _public(self, payment: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in payment.items() if not key.startswith("_")}

    def _change(self, payment_id: str, status: str) -> None:
        with self._lock:
            payment = self._payments[payment_id]
            if payment["status"] in ("succeeded", "rejected"):
                raise ValueError(f"payment request {payment_id} is final ({payment['status']})")
            payment["status"] = status
            url = payment["_webhookUrl"]
            if not url:
                return
            body = json.dumps(
                {"type": "payment.status_change", "createdAt": int(time.time()), "data": self._public(payment)}
            ).encode()
            notification = {"body": body, "headers": self.signed(body), "_url": url}
            self.notifications.append(notification)
        if self.webhook_url is not None:
            threading.Thread(target=self._deliver, args=(notification,), daemon=True).start()

    def _target(self, url: str) -> str:
        # The PGM gave its public URL; the fake reaches the test's PGM on its loopback port instead.
        assert self.webhook_url is not None
        base, given = httpx.URL(self.webhook_url), httpx.URL(url)
        return str(given.copy_with(scheme=base.scheme, host=base.host, port=base.port))

    def _deliver(self, notification: dict[str, Any]) -> None:
        for retry, delay in enumerate((0.0, *self.callback_retry_delays)):
            time.sleep(delay)
            headers = {**notification["headers"], "X-FlowPay-Retry-Count": str(retry)}
            try:
                status: int | None = httpx.post(
                    self._target(notification["_url"]), content=notification["body"], headers=headers, timeout=10
                ).status_code
            except httpx.HTTPError:
                status = None
            self.deliveries.append({"eventId": headers["X-FlowPay-Event-Id"], "status": status})
            if status is not None and 200 <= status < 300:
                return

    async def _enter(self, request: Request) -> tuple[bytes, Response | None, float, bool]:
        """Authenticate, record, and take this request's fault: (body, early answer, delay, malformed)."""
        body = await request.body()
        if not secrets.compare_digest(request.headers.get("x-api-key", ""), self.api_key):
            return body, _error(401, "unauthorized", "invalid or missing API key"), 0.0, False
        with self._lock:
            self.requests.append(RecordedCall(request.method, request.url.path, dict(request.headers), body))
            code = self._faults.take(self._faults.fail, request.method)
            if code is not None:
                return body, _error(code, "internal_error" if code >= 500 else "failed", "failed"), 0.0, False
            delay = self._faults.take(self._faults.delay, request.method) or 0.0
            malformed = bool(self._faults.take(self._faults.malformed, request.method))
        return body, None, delay, malformed

    async def _finish(self, response: Response, delay: float, malformed: bool) -> Response:
        if delay:
            await asyncio.sleep(delay)
        if malformed:
            return Response(b"<html><body>502 Bad Gateway</body>", status_code=200, media_type="text/html")
        return response

    async def _create(self, request: Request) -> Response:
        body, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        key = request.headers.get("idempotency-key")
        if not key:
            return _error(400, "idempotency_key_required", "Idempotency-Key is required")
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return _error(415, "unsupported_media_type", "Content-Type must be application/json")
        with self._lock:
            if key in self._idempotent:
                status, content = self._idempotent[key]
                replay = Response(content, status_code=status, media_type="application/json")
                return await self._finish(replay, delay, malformed)
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            response = self._new_payment(document)
            self._idempotent[key] = (response.status_code, bytes(response.body))
        return await self._finish(response, delay, malformed)

    def _new_payment(self, document: object) -> JSONResponse:
        if not isinstance(document, dict):
            return _error(400, "invalid_request", "the body must be a JSON object")
        problem = _problem(document)
        if problem:
            return _error(422, "validation_error", problem)
        payment_id = "pr_" + secrets.token_hex(10)
        payment = {
            "id": payment_id,
            "type": "pis",
            "status": "pending",
            "amount": document["amount"],
            "currency": document["currency"],
            "reference": document["reference"],
            "checkoutUrl": f"{self.base_url}/checkout/{payment_id}",
            "metadata": dict(document.get("metadata") or {}),
            "_webhookUrl": document.get("webhookUrl"),
        }
        self._payments[payment_id] = payment
        return JSONResponse(self._public(payment), status_code=201)

    async def _get(self, request: Request) -> Response:
        _, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        with self._lock:
            payment = self._payments.get(request.path_params["payment_id"])
            snapshot = self._public(payment) if payment else None
        if snapshot is None:
            return await self._finish(_error(404, "not_found", "payment request not found"), delay, malformed)
        return await self._finish(JSONResponse(snapshot), delay, malformed)

    async def _search(self, request: Request) -> Response:
        _, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        reference = request.query_params.get("reference", "")
        return await self._finish(JSONResponse({"data": self.payments(reference)}), delay, malformed)

    async def _jwks(self, _request: Request) -> Response:
        return JSONResponse({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": self.key_id, "x": self.public_key}]})


def _problem(document: dict[str, Any]) -> str | None:
    if document.get("type") != "pis":
        return "type must be pis"
    amount = document.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        return "amount must be a positive integer of cents"
    if document.get("currency") != "EUR":
        return "currency must be EUR"
    if not isinstance(document.get("reference"), str) or not document["reference"]:
        return "reference is required"
    creditor, debtor = document.get("creditor"), document.get("debtor")
    if not isinstance(creditor, dict) or not creditor.get("iban") or not creditor.get("fiscalCode"):
        return "creditor.iban and creditor.fiscalCode are required"
    if not isinstance(debtor, dict) or not debtor.get("fiscalCode"):
        return "debtor.fiscalCode is required"
    urls = document.get("redirectUrls")
    if not isinstance(urls, dict) or not str(urls.get("success", "")).startswith(("http://", "https://")):
        return "redirectUrls.success must be a URL"
    webhook = document.get("webhookUrl")
    if webhook is not None and not str(webhook).startswith(("http://", "https://")):
        return "webhookUrl must be a URL"
    return None


@contextmanager
def running_flowpay_fake() -> Iterator[FlowPayFake]:
    """A FlowPay fake serving on a free loopback port."""
    fake = FlowPayFake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.base_url = base_url
        yield fake
