"""The two front doors take the same decisions (services/policy.py, docs/api.md#limits-and-identifiers): each
rule is tried through `/v3` and through a saga command on one PGM, and both refuse, `/v3` with the status and
code of docs/api.md, the saga with its failure event saying the same thing (the field named as the saga
names it). Where `/v3`'s schema refuses first (types and limits it declares), both refuse naming the field."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pgm.devstack.crud import create_crud_app
from tests.support.databases import fresh_database
from tests.support.pgm_process import PgmProcess
from tests.support.saga_stack import COLLECTION, SagaStack
from tests.support.sandbox_requests import metadata, pay_body
from tests.support.servers import RecordingReceiver, run_server_in_thread, wait_for

EVENT_PATH = "/event"


class Doors:
    """One PGM, its `/v3` API and its saga API, with a recording Flow Manager and the CRUD stand-in."""

    def __init__(self, pgm: PgmProcess, flow_manager: RecordingReceiver, crud_url: str) -> None:
        self.pgm = pgm
        self.flow_manager = flow_manager
        self.sagas = SagaStack(pgm, "http://unused", crud_url)

    def v3_error(self, response: httpx.Response, status: int, code: str, field: str | None = None) -> str:
        """The error's message, once the answer is the error shape with this status, code and field."""
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        assert (body["statusCode"], body["code"], body.get("field")) == (status, code, field), body
        return str(body["message"])

    def saga_refusal(self, route: str, data: dict[str, Any], label: str = "paymentFailed") -> str:
        """Send the saga's command with `data` (also stored in the CRUD); the `error` of its failure event."""
        saga_id = f"saga-{uuid.uuid4().hex[:12]}"
        self.sagas.put_saga(saga_id, "PAYMENT_SCHEDULE_REQUESTED", data)
        events = self.command(route, saga_id, data, 1)
        labels = [event["messageLabel"] for event in events]
        assert labels == [label], events
        return str(events[0]["messagePayload"]["error"])

    def command(self, route: str, saga_id: str, data: dict[str, Any], events: int) -> list[dict[str, Any]]:
        """Send a command as the Flow Manager does; the saga's events once `events` of them arrived."""
        body = {"key": saga_id, "value": {"messageLabel": "paymentScheduled", "messagePayload": data}}
        assert self.pgm.post(f"/saga/{route}", body).status_code == 202
        wait_for(lambda: len(self.events(saga_id)) >= events, timeout=15, what=f"{events} events for {saga_id}")
        return self.events(saga_id)

    def events(self, saga_id: str) -> list[dict[str, Any]]:
        """The saga's events delivered so far, in order."""
        return [
            request.json["value"]
            for request in self.flow_manager.requests
            if request.path == EVENT_PATH and request.status < 300 and request.json and request.json["key"] == saga_id
        ]


@pytest.fixture(scope="module")
def doors(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    """The sandbox, which offers every operation, and Soisy, which offers pay and status only (never called
    here: every request is refused before a provider is)."""
    directory = tmp_path_factory.mktemp("doors")
    receiver = RecordingReceiver()
    with (
        fresh_database(backend, directory) as url,
        run_server_in_thread(create_crud_app(str(directory / "crud.sqlite3"))) as (crud_url, _),
        run_server_in_thread(receiver.app) as (flow_manager_url, _),
    ):
        pgm = PgmProcess(
            url,
            directory / "pgm.log",
            ENABLED_PROVIDERS="sandbox,soisy",
            SOISY_BASE_URL="http://127.0.0.1:9",
            SOISY_SHOP_ID="shop",
            SOISY_PARTNER_KEY="key",
            FLOW_MANAGER_URL=flow_manager_url,
            SAGA_CRUD_URL=f"{crud_url}/{COLLECTION}",
        )
        pgm.start()
        try:
            yield Doors(pgm, receiver, crud_url)
        finally:
            pgm.stop()


def test_an_unknown_provider(doors: Doors, shop_id: str) -> None:
    v3 = doors.v3_error(doors.pgm.post("/v3/nowhere/credit-cards/pay", pay_body(shop_id)), 404, "provider_not_found")
    assert v3 == "provider 'nowhere' is unknown or not enabled (enabled: sandbox, soisy)"
    assert doors.saga_refusal("pay", metadata(provider="nowhere")) == v3


def test_an_operation_the_provider_does_not_offer(doors: Doors, shop_id: str) -> None:
    body = {**pay_body(shop_id), "subscriptionInfo": {"interval": "MONTH"}}
    v3 = doors.v3_error(doors.pgm.post("/v3/soisy/soisy/subscription/schedule", body), 501, "not_supported")
    assert v3 == "provider soisy does not support subscription/schedule"
    saga = metadata(provider="soisy", paymentMethod="soisy")
    saga["payRequestData"]["subscriptionInfo"] = {"interval": "MONTH"}
    assert doors.saga_refusal("subscription/schedule", saga) == v3


def test_a_payment_method_the_provider_does_not_offer(doors: Doors, shop_id: str) -> None:
    v3 = doors.v3_error(doors.pgm.post("/v3/sandbox/bitcoin/pay", pay_body(shop_id)), 501, "not_supported")
    assert v3.startswith("provider sandbox does not support payment method 'bitcoin' for pay (supported: ")
    assert doors.saga_refusal("pay", metadata(paymentMethod="bitcoin")) == v3


def test_a_currency_the_provider_does_not_take(doors: Doors, shop_id: str) -> None:
    response = doors.pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, currency="JPY"))
    v3 = doors.v3_error(response, 400, "invalid_request", "currency")
    assert v3 == "provider sandbox accepts currencies CHF, EUR, GBP, USD"
    assert doors.saga_refusal("pay", metadata(currency="JPY")) == v3


