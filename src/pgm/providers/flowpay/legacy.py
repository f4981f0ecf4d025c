"""FlowPay's older API generation (OAuth client credentials, transfers and checkout), which the existing
PGM's variables name; chosen when FLOWPAY_CORE_BASE_URL is set (docs/providers/flowpay.md).

* token: `POST {core}/api/oauth/token` (form, client_credentials, the client id and secret), then
  `POST {core}/api/openid/token/introspection` for the merchant's `tenant_id`; both are kept until the
  token expires, and a 401 from the API fetches a new token once;
* pay: `POST {api}/{tenantId}/transfers` → the transfer's `fingerprint` (our paymentId), then
  `POST {api}/{tenantId}/checkout {fingerprint, okRedirect, nokRedirect, type: transfer}` → `code`; the
  payer goes to `{checkout}/{code}`;
* status: `GET {api}/{tenantId}/transfers/{fingerprint}`: CONCLUDED → ACCEPTED, REJECTED → FAILED,
  everything else PENDING (the existing PGM's table);
* callbacks (GET or POST) name the transfer's fingerprint; what they claim is never trusted, the PGM
  reads the transfer back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from pgm.domain.statuses import Status
from pgm.outbound import Response, Transport
from pgm.providers.base import (
    CallbackRequest,
    InvalidCallback,
    Notification,
    Operation,
    OutcomeUnknown,
    PaymentLookup,
    PayRequest,
    PayResult,
    PayResultCode,
    ProviderAdapter,
    ProviderRejected,
    RefundRequest,
    Subject,
)
from pgm.providers.flowpay.rules import CAPABILITIES, check_request
from pgm.providers.http import json_body, path_segment, provider_client, send

SCOPE = "transfer:read transfer:write business:read"
# The transfer status → ours (the existing PGM's FlowPay table): only the final ones settle.
TRANSFER_STATUS: dict[str, Status] = {"CONCLUDED": Status.ACCEPTED, "REJECTED": Status.FAILED}
# A token is renewed this long before FlowPay says it expires, so no call carries an expiring one.
TOKEN_MARGIN_SECONDS = 30.0
REMEMBERED_MAX = 10_000


def transfer_status_of(value: object) -> Status:
    """Our status for a transfer status: anything not final is PENDING."""
    return TRANSFER_STATUS.get(str(value), Status.PENDING)


@dataclass(frozen=True)
class FlowPayLegacyConfig:
    """The older generation's settings, read from FLOWPAY_* variables."""

    api_base_url: str
    core_base_url: str
    checkout_base_url: str
    client_id: str
    client_secret: str
    callback_url: str
    timeout_seconds: float


@dataclass(frozen=True)
class _Token:
    access_token: str
    tenant_id: str
    expires_at: float


