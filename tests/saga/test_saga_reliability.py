"""The saga rules of docs/reliability.md that need their own PGM: duplicate deliveries, a Flow Manager that is
down, a crash in the middle of a provider call, and commands that cannot succeed. The Flow Manager
here is a recording receiver, so every event the PGM sends is counted."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert

from pgm.config import normalise_database_url
from pgm.devstack.crud import create_crud_app
from pgm.store.migrator import sync_url
from pgm.store.models import InboxCommand, table_of
from tests.support.databases import fresh_database
from tests.support.notifications import STATUS_PATH, statuses_for
from tests.support.pgm_process import PgmProcess, free_port
from tests.support.saga_stack import COLLECTION, SagaStack
from tests.support.sandbox_requests import metadata
from tests.support.servers import RecordingReceiver, run_server_in_thread, wait_for

EVENT_PATH = "/event"


class Rig:
    """A PGM whose Flow Manager is a recording receiver, with the CRUD stand-in holding the sagas."""

    def __init__(self, pgm: PgmProcess, flow_manager: RecordingReceiver, crud_url: str) -> None:
        self.pgm = pgm
        self.flow_manager = flow_manager
        self.sagas = SagaStack(pgm, "http://unused", crud_url)

    def new_saga(self, state: str = "PAYMENT_SCHEDULE_REQUESTED", **overrides: Any) -> tuple[str, dict[str, Any]]:
        """A saga stored in the CRUD, as the Flow Manager leaves it before sending a command."""
        saga_id = f"saga-{uuid.uuid4().hex[:12]}"
        data = metadata(**overrides)
        self.sagas.put_saga(saga_id, state, data)
        return saga_id, data

    def command(self, route: str, saga_id: str, payload: dict[str, Any], label: str = "paymentScheduled") -> int:
        """Send a command as the Flow Manager does; returns the status code."""
        body = {"key": saga_id, "value": {"messageLabel": label, "messagePayload": payload}}
        return self.pgm.post(f"/saga/{route}", body).status_code

    def events(self, saga_id: str) -> list[dict[str, Any]]:
        """Events delivered (2xx) for a saga, in arrival order."""
        return [
            request.json
            for request in self.flow_manager.requests
            if request.path == EVENT_PATH and request.status < 300 and request.json and request.json["key"] == saga_id
        ]

    def message_ids(self, saga_id: str) -> list[str]:
        """The X-Pgm-Message-Id of each event delivered (2xx) for a saga, in arrival order."""
        return [
            request.headers["x-pgm-message-id"]
            for request in self.flow_manager.requests
            if request.path == EVENT_PATH and request.status < 300 and request.json and request.json["key"] == saga_id
        ]

    def wait_events(self, saga_id: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """Block until `count` events for the saga were delivered; return them."""
        wait_for(lambda: len(self.events(saga_id)) >= count, timeout=timeout, what=f"{count} events for {saga_id}")
        return self.events(saga_id)


@contextmanager
def rigs(backend: str, directory: Path) -> Iterator[Callable[..., Rig]]:
    """Build rigs on a fresh database; the Flow Manager receiver may start later on a fixed port."""
    with ExitStack() as stack:
        url = stack.enter_context(fresh_database(backend, directory))
        crud_url, _ = stack.enter_context(run_server_in_thread(create_crud_app(str(directory / "crud.sqlite3"))))

        def build(flow_manager_port: int | None = None, start_receiver: bool = True, **env: str) -> Rig:
            receiver = RecordingReceiver()
            if start_receiver and flow_manager_port is None:
                # Listening before the PGM starts: a port only reserved by free_port() can be taken meanwhile
                # (the PGM's own outgoing connections draw local ports from the same range).
                receiver_url, _ = stack.enter_context(run_server_in_thread(receiver.app))
                port = int(receiver_url.rsplit(":", 1)[1])
                start_receiver = False
            else:
                port = flow_manager_port or free_port()
            pgm = PgmProcess(
                url,
                directory / f"pgm-{uuid.uuid4().hex[:6]}.log",
                FLOW_MANAGER_URL=f"http://127.0.0.1:{port}",
                SAGA_CRUD_URL=f"{crud_url}/{COLLECTION}",
                **env,
            )
            pgm.start()
            stack.callback(pgm.stop)
            if start_receiver:
                stack.enter_context(run_server_in_thread(receiver.app, port=port))
            return Rig(pgm, receiver, crud_url)

        yield build


@pytest.fixture
def rig_factory(backend: str, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Rigs of the test's own, for tests that stop, kill or configure the PGM."""
    with rigs(backend, tmp_path) as build:
        yield build


