"""A stateful fake of Nexi XPay's API-key REST API ("phoenix", `/api/phoenix-0.0/psp/api/v1`), written
from developer.nexigroup.com (XPay Payment APIs v1):

* Authentication: every call needs `X-Api-Key` (the terminal's API key) and a `Correlation-Id` that is a
  UUID v4; a wrong key answers 401, a missing or malformed Correlation-Id 400, both with Nexi's error
  body `{"errors": [{"code", "description"}]}`.
* Orders: `POST /orders/hpp` (order{orderId ≤ 27 characters, amount as a string of minor units,
  currency}, paymentSession{actionType PAY, amount, language, resultUrl, cancelUrl, notificationUrl,
  recurrence?}) answers `{hostedPage, securityToken}`; an orderId already used is refused. `GET
  /orders/{orderId}` answers `{orderStatus: {order, authorizedAmount, capturedAmount, lastOperationType,
  lastOperationTime}, operations: [...]}`; before the payer acts an order has no operation.
* Post-operations with a mandatory `Idempotency-Key` (a repeated key answers what the first call did):
  `POST /operations/{operationId}/refunds {amount, currency}` on a captured payment, partial allowed up
  to what is left; `POST /operations/{operationId}/cancels` on an authorization not yet captured.
* Recurring: a hosted order whose `recurrence.action` is CONTRACT_CREATION creates the contract once
  the payer pays; `POST /orders/mit {order, contractId, captureType}` charges it and answers
  `{operation}` at once.
* Notifications: a POST of `{eventId, eventTime, securityToken, operation}` to the order's
  notificationUrl for every operation, retried while the answer is not 2xx.

Test API (the shape of the other provider fakes): `running_nexi_fake()`, `env()`, `webhook_url`,
`approve` (the payer pays on the hosted page), `decline`, `cancel` (the payer gives up on the page),
`three_ds` (3-D Secure validated, authorization still to come), `fail_three_ds`, `payments(reference)`,
`order(order_id)`, `contracts`, `decline_next_mit`, `requests`, `notifications` (what was sent),
`resend(notification)`, and the fault switches `fail_next`, `delay_next`, `malformed_next`.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
import uuid
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

API = "/api/phoenix-0.0/psp/api/v1"
_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,27}$")
_LANGUAGE = re.compile(r"^[a-z]{3}$")


def _error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse({"errors": [{"code": code, "description": description}]}, status_code=status)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_uuid4(value: str) -> bool:
    try:
        return uuid.UUID(value).version == 4
    except ValueError:
        return False


class NexiFake:
    """The fake's state and its test API; `app` is the ASGI application serving the API."""

    def __init__(self) -> None:
        self.api_key = "fake-nexi-" + secrets.token_hex(16)
        self.base_url = ""
        self.webhook_url: str | None = None
        self.callback_retry_delays: tuple[float, ...] = (0.2, 0.4, 0.8)
        self.requests: list[RecordedCall] = []
        self.notifications: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.contracts: dict[str, dict[str, Any]] = {}
        self._orders: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._decline_next_mit = False
        self._faults = MethodFaults()
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route(f"{API}/orders/hpp", self._create_hpp, methods=["POST"]),
                Route(f"{API}/orders/mit", self._create_mit, methods=["POST"]),
                Route(f"{API}/orders/{{order_id}}", self._get_order, methods=["GET"]),
                Route(f"{API}/operations/{{operation_id}}/refunds", self._refund, methods=["POST"]),
                Route(f"{API}/operations/{{operation_id}}/cancels", self._cancel, methods=["POST"]),
            ]
        )

    # ---- test API -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The PGM's NEXI_* variables for this fake (the callback URL defaults to the PGM's own)."""
        return {"NEXI_BASE_URL": f"{self.base_url}{API}", "NEXI_API_KEY": self.api_key}

    def create_paid_order(self, shop_transaction_id: str, amount: int, order_id: str | None = None) -> str:
        """An order paid long ago on the hosted page through another PGM (its own order id); its id."""
        with self._lock:
            order_id = order_id or "MIA-" + secrets.token_hex(8)
            order: dict[str, Any] = {
                "order": {
                    "orderId": order_id,
                    "amount": str(amount),
                    "currency": "EUR",
                    "description": f"Order {shop_transaction_id}",
                    "customField": shop_transaction_id,
                },
                "operations": [],
                "_securityToken": secrets.token_hex(16),
                "_notificationUrl": None,
                "_contract": None,
                "_captureType": "IMPLICIT",
            }
            self._orders[order_id] = order
            self._operation(order, "AUTHORIZATION", "EXECUTED", str(amount))
            return order_id

    def refund_directly(self, order_id: str, amount: int) -> None:
        """A refund made in Nexi's back office, outside any PGM (no notification)."""
        with self._lock:
            self._operation(self._orders[order_id], "REFUND", "EXECUTED", str(amount))

    def approve(self, order_id: str) -> None:
        """The payer pays on the hosted page: EXECUTED (captured at once), or AUTHORIZED for EXPLICIT capture."""
        with self._lock:
            order = self._orders[order_id]
            result = "AUTHORIZED" if order["_captureType"] == "EXPLICIT" else "EXECUTED"
        self._payer_result(order_id, result)

    def decline(self, order_id: str) -> None:
        """The card issuer declines the payment made on the hosted page."""
        self._payer_result(order_id, "DECLINED")

    def cancel(self, order_id: str) -> None:
        """The payer gives up on the hosted page (its cancel button)."""
        self._payer_result(order_id, "CANCELED")

    def three_ds(self, order_id: str) -> None:
        """3-D Secure is validated; the authorization itself comes later (approve or decline)."""
        self._payer_result(order_id, "THREEDS_VALIDATED")

    def fail_three_ds(self, order_id: str) -> None:
        """The payer fails the 3-D Secure challenge."""
        self._payer_result(order_id, "THREEDS_FAILED")

    def security_token(self, order_id: str) -> str:
        """The securityToken Nexi gave the merchant for this order (its notifications carry it)."""
        with self._lock:
            return str(self._orders[order_id]["_securityToken"])

    def decline_next_mit(self) -> None:
        """The next merchant-initiated charge is declined by the issuer."""
        with self._lock:
            self._decline_next_mit = True

    def order(self, order_id: str) -> dict[str, Any]:
        """One order as `GET /orders/{orderId}` shows it."""
        with self._lock:
            return self._snapshot(self._orders[order_id])

    def payments(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """The orders made for a merchant reference, each with `refunds` (its refund and cancel operations)."""
        with self._lock:
            found = []
            for order in self._orders.values():
                if order["order"].get("customField") == shop_transaction_id:
                    refunds = [op for op in order["operations"] if op["operationType"] in ("REFUND", "VOID")]
                    found.append({**self._snapshot(order), "refunds": [dict(op) for op in refunds]})
            return found

    def resend(self, notification: dict[str, Any]) -> int:
        """Deliver a notification sent before once more, now; the PGM's answer status."""
        return httpx.post(self._target(notification["_url"]), json=notification["body"], timeout=10).status_code

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

    def _payer_result(self, order_id: str, result: str) -> None:
        with self._lock:
            order = self._orders[order_id]
            payment = next((op for op in order["operations"] if op["operationType"] == "AUTHORIZATION"), None)
            if payment is not None and payment["operationResult"] != "THREEDS_VALIDATED":
                raise ValueError(f"order {order_id} was already paid or refused ({payment['operationResult']})")
            if payment is None:
                payment = self._operation(order, "AUTHORIZATION", result, order["order"]["amount"])
                payment["channel"] = "ECOMMERCE"
                payment["paymentMethod"] = "CARD"
                payment["paymentCircuit"] = "VISA"
            else:
                payment["operationResult"] = result
                payment["operationTime"] = _now()
            contract = order["_contract"]
            if contract is not None and result in ("EXECUTED", "AUTHORIZED"):
                self.contracts[contract["contractId"]] = {**contract, "status": "ACTIVE"}
            snapshot = dict(payment)
        self._notify(order_id, snapshot)

    def _operation(self, order: dict[str, Any], kind: str, result: str, amount: str) -> dict[str, Any]:
        operation = {
            "orderId": order["order"]["orderId"],
            "operationId": str(uuid.uuid4().int)[:18],
            "operationType": kind,
            "operationResult": result,
            "operationTime": _now(),
            "operationAmount": amount,
            "operationCurrency": order["order"]["currency"],
        }
        order["operations"].append(operation)
        return operation

    def _snapshot(self, order: dict[str, Any]) -> dict[str, Any]:
        operations = [dict(op) for op in order["operations"]]
        paid = [op for op in operations if op["operationType"] == "AUTHORIZATION"]
        authorized = (
            paid[0]["operationAmount"] if paid and paid[0]["operationResult"] in ("AUTHORIZED", "EXECUTED") else "0"
        )
        captured = authorized if paid and paid[0]["operationResult"] == "EXECUTED" else "0"
        return {
            "orderStatus": {
                "order": dict(order["order"]),
                "authorizedAmount": authorized,
                "capturedAmount": captured,
                "lastOperationType": operations[-1]["operationType"] if operations else None,
                "lastOperationTime": operations[-1]["operationTime"] if operations else None,
            },
            "operations": operations,
        }

    def _notify(self, order_id: str, operation: dict[str, Any]) -> None:
        with self._lock:
            order = self._orders[order_id]
            url = order["_notificationUrl"]
            if not url:
                return
            notification = {
                "body": {
                    "eventId": str(uuid.uuid4()),
                    "eventTime": _now(),
                    "securityToken": order["_securityToken"],
                    "operation": operation,
                },
                "_url": url,
            }
            self.notifications.append(notification)
        if self.webhook_url is None:
            return
        threading.Thread(target=self._deliver, args=(notification,), daemon=True).start()

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
                    self._target(notification["_url"]), json=notification["body"], timeout=10
                ).status_code
            except httpx.HTTPError:
                status = None
            self.deliveries.append({"eventId": notification["body"]["eventId"], "status": status})
            if status is not None and 200 <= status < 300:
                return

    async def _enter(self, request: Request) -> tuple[bytes, Response | None, float, bool]:
        """Authenticate, record, and take this request's fault: (body, early answer, delay, malformed)."""
        body = await request.body()
        if not secrets.compare_digest(request.headers.get("x-api-key", ""), self.api_key):
            return body, _error(401, "GW0001", "Unauthorized: invalid API key"), 0.0, False
        if not _is_uuid4(request.headers.get("correlation-id", "")):
            return body, _error(400, "GW0002", "Correlation-Id must be a UUID v4"), 0.0, False
        with self._lock:
            self.requests.append(RecordedCall(request.method, request.url.path, dict(request.headers), body))
            code = self._faults.take(self._faults.fail, request.method)
            if code is not None:
                return body, _error(code, "GW0500", "Internal Server Error" if code >= 500 else "Failed"), 0.0, False
            delay = self._faults.take(self._faults.delay, request.method) or 0.0
            malformed = bool(self._faults.take(self._faults.malformed, request.method))
        if request.method == "POST" and request.headers.get("content-type", "").split(";")[0] != "application/json":
            return body, _error(400, "PS0001", "Content-Type must be application/json"), 0.0, False
        return body, None, delay, malformed

    async def _finish(self, response: Response, delay: float, malformed: bool) -> Response:
        if delay:
            await asyncio.sleep(delay)
        if malformed:
            return Response(b"<html><body>502 Bad Gateway</body>", status_code=200, media_type="text/html")
        return response

    async def _post(self, request: Request, handler: Any, idempotency_required: bool) -> Response:
        body, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        key = request.headers.get("idempotency-key")
        if idempotency_required and not key:
            return _error(400, "PS0002", "Idempotency-Key is required")
        with self._lock:
            if key and (request.url.path, key) in self._idempotent:
                status, content = self._idempotent[(request.url.path, key)]
                replay = Response(content, status_code=status, media_type="application/json")
                return await self._finish(replay, delay, malformed)
            try:
                document = json.loads(body) if body else {}
            except ValueError:
                document = None
            if not isinstance(document, dict):
                response: Response = _error(400, "PS0001", "the body must be a JSON object")
            else:
                response = handler(document, request.path_params)
            if key and response.status_code < 500:
                self._idempotent[(request.url.path, key)] = (response.status_code, bytes(response.body))
        return await self._finish(response, delay, malformed)

    async def _create_hpp(self, request: Request) -> Response:
        return await self._post(request, self._new_hpp, idempotency_required=False)

    async def _create_mit(self, request: Request) -> Response:
        return await self._post(request, self._new_mit, idempotency_required=True)

    async def _refund(self, request: Request) -> Response:
        return await self._post(request, self._new_refund, idempotency_required=True)

    async def _cancel(self, request: Request) -> Response:
        return await self._post(request, self._new_cancel, idempotency_required=True)

    def _order_problem(self, order: object) -> str | None:
        if not isinstance(order, dict):
            return "order is required"
        order_id = order.get("orderId")
        if not isinstance(order_id, str) or not _ORDER_ID.match(order_id):
            return "order.orderId must be 1-27 characters of letters, digits, - and _"
        if order_id in self._orders:
            return f"order {order_id} already exists"
        amount = order.get("amount")
        if not isinstance(amount, str) or not amount.isdigit() or int(amount) <= 0:
            return "order.amount must be a string of minor units"
        if order.get("currency") != "EUR":
            return "order.currency is not enabled for this terminal"
        for name, limit in (("description", 255), ("customField", 255)):
            value = order.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                return f"order.{name} must be a string of at most {limit} characters"
        return None

    def _new_hpp(self, document: dict[str, Any], _params: dict[str, Any]) -> Response:
        order = document.get("order")
        problem = self._order_problem(order)
        if problem:
            return _error(400, "PS0003", problem)
        assert isinstance(order, dict)
        session = document.get("paymentSession")
        if not isinstance(session, dict) or session.get("actionType") != "PAY":
            return _error(400, "PS0004", "paymentSession.actionType must be PAY")
        if session.get("amount") != order["amount"]:
            return _error(400, "PS0004", "paymentSession.amount must equal order.amount")
        if not isinstance(session.get("language"), str) or not _LANGUAGE.match(session["language"]):
            return _error(400, "PS0004", "paymentSession.language must be an ISO 639-2 code")
        for name in ("resultUrl", "cancelUrl", "notificationUrl"):
            value = session.get(name)
            if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                return _error(400, "PS0004", f"paymentSession.{name} must be a URL")
        contract: dict[str, Any] | None = None
        recurrence = session.get("recurrence")
        if recurrence is not None:
            if not isinstance(recurrence, dict) or recurrence.get("action") != "CONTRACT_CREATION":
                return _error(400, "PS0005", "recurrence.action must be CONTRACT_CREATION")
            if recurrence.get("contractType") not in ("MIT_SCHEDULED", "MIT_UNSCHEDULED", "CIT"):
                return _error(400, "PS0005", "recurrence.contractType is not valid")
            contract_id = recurrence.get("contractId")
            if not isinstance(contract_id, str) or not contract_id or contract_id in self.contracts:
                return _error(400, "PS0005", "recurrence.contractId is missing or already used")
            contract = {"contractId": contract_id, "contractType": recurrence["contractType"]}
        token = secrets.token_hex(16)
        self._orders[order["orderId"]] = {
            "order": {
                key: order[key]
                for key in order
                if key in ("orderId", "amount", "currency", "description", "customField", "customerId")
            },
            "operations": [],
            "_securityToken": token,
            "_notificationUrl": session["notificationUrl"],
            "_contract": contract,
            "_captureType": str(session.get("captureType") or "IMPLICIT"),
        }
        hosted = f"{self.base_url}/hpp/{order['orderId']}?language={session['language']}"
        return JSONResponse({"hostedPage": hosted, "securityToken": token})

    def _new_mit(self, document: dict[str, Any], _params: dict[str, Any]) -> Response:
        order = document.get("order")
        problem = self._order_problem(order)
        if problem:
            return _error(400, "PS0003", problem)
        assert isinstance(order, dict)
        contract = self.contracts.get(str(document.get("contractId")))
        if contract is None or contract.get("status") != "ACTIVE":
            return _error(400, "PS0006", "contractId is not an active contract of this merchant")
        stored: dict[str, Any] = {
            "order": {
                key: order[key]
                for key in order
                if key in ("orderId", "amount", "currency", "description", "customField", "customerId")
            },
            "operations": [],
            "_securityToken": secrets.token_hex(16),
            "_notificationUrl": None,
            "_contract": None,
            "_captureType": str(document.get("captureType") or "IMPLICIT"),
        }
        self._orders[order["orderId"]] = stored
        result = "DECLINED" if self._decline_next_mit else "EXECUTED"
        self._decline_next_mit = False
        operation = self._operation(stored, "AUTHORIZATION", result, order["amount"])
        operation["channel"] = "MIT"
        return JSONResponse({"operation": dict(operation)})

    def _paid_operation(self, operation_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        for order in self._orders.values():
            for operation in order["operations"]:
                if operation["operationId"] == operation_id and operation["operationType"] == "AUTHORIZATION":
                    return order, operation
        return None

    def _new_refund(self, document: dict[str, Any], params: dict[str, Any]) -> Response:
        found = self._paid_operation(params["operation_id"])
        if found is None:
            return _error(404, "PS0404", "operation not found")
        order, paid = found
        if paid["operationResult"] != "EXECUTED":
            return _error(400, "PS0007", "only a captured operation can be refunded")
        amount = document.get("amount")
        if not isinstance(amount, str) or not amount.isdigit() or int(amount) <= 0:
            return _error(400, "PS0008", "amount must be a string of minor units")
        if document.get("currency") != order["order"]["currency"]:
            return _error(400, "PS0008", "currency differs from the order's")
        refunded = sum(
            int(op["operationAmount"])
            for op in order["operations"]
            if op["operationType"] == "REFUND" and op["operationResult"] == "EXECUTED"
        )
        if refunded + int(amount) > int(paid["operationAmount"]):
            return _error(400, "PS0009", "the amount exceeds what is left to refund")
        refund = self._operation(order, "REFUND", "EXECUTED", amount)
        answer = {"operationId": refund["operationId"], "operationTime": refund["operationTime"]}
        threading.Thread(target=self._notify, args=(order["order"]["orderId"], dict(refund)), daemon=True).start()
        return JSONResponse(answer)

    def _new_cancel(self, _document: dict[str, Any], params: dict[str, Any]) -> Response:
        found = self._paid_operation(params["operation_id"])
        if found is None:
            return _error(404, "PS0404", "operation not found")
        order, paid = found
        if paid["operationResult"] != "AUTHORIZED" or any(op["operationType"] == "VOID" for op in order["operations"]):
            return _error(400, "PS0010", "only an authorization not yet captured can be cancelled")
        void = self._operation(order, "VOID", "VOIDED", paid["operationAmount"])
        answer = {"operationId": void["operationId"], "operationTime": void["operationTime"]}
        threading.Thread(target=self._notify, args=(order["order"]["orderId"], dict(void)), daemon=True).start()
        return JSONResponse(answer)

    async def _get_order(self, request: Request) -> Response:
        _, early, delay, malformed = await self._enter(request)
        if early is not None:
            return early
        with self._lock:
            order = self._orders.get(request.path_params["order_id"])
            snapshot = self._snapshot(order) if order else None
        if snapshot is None:
            return await self._finish(_error(404, "PS0404", "order not found"), delay, malformed)
        return await self._finish(JSONResponse(snapshot), delay, malformed)


@contextmanager
def running_nexi_fake() -> Iterator[NexiFake]:
    """A Nexi fake serving on a free loopback port."""
    fake = NexiFake()
    with run_server_in_thread(fake.app) as (base_url, _stop):
        fake.base_url = base_url
        yield fake