class FlowPayLegacyAdapter(ProviderAdapter):
    """FlowPay's OAuth / transfers / checkout API behind the common adapter interface."""

    name = "flowpay"
    capabilities = CAPABILITIES

    def __init__(self, config: FlowPayLegacyConfig, *, transport: Transport | None = None) -> None:
        self._config = config
        accept = {"Accept": "application/json"}
        self._api = provider_client(config.api_base_url, config.timeout_seconds, accept, transport=transport)
        self._core = provider_client(config.core_base_url, config.timeout_seconds, accept, transport=transport)
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()
        self._transfers: OrderedDict[str, str] = OrderedDict()

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        await self._api.aclose()
        await self._core.aclose()

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """The same input rules as the current generation."""
        check_request(request)

    async def pay(self, request: PayRequest) -> PayResult:
        """Create the transfer, then its checkout; the payer authorises it on FlowPay's checkout page."""
        data = request.provider_data
        transfer: dict[str, Any] = {
            "amount": request.amount,
            "creditor": data["creditorFiscalCode"],
            "creditorIBAN": data["creditorIban"],
            "debtor": data["debtorFiscalCode"],
            "remittance": str(data.get("remittanceDescription") or f"Order {request.shop_transaction_id}")[:140],
        }
        if data.get("transferDate"):
            transfer["date"] = data["transferDate"]
        created = await self._call("POST", "/transfers", json=transfer)
        fingerprint = created.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise OutcomeUnknown("FlowPay answered a transfer without its fingerprint")
        self._remember(request.idempotency_key, fingerprint)
        checkout = await self._call(
            "POST",
            "/checkout",
            json={
                "fingerprint": fingerprint,
                "okRedirect": request.success_redirect_url,
                "nokRedirect": request.failure_redirect_url or request.success_redirect_url,
                "type": "transfer",
                "callbackUrl": self._config.callback_url,
            },
        )
        code = checkout.get("code")
        if not isinstance(code, str) or not code:
            raise OutcomeUnknown("FlowPay answered a checkout without its code")
        url = f"{self._config.checkout_base_url}/{path_segment(code)}"
        return PayResult(
            result=PayResultCode.REDIRECT_TO_URL,
            description="The payer must authorise the transfer on FlowPay's checkout",
            payment_id=fingerprint,
            redirect_url=url,
            redirect_url_mobile=url,
        )

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Read the transfer back."""
        if not payment_id or len(payment_id) > 200:
            raise ProviderRejected("not a FlowPay transfer fingerprint")
        return _lookup(await self._call("GET", f"/transfers/{path_segment(payment_id)}"))

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """The transfer this process created with the key; None when there is none (no checkout was given,
        so the payer can never authorise it)."""
        fingerprint = self._transfers.get(idempotency_key)
        return None if fingerprint is None else await self.payment_status(fingerprint)

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """The transfer a callback names; its status is read back, never taken from the callback."""
        fingerprint = callback.query.get("fingerprint")
        if fingerprint is None and callback.method == "POST" and callback.body:
            fingerprint = _fingerprint_in(callback.body)
        if not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= 200:
            raise InvalidCallback("the callback names no transfer fingerprint")
        return [Notification(f"legacy:{fingerprint}:{callback.received_at}", Subject.PAYMENT, fingerprint, None)]

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        token = await self._current_token()
        response = await self._send(token, method, path, **kwargs)
        if response.status_code == 401:
            # Revoked or expired early: one new token, one more try.
            token = await self._current_token(renew=True)
            response = await self._send(token, method, path, **kwargs)
        if response.status_code == 404:
            raise ProviderRejected(f"FlowPay has no such resource ({path[:80]})")
        return json_body(response)

    async def _send(self, token: _Token, method: str, path: str, **kwargs: Any) -> Response:
        url = f"/{path_segment(token.tenant_id)}{path}"
        headers = {"Authorization": f"Bearer {token.access_token}"}
        return await send(self._api, method, url, headers=headers, **kwargs)

    async def _current_token(self, renew: bool = False) -> _Token:
        async with self._token_lock:
            if self._token is not None and not renew and self._token.expires_at > time.time():
                return self._token
            form = {
                "grant_type": "client_credentials",
                "client_id": self._config.client_id,
                "client_secret": self._config.client_secret,
                "scope": SCOPE,
            }
            issued = json_body(await send(self._core, "POST", "/api/oauth/token", data=form))
            access_token = issued.get("access_token")
            if not isinstance(access_token, str) or not access_token:
                raise OutcomeUnknown("FlowPay answered the token request without an access_token")
            introspected = json_body(
                await send(
                    self._core,
                    "POST",
                    "/api/openid/token/introspection",
                    data={"token": access_token},
                    headers={"Authorization": f"Bearer {access_token}"},
                )
            )
            tenant_id = introspected.get("tenant_id")
            if not isinstance(tenant_id, str) or not tenant_id:
                raise OutcomeUnknown("FlowPay's token introspection named no tenant_id")
            lifetime = issued.get("expires_in")
            seconds = float(lifetime) if isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) else 300
            self._token = _Token(access_token, tenant_id, time.time() + max(seconds - TOKEN_MARGIN_SECONDS, 1.0))
            return self._token

    def _remember(self, key: str, fingerprint: str) -> None:
        self._transfers[key] = fingerprint
        self._transfers.move_to_end(key)
        while len(self._transfers) > REMEMBERED_MAX:
            self._transfers.popitem(last=False)


def _fingerprint_in(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        form = parse_qs(body.decode("utf-8", "replace"))
        values = form.get("fingerprint")
        return values[0] if values else None
    value = document.get("fingerprint") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def _lookup(document: Mapping[str, Any]) -> PaymentLookup:
    fingerprint = document.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise OutcomeUnknown("FlowPay answered a transfer without its fingerprint")
    amount = document.get("amount")
    raw_status = document.get("status")
    return PaymentLookup(
        status=transfer_status_of(raw_status),
        payment_id=fingerprint,
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        metadata={"flowpayStatus": str(raw_status)[:40]},
        currency="EUR",
        refunded_amount=0,
        payment_method="wire-transfer",
    )
