"""A stateful fake of the part of the Stripe API the PGM's Stripe adapter uses, served on loopback.

Written from Stripe's public API reference for API version 2026-10-28.endive (the version that
stripe-python 16.1.0 pins and the adapter sends as `Stripe-Version`):

* Authentication, errors, idempotent requests, versioning, pagination:
  https://docs.stripe.com/api/authentication, /api/errors, /api/idempotent_requests,
  /api/versioning, /api/pagination
* Checkout Sessions (create, retrieve, list, expire): https://docs.stripe.com/api/checkout/sessions
* Prices (create): https://docs.stripe.com/api/prices/create
* Payment Links (create, retrieve, list, update): https://docs.stripe.com/api/payment-link
* Refunds (create, retrieve, list): https://docs.stripe.com/api/refunds
* Subscriptions (retrieve, update `cancel_at`, cancel): https://docs.stripe.com/api/subscriptions,
  https://docs.stripe.com/billing/subscriptions/cancel#cancel-at (billing periods from the billing
  cycle anchor: https://docs.stripe.com/billing/subscriptions/billing-cycle)
* Webhooks and their signature: https://docs.stripe.com/webhooks, https://docs.stripe.com/api/events
  (events can be retrieved by id: https://docs.stripe.com/api/events/retrieve)

What it enforces as Stripe does: the secret key as `Authorization: Bearer` (or HTTP Basic with the
key as user name), 401 with Stripe's error body otherwise; form-encoded bodies with bracketed keys;
integer amounts in minor units; idempotent replays (same key + same parameters → the stored answer
with `Idempotent-Replayed: true`, same key + other parameters → 400 `idempotency_error`); refunds
never above what is left (pending refunds count). Stricter than Stripe, on purpose: every POST must
carry an `Idempotency-Key` and the pinned `Stripe-Version`, so a forgotten header fails the tests.

Webhook events are sent like Stripe sends them: JSON `event` objects signed with
`Stripe-Signature: t=<unix>,v1=<HMAC-SHA256(whsec, "t.body")>`, only for the enabled event types.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import run_server_in_thread

API_VERSION = "2026-10-28.endive"
SECRET_KEY = "sk_test_fake_" + "4eC39HqLyjWDarjtT1zdp7dc"
WEBHOOK_SECRET = "whsec_fake_" + "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
# The events the adapter's documentation says to enable on the webhook endpoint.
ENABLED_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "charge.refund.updated",
        "refund.created",
    }
)
PAYMENT_METHOD_TYPES = frozenset({"card", "paypal"})
# Stripe's minimum charge amounts per currency (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts).
MINIMUM_AMOUNT = {"eur": 50, "usd": 50, "gbp": 30, "chf": 50}
MAX_METADATA_KEYS = 50


class StripeFailure(Exception):
    """An error answered with Stripe's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": {"type": type_, "message": message}}
        if code:
            self.body["error"]["code"] = code
        if param:
            self.body["error"]["param"] = param


