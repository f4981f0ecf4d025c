"""A stateful fake of FlowPay's older API generation (the one the existing PGM's variables name):

* core host: `POST /api/oauth/token` (form: grant_type=client_credentials, client_id, client_secret,
  scope) answers `{access_token, token_type: Bearer, expires_in}`, a wrong client 401
  `{"error": "invalid_client"}`; `POST /api/openid/token/introspection` (Bearer) answers
  `{active, tenant_id}`;
* API host, every call with a valid Bearer token for the tenant in the path (else 401):
  `POST /{tenantId}/transfers {amount, creditor, creditorIBAN, debtor, remittance, date?}` answers
  `{fingerprint, status: CREATED}`; `POST /{tenantId}/checkout {fingerprint, okRedirect, nokRedirect,
  type: transfer}` answers `{code}`; `GET /{tenantId}/transfers/{fingerprint}` reads a transfer back;
* the payer's outcome is reported to the checkout's `callbackUrl`, by GET (`?fingerprint=`) or by a POST
  of `{fingerprint, status}`; the status there is a claim the PGM must confirm.

Test API: `running_flowpay_legacy_fake()`, `env()`, `webhook_url`, `callback_method`, `approve`,
`reject`, `transfers(remittance)`, `transfer(fingerprint)`, `revoke_tokens()`, `requests`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import run_server_in_thread


@dataclass(frozen=True)
class RecordedCall:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]


class FlowPayLegacyFake:
    """The fake's state and its test API; `app` serves the core, API and checkout hosts under prefixes."""

    def __init__(self) -> None:
        self.client_id = "fp-client-" + secrets.token_hex(4)
        self.client_secret = "fp-secret-" + secrets.token_hex(16)
        self.tenant_id = "tenant-" + secrets.token_hex(4)
        self.base_url = ""
        self.webhook_url: str | None = None
        self.callback_method = "GET"
        self.requests: list[RecordedCall] = []
        self.tokens_issued = 0
        self._tokens: set[str] = set()
        self._transfers: dict[str, dict[str, Any]] = {}
        self._checkouts: dict[str, str] = {}
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route("/core/api/oauth/token", self._token, methods=["POST"]),
                Route("/core/api/openid/token/introspection", self._introspect, methods=["POST"]),
                Route("/api/{tenant}/transfers", self._create_transfer, methods=["POST"]),
                Route("/api/{tenant}/checkout", self._create_checkout, methods=["POST"]),
                Route("/api/{tenant}/transfers/{fingerprint}", self._get_transfer, methods=["GET"]),
            ]
        )

    def env(self) -> dict[str, str]:
        """The PGM's FLOWPAY_* variables for this fake (Mia's set; the public key is not used by this API)."""
        return {
            "FLOWPAY_API_BASE_URL": f"{self.base_url}/api",
            "FLOWPAY_CORE_BASE_URL": f"{self.base_url}/core",
            "FLOWPAY_CHECKOUT_BASE_URL": f"{self.base_url}/checkout",
            "FLOWPAY_CLIENT_ID": self.client_id,
            "FLOWPAY_CLIENT_SECRET": self.client_secret,
            "FLOWPAY_PUBLIC_KEY": "MCowBQYDK2VwAyEA" + "A" * 43,
        }

    def approve(self, fingerprint: str) -> None:
        """The payer authorises the transfer and the bank concludes it."""
        self._finish(fingerprint, "CONCLUDED")

    def reject(self, fingerprint: str) -> None:
        """The bank refuses the transfer, or the payer gives up on the checkout."""
        self._finish(fingerprint, "REJECTED")

    def transfer(self, fingerprint: str) -> dict[str, Any]:
        """One transfer as the API shows it."""
        with self._lock:
            return {k: v for k, v in self._transfers[fingerprint].items() if not k.startswith("_")}

    def transfers(self, remittance: str) -> list[dict[str, Any]]:
        """The transfers whose remittance mentions this text."""
        with self._lock:
            return [self.transfer(fp) for fp, t in self._transfers.items() if remittance in t["remittance"]]

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (the next API call answers 401)."""
        with self._lock:
            self._tokens.clear()

    def _finish(self, fingerprint: str, status: str) -> None:
        with self._lock:
            transfer = self._transfers[fingerprint]
            transfer["status"] = status
            url = transfer.get("_callbackUrl")
        if url and self.webhook_url:
            target = httpx.URL(url).copy_with(
                scheme=httpx.URL(self.webhook_url).scheme,
                host=httpx.URL(self.webhook_url).host,
                port=httpx.URL(self.webhook_url).port,
            )
            if self.callback_method == "GET":
                httpx.get(str(target), params={"fingerprint": fingerprint}, timeout=10)
            else:
                httpx.post(str(target), json={"fingerprint": fingerprint, "status": status}, timeout=10)

    def _authorised(self, request: Request) -> bool:
        self.requests.append(RecordedCall(request.method, request.url.path, dict(request.headers)))
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ")
        with self._lock:
            return header.startswith("Bearer ") and token in self._tokens

    async def _token(self, request: Request) -> Response:
        self.requests.append(RecordedCall(request.method, request.url.path, dict(request.headers)))
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if form.get("client_id") != self.client_id or not secrets.compare_digest(
            str(form.get("client_secret", "")), self.client_secret
        ):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
            self.tokens_issued += 1
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    async def _introspect(self, request: Request) -> Response:
        if not self._authorised(request):
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({"active": True, "tenant_id": self.tenant_id})

    async def _create_transfer(self, request: Request) -> Response:
        if not self._authorised(request) or request.path_params["tenant"] != self.tenant_id:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("amount"), int) or body["amount"] <= 0:
            return JSONResponse({"error": "amount must be a positive integer"}, status_code=400)
        for name in ("creditor", "creditorIBAN", "debtor", "remittance"):
            if not isinstance(body.get(name), str) or not body[name]:
                return JSONResponse({"error": f"{name} is required"}, status_code=400)
        fingerprint = secrets.token_hex(16)
        with self._lock:
            self._transfers[fingerprint] = {
                "fingerprint": fingerprint,
                "status": "CREATED",
                "amount": body["amount"],
                "remittance": body["remittance"],
                "creditorIBAN": body["creditorIBAN"],
            }
        return JSONResponse({"fingerprint": fingerprint, "status": "CREATED"}, status_code=201)

    async def _create_checkout(self, request: Request) -> Response:
        if not self._authorised(request) or request.path_params["tenant"] != self.tenant_id:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        body = await request.json()
        with self._lock:
            transfer = self._transfers.get(str(body.get("fingerprint"))) if isinstance(body, dict) else None
            if transfer is None or body.get("type") != "transfer" or not body.get("okRedirect"):
                return JSONResponse({"error": "fingerprint, type transfer and okRedirect are required"}, 400)
            code = secrets.token_hex(8)
            self._checkouts[code] = transfer["fingerprint"]
            transfer["_callbackUrl"] = body.get("callbackUrl")
        return JSONResponse({"code": code})

    async def _get_transfer(self, request: Request) -> Response:
        if not self._authorised(request) or request.path_params["tenant"] != self.tenant_id:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        with self._lock:
            found = request.path_params["fingerprint"] in self._transfers
        if not found:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(self.transfer(request.path_params["fingerprint"]))


@contextmanager
def running_flowpay_legacy_fake() -> Iterator[FlowPayLegacyFake]:
    """A fake of FlowPay's older API on a free loopback port."""
    fake = FlowPayLegacyFake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.base_url = base_url
        yield fake
