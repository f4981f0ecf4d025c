"""A stateful fake of Braintree's XML gateway and its webhooks, for tests on loopback.

Written from Braintree's public documentation (developer.paypal.com/braintree/docs, "Transaction:
sale / find / refund / void / submit for settlement / search", "Customer", "Payment method",
"Client token", "Subscription: create / find / update / cancel", "Transaction statuses", "Testing
and Go Live: test nonces and settlement", "Webhooks: parse, bt_signature / bt_payload",
"Validation errors") and the official Python SDK (braintree 4.48.0) it must serve. Only the subset
the PGM uses:

* every path under `/merchants/{merchant_id}/`, authenticated with HTTP Basic public key : private key
  (a wrong pair gets 401, another merchant's path 403) and `X-ApiVersion` (missing: 426), XML bodies;
* the documented test nonces: `fake-valid-nonce`, `fake-paypal-one-time-nonce`,
  `fake-paypal-billing-agreement-nonce`, `fake-processor-declined-visa-nonce` (declined 2000),
  `fake-gateway-rejected-fraud-nonce`, `fake-three-d-secure-visa-full-authentication-nonce` and
  `fake-three-d-secure-visa-failed-authentication-nonce` (rejected `three_d_secure` when the sale
  requires 3-D Secure); anything else is an unknown nonce (91565);
* sales submitted for settlement, settled by `settle()` or the sandbox's own testing call
  (`PUT .../transactions/{id}/settle`); void only before settlement (91504), refunds only after
  (91506), never above what is left (91521);
* customers, vaulted payment methods, client tokens;
* subscriptions on plans that must exist (91904), billed at once, renewed by `renew()`, expiring after
  `number_of_billing_cycles`, canceled (81905 when already);
* advanced search of transactions by order id, type and creation time;
* webhooks sent as Braintree sends them: a form POST of `bt_signature` = public key + "|" + hex
  HMAC-SHA1 (keyed with SHA-1 of the private key) of `bt_payload` (base64 of the XML notification),
  retried until the endpoint answers 2xx. The signature is computed here, independently of the SDK.

The XML is written and read here too (Braintree's shapes: dashed names, `type` attributes).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import queue
import secrets
import string
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import run_server_in_thread

MERCHANT_ID = "pgmtestmerchant"
MERCHANT_ACCOUNT_ID = "pgmtestEUR"
PUBLIC_KEY = "fakepublickey123"
PRIVATE_KEY = "fakeprivatekey0123456789abcdef"
PLAN_ID = "monthly-plan"
QUARTERLY_PLAN_ID = "quarterly-plan"
WEBHOOK_ATTEMPTS = 20
_ALPHABET = string.ascii_lowercase + string.digits

CARD_NONCES = {
    "fake-valid-nonce",
    "fake-three-d-secure-visa-full-authentication-nonce",
    "fake-three-d-secure-visa-failed-authentication-nonce",
    "fake-processor-declined-visa-nonce",
    "fake-gateway-rejected-fraud-nonce",
}
PAYPAL_NONCES = {"fake-paypal-one-time-nonce", "fake-paypal-billing-agreement-nonce"}
DECLINED_NONCE = "fake-processor-declined-visa-nonce"
FRAUD_NONCE = "fake-gateway-rejected-fraud-nonce"
FAILED_3DS_NONCE = "fake-three-d-secure-visa-failed-authentication-nonce"
# Plural element → the name of its items (Braintree's arrays of objects).
ITEM_NAMES = {
    "transactions": "transaction",
    "paypal-accounts": "paypal-account",
    "credit-cards": "credit-card",
    "errors": "error",
}


# ----------------------------------------------------------------------------------------------- XML


class Repeated(list[Any]):
    """Items written as sibling elements of one name (a search's page of transactions), not as an array."""


def _node(tag: str, value: Any) -> str:
    if isinstance(value, bool):
        return f'<{tag} type="boolean">{"true" if value else "false"}</{tag}>'
    if isinstance(value, int):
        return f'<{tag} type="integer">{value}</{tag}>'
    if isinstance(value, datetime):
        return f'<{tag} type="datetime">{value.strftime("%Y-%m-%dT%H:%M:%SZ")}</{tag}>'
    if isinstance(value, date):
        return f'<{tag} type="date">{value.isoformat()}</{tag}>'
    if value is None:
        return f'<{tag} nil="true"></{tag}>'
    if isinstance(value, Repeated):
        return "".join(_node(tag, v) for v in value)
    if isinstance(value, dict):
        return f"<{tag}>{''.join(_node(k.replace('_', '-'), v) for k, v in value.items())}</{tag}>"
    if isinstance(value, list):
        item = ITEM_NAMES.get(tag, "item")
        return f'<{tag} type="array">{"".join(_node(item, v) for v in value)}</{tag}>'
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<{tag}>{text}</{tag}>"


def to_xml(root: str, value: dict[str, Any]) -> bytes:
    """Braintree's XML for one object."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + _node(root, value)).encode()


def _read(element: ElementTree.Element) -> Any:
    kind = element.get("type")
    children = list(element)
    if kind == "array":
        return [_read(child) for child in children]
    if children:
        return {child.tag.replace("-", "_"): _read(child) for child in children}
    text = (element.text or "").strip()
    if element.get("nil") == "true":
        return None
    if kind == "boolean":
        return text == "true"
    if kind == "integer":
        return int(text)
    return text


def from_xml(raw: bytes) -> tuple[str, Any]:
    """The root name and content of a request's XML."""
    root = ElementTree.fromstring(raw)
    return root.tag.replace("-", "_"), _read(root)


def _id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


def signature(payload: str, public_key: str = PUBLIC_KEY, private_key: str = PRIVATE_KEY) -> str:
    """`bt_signature` of a payload: public key | hex HMAC-SHA1 keyed with SHA-1(private key)."""
    key = hashlib.sha1(private_key.encode()).digest()
    return f"{public_key}|{hmac.new(key, payload.encode(), hashlib.sha1).hexdigest()}"


def webhook_form(kind: str, subject: dict[str, Any], private_key: str = PRIVATE_KEY) -> dict[str, str]:
    """The form fields Braintree POSTs for a notification of `kind` about `subject` ({"transaction": ...})."""
    notification = {"kind": kind, "timestamp": datetime.now(UTC), "subject": subject}
    payload = base64.encodebytes(to_xml("notification", notification)).decode()
    return {"bt_signature": signature(payload, private_key=private_key), "bt_payload": payload}


# --------------------------------------------------------------------------------------------- state


@dataclass
class FakeTransaction:
    """A transaction as Braintree holds it: a sale or a credit (refund)."""

    id: str
    type: str
    amount: Decimal
    status: str
    order_id: str | None
    merchant_account_id: str
    instrument: str
    customer_id: str | None = None
    payment_method_token: str | None = None
    subscription_id: str | None = None
    refunded_transaction_id: str | None = None
    refund_ids: list[str] = field(default_factory=list)
    processor_response_code: str = "1000"
    processor_response_text: str = "Approved"
    gateway_rejection_reason: str | None = None
    device_data: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def xml(self) -> dict[str, Any]:
        """The transaction's XML fields."""
        data: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "amount": f"{self.amount:.2f}",
            "currency_iso_code": "EUR",
            "status": self.status,
            "order_id": self.order_id,
            "merchant_account_id": self.merchant_account_id,
            "payment_instrument_type": self.instrument,
            "processor_response_code": self.processor_response_code,
            "processor_response_text": self.processor_response_text,
            "gateway_rejection_reason": self.gateway_rejection_reason,
            "refund_ids": list(self.refund_ids),
            "refunded_transaction_id": self.refunded_transaction_id,
            "subscription_id": self.subscription_id,
            "created_at": self.created_at,
        }
        if self.customer_id:
            data["customer"] = {"id": self.customer_id}
        return data


