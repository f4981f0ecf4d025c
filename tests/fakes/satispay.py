"""A stateful fake of Satispay's GBusiness API v1, written from developers.satispay.com:

* Authentication (docs 1.8.x): "Create the digest", "Create the string", "Sign the string", "Compose
  the authentication header" — Cavage HTTP Signatures draft-10 with rsa-sha256. Every request is
  verified with the public key of the pair whose private key `env()` hands to the PGM: keyId,
  algorithm, the signed header list (it must cover `(request-target) host date digest`), the Digest
  against the body actually received, the Date (this fake refuses more than 5 minutes of skew, an
  assumption: Satispay documents no window) and the RSA signature. A failure answers 401
  `{"code": 34, "message": "Unauthorized", "wlt": ...}` as documented.
* Payments ("Create payment", "Get payment details", "Get shop-payments list"): flows MATCH_CODE,
  PRE_AUTHORIZED (with `token`) and REFUND (with `parent_payment_uid`, partial refunds allowed up to the
  paid amount), `amount_unit` integer cents, EUR only, `external_code` ≤ 50 characters, metadata ≤ 20
  pairs, JSON bodies only, `Idempotency-Key` replays the first answer, `x-satispay-response-wait-time`
  (0..60) holds a lookup of a pending payment for a change. List: newest first, `limit`,
  `starting_after`, `status`, answer `{"has_more", "data"}`.
* Pre-authorized payment tokens ("Create authorization", "Get authorization", "Update authorization"):
  PENDING → ACCEPTED | CANCELED, revoked with PUT `{"status": "CANCELED"}` (a second revocation is an
  illegal state transition, 403 code 44).
* Callbacks ("Callback S2S"): an unsigned GET to the `callback_url` given at creation with `{uuid}`
  replaced, no body, a Digest header, retried after 1, 2 and 4 s while the answer is not 2xx.
* Errors: `{"code", "message", "wlt"}` with the documented codes (34, 36, 41, 44, 172).

Test API (the same shape as the other provider fakes): `running_satispay_fake()`, `env()`,
`webhook_url`, `approve` / `decline` (the payer in the app, for payments and tokens), `expire`,
`payments(shop_transaction_id)`, `tokens()`, `requests`, `deliveries`, and the fault switches
`fail_next`, `delay_next` (the answer is lost after the work is done) and `malformed_next`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import run_server_in_thread

API = "/g_business/v1"
DATE_SKEW_SECONDS = 300
REQUIRED_SIGNED = frozenset({"(request-target)", "host", "date", "digest"})
SHOP_UID = "0c4f4511-1afa-4b17-b529-ff7465d126c1"
WEB_REDIRECT = "https://shop.example/satispay/done"
MOBILE_REDIRECT = "shopapp://satispay/done"
_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class RecordedCall:
    """One API request the fake received (after the signature check)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Faults:
    # Each fault waits for the next request of its HTTP method (POST by default): the PGM's background
    # lookups (GET) must not consume a fault meant for the payment or refund a test is making.
    fail: list[tuple[str, int]] = field(default_factory=list)
    delay: list[tuple[str, float]] = field(default_factory=list)
    malformed: list[tuple[str, bool]] = field(default_factory=list)

    def take(self, queue: list[Any], method: str) -> Any:
        for index, (wanted, value) in enumerate(queue):
            if wanted == method:
                del queue[index]
                return value
        return None


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "wlt": secrets.token_hex(4)}, status_code=status)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{datetime.now(UTC).microsecond // 1000:03d}Z"


class SatispayFake:
    """The fake's state and its test API; `app` is the ASGI application serving the API."""

    def __init__(self) -> None:
        self.key_id = "fake-key-" + secrets.token_hex(12)
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self._private_key.public_key()
        self.base_url = ""
        self.webhook_url: str | None = None
        self.callback_retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0)
        self.requests: list[RecordedCall] = []
        self.deliveries: list[dict[str, Any]] = []
        self._payments: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, dict[str, Any]] = {}
        self._callbacks: dict[str, str] = {}
        self._idempotent: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._faults = _Faults()
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route(f"{API}/payments", self._create_payment, methods=["POST"]),
                Route(f"{API}/payments", self._list_payments, methods=["GET"]),
                Route(f"{API}/payments/{{id}}", self._get_payment, methods=["GET"]),
                Route(f"{API}/pre_authorized_payment_tokens", self._create_token, methods=["POST"]),
                Route(f"{API}/pre_authorized_payment_tokens/{{id}}", self._get_token, methods=["GET"]),
                Route(f"{API}/pre_authorized_payment_tokens/{{id}}", self._update_token, methods=["PUT"]),
            ]
        )

    # ---- test API -------------------------------------------------------------------------------

    def private_key_pem(self) -> str:
        """The private key as PKCS#8 PEM."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    def env(self) -> dict[str, str]:
        """The PGM's SATISPAY_* variables for this fake; the key in the existing PGM's one-line form."""
        return {
            "SATISPAY_IS_SANDBOX": "true",
            "SATISPAY_BASE_URL": self.base_url,
            "SATISPAY_KEY_ID": self.key_id,
            "SATISPAY_PRIVATE_KEY": " ".join(self.private_key_pem().split("\n")).strip(),
            "SATISPAY_WAITING_SECONDS": "0",
            "SATISPAY_AFTER_BUY_WEB_REDIRECT_URL": WEB_REDIRECT,
            "SATISPAY_AFTER_BUY_MOBILE_REDIRECT_URL": MOBILE_REDIRECT,
        }

    def create_payment(
        self, shop_transaction_id: str, amount: int, status: str = "ACCEPTED", callback_url: str | None = None
    ) -> str:
        """A payment made through another PGM (confirmed long ago, or still PENDING in the payer's app and
        calling `callback_url`, with Satispay's literal {uuid}, once decided); its id."""
        with self._lock:
            payment_id = str(uuid.uuid4())
            self._payments[payment_id] = {
                "id": payment_id,
                "type": "TO_BUSINESS",
                "amount_unit": amount,
                "currency": "EUR",
                "status": status,
                "expired": False,
                "metadata": {},
                "sender": {"id": str(uuid.uuid4()), "type": "CONSUMER", "name": "Mario Rossi"},
                "receiver": {"id": SHOP_UID, "type": "SHOP"},
                "insert_date": _now_iso(),
                "external_code": shop_transaction_id,
                "_flow": "MATCH_CODE",
            }
            if callback_url:
                self._callbacks[payment_id] = callback_url
            return payment_id

    def approve(self, identifier: str) -> None:
        """The payer confirms a pending payment, or approves a pending authorization, in the app."""
        self._decide(identifier, "ACCEPTED")

    def decline(self, identifier: str) -> None:
        """The payer refuses a pending payment or authorization in the app."""
        self._decide(identifier, "CANCELED")

    def revoke(self, token_id: str) -> None:
        """The payer revokes an approved authorization from the app."""
        with self._lock:
            token = self._tokens[token_id]
            if token["status"] != "ACCEPTED":
                raise ValueError(f"authorization {token_id} is {token['status']}, not ACCEPTED")
            token["status"] = "CANCELED"
        self._notify(token_id)

    def expire(self, payment_id: str) -> None:
        """A pending payment reaches its expiration date (Satispay keeps it PENDING with expired=true)."""
        with self._lock:
            payment = self._payments[payment_id]
            if payment["status"] != "PENDING":
                raise ValueError(f"payment {payment_id} is {payment['status']}, not PENDING")
            payment["expired"] = True
        self._notify(payment_id)

    def payments(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """Satispay's payments for a merchant reference, each with its refunds."""
        with self._lock:
            found = []
            for payment in self._payments.values():
                if payment["type"] == "TO_BUSINESS" and payment.get("external_code") == shop_transaction_id:
                    refunds = [dict(r) for r in self._payments.values() if r.get("_parent") == payment["id"]]
                    found.append({**_public(payment), "refunds": [_public(r) for r in refunds]})
            return found

    def payment(self, payment_id: str) -> dict[str, Any]:
        """One payment as the API shows it."""
        with self._lock:
            return _public(self._payments[payment_id])

    def tokens(self) -> list[dict[str, Any]]:
        """Every pre-authorized token, oldest first."""
        with self._lock:
            return [dict(token) for token in self._tokens.values()]

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

    def _decide(self, identifier: str, status: str) -> None:
        with self._lock:
            document = self._payments.get(identifier) or self._tokens.get(identifier)
            if document is None:
                raise KeyError(identifier)
            if document["status"] != "PENDING" or document.get("expired"):
                raise ValueError(f"{identifier} is {document['status']}, not payable")
            document["status"] = status
            if status == "ACCEPTED" and identifier in self._payments:
                document["sender"] = {"id": str(uuid.uuid4()), "type": "CONSUMER", "name": "Mario Rossi"}
            if status == "ACCEPTED" and identifier in self._tokens:
                document["consumer_uid"] = str(uuid.uuid4())
        self._notify(identifier)

    def _notify(self, identifier: str) -> None:
        """Send Satispay's content-free callback for this id, in the background, with its retries."""
        with self._lock:
            template = self._callbacks.get(identifier)
        if not template:
            return
        target = httpx.URL(template.replace("{uuid}", identifier))
        if self.webhook_url is None:
            self.deliveries.append({"id": identifier, "url": str(target), "status": None, "skipped": True})
            return
        base = httpx.URL(self.webhook_url)
        url = target.copy_with(scheme=base.scheme, host=base.host, port=base.port)
        threading.Thread(target=self._deliver, args=(identifier, str(url)), daemon=True).start()

    def _deliver(self, identifier: str, url: str) -> None:
        headers = {"Digest": "SHA-256=" + base64.b64encode(hashlib.sha256(b"").digest()).decode()}
        for delay in (0.0, *self.callback_retry_delays):
            time.sleep(delay)
            try:
                status: int | None = httpx.get(url, headers=headers, timeout=10).status_code
            except httpx.HTTPError:
                status = None
            self.deliveries.append({"id": identifier, "url": url, "status": status, "skipped": False})
            if status is not None and 200 <= status < 300:
                return

    async def _authenticate(self, request: Request, body: bytes) -> Response | None:
        """Verify the request's HTTP signature exactly as documented; a 401 body on any failure."""
        params = dict(_PARAM.findall(request.headers.get("authorization", "")))
        if not request.headers.get("authorization", "").startswith("Signature ") or not params:
            return _error(401, 34, "Unauthorized")
        if params.get("keyId") != self.key_id or params.get("algorithm") != "rsa-sha256":
            return _error(401, 34, "Unauthorized")
        signed = params.get("headers", "").split()
        if not set(signed) >= REQUIRED_SIGNED:
            return _error(401, 34, "Unauthorized")
        expected_digest = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
        if request.headers.get("digest") != expected_digest:
            return _error(401, 34, "Unauthorized")
        try:
            sent_at = parsedate_to_datetime(request.headers.get("date", ""))
        except (TypeError, ValueError):
            return _error(401, 34, "Unauthorized")
        if sent_at.tzinfo is None or abs(datetime.now(UTC) - sent_at) > timedelta(seconds=DATE_SKEW_SECONDS):
            return _error(401, 34, "Unauthorized")
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        target = raw_path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        lines = []
        for name in signed:
            if name == "(request-target)":
                lines.append(f"(request-target): {request.method.lower()} {target}")
            elif name in request.headers:
                lines.append(f"{name}: {request.headers[name]}")
            else:
                return _error(401, 34, "Unauthorized")
        try:
            signature = base64.b64decode(params.get("signature", ""), validate=True)
            self.public_key.verify(signature, "\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return _error(401, 34, "Unauthorized")
        return None

    async def _enter(self, request: Request) -> tuple[bytes, Response | None, float, bool]:
        """Authenticate, record, and take this request's fault: (body, early answer, delay, malformed)."""
        body = await request.body()
        refused = await self._authenticate(request, body)
        if refused is not None:
            return body, refused, 0.0, False
        with self._lock:
            self.requests.append(RecordedCall(request.method, request.url.path, dict(request.headers), body))
            code = self._faults.take(self._faults.fail, request.method)
            if code is not None:
                return body, _error(code, 0, "Internal Server Error" if code >= 500 else "Failed"), 0.0, False
            delay = self._faults.take(self._faults.delay, request.method) or 0.0
            malformed = bool(self._faults.take(self._faults.malformed, request.method))
        if request.method in ("POST", "PUT") and request.headers.get("content-type", "").split(";")[0] != (
            "application/json"
        ):
            return body, _error(400, 36, "Malformed request: Content-Type must be application/json"), 0.0, False
        return body, None, delay, malformed

    async def _finish(self, response: Response, delay: float, malformed: bool) -> Response:
        if delay:
            await asyncio.sleep(delay)
        if malformed:
            return Response(b"<html><body>502 Bad Gateway</body>", status_code=200, media_type="text/html")
        return response

    async def _idempotent_create(self, request: Request, handler: Any) -> Response:
        body, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        key = request.headers.get("idempotency-key")
        with self._lock:
            if key and (request.url.path, key) in self._idempotent:
                status, content = self._idempotent[(request.url.path, key)]
                replay = Response(content, status_code=status, media_type="application/json")
                return await self._finish(replay, delay, malformed)
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if not isinstance(document, dict):
                response: Response = _error(400, 36, "Malformed request: the body must be a JSON object")
            else:
                response = handler(document)
            if key and response.status_code < 500:
                self._idempotent[(request.url.path, key)] = (response.status_code, bytes(response.body))
        return await self._finish(response, delay, malformed)

    async def _create_payment(self, request: Request) -> Response:
        return await self._idempotent_create(request, self._new_payment)

    async def _create_token(self, request: Request) -> Response:
        return await self._idempotent_create(request, self._new_token)

    def _new_payment(self, document: dict[str, Any]) -> Response:
        flow = document.get("flow")
        amount = document.get("amount_unit")
        if flow not in ("MATCH_CODE", "PRE_AUTHORIZED", "REFUND"):
            return _error(400, 36, "Malformed flow, payment or metadata")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return _error(400, 36, "Malformed request: amount_unit must be a positive integer of cents")
        if document.get("currency", "EUR") != "EUR":
            return _error(400, 36, "Malformed request: EUR is the only currency")
        problem = _common_problem(document)
        if problem:
            return _error(400, 36, problem)
        payment: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "type": "TO_BUSINESS",
            "amount_unit": amount,
            "currency": "EUR",
            "status": "PENDING",
            "expired": False,
            "metadata": document.get("metadata") or {},
            "sender": {"type": "CONSUMER"},
            "receiver": {"id": SHOP_UID, "type": "SHOP"},
            "insert_date": _now_iso(),
            "external_code": document.get("external_code"),
            "_flow": flow,
        }
        if flow == "MATCH_CODE":
            if not document.get("callback_url") or not document.get("redirect_url"):
                return _error(400, 36, "Malformed request: callback_url and redirect_url are required")
            payment["code_identifier"] = "S6Y-PAY--" + payment["id"].upper()
            payment["expire_date"] = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
            payment["redirect_url"] = f"{self.base_url}/pay/{payment['id']}?redirect_url=" + quote(
                str(document["redirect_url"]), safe=""
            )
        elif flow == "PRE_AUTHORIZED":
            token = self._tokens.get(str(document.get("token") or document.get("pre_authorized_payments_token")))
            if token is None or token["status"] != "ACCEPTED":
                return _error(400, 172, "Pre authorized payments token is not valid")
            payment["status"] = "ACCEPTED"
            payment["sender"] = {"id": token["consumer_uid"], "type": "CONSUMER", "name": "Mario Rossi"}
        else:
            parent = self._payments.get(str(document.get("parent_payment_uid")))
            if parent is None or parent["type"] != "TO_BUSINESS":
                return _error(404, 41, "Resource not found")
            if parent["status"] != "ACCEPTED":
                return _error(400, 36, "Malformed request: only an accepted payment can be refunded")
            refunded = sum(
                r["amount_unit"]
                for r in self._payments.values()
                if r.get("_parent") == parent["id"] and r["status"] == "ACCEPTED"
            )
            if refunded + amount > parent["amount_unit"]:
                return _error(400, 36, "Malformed request: the refund exceeds the amount left to refund")
            payment.update(
                type="REFUND_TO_BUSINESS",
                status="ACCEPTED",
                sender={"id": SHOP_UID, "type": "SHOP"},
                receiver={"id": parent["sender"].get("id"), "type": "CONSUMER"},
                _parent=parent["id"],
            )
        self._payments[payment["id"]] = payment
        if document.get("callback_url"):
            self._callbacks[payment["id"]] = str(document["callback_url"])
        return JSONResponse(_public(payment))

    def _new_token(self, document: dict[str, Any]) -> Response:
        problem = _common_problem(document)
        if problem:
            return _error(400, 36, problem)
        if document.get("reason") is not None and not isinstance(document.get("reason"), str):
            return _error(400, 36, "Malformed request: reason must be a string")
        token_id = str(uuid.uuid4())
        token: dict[str, Any] = {
            "id": token_id,
            "code_identifier": "S6Y-PPT--" + token_id.upper(),
            "shop_uid": SHOP_UID,
            "status": "PENDING",
            "reason": document.get("reason"),
            "callback_url": document.get("callback_url"),
            "metadata": document.get("metadata") or {},
            "redirect_url": f"{self.base_url}/authorize/{token_id}"
            + (
                "?redirect_url=" + quote(str(document["redirect_url"]), safe="") if document.get("redirect_url") else ""
            ),
        }
        self._tokens[token_id] = token
        if document.get("callback_url"):
            self._callbacks[token_id] = str(document["callback_url"])
        return JSONResponse(token)

    async def _get_payment(self, request: Request) -> Response:
        _, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        raw_wait = request.headers.get("x-satispay-response-wait-time", "0")
        if not raw_wait.isdigit() or int(raw_wait) > 60:
            return _error(400, 36, "Malformed request: x-satispay-response-wait-time must be 0..60")
        identifier = request.path_params["id"]
        deadline = time.monotonic() + int(raw_wait)
        while True:
            with self._lock:
                payment = self._payments.get(identifier)
                snapshot = _public(payment) if payment else None
            if snapshot is None or snapshot["status"] != "PENDING" or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        if snapshot is None:
            return await self._finish(_error(404, 41, "Resource not found"), delay, malformed)
        return await self._finish(JSONResponse(snapshot), delay, malformed)

    async def _list_payments(self, request: Request) -> Response:
        _, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        status = request.query_params.get("status")
        if status is not None and status not in ("ACCEPTED", "PENDING", "CANCELED"):
            return _error(400, 36, "Invalid query parament status")
        raw_limit = request.query_params.get("limit", "20")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            return _error(400, 36, "Malformed request: limit must be 1..100")
        with self._lock:
            newest_first = [_public(p) for p in reversed(self._payments.values())]
        if status:
            newest_first = [p for p in newest_first if p["status"] == status]
        after = request.query_params.get("starting_after")
        if after:
            ids = [p["id"] for p in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        limit = int(raw_limit)
        page = {"has_more": len(newest_first) > limit, "data": newest_first[:limit]}
        return await self._finish(JSONResponse(page), delay, malformed)

    async def _get_token(self, request: Request) -> Response:
        _, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        with self._lock:
            token = self._tokens.get(request.path_params["id"])
            snapshot = dict(token) if token else None
        if snapshot is None:
            return await self._finish(_error(404, 41, "Resource not found"), delay, malformed)
        return await self._finish(JSONResponse(snapshot), delay, malformed)

    async def _update_token(self, request: Request) -> Response:
        body, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict) or document.get("status") != "CANCELED":
            return _error(400, 36, "Malformed request: status must be CANCELED")
        with self._lock:
            token = self._tokens.get(request.path_params["id"])
            if token is None:
                return await self._finish(_error(404, 41, "Resource not found"), delay, malformed)
            if token["status"] == "CANCELED":
                return await self._finish(_error(403, 44, "Illegal state transition"), delay, malformed)
            token["status"] = "CANCELED"
            snapshot = dict(token)
        self._notify(snapshot["id"])
        return await self._finish(JSONResponse(snapshot), delay, malformed)


def _common_problem(document: dict[str, Any]) -> str | None:
    """What Satispay refuses with code 36 in any creating request, or None."""
    external = document.get("external_code")
    if external is not None and (not isinstance(external, str) or len(external) > 50):
        return "Malformed request: external_code must be a string of at most 50 characters"
    metadata = document.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > 20:
            return "Malformed flow, payment or metadata"
        if any(len(str(key)) > 45 or len(str(value)) > 500 for key, value in metadata.items()):
            return "Malformed flow, payment or metadata"
    for name in ("callback_url", "redirect_url"):
        value = document.get(name)
        if value is not None and (not isinstance(value, str) or "://" not in value):
            return f"Malformed request: {name} must be a URL"
    return None


def _public(payment: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payment.items() if not key.startswith("_")}


@contextmanager
def running_satispay_fake() -> Iterator[SatispayFake]:
    """A Satispay fake serving on a free loopback port."""
    fake = SatispayFake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.base_url = base_url
        yield fake