@pytest.fixture(scope="module")
def rig(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One rig shared by the module's tests that need nothing special (each uses its own saga)."""
    with rigs(backend, tmp_path_factory.mktemp("rig")) as build:
        yield build()


def test_same_command_twice_pays_once_and_answers_each_delivery_alike(rig: Rig) -> None:
    saga_id, data = rig.new_saga(outcome="REDIRECT_TO_URL")
    assert rig.command("pay", saga_id, data) == 202
    first = rig.wait_events(saga_id, 1)
    assert rig.command("pay", saga_id, data) == 202
    events = rig.wait_events(saga_id, 2)
    assert [e["value"]["messageLabel"] for e in events] == ["paymentScheduled", "paymentScheduled"]
    assert events[0] == events[1] == first[0]
    assert len(rig.pgm.sandbox_payments(data["shopTransactionId"])) == 1
    # The same logical event, re-sent: the same X-Pgm-Message-Id, so the receiver can drop the repeat.
    scheduled = rig.message_ids(saga_id)
    assert scheduled[0] == scheduled[1]
    # The payer approves: a new event, a new id.
    payment = rig.pgm.sandbox_payments(data["shopTransactionId"])[0]
    rig.pgm.decide(f"{rig.pgm.url}/sandbox/checkout/{payment['paymentId']}", "approve")
    executed = rig.wait_events(saga_id, 3)[2]
    assert executed["value"]["messageLabel"] == "paymentExecuted"
    assert rig.message_ids(saga_id)[2] not in scheduled


def test_same_command_twice_concurrently_pays_once(rig: Rig) -> None:
    saga_id, data = rig.new_saga(outcome="OK")
    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(lambda _: rig.command("pay", saga_id, data), range(4)))
    assert codes == [202] * 4
    # Each delivery gets the outcome once it is known; none of them pays again.
    events = rig.wait_events(saga_id, 1)
    assert {e["value"]["messageLabel"] for e in events} == {"paymentExecuted"}
    assert all(e == events[0] for e in rig.events(saga_id))
    assert len(rig.pgm.sandbox_payments(data["shopTransactionId"])) == 1


def test_payload_with_only_pay_request_data_reads_the_rest_from_the_crud(rig: Rig) -> None:
    saga_id, data = rig.new_saga(outcome="OK")
    assert rig.command("pay", saga_id, {"payRequestData": data["payRequestData"]}) == 202
    event = rig.wait_events(saga_id, 1)[0]
    assert event["value"]["messageLabel"] == "paymentExecuted"
    payments = rig.pgm.sandbox_payments(data["shopTransactionId"])
    assert [(p["amount"], p["currency"]) for p in payments] == [(1000, "EUR")]