@dataclass
class FakeSubscription:
    """A subscription as Braintree holds it."""

    id: str
    plan_id: str
    price: Decimal
    payment_method_token: str
    merchant_account_id: str
    number_of_billing_cycles: int | None
    status: str = "Active"
    current_billing_cycle: int = 0
    transaction_ids: list[str] = field(default_factory=list)


class _Refusal(Exception):
    """A validation error answered as Braintree's 422 api-error-response."""

    def __init__(self, code: str, message: str, attribute: str = "base", transaction: FakeTransaction | None = None):
        super().__init__(message)
        self.code, self.message, self.attribute, self.transaction = code, message, attribute, transaction


class Fake:
    """The running fake: state, test controls and fault switches."""

    def __init__(self) -> None:
        self.url = ""
        self.webhook_url: str | None = None
        self.merchant_id = MERCHANT_ID
        self.merchant_account_id = MERCHANT_ACCOUNT_ID
        self.public_key = PUBLIC_KEY
        self.private_key = PRIVATE_KEY
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.deliveries: list[tuple[dict[str, str], int]] = []
        # Plans of the Control Panel: id → billing frequency in months.
        self.plans: dict[str, int] = {PLAN_ID: 1, QUARTERLY_PLAN_ID: 3}
        self._lock = threading.Lock()
        self._transactions: dict[str, FakeTransaction] = {}
        self._customers: dict[str, list[tuple[str, str]]] = {}
        self._methods: dict[str, tuple[str, str]] = {}
        self._subscriptions: dict[str, FakeSubscription] = {}
        self._faults: list[tuple[str, Any]] = []
        self._outbox: queue.Queue[dict[str, str] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._deliver_forever, name="braintree-fake-webhooks", daemon=True)
        prefix = "/merchants/{merchant}"
        routes = [
            ("POST", "/transactions", self._sale),
            ("GET", "/transactions/{id}", self._find_transaction),
            ("POST", "/transactions/{id}/refund", self._refund),
            ("PUT", "/transactions/{id}/void", self._void),
            ("PUT", "/transactions/{id}/submit_for_settlement", self._submit),
            ("PUT", "/transactions/{id}/settle", self._settle_endpoint),
            ("POST", "/transactions/advanced_search_ids", self._search_ids),
            ("POST", "/transactions/advanced_search", self._search),
            ("POST", "/customers", self._create_customer),
            ("GET", "/customers/{id}", self._find_customer),
            ("POST", "/payment_methods", self._create_method),
            ("POST", "/client_token", self._client_token),
            ("GET", "/plans/{id}", self._find_plan),
            ("POST", "/subscriptions", self._create_subscription),
            ("GET", "/subscriptions/{id}", self._find_subscription),
            ("PUT", "/subscriptions/{id}", self._update_subscription),
            ("PUT", "/subscriptions/{id}/cancel", self._cancel_subscription),
        ]
        self.app = Starlette(
            routes=[
                Route(prefix + path, self._endpoint(action), methods=[method], name=f"{method}{path}")
                for method, path, action in routes
            ]
        )

    # ----- the uniform test API -----

    def env(self) -> dict[str, str]:
        """The PGM environment for Braintree pointing at this fake (without ENABLED_PROVIDERS)."""
        return {
            "BRAINTREE_MERCHANT_ID": self.merchant_id,
            "BRAINTREE_MERCHANT_ACCOUNT_ID": self.merchant_account_id,
            "BRAINTREE_PUBLIC_KEY": self.public_key,
            "BRAINTREE_PRIVATE_KEY": self.private_key,
            "BRAINTREE_IS_SANDBOX": "true",
            "BRAINTREE_BASE_URL": self.url,
        }

    def payments(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """The sales Braintree holds for an order id, with their refunds (credits)."""
        with self._lock:
            return [
                {
                    "id": t.id,
                    "amount": int(t.amount * 100),
                    "status": t.status,
                    "instrument": t.instrument,
                    "customerId": t.customer_id,
                    "deviceData": t.device_data,
                    "subscriptionId": t.subscription_id,
                    "refunds": [
                        {
                            "id": r,
                            "amount": int(self._transactions[r].amount * 100),
                            "orderId": self._transactions[r].order_id,
                        }
                        for r in t.refund_ids
                    ],
                }
                for t in self._transactions.values()
                if t.type == "sale" and t.order_id == shop_transaction_id
            ]

    def transaction(self, transaction_id: str) -> dict[str, Any]:
        """One transaction as Braintree holds it."""
        with self._lock:
            return self._transactions[transaction_id].xml()

    def subscription(self, subscription_id: str) -> FakeSubscription:
        """One subscription as Braintree holds it."""
        with self._lock:
            return self._subscriptions[subscription_id]

    def customer_methods(self, customer_id: str) -> list[tuple[str, str]]:
        """(token, kind) of a customer's vaulted payment methods."""
        with self._lock:
            return list(self._customers.get(customer_id, []))

    def add_customer(self, customer_id: str, kind: str = "paypal") -> str:
        """A vaulted customer with one payment method; returns its token."""
        token = f"tok{_id()}"
        with self._lock:
            self._customers.setdefault(customer_id, []).append((token, kind))
            self._methods[token] = (customer_id, kind)
        return token

    def settle(self, transaction_id: str, notify: bool = False) -> None:
        """The nightly settlement batch settles a sale (optionally with a transaction_settled webhook)."""
        with self._lock:
            transaction = self._transactions[transaction_id]
            transaction.status = "settled"
            xml = transaction.xml()
        if notify:
            self._emit("transaction_settled", {"transaction": xml})

    def refund_in_control_panel(self, transaction_id: str, amount: int) -> str:
        """Someone refunds a settled sale in the Control Panel: a credit, and no webhook the PGM reads. Its id."""
        with self._lock:
            _, credit, _ = self._refund({"id": transaction_id}, {"amount": f"{Decimal(amount) / 100:.2f}"})
            return str(credit["id"])

    def decline_settlement(self, transaction_id: str) -> None:
        """The processor declines the settlement of an accepted sale; a transaction_settlement_declined webhook."""
        with self._lock:
            transaction = self._transactions[transaction_id]
            transaction.status = "settlement_declined"
            xml = transaction.xml()
        self._emit("transaction_settlement_declined", {"transaction": xml})

    def renew(self, subscription_id: str) -> str:
        """Braintree bills the next cycle; returns the subscription's status after it (webhooks follow)."""
        with self._lock:
            subscription = self._subscriptions[subscription_id]
            if subscription.status != "Active":
                raise ValueError(f"subscription {subscription_id} is {subscription.status}")
            self._charge(subscription)
            kinds = ["subscription_charged_successfully"]
            if subscription.number_of_billing_cycles == subscription.current_billing_cycle:
                subscription.status = "Expired"
                kinds.append("subscription_expired")
            xml = self._subscription_xml(subscription)
        for kind in kinds:
            self._emit(kind, {"subscription": xml})
        return subscription.status

    def fail_next(self, status_code: int) -> None:
        """The next API call answers this status without being processed."""
        self._faults.append(("fail", status_code))

    def lose_next(self) -> None:
        """The next API call is processed, then answered 500 (the answer is lost)."""
        self._faults.append(("lose", None))

    def delay_next(self, seconds: float) -> None:
        """The next API call is processed, then answered this late."""
        self._faults.append(("delay", seconds))

    def send_form(self, form: dict[str, str]) -> httpx.Response:
        """POST webhook form fields to the PGM now (for forged and duplicate notification tests)."""
        assert self.webhook_url, "set fake.webhook_url first"
        return httpx.post(self.webhook_url, data=form, timeout=10)

    # ----- HTTP plumbing -----

    def _endpoint(self, action: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.requests.append((request.method, request.url.path, headers, raw))
            fault = self._faults.pop(0) if self._faults else None
            if fault and fault[0] == "fail":
                return Response(b"", status_code=fault[1])
            expected = "Basic " + base64.b64encode(f"{self.public_key}:{self.private_key}".encode()).decode()
            if headers.get("authorization") != expected:
                return Response(b"", status_code=401)
            if request.path_params["merchant"] != self.merchant_id:
                return Response(b"", status_code=403)
            if not headers.get("x-apiversion", "").isdigit() or int(headers["x-apiversion"]) < 4:
                return Response(b"", status_code=426)
            body: Any = {}
            if raw.strip():
                try:
                    _, body = from_xml(raw)
                except ElementTree.ParseError:
                    return Response(b"", status_code=400)
            try:
                with self._lock:
                    root, answer, status = action(request.path_params, body if isinstance(body, dict) else {})
                content = to_xml(root, answer)
            except KeyError:
                return Response(b"", status_code=404)
            except _Refusal as refusal:
                status, content = 422, self._error_xml(refusal)
            if fault and fault[0] == "lose":
                return Response(b"", status_code=500)
            if fault and fault[0] == "delay":
                await asyncio.sleep(fault[1])
            return Response(content, status_code=status, media_type="application/xml")

        return endpoint

    def _error_xml(self, refusal: _Refusal) -> bytes:
        error = {"code": refusal.code, "attribute": refusal.attribute, "message": refusal.message}
        answer: dict[str, Any] = {
            "errors": {"errors": [], "transaction": {"errors": [error]}},
            "message": refusal.message,
        }
        if refusal.transaction is not None:
            answer["transaction"] = refusal.transaction.xml()
        return to_xml("api-error-response", answer)

    # ----- transactions -----

    def _sale(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        params = body
        options = params.get("options") or {}
        if not params.get("amount"):
            raise _Refusal("81502", "Amount is required.", "amount")
        amount = Decimal(params["amount"])
        account = params.get("merchant_account_id") or self.merchant_account_id
        if account != self.merchant_account_id:
            raise _Refusal("91513", "Merchant account ID is invalid.", "merchant_account_id")
        nonce, token, customer = (
            params.get("payment_method_nonce"),
            params.get("payment_method_token"),
            params.get("customer_id"),
        )
        if nonce:
            if nonce not in CARD_NONCES | PAYPAL_NONCES:
                raise _Refusal("91565", "Unknown payment_method_nonce.", "payment_method_nonce")
            instrument = "paypal_account" if nonce in PAYPAL_NONCES else "credit_card"
        elif token:
            if token not in self._methods:
                raise _Refusal("91518", "Payment method token is invalid.", "payment_method_token")
            customer = customer or self._methods[token][0]
            instrument = self._methods[token][1] + ("_account" if self._methods[token][1] == "paypal" else "")
        elif customer:
            if not self._customers.get(customer):
                raise _Refusal("91510", "Customer ID is invalid.", "customer_id")
            token, kind = self._customers[customer][0]
            instrument = "paypal_account" if kind == "paypal" else "credit_card"
        else:
            raise _Refusal("91508", "Cannot determine payment method.", "base")
        if customer and customer not in self._customers:
            raise _Refusal("91510", "Customer ID is invalid.", "customer_id")
        new_customer = (params.get("customer") or {}).get("id")
        if new_customer:
            if customer:
                raise _Refusal("91576", "Cannot provide both customer_id and customer details.", "customer")
            if new_customer in self._customers:
                raise _Refusal("91609", "Customer ID has already been taken.", "id")
            customer = new_customer
        transaction = FakeTransaction(
            id=_id(),
            type="sale",
            amount=amount,
            status="submitted_for_settlement" if options.get("submit_for_settlement") else "authorized",
            order_id=params.get("order_id"),
            merchant_account_id=account,
            instrument=instrument,
            customer_id=customer,
            payment_method_token=token,
            device_data=params.get("device_data"),
        )
        self._transactions[transaction.id] = transaction
        if nonce == DECLINED_NONCE:
            transaction.status = "processor_declined"
            transaction.processor_response_code, transaction.processor_response_text = "2000", "Do Not Honor"
            raise _Refusal("2000", "Do Not Honor", transaction=transaction)
        if nonce == FRAUD_NONCE:
            transaction.status, transaction.gateway_rejection_reason = "gateway_rejected", "fraud"
            raise _Refusal("fraud", "Gateway Rejected: fraud", transaction=transaction)
        if nonce == FAILED_3DS_NONCE and (options.get("three_d_secure") or {}).get("required"):
            transaction.status, transaction.gateway_rejection_reason = "gateway_rejected", "three_d_secure"
            raise _Refusal("three_d_secure", "Gateway Rejected: three_d_secure", transaction=transaction)
        if new_customer:
            # The customer comes to exist with the sale, vaulted or not.
            self._customers.setdefault(new_customer, [])
        if nonce and options.get("store_in_vault_on_success"):
            customer = customer or f"cust{_id()}"
            transaction.customer_id = customer
            kind = "paypal" if instrument == "paypal_account" else "credit_card"
            token = f"tok{_id()}"
            self._customers.setdefault(customer, []).append((token, kind))
            self._methods[token] = (customer, kind)
            transaction.payment_method_token = token
        return "transaction", transaction.xml(), 201

    def _find_transaction(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        return "transaction", self._transactions[path["id"]].xml(), 200

    def _refund(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        sale = self._transactions[path["id"]]
        if sale.type != "sale":
            raise _Refusal("91505", "Cannot refund credit", transaction=None)
        if sale.status not in ("settled", "settling"):
            raise _Refusal("91506", "Cannot refund transaction unless it is settled.")
        refunded = sum(self._transactions[r].amount for r in sale.refund_ids)
        if refunded >= sale.amount:
            raise _Refusal("91512", "Transaction has already been fully refunded.")
        amount = Decimal(body["amount"]) if body.get("amount") else sale.amount - refunded
        if amount + refunded > sale.amount:
            raise _Refusal("91521", "Refund amount is too large.", "amount")
        credit = FakeTransaction(
            id=_id(),
            type="credit",
            amount=amount,
            status="submitted_for_settlement",
            order_id=body.get("order_id"),
            merchant_account_id=sale.merchant_account_id,
            instrument=sale.instrument,
            refunded_transaction_id=sale.id,
        )
        self._transactions[credit.id] = credit
        sale.refund_ids.append(credit.id)
        return "transaction", credit.xml(), 201

    def _void(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        sale = self._transactions[path["id"]]
        if sale.status not in ("authorized", "submitted_for_settlement", "settlement_pending"):
            raise _Refusal(
                "91504",
                "Transaction can only be voided if status is authorized, submitted_for_settlement, or - for "
                "PayPal - settlement_pending.",
            )
        sale.status = "voided"
        return "transaction", sale.xml(), 200

    def _submit(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        sale = self._transactions[path["id"]]
        if sale.status != "authorized":
            raise _Refusal("91507", "Cannot submit for settlement unless status is authorized.")
        sale.status = "submitted_for_settlement"
        return "transaction", sale.xml(), 200

    def _settle_endpoint(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        sale = self._transactions[path["id"]]
        sale.status = "settled"
        return "transaction", sale.xml(), 200

    def _matching(self, criteria: dict[str, Any]) -> list[FakeTransaction]:
        found = list(self._transactions.values())
        order = (criteria.get("order_id") or {}).get("is")
        if order is not None:
            found = [t for t in found if t.order_id == order]
        types = criteria.get("type")
        if types:
            found = [t for t in found if t.type in types]
        since = (criteria.get("created_at") or {}).get("min")
        if since:
            moment = datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            found = [t for t in found if t.created_at.replace(microsecond=0) >= moment]
        ids = criteria.get("ids")
        if ids is not None:
            found = [t for t in found if t.id in ids]
        return found

    def _search_ids(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        return "search-results", {"page_size": 50, "ids": [t.id for t in self._matching(body)]}, 200

    def _search(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        return "credit-card-transactions", {"transaction": Repeated(t.xml() for t in self._matching(body))}, 200

    # ----- customers, payment methods, client tokens -----

    def _customer_xml(self, customer_id: str) -> dict[str, Any]:
        methods = self._customers[customer_id]
        return {
            "id": customer_id,
            "paypal_accounts": [{"token": t, "customer_id": customer_id} for t, k in methods if k == "paypal"],
            "credit_cards": [{"token": t, "customer_id": customer_id} for t, k in methods if k != "paypal"],
        }

    def _create_customer(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        customer_id = body.get("id") or f"cust{_id()}"
        if customer_id in self._customers:
            raise _Refusal("91609", "Customer ID has already been taken.", "id")
        nonce = body.get("payment_method_nonce")
        self._customers[customer_id] = []
        if nonce:
            if nonce not in CARD_NONCES | PAYPAL_NONCES:
                del self._customers[customer_id]
                raise _Refusal("91565", "Unknown payment_method_nonce.", "payment_method_nonce")
            self._vault(customer_id, nonce)
        return "customer", self._customer_xml(customer_id), 201

    def _vault(self, customer_id: str, nonce: str) -> str:
        token = f"tok{_id()}"
        kind = "paypal" if nonce in PAYPAL_NONCES else "credit_card"
        self._customers.setdefault(customer_id, []).append((token, kind))
        self._methods[token] = (customer_id, kind)
        return token

    def _find_customer(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        return "customer", self._customer_xml(path["id"]), 200

    def _create_method(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        customer_id, nonce = body.get("customer_id"), body.get("payment_method_nonce")
        if not customer_id or customer_id not in self._customers:
            raise _Refusal("91704", "Customer ID is required.", "customer_id")
        if nonce not in CARD_NONCES | PAYPAL_NONCES:
            raise _Refusal("91565", "Unknown payment_method_nonce.", "payment_method_nonce")
        token = self._vault(customer_id, str(nonce))
        root = "paypal-account" if nonce in PAYPAL_NONCES else "credit-card"
        return root, {"token": token, "customer_id": customer_id}, 201

    def _client_token(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        customer_id = body.get("customer_id")
        if customer_id and customer_id not in self._customers:
            raise _Refusal("92804", "Customer specified by customer_id does not exist")
        token = base64.b64encode(f'{{"version":2,"merchantId":"{self.merchant_id}"}}'.encode()).decode()
        return "client-token", {"value": token}, 201

    # ----- subscriptions -----

    def _subscription_xml(self, subscription: FakeSubscription) -> dict[str, Any]:
        return {
            "id": subscription.id,
            "plan_id": subscription.plan_id,
            "price": f"{subscription.price:.2f}",
            "status": subscription.status,
            "payment_method_token": subscription.payment_method_token,
            "merchant_account_id": subscription.merchant_account_id,
            "number_of_billing_cycles": subscription.number_of_billing_cycles,
            "never_expires": subscription.number_of_billing_cycles is None,
            "current_billing_cycle": subscription.current_billing_cycle,
            # Newest first, as Braintree lists them.
            "transactions": [self._transactions[t].xml() for t in reversed(subscription.transaction_ids)],
        }

    def _charge(self, subscription: FakeSubscription) -> None:
        customer, kind = self._methods[subscription.payment_method_token]
        sale = FakeTransaction(
            id=_id(),
            type="sale",
            amount=subscription.price,
            status="submitted_for_settlement",
            order_id=None,
            merchant_account_id=subscription.merchant_account_id,
            instrument="paypal_account" if kind == "paypal" else "credit_card",
            customer_id=customer,
            payment_method_token=subscription.payment_method_token,
            subscription_id=subscription.id,
        )
        self._transactions[sale.id] = sale
        subscription.transaction_ids.append(sale.id)
        subscription.current_billing_cycle += 1

    def _find_plan(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        frequency = self.plans[path["id"]]
        return "plan", {"id": path["id"], "billing_frequency": frequency, "currency_iso_code": "EUR"}, 200

    def _create_subscription(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        if body.get("plan_id") not in self.plans:
            raise _Refusal("91904", "Plan ID is invalid.", "plan_id")
        token = body.get("payment_method_token")
        if token not in self._methods:
            raise _Refusal("91903", "Payment method token is invalid.", "payment_method_token")
        cycles = body.get("number_of_billing_cycles")
        subscription = FakeSubscription(
            id=_id(),
            plan_id=str(body["plan_id"]),
            price=Decimal(body.get("price") or "10.00"),
            payment_method_token=str(token),
            merchant_account_id=body.get("merchant_account_id") or self.merchant_account_id,
            number_of_billing_cycles=int(cycles) if cycles else None,
        )
        self._subscriptions[subscription.id] = subscription
        self._charge(subscription)
        return "subscription", self._subscription_xml(subscription), 201

    def _find_subscription(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        return "subscription", self._subscription_xml(self._subscriptions[path["id"]]), 200

    def _update_subscription(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        subscription = self._subscriptions[path["id"]]
        if subscription.status in ("Canceled", "Expired"):
            raise _Refusal("81901", f"Cannot edit a {subscription.status.lower()} subscription.")
        if body.get("price"):
            subscription.price = Decimal(body["price"])
        if body.get("number_of_billing_cycles"):
            cycles = int(body["number_of_billing_cycles"])
            if cycles < subscription.current_billing_cycle:
                raise _Refusal(
                    "91907",
                    "Number Of Billing Cycles cannot be less than the current billing cycle.",
                    "number_of_billing_cycles",
                )
            subscription.number_of_billing_cycles = cycles
        return "subscription", self._subscription_xml(subscription), 200

    def _cancel_subscription(self, path: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        subscription = self._subscriptions[path["id"]]
        if subscription.status == "Canceled":
            raise _Refusal("81905", "Subscription has already been canceled.", "status")
        if subscription.status == "Expired":
            raise _Refusal("81906", "Cannot cancel an expired subscription.", "status")
        subscription.status = "Canceled"
        return "subscription", self._subscription_xml(subscription), 200

    # ----- webhooks -----

    def _emit(self, kind: str, subject: dict[str, Any]) -> None:
        self._outbox.put(webhook_form(kind, subject, self.private_key))

    def _deliver_forever(self) -> None:
        # One at a time, in order, each retried until the endpoint answers 2xx.
        with httpx.Client(timeout=10) as client:
            while True:
                form = self._outbox.get()
                if form is None:
                    return
                for attempt in range(WEBHOOK_ATTEMPTS):
                    while self.webhook_url is None and not self._stopping.is_set():
                        time.sleep(0.05)
                    if self._stopping.is_set() or self.webhook_url is None:
                        return
                    try:
                        answer = client.post(self.webhook_url, content=urlencode(form), headers=FORM_HEADERS)
                        self.deliveries.append((form, answer.status_code))
                        if answer.is_success:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(min(0.1 * 2**attempt, 1.0))

    def start_worker(self) -> None:
        """Start sending webhooks."""
        self._worker.start()

    def stop_worker(self) -> None:
        """Stop sending webhooks."""
        self._stopping.set()
        self._outbox.put(None)
        self._worker.join(timeout=5)


FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


@contextmanager
def running_braintree_fake() -> Iterator[Fake]:
    """Start the fake on a free loopback port; stop it at the end."""
    fake = Fake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.url = base_url
        fake.start_worker()
        try:
            yield fake
        finally:
            fake.stop_worker()