def _missing(param: str) -> StripeFailure:
    return StripeFailure(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def _invalid(param: str, message: str) -> StripeFailure:
    return StripeFailure(400, message, code="parameter_invalid", param=param)


def _no_such(kind: str, identifier: str, param: str = "id") -> StripeFailure:
    return StripeFailure(404, f"No such {kind}: '{identifier}'", code="resource_missing", param=param)


def parse_form(body: bytes) -> dict[str, Any]:
    """Decode Stripe's form encoding (`a[b][0][c]=v`) into nested dicts; indexed keys become lists."""
    root: dict[str, Any] = {}
    appended: dict[str, int] = {}
    for key, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
        head, _, rest = key.partition("[")
        parts = [head] + ([p.rstrip("]") for p in ("[" + rest).split("[")[1:]] if rest else [])
        if parts[-1] == "":
            # `name[]=a&name[]=b` appends, as curl users write lists.
            prefix = key[: -len("[]")]
            parts[-1] = str(appended.get(prefix, 0))
            appended[prefix] = int(parts[-1]) + 1
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _invalid(key, f"Invalid parameter: {key}")
        node[parts[-1]] = value
    decoded: dict[str, Any] = _lists(root)
    return decoded


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def _integer(params: dict[str, Any], name: str, minimum: int = 0) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        raise _missing(name)
    if not isinstance(raw, str) or not raw.isdigit():
        raise _invalid(name, f"Invalid integer: {raw}")
    value = int(raw)
    if value < minimum:
        raise _invalid(name, f"This value must be greater than or equal to {minimum}.")
    return value


def _metadata(params: dict[str, Any]) -> dict[str, str]:
    metadata = params.get("metadata", {})
    if metadata == "":
        return {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS:
        raise _invalid("metadata", "Invalid metadata: at most 50 keys with string values.")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > 40 or len(value) > 500:
            raise _invalid(f"metadata[{key}]", "Metadata keys are at most 40 characters, values at most 500.")
    return dict(metadata)


@dataclass
class _Stored:
    """An idempotent request's first outcome (https://docs.stripe.com/api/idempotent_requests)."""

    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: Any


@dataclass
class _Fault:
    kind: str  # "status", "delay" or "malformed"
    status: int = 500
    seconds: float = 0.0
    after_processing: bool = False
    method: str | None = None
    path: str | None = None

    def applies(self, method: str, path: str) -> bool:
        """Whether this fault is for a request of `method` to `path`."""
        return (self.method is None or self.method == method) and (self.path is None or path == self.path)


@dataclass
class Delivery:
    """One webhook delivery attempt and what the endpoint answered."""

    event_id: str
    event_type: str
    status: int | None
    error: str | None = None


@dataclass
class _State:
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    link_prices: dict[str, str] = field(default_factory=dict)
    # What Stripe keeps with a session but does not show on it: the metadata it copies to the
    # PaymentIntent or Subscription it creates on completion, and the recurring terms.
    session_extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    idempotency: dict[str, _Stored] = field(default_factory=dict)
    # A creation order for every object, since `created` has one-second resolution.
    order: dict[str, int] = field(default_factory=dict)


class StripeFake:
    """The fake's state, its HTTP app, and the test API (payer actions, faults, webhooks)."""

    def __init__(self, secret_key: str = SECRET_KEY, webhook_secret: str = WEBHOOK_SECRET) -> None:
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        self.base_url = ""
        self.webhook_url: str | None = None
        self.enabled_events: set[str] = set(ENABLED_EVENTS)
        self.refunds_pending = False
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.events: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self._held: list[dict[str, Any]] | None = None
        self._state = _State()
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._sequence = itertools.count(1)
        self.app = Starlette(routes=self._routes())

    # ----------------------------------------------------------------- test API

    def env(self) -> dict[str, str]:
        """The PGM environment variables that point the Stripe adapter at this fake."""
        return {
            "STRIPE_PRIVATE_KEY": self.secret_key,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "STRIPE_BASE_URL": self.base_url,
        }

    def fail_next(
        self, status_code: int, *, after_processing: bool = False, method: str | None = None, path: str | None = None
    ) -> None:
        """Answer the next API request (of `method`, under `path`) with `status_code` and Stripe's error body;
        with `after_processing` the work is done first, so only the answer is lost."""
        with self._lock:
            self._faults.append(
                _Fault("status", status_code, after_processing=after_processing, method=method, path=path)
            )

    def delay_next(self, seconds: float, *, method: str | None = None, path: str | None = None) -> None:
        """Do the next API request's work, then answer only after `seconds` (the caller times out)."""
        with self._lock:
            self._faults.append(_Fault("delay", seconds=seconds, after_processing=True, method=method, path=path))

    def malformed_next(self, *, method: str | None = None, path: str | None = None) -> None:
        """Do the next API request's work, then answer 200 with a body that is not JSON."""
        with self._lock:
            self._faults.append(_Fault("malformed", after_processing=True, method=method, path=path))

    def approve(self, payment_id: str) -> str:
        """The payer pays on the hosted page of a Checkout Session or Payment Link; returns the session id."""
        with self._lock:
            session = self._payer_session(payment_id)
            if session["status"] != "open":
                raise ValueError(f"session {session['id']} is {session['status']}, not open")
            self._complete(session)
            events = [self._event("checkout.session.completed", session)]
            if session["mode"] == "subscription" and session["invoice"]:
                invoice = {"id": session["invoice"], "object": "invoice", "billing_reason": "subscription_create"}
                invoice["parent"] = {"subscription_details": {"subscription": session["subscription"]}}
                invoice.update(status="paid", amount_paid=session["amount_total"], currency=session["currency"])
                events.append(self._event("invoice.payment_succeeded", invoice))
        self._send(events)
        return str(session["id"])

    def create_paid_payment(self, shop_transaction_id: str, amount: int) -> tuple[str, str]:
        """A Checkout Session paid long ago through another PGM (its webhook went there): (session, intent)."""
        with self._lock:
            session_id = self.create_open_payment(shop_transaction_id, amount)
            session = self._state.sessions[session_id]
            self._complete(session)
            return session_id, str(session["payment_intent"])

    def create_open_payment(self, shop_transaction_id: str, amount: int) -> str:
        """A Checkout Session another PGM opened, its payer not done yet; its id."""
        with self._lock:
            session = self._new_session(
                mode="payment",
                amount=amount,
                currency="eur",
                methods=["card"],
                reference=shop_transaction_id,
                metadata={"shopTransactionId": shop_transaction_id},
                child_metadata={"shopTransactionId": shop_transaction_id},
                success_url="https://shop.example/ok",
                cancel_url=None,
                email=None,
                recurring=None,
            )
            return str(session["id"])

    def decline(self, payment_id: str) -> None:
        """The payer gives up: the session expires (and a Payment Link is deactivated by the merchant)."""
        with self._lock:
            session = self._payer_session(payment_id)
            self._expire(session)
            if payment_id in self._state.links:
                self._state.links[payment_id]["active"] = False
            events = [self._event("checkout.session.expired", session)]
        self._send(events)

    def complete_refund(self, refund_id: str, ok: bool) -> None:
        """A pending refund succeeds or fails at the payment method; Stripe sends charge.refund.updated."""
        with self._lock:
            refund = self._state.refunds[refund_id]
            if refund["status"] not in ("pending", "requires_action"):
                raise ValueError(f"refund {refund_id} is {refund['status']}, not pending")
            refund["status"] = "succeeded" if ok else "failed"
            if not ok:
                refund["failure_reason"] = "declined"
            self._refresh_intent(str(refund["payment_intent"]))
            events = [self._event("charge.refund.updated", refund)]
        self._send(events)

    def refund_in_dashboard(self, payment_id: str, amount: int) -> str:
        """Someone refunds a paid Checkout Session (or Payment Link) in the Dashboard: a refund of its
        PaymentIntent with none of the PGM's metadata; Stripe sends refund.created. Returns its id."""
        with self._lock:
            intent = next(
                (
                    s["payment_intent"]
                    for s in self._state.sessions.values()
                    if payment_id in (s["id"], s.get("payment_link")) and s["payment_intent"]
                ),
                None,
            )
            if intent is None:
                raise ValueError(f"{payment_id} has no paid session to refund")
            refund = self._create_refund({}, {"payment_intent": intent, "amount": str(amount)})
            events = [self._event("refund.created", refund)]
        self._send(events)
        return str(refund["id"])

    def payments(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """Every Checkout Session for a merchant reference (sessions of a Payment Link included), with refunds."""
        with self._lock:
            found = []
            for session in self._ordered(self._state.sessions.values(), newest_first=False):
                link = self._state.links.get(str(session.get("payment_link")))
                reference = session.get("client_reference_id") or (link or {}).get("metadata", {}).get(
                    "shopTransactionId"
                )
                if reference != shop_transaction_id:
                    continue
                refunds = [r for r in self._state.refunds.values() if r["payment_intent"] == session["payment_intent"]]
                found.append({**session, "refunds": [dict(r) for r in self._ordered(refunds, newest_first=False)]})
            return found

    def payment_links(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """Every Payment Link created for a merchant reference."""
        with self._lock:
            return [
                dict(link)
                for link in self._ordered(self._state.links.values(), newest_first=False)
                if link["metadata"].get("shopTransactionId") == shop_transaction_id
            ]

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        """A subscription as Stripe holds it."""
        with self._lock:
            return dict(self._state.subscriptions[subscription_id])

    def renew(self, subscription_id: str) -> str:
        """The subscription's billing period ends: Stripe cancels it if `cancel_at` has come, otherwise it bills
        the next period (an invoice, `invoice.payment_succeeded`). Returns the subscription's status after."""
        with self._lock:
            subscription = self._state.subscriptions[subscription_id]
            if subscription["status"] != "active":
                raise ValueError(f"subscription {subscription_id} is {subscription['status']}, not active")
            item = subscription["items"]["data"][0]
            period_start = item["current_period_end"]
            cancel_at = subscription["cancel_at"]
            if cancel_at is not None and period_start >= cancel_at:
                subscription.update(status="canceled", canceled_at=cancel_at, ended_at=cancel_at)
                events = [self._event("customer.subscription.deleted", subscription)]
            else:
                period_end = _period_end(subscription["billing_cycle_anchor"], item["price"]["recurring"], period_start)
                if cancel_at is not None:
                    # The last period is cut at cancel_at (prorated when it falls inside it).
                    period_end = min(period_end, cancel_at)
                item.update(current_period_start=period_start, current_period_end=period_end)
                invoice = self._invoice(subscription, "subscription_cycle")
                events = [self._event("invoice.payment_succeeded", invoice)]
            status = str(subscription["status"])
        self._send(events)
        return status

    def invoices(self, subscription_id: str) -> list[dict[str, Any]]:
        """Every invoice billed for a subscription, oldest first."""
        with self._lock:
            return [dict(i) for i in self._state.invoices if i["subscription"] == subscription_id]

    def sign(self, payload: bytes, timestamp: int | None = None, secret: str | None = None) -> str:
        """The `Stripe-Signature` header Stripe would send for `payload`."""
        moment = int(time.time()) if timestamp is None else timestamp
        digest = hmac.new(
            (secret or self.webhook_secret).encode(), f"{moment}.".encode() + payload, hashlib.sha256
        ).hexdigest()
        return f"t={moment},v1={digest}"

    def post_webhook(self, payload: bytes, signature: str | None) -> httpx.Response:
        """POST a raw webhook body with the given signature header (None: no header) to `webhook_url`."""
        if not self.webhook_url:
            raise RuntimeError("set fake.webhook_url before sending webhooks")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        if signature is not None:
            headers["Stripe-Signature"] = signature
        return httpx.post(self.webhook_url, content=payload, headers=headers, timeout=10)

    def redeliver(self, event_id: str) -> httpx.Response:
        """Send an event again, freshly signed, as Stripe's retries and manual resends do."""
        event = next(e for e in self.events if e["id"] == event_id)
        payload = json.dumps(event).encode()
        return self.post_webhook(payload, self.sign(payload))

    @contextmanager
    def holding_webhooks(self) -> Iterator[list[dict[str, Any]]]:
        """Queue webhooks instead of sending them; the yielded list can be reordered, sent on exit."""
        self._held = []
        held = self._held
        try:
            yield held
        finally:
            self._held = None
            self._send(held)

    # ------------------------------------------------------------------ webhooks

    def _event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = {
            "id": f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.events.append(event)
        return event

    def _send(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["type"] not in self.enabled_events:
                continue
            if self._held is not None:
                self._held.append(event)
                continue
            if not self.webhook_url:
                continue
            payload = json.dumps(event).encode()
            try:
                response = self.post_webhook(payload, self.sign(payload))
                self.deliveries.append(Delivery(event["id"], event["type"], response.status_code))
            except httpx.HTTPError as exc:
                self.deliveries.append(Delivery(event["id"], event["type"], None, type(exc).__name__))

    # ---------------------------------------------------------------- the app

    def _routes(self) -> list[Route]:
        api = self._api
        return [
            Route("/v1/checkout/sessions", api(self._create_session), methods=["POST"]),
            Route("/v1/checkout/sessions", api(self._list_sessions), methods=["GET"]),
            Route("/v1/checkout/sessions/{id}", api(self._get_session), methods=["GET"]),
            Route("/v1/checkout/sessions/{id}/expire", api(self._expire_session), methods=["POST"]),
            Route("/v1/prices", api(self._create_price), methods=["POST"]),
            Route("/v1/payment_links", api(self._create_link), methods=["POST"]),
            Route("/v1/payment_links", api(self._list_links), methods=["GET"]),
            Route("/v1/payment_links/{id}", api(self._get_link), methods=["GET"]),
            Route("/v1/payment_links/{id}", api(self._update_link), methods=["POST"]),
            Route("/v1/refunds", api(self._create_refund), methods=["POST"]),
            Route("/v1/refunds", api(self._list_refunds), methods=["GET"]),
            Route("/v1/refunds/{id}", api(self._get_refund), methods=["GET"]),
            Route("/v1/events/{id}", api(self._get_event), methods=["GET"]),
            Route("/v1/subscriptions/{id}", api(self._get_subscription), methods=["GET"]),
            Route("/v1/subscriptions/{id}", api(self._update_subscription), methods=["POST"]),
            Route("/v1/subscriptions/{id}", api(self._cancel_subscription), methods=["DELETE"]),
            Route("/c/pay/{id}", self._hosted_page, methods=["GET"]),
            Route("/b/{id}", self._hosted_page, methods=["GET"]),
        ]

    async def _hosted_page(self, request: Request) -> Response:
        identifier = request.path_params["id"]
        with self._lock:
            known = identifier in self._state.sessions or f"plink_{identifier}" in self._state.links
        if not known:
            return HTMLResponse("<h1>Something went wrong</h1>", status_code=404)
        return HTMLResponse(f"<h1>Stripe test checkout</h1><p>{identifier}</p>")

    def _api(self, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            with self._lock:
                self.requests.append((request.method, request.url.path, headers))
                fault = next((f for f in self._faults if f.applies(request.method, request.url.path)), None)
                if fault is not None:
                    self._faults.remove(fault)
            try:
                if fault is not None and not fault.after_processing:
                    raise StripeFailure(fault.status, "An unknown error occurred", type_="api_error")
                self._authenticate(headers)
                params = self._params(request, headers, body)
                status, answer, replayed = self._run(request, headers, params, handler)
            except StripeFailure as failure:
                return self._json(failure.status, failure.body)
            if fault is not None:
                if fault.kind == "delay":
                    await asyncio.sleep(fault.seconds)
                elif fault.kind == "malformed":
                    return Response(b"<html>502 Bad Gateway</html>", status_code=200, media_type="application/json")
                else:
                    return self._json(
                        fault.status, StripeFailure(fault.status, "An unknown error occurred", "api_error").body
                    )
            response = self._json(status, answer)
            if replayed:
                response.headers["Idempotent-Replayed"] = "true"
            return response

        return endpoint

    def _json(self, status: int, body: Any) -> Response:
        response = JSONResponse(body, status_code=status)
        response.headers["Request-Id"] = f"req_{secrets.token_hex(7)}"
        response.headers["Stripe-Version"] = API_VERSION
        return response

    def _authenticate(self, headers: dict[str, str]) -> None:
        supplied = headers.get("authorization", "")
        scheme, _, credential = supplied.partition(" ")
        key = ""
        if scheme.lower() == "bearer":
            key = credential.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(credential).decode().partition(":")[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        if not supplied:
            raise StripeFailure(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if not hmac.compare_digest(key.encode(), self.secret_key.encode()):
            # Stripe shows only the last four characters of a wrong key.
            raise StripeFailure(401, f"Invalid API Key provided: {key[:8]}{'*' * 12}{key[-4:]}")

    def _params(self, request: Request, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        if request.method != "POST":
            return parse_form(request.url.query.encode())
        version = headers.get("stripe-version")
        if version != API_VERSION:
            raise StripeFailure(400, f"This fake follows Stripe-Version {API_VERSION}; got {version!r}.")
        if not headers.get("idempotency-key"):
            raise StripeFailure(400, "This fake requires an Idempotency-Key header on every POST.")
        if len(headers["idempotency-key"]) > 255:
            raise StripeFailure(400, "Idempotency keys are at most 255 characters.", type_="idempotency_error")
        if body and not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise StripeFailure(400, "Invalid request: Stripe's v1 API takes application/x-www-form-urlencoded bodies.")
        return parse_form(body)

    def _run(
        self, request: Request, headers: dict[str, str], params: dict[str, Any], handler: Any
    ) -> tuple[int, Any, bool]:
        key = headers.get("idempotency-key") if request.method == "POST" else None
        with self._lock:
            if key is not None:
                stored = self._state.idempotency.get(key)
                if stored is not None:
                    if stored.path != request.url.path or stored.params != params:
                        raise StripeFailure(
                            400,
                            "Keys for idempotent requests can only be used with the same parameters they were first "
                            f"used with. Try using a key other than '{key}' if you meant to execute a different "
                            "request.",
                            type_="idempotency_error",
                        )
                    return stored.status, stored.body, True
            status, answer = 200, handler(request.path_params, params)
            if key is not None:
                # Only requests that began executing are saved; validation failures above are not.
                self._state.idempotency[key] = _Stored(request.method, request.url.path, params, status, answer)
            return status, answer, False

    # -------------------------------------------------------------- resources

    def _id(self, prefix: str) -> str:
        identifier = (
            f"{prefix}_test_{secrets.token_hex(12)}"
            if prefix in ("cs", "plink")
            else f"{prefix}_{secrets.token_hex(12)}"
        )
        self._state.order[identifier] = next(self._sequence)
        return identifier

    def _ordered(self, objects: Any, newest_first: bool = True) -> list[dict[str, Any]]:
        return sorted(objects, key=lambda o: self._state.order[o["id"]], reverse=newest_first)

    def _page(self, objects: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
        limit = _integer(params, "limit", 1) if params.get("limit") else 10
        if limit > 100:
            raise _invalid("limit", "This value must be less than or equal to 100.")
        after = params.get("starting_after")
        if after:
            ids = [o["id"] for o in objects]
            if after not in ids:
                raise _no_such("object", str(after), "starting_after")
            objects = objects[ids.index(after) + 1 :]
        return {"object": "list", "data": objects[:limit], "has_more": len(objects) > limit, "url": url}

    def _line_item(self, item: Any, index: int, mode: str) -> tuple[int, str, dict[str, Any] | None]:
        """(unit amount, currency, recurring) of one line item."""
        param = f"line_items[{index}]"
        if not isinstance(item, dict):
            raise _invalid(param, f"Invalid {param}")
        quantity = _integer(item, "quantity", 1) if "quantity" in item else None
        if quantity is None:
            raise _missing(f"{param}[quantity]")
        if "price" in item:
            price = self._state.prices.get(str(item["price"]))
            if price is None:
                raise _no_such("price", str(item["price"]), f"{param}[price]")
            return price["unit_amount"] * quantity, price["currency"], price["recurring"]
        data = item.get("price_data")
        if not isinstance(data, dict):
            raise _missing(f"{param}[price_data]")
        currency = str(data.get("currency", "")).lower()
        if currency not in MINIMUM_AMOUNT:
            raise _invalid(f"{param}[price_data][currency]", f"Invalid currency: {currency}.")
        amount = _integer(data, "unit_amount")
        product = data.get("product_data")
        if "product" not in data and not (isinstance(product, dict) and product.get("name")):
            raise _missing(f"{param}[price_data][product_data][name]")
        recurring = data.get("recurring")
        if recurring is not None:
            if not isinstance(recurring, dict) or recurring.get("interval") not in ("day", "week", "month", "year"):
                raise _invalid(f"{param}[price_data][recurring][interval]", "Invalid interval.")
            recurring = {
                "interval": recurring["interval"],
                "interval_count": _integer(recurring, "interval_count", 1) if "interval_count" in recurring else 1,
            }
        return amount * quantity, currency, recurring

    def _create_session(self, _: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode")
        if not mode:
            raise _missing("mode")
        if mode not in ("payment", "subscription"):
            raise _invalid("mode", f"This fake implements modes payment and subscription, not {mode}.")
        if not params.get("success_url"):
            # Conditionally required: a hosted session must send the payer somewhere afterwards.
            raise _missing("success_url")
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise _missing("line_items")
        total, currencies, recurring_terms = 0, set(), None
        for index, item in enumerate(items):
            amount, currency, recurring = self._line_item(item, index, mode)
            total += amount
            currencies.add(currency)
            recurring_terms = recurring_terms or recurring
        recurring_seen = recurring_terms is not None
        if len(currencies) != 1:
            raise _invalid("line_items", "All line items must use the same currency.")
        currency = currencies.pop()
        if mode == "subscription" and not recurring_seen:
            raise _invalid("line_items", "You must provide at least one recurring price in `subscription` mode.")
        if mode == "payment" and recurring_seen:
            raise _invalid(
                "line_items", "You specified `payment` mode but passed a recurring price. Use `subscription` mode."
            )
        if total < MINIMUM_AMOUNT[currency]:
            raise StripeFailure(
                400,
                "The Checkout Session's total amount due must add up to at least €0.50 eur",
                code="amount_too_small",
            )
        methods = params.get("payment_method_types", ["card"])
        if not isinstance(methods, list) or not set(methods) <= PAYMENT_METHOD_TYPES:
            raise _invalid("payment_method_types", f"Invalid payment_method_types: {methods}")
        reference = params.get("client_reference_id")
        if reference is not None and len(str(reference)) > 200:
            raise _invalid("client_reference_id", "client_reference_id is at most 200 characters.")
        intent_data = params.get("payment_intent_data", {})
        subscription_data = params.get("subscription_data", {})
        if mode == "subscription" and intent_data:
            raise _invalid("payment_intent_data", "payment_intent_data can only be used in `payment` mode.")
        return self._new_session(
            mode=mode,
            amount=total,
            currency=currency,
            methods=methods,
            reference=reference,
            metadata=_metadata(params),
            child_metadata=_metadata(intent_data if mode == "payment" else subscription_data),
            success_url=str(params["success_url"]),
            cancel_url=params.get("cancel_url"),
            email=params.get("customer_email"),
            recurring=recurring_terms,
        )

    def _new_session(
        self,
        *,
        mode: str,
        amount: int,
        currency: str,
        methods: list[str],
        reference: str | None,
        metadata: dict[str, str],
        child_metadata: dict[str, str],
        success_url: str | None,
        cancel_url: str | None,
        email: str | None,
        recurring: dict[str, Any] | None,
        link: str | None = None,
    ) -> dict[str, Any]:
        identifier = self._id("cs")
        now = int(time.time())
        session = {
            "id": identifier,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": cancel_url,
            "client_reference_id": reference,
            "created": now,
            "currency": currency,
            "customer": None,
            "customer_email": email,
            "expires_at": now + 24 * 3600,
            "invoice": None,
            "livemode": False,
            "metadata": metadata,
            "mode": mode,
            "payment_intent": None,
            "payment_link": link,
            "payment_method_types": methods,
            "payment_status": "unpaid",
            "status": "open",
            "subscription": None,
            "success_url": success_url,
            "ui_mode": "hosted",
            "url": f"{self.base_url}/c/pay/{identifier}",
        }
        self._state.sessions[identifier] = session
        self._state.session_extras[identifier] = {"child_metadata": child_metadata, "recurring": recurring}
        return session

    def _get_session(self, path: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        session = self._state.sessions.get(path["id"])
        if session is None:
            raise _no_such("checkout.session", path["id"])
        return session

    def _list_sessions(self, _: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        sessions = self._ordered(self._state.sessions.values())
        created = params.get("created")
        if isinstance(created, dict):
            bounds = {op: _integer(created, op) for op in ("gt", "gte", "lt", "lte") if op in created}
            sessions = [
                s
                for s in sessions
                if s["created"] > bounds.get("gt", -1)
                and s["created"] >= bounds.get("gte", -1)
                and s["created"] < bounds.get("lt", 2**62)
                and s["created"] <= bounds.get("lte", 2**62)
            ]
        elif created:
            sessions = [s for s in sessions if s["created"] == _integer(params, "created")]
        for name in ("payment_link", "payment_intent", "subscription", "status"):
            if params.get(name):
                sessions = [s for s in sessions if s.get(name) == params[name]]
        return self._page(sessions, params, "/v1/checkout/sessions")

    def _expire_session(self, path: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        session = self._get_session(path, {})
        if session["status"] != "open":
            raise StripeFailure(
                400,
                'Only Checkout Sessions with a status in ["open"] can be expired. '
                f'This Checkout Session has a status of "{session["status"]}".',
            )
        self._expire(session)
        return session

    def _create_price(self, _: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        currency = str(params.get("currency", "")).lower()
        if not currency:
            raise _missing("currency")
        if currency not in MINIMUM_AMOUNT:
            raise _invalid("currency", f"Invalid currency: {currency}.")
        product = params.get("product_data")
        if "product" not in params and not (isinstance(product, dict) and product.get("name")):
            raise _missing("product")
        recurring = params.get("recurring")
        identifier = self._id("price")
        price: dict[str, Any] = {
            "id": identifier,
            "object": "price",
            "active": True,
            "currency": currency,
            "metadata": _metadata(params),
            "product": params.get("product") or self._id("prod"),
            "recurring": (
                {"interval": recurring.get("interval"), "interval_count": int(recurring.get("interval_count", 1))}
                if isinstance(recurring, dict)
                else None
            ),
            "type": "recurring" if recurring else "one_time",
            "unit_amount": _integer(params, "unit_amount"),
            "created": int(time.time()),
        }
        self._state.prices[identifier] = price
        return price

    def _create_link(self, _: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise _missing("line_items")
        if len(items) != 1 or not isinstance(items[0], dict) or "price" not in items[0]:
            raise _invalid("line_items", "This fake's Payment Links take exactly one line item with a `price`.")
        if items[0]["price"] not in self._state.prices:
            raise _no_such("price", str(items[0]["price"]), "line_items[0][price]")
        _integer(items[0], "quantity", 1)
        methods = params.get("payment_method_types")
        if methods is not None and (not isinstance(methods, list) or not set(methods) <= PAYMENT_METHOD_TYPES):
            raise _invalid("payment_method_types", f"Invalid payment_method_types: {methods}")
        after = params.get("after_completion", {"type": "hosted_confirmation"})
        if not isinstance(after, dict) or after.get("type") not in ("redirect", "hosted_confirmation"):
            raise _invalid("after_completion[type]", "Invalid after_completion[type].")
        if after["type"] == "redirect" and not (
            isinstance(after.get("redirect"), dict) and after["redirect"].get("url")
        ):
            raise _missing("after_completion[redirect][url]")
        restrictions = params.get("restrictions")
        limit = None
        if isinstance(restrictions, dict):
            limit = _integer(restrictions.get("completed_sessions", {}), "limit", 1)
        identifier = self._id("plink")
        link = {
            "id": identifier,
            "object": "payment_link",
            "active": True,
            "after_completion": after,
            "currency": self._state.prices[items[0]["price"]]["currency"],
            "livemode": False,
            "metadata": _metadata(params),
            "payment_method_types": methods,
            "restrictions": {"completed_sessions": {"count": 0, "limit": limit}} if limit else None,
            "url": f"{self.base_url}/b/{identifier.removeprefix('plink_')}",
        }
        self._state.links[identifier] = link
        self._state.link_prices[identifier] = str(items[0]["price"])
        return link

    def _get_link(self, path: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        link = self._state.links.get(path["id"])
        if link is None:
            raise _no_such("payment_link", path["id"])
        return link

    def _list_links(self, _: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        links = self._ordered(self._state.links.values())
        if params.get("active") in ("true", "false"):
            links = [link for link in links if link["active"] == (params["active"] == "true")]
        return self._page(links, params, "/v1/payment_links")

    def _update_link(self, path: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        link = self._get_link(path, {})
        if "active" in params:
            if params["active"] not in ("true", "false"):
                raise _invalid("active", "Invalid boolean: active")
            link["active"] = params["active"] == "true"
        if "metadata" in params:
            link["metadata"] = {**link["metadata"], **_metadata(params)}
        return link

    def _create_refund(self, _: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        intent_id = params.get("payment_intent")
        if not intent_id and not params.get("charge"):
            raise StripeFailure(
                400, "One of the following params should be provided for this request: payment_intent or charge."
            )
        intent = next(
            (
                i
                for i in self._state.payment_intents.values()
                if i["id"] == intent_id or i["latest_charge"] == params.get("charge")
            ),
            None,
        )
        if intent is None:
            raise _no_such("payment_intent", str(intent_id or params.get("charge")), "payment_intent")
        if intent["status"] != "succeeded":
            raise StripeFailure(
                400,
                f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                code="charge_not_refundable",
            )
        left = intent["amount_received"] - self._refunded(intent["id"])
        if left <= 0:
            raise StripeFailure(
                400, f"Charge {intent['latest_charge']} has already been refunded.", code="charge_already_refunded"
            )
        amount = _integer(params, "amount", 1) if "amount" in params else left
        if amount > left:
            raise StripeFailure(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                code="amount_too_large",
                param="amount",
            )
        reason = params.get("reason")
        if reason is not None and reason not in ("duplicate", "fraudulent", "requested_by_customer"):
            raise _invalid("reason", f"Invalid reason: {reason}")
        # Card refunds succeed at once; PayPal refunds are settled asynchronously.
        pending = self.refunds_pending or intent["payment_method_types"] == ["paypal"]
        refund = {
            "id": self._id("re"),
            "object": "refund",
            "amount": amount,
            "charge": intent["latest_charge"],
            "created": int(time.time()),
            "currency": intent["currency"],
            "metadata": _metadata(params),
            "payment_intent": intent["id"],
            "reason": reason,
            "status": "pending" if pending else "succeeded",
        }
        self._state.refunds[refund["id"]] = refund
        self._refresh_intent(intent["id"])
        return refund

    def _get_refund(self, path: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        refund = self._state.refunds.get(path["id"])
        if refund is None:
            raise _no_such("refund", path["id"])
        return refund

    def _list_refunds(self, _: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        refunds = self._ordered(self._state.refunds.values())
        for name in ("payment_intent", "charge"):
            if params.get(name):
                refunds = [r for r in refunds if r[name] == params[name]]
        return self._page(refunds, params, "/v1/refunds")

    def _get_event(self, path: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        # Every event the account generated, sent or not, as Stripe keeps them (30 days) for retrieval.
        event = next((e for e in self.events if e["id"] == path["id"]), None)
        if event is None:
            raise _no_such("event", path["id"])
        return event

    def _get_subscription(self, path: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        subscription = self._state.subscriptions.get(path["id"])
        if subscription is None:
            raise _no_such("subscription", path["id"])
        return subscription

    def _update_subscription(self, path: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        # The parameters the PGM sends; anything else is refused rather than silently ignored.
        subscription = self._get_subscription(path, {})
        unknown = set(params) - {"cancel_at", "proration_behavior", "metadata"}
        if unknown:
            raise _invalid(sorted(unknown)[0], f"This fake does not implement updating {sorted(unknown)[0]}.")
        if subscription["status"] in ("canceled", "incomplete_expired"):
            raise _invalid(
                "cancel_at", "A canceled subscription can only update its cancellation_details and metadata."
            )
        behaviour = params.get("proration_behavior")
        if behaviour is not None and behaviour not in ("create_prorations", "none", "always_invoice"):
            raise _invalid("proration_behavior", f"Invalid proration_behavior: {behaviour}")
        if "cancel_at" in params:
            if params["cancel_at"] == "":
                subscription["cancel_at"] = None
            else:
                cancel_at = _integer(params, "cancel_at")
                if cancel_at <= int(time.time()):
                    raise _invalid("cancel_at", "cancel_at must be in the future.")
                subscription["cancel_at"] = cancel_at
        if "metadata" in params:
            subscription["metadata"] = {**subscription["metadata"], **_metadata(params)}
        return subscription

    def _invoice(self, subscription: dict[str, Any], reason: str) -> dict[str, Any]:
        item = subscription["items"]["data"][0]
        invoice = {
            "id": self._id("in"),
            "object": "invoice",
            "amount_paid": item["price"]["unit_amount"],
            "billing_reason": reason,
            "currency": subscription["currency"],
            "parent": {"subscription_details": {"subscription": subscription["id"]}},
            "period_start": item["current_period_start"],
            "period_end": item["current_period_end"],
            "status": "paid",
            "subscription": subscription["id"],
        }
        self._state.invoices.append(invoice)
        subscription["latest_invoice"] = invoice["id"]
        return invoice

    def _cancel_subscription(self, path: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        subscription = self._get_subscription(path, {})
        if subscription["status"] in ("canceled", "incomplete_expired"):
            raise StripeFailure(
                400,
                "A canceled subscription can only update its cancellation_details and metadata.",
                code="resource_missing",
            )
        subscription.update(status="canceled", canceled_at=int(time.time()), ended_at=int(time.time()))
        return subscription

    # ---------------------------------------------------------- state machine

    def _payer_session(self, payment_id: str) -> dict[str, Any]:
        """The session the payer uses: the Checkout Session itself, or a new one opened from a Payment Link."""
        if payment_id in self._state.sessions:
            return self._state.sessions[payment_id]
        link = self._state.links.get(payment_id)
        if link is None:
            raise KeyError(f"no Checkout Session or Payment Link {payment_id}")
        if not link["active"]:
            raise ValueError(f"payment link {payment_id} is no longer active")
        price = self._state.prices[self._state.link_prices[payment_id]]
        return self._new_session(
            mode="payment",
            amount=price["unit_amount"],
            currency=price["currency"],
            methods=link["payment_method_types"] or ["card"],
            reference=None,
            metadata=dict(link["metadata"]),
            child_metadata=dict(link["metadata"]),
            success_url=(link["after_completion"].get("redirect") or {}).get("url"),
            cancel_url=None,
            email=None,
            recurring=None,
            link=payment_id,
        )

    def _complete(self, session: dict[str, Any]) -> None:
        extras = self._state.session_extras[session["id"]]
        session.update(status="complete", payment_status="paid", customer=self._id("cus"))
        if session["mode"] == "payment":
            intent = {
                "id": self._id("pi"),
                "object": "payment_intent",
                "amount": session["amount_total"],
                "amount_received": session["amount_total"],
                "amount_refunded": 0,
                "currency": session["currency"],
                "latest_charge": self._id("ch"),
                "metadata": extras["child_metadata"],
                "payment_method_types": session["payment_method_types"],
                "status": "succeeded",
            }
            self._state.payment_intents[intent["id"]] = intent
            session["payment_intent"] = intent["id"]
        else:
            now = int(time.time())
            subscription = {
                "id": self._id("sub"),
                "object": "subscription",
                "billing_cycle_anchor": now,
                "cancel_at": None,
                "cancel_at_period_end": False,
                "canceled_at": None,
                "created": now,
                "start_date": now,
                "currency": session["currency"],
                "customer": session["customer"],
                "ended_at": None,
                "items": {
                    "object": "list",
                    "data": [
                        {
                            "object": "subscription_item",
                            "current_period_start": now,
                            "current_period_end": _period_end(now, extras["recurring"], now),
                            "price": {"unit_amount": session["amount_total"], "recurring": extras["recurring"]},
                            "quantity": 1,
                        }
                    ],
                },
                "latest_invoice": None,
                "metadata": extras["child_metadata"],
                "status": "active",
            }
            self._state.subscriptions[subscription["id"]] = subscription
            self._invoice(subscription, "subscription_create")
            session.update(subscription=subscription["id"], invoice=subscription["latest_invoice"])
        link = self._state.links.get(str(session.get("payment_link")))
        if link is not None and link["restrictions"]:
            completed = link["restrictions"]["completed_sessions"]
            completed["count"] += 1
            if completed["count"] >= completed["limit"]:
                # A link whose completed-sessions limit is reached stops accepting payments.
                link["active"] = False

    def _expire(self, session: dict[str, Any]) -> None:
        if session["status"] != "open":
            raise ValueError(f"session {session['id']} is {session['status']}, not open")
        session["status"] = "expired"

    def _refunded(self, intent_id: str) -> int:
        return sum(
            r["amount"]
            for r in self._state.refunds.values()
            if r["payment_intent"] == intent_id and r["status"] in ("pending", "requires_action", "succeeded")
        )

    def _refresh_intent(self, intent_id: str) -> None:
        intent = self._state.payment_intents[intent_id]
        intent["amount_refunded"] = sum(
            r["amount"]
            for r in self._state.refunds.values()
            if r["payment_intent"] == intent_id and r["status"] == "succeeded"
        )


def _period_end(anchor: int, recurring: dict[str, Any], period_start: int) -> int:
    """The end of the billing period that starts at `period_start`: the next anchor date after it. Months
    count from the billing cycle anchor, the day clamped to the month (anchor Jan 31: Feb 28, Mar 31...)."""
    step = int(recurring.get("interval_count", 1))
    interval = recurring["interval"]
    if interval in ("day", "week"):
        seconds = step * (7 if interval == "week" else 1) * 86400
        return period_start + seconds
    months = step * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(anchor, UTC)
    elapsed = 0
    while True:
        elapsed += months
        index = start.month - 1 + elapsed
        year, month = start.year + index // 12, index % 12 + 1
        moment = int(
            start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1])).timestamp()
        )
        if moment > period_start:
            return moment


@contextmanager
def running_stripe_fake() -> Iterator[StripeFake]:
    """Start a Stripe fake on a free loopback port; set `fake.webhook_url` once the PGM runs."""
    fake = StripeFake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.base_url = base_url
        yield fake