def test_legacy_spellings_are_read(rig: Rig) -> None:
    saga_id, data = rig.new_saga(outcome="OK")
    data["shopTransactionID"] = data.pop("shopTransactionId")
    assert rig.command("pay", saga_id, data) == 202
    paid = rig.wait_events(saga_id, 1)[0]["value"]["messagePayload"]["paymentId"]
    refund = {"paymentID": paid, "refundRequestData": {"amount": 100}}
    refund.update({k: v for k, v in data.items() if k in ("provider", "currency")})
    assert rig.command("refund", saga_id, refund, label="refundRequested") == 202
    assert rig.wait_events(saga_id, 2)[1]["value"]["messageLabel"] == "partialRefundExecuted"
    assert len(rig.pgm.sandbox_payments(data["shopTransactionID"])) == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"provider": "nowhere"}, "provider 'nowhere' is unknown or not enabled"),
        ({"amount": None}, "no amount"),
        ({"amount": -5}, "greater than zero"),
        ({"amount": "12.50"}, "integer in minor units"),
        ({"currency": "JPY"}, "provider sandbox accepts currencies"),
        ({"currency": "euro"}, "three-letter ISO 4217"),
        ({"paymentMethod": "bitcoin"}, "does not support payment method 'bitcoin'"),
        ({"payRequestData": {"providerData": {"sandboxOutcome": "MAYBE"}}}, "sandboxOutcome must be one of"),
        # The rules of /v3 hold for sagas too (one place applies them: services/policy.py).
        (
            {"payRequestData": {"successRedirect": "javascript:alert(1)"}},
            "payRequestData.successRedirect must be an absolute http(s) URL",
        ),
        ({"payRequestData": {"failureRedirect": "data:text/html,hi"}}, "payRequestData.failureRedirect must be"),
        # What the store cannot keep is refused, on PostgreSQL as on SQLite, instead of failing its INSERT.
        ({"shopTransactionId": "x" * 300}, "shopTransactionId must be at most 255 characters"),
        ({"paymentMethod": "m" * 65}, "paymentMethod must be 1 to 64 characters"),
    ],
)
def test_pay_command_that_cannot_succeed_fails_the_saga_with_the_reason(
    rig: Rig, change: dict[str, Any], reason: str
) -> None:
    saga_id, data = rig.new_saga()
    payload = {**data, **change}
    payload = {k: v for k, v in payload.items() if v is not None}
    rig.sagas.put_saga(saga_id, "PAYMENT_SCHEDULE_REQUESTED", payload)
    assert rig.command("pay", saga_id, payload) == 202
    event = rig.wait_events(saga_id, 1)[0]
    assert event["value"]["messageLabel"] == "paymentFailed"
    assert reason in event["value"]["messagePayload"]["error"]
    assert rig.pgm.sandbox_payments(data["shopTransactionId"]) == []


def test_a_refused_command_delivered_twice_answers_with_the_same_message_id(rig: Rig) -> None:
    saga_id, data = rig.new_saga()
    payload = {**data, "currency": "JPY"}
    rig.sagas.put_saga(saga_id, "PAYMENT_SCHEDULE_REQUESTED", payload)
    assert rig.command("pay", saga_id, payload) == 202
    rig.wait_events(saga_id, 1)
    assert rig.command("pay", saga_id, payload) == 202
    events = rig.wait_events(saga_id, 2)
    assert [e["value"]["messageLabel"] for e in events] == ["paymentFailed", "paymentFailed"]
    first, second = rig.message_ids(saga_id)
    assert first == second
    # Another saga's refusal for the same reason is another event.
    other_id, other = rig.new_saga()
    other_payload = {**other, "currency": "JPY"}
    rig.sagas.put_saga(other_id, "PAYMENT_SCHEDULE_REQUESTED", other_payload)
    assert rig.command("pay", other_id, other_payload) == 202
    rig.wait_events(other_id, 1)
    assert rig.message_ids(other_id)[0] != first


def test_command_for_a_saga_missing_from_the_crud_fails_it(rig: Rig) -> None:
    assert rig.command("pay", "saga-nobody-knows", {"payRequestData": {}}) == 202
    event = rig.wait_events("saga-nobody-knows", 1)[0]
    assert event == {
        "key": "saga-nobody-knows",
        "value": {
            "messageLabel": "paymentFailed",
            "messagePayload": {"error": "saga saga-nobody-knows was not found in the CRUD"},
        },
    }


def test_refund_command_that_cannot_succeed_fails_the_refund(rig: Rig) -> None:
    saga_id, data = rig.new_saga(outcome="OK")
    rig.command("pay", saga_id, data)
    payment_id = rig.wait_events(saga_id, 1)[0]["value"]["messagePayload"]["paymentId"]
    refund = {**data, "paymentId": payment_id, "refundRequestData": {"amount": 0}}
    rig.command("refund", saga_id, refund, label="refundRequested")
    event = rig.wait_events(saga_id, 2)[1]["value"]
    assert event["messageLabel"] == "refundFailed"
    assert "greater than zero" in event["messagePayload"]["error"]
    assert event["messagePayload"]["refundDetails"] == {"totalRefundedAmount": 0, "refundedAmounts": []}