def test_an_amount_that_is_not_positive(doors: Doors, shop_id: str) -> None:
    response = doors.pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, amount=0))
    assert "greater than 0" in doors.v3_error(response, 400, "invalid_request", "amount")
    assert "greater than zero" in doors.saga_refusal("pay", metadata(amount=0))


def test_a_redirect_url_that_is_not_http(doors: Doors, shop_id: str) -> None:
    response = doors.pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, successRedirectUrl="javascript:1"))
    v3 = doors.v3_error(response, 400, "invalid_request", "successRedirectUrl")
    assert v3.endswith("must be an absolute http(s) URL")
    saga = metadata()
    saga["payRequestData"]["successRedirect"] = "javascript:1"
    assert doors.saga_refusal("pay", saga) == "payRequestData.successRedirect must be an absolute http(s) URL"


@pytest.mark.parametrize(
    ("action", "terms", "field", "v3_message"),
    [
        ("schedule", {"intervalCount": 2}, "interval", "subscriptionInfo.interval is required"),
        ("start", {}, "interval", "subscriptionInfo.interval is required"),
        ("pay", {}, "token", "subscriptionInfo.token is required"),
        ("schedule", {"interval": "MONTH", "intervalCount": 0}, "intervalCount", None),
        ("schedule", {"interval": "MONTH", "intervalCount": 1001}, "intervalCount", None),
        ("start", {"interval": "MONTH", "expiresAfter": 1001}, "expiresAfter", None),
    ],
)
def test_subscription_terms(
    doors: Doors, shop_id: str, action: str, terms: dict[str, Any], field: str, v3_message: str | None
) -> None:
    body = {**pay_body(shop_id), "subscriptionInfo": terms}
    response = doors.pgm.post(f"/v3/sandbox/credit-cards/subscription/{action}", body)
    v3 = doors.v3_error(response, 400, "invalid_request", f"subscriptionInfo.{field}")
    saga = metadata()
    saga["payRequestData"]["subscriptionInfo"] = terms
    refusal = doors.saga_refusal(f"subscription/{action}", saga)
    if v3_message is not None:
        # The policy's own rule: the same message, the field named as the saga names it.
        assert v3 == v3_message
        assert refusal == f"payRequestData.{v3_message}"
    else:
        # A limit /v3's schema declares (its message is pydantic's): the saga is refused by the same limit.
        assert v3.startswith(f"subscriptionInfo.{field}: ")
        assert refusal.startswith(f"payRequestData.subscriptionInfo.{field} must be ")
        assert "from 1 to 1000" in refusal


def test_a_request_that_differs_under_the_same_key(doors: Doors, shop_id: str) -> None:
    headers = {"Idempotency-Key": f"key-{shop_id}"}
    assert doors.pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK"), headers=headers).status_code == 200
    response = doors.pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK", amount=5), headers=headers)
    v3 = doors.v3_error(response, 409, "idempotency_conflict")
    assert v3 == "this Idempotency-Key was used for a different request"
    # A saga's key is its own id: a delivery whose data changed gets the first outcome again, and pays nothing.
    saga_id = f"saga-{uuid.uuid4().hex[:12]}"
    data = metadata("OK")
    doors.sagas.put_saga(saga_id, "PAYMENT_SCHEDULE_REQUESTED", data)
    first = doors.command("pay", saga_id, data, 1)
    again = doors.command("pay", saga_id, {**data, "amount": 5}, 2)
    assert [event["messageLabel"] for event in again] == ["paymentExecuted", "paymentExecuted"]
    assert again[1] == first[0]
    assert len(doors.pgm.sandbox_payments(data["shopTransactionId"])) == 1