def test_flow_manager_down_then_failing_delays_events_and_loses_none(rig_factory: Callable[..., Rig]) -> None:
    port = free_port()
    rig = rig_factory(flow_manager_port=port, start_receiver=False)
    saga_id, data = rig.new_saga(outcome="REDIRECT_TO_URL")
    assert rig.command("pay", saga_id, data) == 202
    # Connection refused while the payer approves: the outcome waits in the outbox.
    wait_for(lambda: bool(rig.pgm.sandbox_payments(data["shopTransactionId"])), what="the payment")
    payment = rig.pgm.sandbox_payments(data["shopTransactionId"])[0]
    rig.pgm.decide(f"{rig.pgm.url}/sandbox/checkout/{payment['paymentId']}", "approve")
    wait_for(
        lambda: (
            rig.pgm.get("/v3/sandbox/status", params={"paymentId": payment["paymentId"]}).json()["status"] == "ACCEPTED"
        )
    )

    receiver = rig.flow_manager
    receiver.respond(503, times=4)
    # The Flow Manager comes back on its address.
    with run_server_in_thread(receiver.app, port=port):
        events = rig.wait_events(saga_id, 2, timeout=20)
    assert [e["value"]["messageLabel"] for e in events] == ["paymentScheduled", "paymentExecuted"]
    assert [r.status for r in receiver.requests][:4] == [503, 503, 503, 503]


def test_flow_manager_answering_slowly_does_not_lose_events(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    rig.flow_manager.respond(200, delay=0.5, times=1)
    saga_id, data = rig.new_saga(outcome="OK")
    rig.command("pay", saga_id, data)
    assert rig.wait_events(saga_id, 1)[0]["value"]["messageLabel"] == "paymentExecuted"


def test_a_hanging_receiver_delays_its_own_messages_only(rig_factory: Callable[..., Rig]) -> None:
    release = threading.Event()
    statuses = RecordingReceiver()
    statuses.respond(200, hold=release)
    with run_server_in_thread(statuses.app) as (url, _):
        try:
            rig = rig_factory(PAYMENT_CALLBACK_URL=f"{url}{STATUS_PATH}")
            shops = []
            for count in (1, 2, 3):
                saga_id, data = rig.new_saga(outcome="OK")
                shops.append(data["shopTransactionId"])
                assert rig.command("pay", saga_id, data) == 202
                # Every PaymentStatus receiver call hangs (for up to the 10 s delivery time-out), yet the
                # Flow Manager gets each saga's event at once, and the next payment's notification goes out
                # beside the hanging ones (another ordering key).
                # Budgets well under that 10 s, yet not so tight that a loaded machine misses them.
                assert rig.wait_events(saga_id, 1, timeout=6)[0]["value"]["messageLabel"] == "paymentExecuted"
                statuses.wait_for_requests(count, path=STATUS_PATH, timeout=6)
            assert not release.is_set()
        finally:
            release.set()
    assert [[s["status"] for s in statuses_for(statuses, shop)] for shop in shops] == [["ACCEPTED"]] * 3


# A crashed process's commands are taken over once their lease runs out: a 2 s lease (renewed every third of
# it while a command runs) instead of the default 5 s keeps these tests short; the property is the same.
CRASH_ENV = {
    "PGM_PROVIDER_TIMEOUT_SECONDS": "10",
    "PGM_RECONCILE_AFTER_SECONDS": "60",
    "PGM_INBOX_LEASE_SECONDS": "2",
}


def test_crash_during_the_provider_call_completes_the_saga_with_one_payment(rig_factory: Callable[..., Rig]) -> None:
    # Reconciliation as late as by default: only the inbox lease and the take-over can make this fast.
    rig = rig_factory(**CRASH_ENV)
    saga_id, data = rig.new_saga()
    data["payRequestData"]["providerData"] = {"sandboxOutcome": "OK", "sandboxDelayMs": 900}
    rig.sagas.put_saga(saga_id, "PAYMENT_SCHEDULE_REQUESTED", data)
    assert rig.command("pay", saga_id, data) == 202
    # The sandbox has the payment and is still waiting before it answers: kill the PGM now.
    wait_for(lambda: bool(rig.pgm.sandbox_payments(data["shopTransactionId"])), what="the payment at the sandbox")
    rig.pgm.kill()
    rig.pgm.start()
    restarted = time.monotonic()  # measured from the restarted process being ready (start-up time varies with load)
    event = rig.wait_events(saga_id, 1, timeout=30)[0]
    # The dead process's lease runs out within seconds and the command's new run asks the sandbox.
    assert time.monotonic() - restarted < 10
    assert event["value"]["messageLabel"] == "paymentExecuted"
    assert len(rig.pgm.sandbox_payments(data["shopTransactionId"])) == 1


def test_crash_during_the_refund_call_completes_the_refund_within_seconds(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(**CRASH_ENV)
    saga_id, data = rig.new_saga(outcome="OK")
    assert rig.command("pay", saga_id, data) == 202
    paid = rig.wait_events(saga_id, 1)[0]["value"]["messagePayload"]["paymentId"]
    refund_data = {"amount": 300, "providerData": {"sandboxOutcome": "OK", "sandboxDelayMs": 900}}
    refund = {**data, "paymentId": paid, "refundRequestData": refund_data}
    assert rig.command("refund", saga_id, refund, label="refundRequested") == 202
    # The sandbox has the refund and is still waiting before it answers: kill the PGM now.
    wait_for(lambda: bool(rig.pgm.sandbox_payments(data["shopTransactionId"])[0]["refunds"]), what="the refund")
    rig.pgm.kill()
    rig.pgm.start()
    restarted = time.monotonic()  # measured from the restarted process being ready (start-up time varies with load)
    event = rig.wait_events(saga_id, 2, timeout=30)[1]
    assert time.monotonic() - restarted < 10
    assert event["value"]["messageLabel"] == "partialRefundExecuted"
    assert event["value"]["messagePayload"]["refundDetails"]["totalRefundedAmount"] == 300
    assert len(rig.pgm.sandbox_payments(data["shopTransactionId"])[0]["refunds"]) == 1


def test_a_delivery_interrupted_by_a_crash_goes_out_within_seconds_of_the_restart(
    rig_factory: Callable[..., Rig],
) -> None:
    release = threading.Event()
    rig = rig_factory()
    rig.flow_manager.respond(200, hold=release, times=1)
    saga_id, data = rig.new_saga(outcome="OK")
    try:
        assert rig.command("pay", saga_id, data) == 202
        # The event is being delivered (the Flow Manager holds the request) when the PGM dies.
        rig.flow_manager.wait_for_requests(1, path=EVENT_PATH, timeout=15)
        rig.pgm.kill()
    finally:
        release.set()
    rig.pgm.start()
    restarted = time.monotonic()  # measured from the restarted process being ready (start-up time varies with load)
    # The dead process's lease on the message runs out within seconds and the message goes out again.
    rig.flow_manager.wait_for_requests(2, path=EVENT_PATH, timeout=30)
    assert time.monotonic() - restarted < 10
    first, again = (r for r in rig.flow_manager.requests if r.path == EVENT_PATH)
    assert again.json == first.json
    assert again.headers["x-pgm-message-id"] == first.headers["x-pgm-message-id"]


def test_a_provider_call_longer_than_the_lease_keeps_it_with_two_replicas(rig_factory: Callable[..., Rig]) -> None:
    port = free_port()
    # A lease short enough for the test, long enough that a loaded machine still renews it in time.
    env = {"PGM_INBOX_LEASE_SECONDS": "3", "PGM_PROVIDER_TIMEOUT_SECONDS": "10", "PGM_RECONCILE_AFTER_SECONDS": "60"}
    rig = rig_factory(flow_manager_port=port, **env)
    rig_factory(flow_manager_port=port, start_receiver=False, **env)  # a second replica, claiming what it can
    saga_id, data = rig.new_saga()
    data["payRequestData"]["providerData"] = {"sandboxOutcome": "OK", "sandboxDelayMs": 7000}
    rig.sagas.put_saga(saga_id, "PAYMENT_SCHEDULE_REQUESTED", data)
    assert rig.command("pay", saga_id, data) == 202
    assert rig.wait_events(saga_id, 1, timeout=25)[0]["value"]["messageLabel"] == "paymentExecuted"

    # Over two leases long, the provider call kept its lease: no process ran the command a second time.
    # The inbox closes its row in a transaction of its own after the outcome's (saga/inbox.py), so the
    # event can reach the Flow Manager a moment before the row reads DONE.
    def commands() -> list[tuple[str, int]]:
        return [(c["status"], c["attempts"]) for c in rig.pgm.get(f"/-/sagas/{saga_id}").json()["commands"]]

    wait_for(lambda: commands()[0][0] != "PENDING", timeout=10, what="the command's row closed")
    assert commands() == [("DONE", 1)]
    assert len(rig.events(saga_id)) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": {"messageLabel": "x", "messagePayload": {}}}, "key"),
        ({"key": "s1"}, "value"),
        ({"key": 42, "value": {"messageLabel": "x", "messagePayload": {}}}, "key"),
        ({"key": "s1", "value": {"messageLabel": "x", "messagePayload": []}}, "value.messagePayload"),
        ({"key": "s1", "value": {"messagePayload": {}}}, "value.messageLabel"),
        ({"key": "s1", "value": "pay"}, "value"),
    ],
)
def test_malformed_envelope_is_refused_naming_the_field(rig: Rig, body: dict[str, Any], field: str) -> None:
    response = rig.pgm.post("/saga/pay", body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["code"] == "invalid_request"


def test_saga_api_needs_the_crud_url(start_pgm: Callable[..., PgmProcess]) -> None:
    with pytest.raises(RuntimeError, match="SAGA_CRUD_URL is required when FLOW_MANAGER_URL is set"):
        start_pgm(FLOW_MANAGER_URL="http://127.0.0.1:9")


def test_payment_the_pgm_did_not_start_settles_the_saga_that_names_it(rig: Rig) -> None:
    body = {"amount": 700, "currency": "EUR", "shopTransactionId": f"order-{uuid.uuid4().hex[:8]}"}
    payment = rig.pgm.post("/v3/sandbox/credit-cards/pay", body).json()
    saga_id, _ = rig.new_saga(state="PAYMENT_PENDING", paymentId=payment["paymentId"])
    rig.pgm.decide(payment["redirectToUrl"], "approve")
    event = rig.wait_events(saga_id, 1)[0]
    assert event["value"] == {"messageLabel": "paymentExecuted", "messagePayload": {"paymentId": payment["paymentId"]}}


def test_longest_saga_key_pays_and_refunds(rig: Rig) -> None:
    # The operation keys derived from a saga id (`saga:<id>:pay:1`) are stored in 255 characters: a long
    # id is hashed into them, so the longest key the envelope accepts still pays (PostgreSQL refused the
    # INSERT, and the command was retried for ever without an event).
    saga_id = "s" * 245 + uuid.uuid4().hex[:10]
    data = metadata(outcome="OK")
    rig.sagas.put_saga(saga_id, "PAYMENT_SCHEDULE_REQUESTED", data)
    assert rig.command("pay", saga_id, data) == 202
    paid = rig.wait_events(saga_id, 1)[0]["value"]
    assert paid["messageLabel"] == "paymentExecuted", paid
    refund = {**data, "paymentId": paid["messagePayload"]["paymentId"], "refundRequestData": {"amount": 400}}
    assert rig.command("refund", saga_id, refund, label="refundRequested") == 202
    assert rig.wait_events(saga_id, 2)[1]["value"]["messageLabel"] == "partialRefundExecuted"


def test_command_that_keeps_failing_ends_in_its_failure_event(rig_factory: Callable[..., Rig]) -> None:
    # A command that fails on every attempt (here a stored row whose payload is not an object, as a
    # corrupted or foreign row would be) ends in its failure event after PGM_INBOX_MAX_ATTEMPTS attempts
    # instead of being retried every lease for ever.
    rig = rig_factory(PGM_INBOX_MAX_ATTEMPTS="2", PGM_INBOX_LEASE_SECONDS="0.5")
    saga_id = f"saga-{uuid.uuid4().hex[:12]}"
    now = time.time()
    engine = create_engine(sync_url(normalise_database_url(rig.pgm.env["PGM_DATABASE_URL"])))
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(table_of(InboxCommand)).values(
                    delivery_id=uuid.uuid4().hex,
                    saga_id=saga_id,
                    route="pay",
                    label="paymentScheduled",
                    payload=["not", "an", "object"],
                    status="PENDING",
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        engine.dispose()
    event = rig.wait_events(saga_id, 1, timeout=30)[0]["value"]
    assert event["messageLabel"] == "paymentFailed"
    assert event["messagePayload"]["error"].startswith("gave up after 2 attempts: "), event
