"""Refunds of a saga's payment that start outside the saga (the /v3 API, the provider's own refund API
reported by its callback or, when that callback never comes, found by reconciliation's refund watch): the
PGM sends `refundRequested` and then the outcome, the saga follows its money, and the refund command the
Flow Manager sends back is that same refund, never a second one.

Run with the shipped machine and with the contract's, under the deep and the shallow merge: one PGM per
database serves all four, each with its own Flow Manager stand-in (tests/support/saga_stack.py)."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pgm.devstack.inspector import create_inspector_app
from tests.support.databases import fresh_database
from tests.support.pgm_process import PgmProcess
from tests.support.saga_refunds import (
    MACHINES,
    PAID,
    PARTIALLY_REFUNDED,
    TOTALLY_REFUNDED,
    event_labels,
    reconcile_now,
    refund_commands,
    refunded,
    wait_settled,
)
from tests.support.saga_stack import SagaStack, SharedSagaPgm, shared_saga_pgm
from tests.support.servers import run_server_in_thread, wait_for

SANDBOX_API_KEY = "sk_sandbox_local"


@pytest.fixture(scope="module", params=sorted(MACHINES))
def machine(request: pytest.FixtureRequest) -> str:
    """Which payment machine the Flow Manager runs."""
    return str(request.param)


@pytest.fixture(scope="module")
def stack(shared_pgm: SharedSagaPgm, merge: str, machine: str) -> Iterator[SagaStack]:
    """A Flow Manager stand-in running `machine` with the `merge` setting, against the shared PGM."""
    with shared_pgm.stack_for(MACHINES[machine], deep_merge=merge == "deep") as running:
        yield running


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgmProcess]:
    """Another PGM process whose sandbox plays a remote provider: its webhooks go to that process, so the
    PGM under test never hears of what happens there unless it asks."""
    directory = tmp_path_factory.mktemp("bank")
    with fresh_database("sqlite", directory) as url:
        process = PgmProcess(url, directory / "bank.log").start()
        yield process
        process.stop()


@pytest.fixture(scope="module")
def unheard_pgm(backend: str, bank: PgmProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedSagaPgm]:
    """A PGM whose sandbox is `bank`'s: no webhook of that sandbox ever reaches it. The refund watch's first
    look is ten minutes away (its default): only `pgm reconcile` makes it look now."""
    directory = tmp_path_factory.mktemp("unheard")
    with (
        fresh_database(backend, directory) as url,
        shared_saga_pgm(
            url,
            directory,
            SANDBOX_BASE_URL=f"{bank.url}/sandbox",
            # The sandbox is in another process: on a loaded machine a call can outlast a one-second time-out,
            # and "no such payment" is only true once a call sent before can no longer land, so these sagas
            # wait longer for an answer and reconcile later than the test default.
            PGM_PROVIDER_TIMEOUT_SECONDS="3",
            PGM_RECONCILE_AFTER_SECONDS="4",
        ) as shared,
    ):
        yield shared


@pytest.fixture(scope="module")
def unheard_stack(unheard_pgm: SharedSagaPgm, merge: str, machine: str) -> Iterator[SagaStack]:
    """A saga stack on `unheard_pgm`, running `machine` with the `merge` setting."""
    with unheard_pgm.stack_for(MACHINES[machine], deep_merge=merge == "deep") as running:
        yield running


def paid_saga(stack: SagaStack, amount: int = 1000) -> tuple[str, dict[str, Any]]:
    """A saga whose payment was executed at once."""
    shop_transaction_id = f"order-{uuid.uuid4().hex[:10]}"
    saga_id = stack.create_saga(
        {
            "amount": amount,
            "currency": "EUR",
            "provider": "sandbox",
            "paymentMethod": "credit-cards",
            "shopTransactionId": shop_transaction_id,
            "payRequestData": {"providerData": {"sandboxOutcome": "OK"}},
        }
    )
    stack.send_event(saga_id, "scheduleRequested")
    saga = wait_settled(stack, saga_id, PAID, lambda metadata: bool(metadata.get("paymentId")))
    return saga_id, saga


def sandbox_refunds(stack: SagaStack, saga: dict[str, Any], sandbox: PgmProcess | None = None) -> list[tuple[int, str]]:
    """The refunds the sandbox's own books (the PGM's, or `sandbox`'s) hold for the saga's payment."""
    books = (sandbox or stack.pgm).sandbox_payments(saga["metadata"]["shopTransactionId"])
    assert len(books) == 1
    return [(refund["amount"], refund["status"]) for refund in books[0]["refunds"]]


def v3_refund(stack: SagaStack, payment_id: str, amount: int, outcome: str = "OK") -> dict[str, Any]:
    """A back-office refund through the /v3 API."""
    response = stack.pgm.post(
        "/v3/sandbox/refund",
        {"amount": amount, "currency": "EUR", "paymentId": payment_id, "providerData": {"sandboxOutcome": outcome}},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_v3_refunds_move_the_saga_through_refund_requested(stack: SagaStack, machine: str) -> None:
    saga_id, paid = paid_saga(stack)
    payment_id = paid["metadata"]["paymentId"]

    assert v3_refund(stack, payment_id, 400)["result"] == "OK"
    saga = wait_settled(stack, saga_id, PARTIALLY_REFUNDED, refunded(400))
    assert event_labels(stack, saga_id)[-2:] == ["refundRequested", "partialRefundExecuted"]
    # The command the Flow Manager sent on entering REFUND_REQUESTED resolved to the refund already made.
    [command] = refund_commands(stack, saga_id, 1)
    assert "started outside the saga" in command["result"]
    assert sandbox_refunds(stack, saga) == [(400, "ACCEPTED")]

    assert v3_refund(stack, payment_id, 600)["result"] == "OK"
    saga = wait_settled(stack, saga_id, TOTALLY_REFUNDED, refunded(400, 600))
    assert event_labels(stack, saga_id)[-2:] == ["refundRequested", "totalRefundExecuted"]
    refund_commands(stack, saga_id, 2)
    if machine == "contract":
        states = [entry["state"] for entry in saga["history"]["states"]]
        assert states[-4:] == [
            "REFUND_REQUESTED",
            "PARTIALLY_REFUNDED",
            "SUBSEQUENT_REFUND_REQUESTED",
            "TOTALLY_REFUNDED",
        ]
    assert sandbox_refunds(stack, saga) == [(400, "ACCEPTED"), (600, "ACCEPTED")]


def test_a_refund_made_at_the_provider_reaches_the_saga_through_its_callback(stack: SagaStack, machine: str) -> None:
    saga_id, paid = paid_saga(stack)
    payment_id = paid["metadata"]["paymentId"]

    # The provider's own refund API (its dashboard's), not the PGM: the PGM learns of it from the webhook.
    response = httpx.post(
        f"{stack.pgm.url}/sandbox/api/v1/payments/{payment_id}/refunds",
        json={"amount": 300, "outcome": "OK"},
        headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"},
    )
    assert response.status_code == 201, response.text
    saga = wait_settled(stack, saga_id, PARTIALLY_REFUNDED, refunded(300))
    assert event_labels(stack, saga_id)[-2:] == ["refundRequested", "partialRefundExecuted"]
    refund_commands(stack, saga_id, 1)
    assert sandbox_refunds(stack, saga) == [(300, "ACCEPTED")]
    if machine == "contract":
        assert saga["currentState"] == "PARTIALLY_REFUNDED"

    # A new refund asked through the saga afterwards is a new refund (the first one's id does not linger
    # in the metadata under the deep merge).
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 200}})
    saga = wait_settled(stack, saga_id, PARTIALLY_REFUNDED, refunded(300, 200))
    assert sandbox_refunds(stack, saga) == [(300, "ACCEPTED"), (200, "ACCEPTED")]


def test_the_refund_command_delivered_three_times_refunds_once(stack: SagaStack, machine: str) -> None:
    saga_id, paid = paid_saga(stack)
    refund_id = v3_refund(stack, paid["metadata"]["paymentId"], 400, outcome="PENDING")["refundId"]
    # refundPending has no transition: the saga waits in REFUND_REQUESTED, its metadata as the command carried it.
    [first] = refund_commands(stack, saga_id, 1)
    waiting = stack.saga(saga_id)
    assert waiting["metadata"]["refundRequestData"]["amount"] == 400
    command = {"key": saga_id, "value": {"messageLabel": "refundRequested", "messagePayload": waiting["metadata"]}}

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: stack.pgm.post("/saga/refund", command), range(2)))
    assert [answer.status_code for answer in answers] == [202, 202]
    commands = refund_commands(stack, saga_id, 3)
    assert {c["operationKey"] for c in commands} == {first["operationKey"]}

    stack.pgm.decide(f"{stack.pgm.url}/sandbox/refunds/{refund_id}", "approve")
    saga = wait_settled(stack, saga_id, PARTIALLY_REFUNDED, refunded(400))
    if machine == "contract":
        assert saga["currentState"] == "PARTIALLY_REFUNDED"
    assert sandbox_refunds(stack, saga) == [(400, "ACCEPTED")]
    assert event_labels(stack, saga_id)[-3:] == ["refundRequested", "refundPending", "partialRefundExecuted"]


def inspection_when(stack: SagaStack, saga_id: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """GET /-/sagas/{sagaId} once it satisfies `condition`."""
    seen: list[dict[str, Any]] = []

    def holds() -> bool:
        seen.append(stack.pgm.get(f"/-/sagas/{saga_id}").json())
        return condition(seen[-1])

    wait_for(holds, timeout=20, interval=0.1, what=f"the PGM's view of saga {saga_id}")
    return seen[-1]


def test_a_link_paid_before_notification_sent_is_kept_and_shown(stack: SagaStack, machine: str) -> None:
    saga_id = stack.create_saga(
        {
            "amount": 700,
            "currency": "EUR",
            "provider": "sandbox",
            "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
            "type": "PAY_BY_LINK",
            "payRequestData": {"providerData": {"sandboxOutcome": "REDIRECT_TO_URL"}},
        }
    )
    stack.send_event(saga_id, "linkRequested")
    created = wait_settled(stack, saga_id, 0, lambda metadata: bool(metadata.get("link")))
    # Paid before the messaging service's notificationSent: the machine does not take paymentExecuted yet.
    assert stack.pgm.decide(created["metadata"]["link"], "approve").status_code == 200

    seen = inspection_when(stack, saga_id, lambda view: view["flowManager"]["notTaken"] == ["paymentExecuted"])
    assert [(e["label"], e["takenByFlowManager"]) for e in seen["events"]] == [
        ("linkCreated", True),
        ("paymentExecuted", False),
    ]
    assert seen["payments"][0]["status"] == "ACCEPTED"
    saga = stack.saga(saga_id)
    assert seen["flowManager"]["currentState"] == saga["currentState"]
    assert saga["businessStateId"] == 0
    if machine == "contract":
        assert saga["currentState"] == "LINK_CREATED"
    assert "not taken by the Flow Manager's machine" in stack.pgm.log_tail(400)
    # The local stack's inspector says so next to the delivery.
    inspector = create_inspector_app(str(stack.flow_manager.base_url), stack.pgm.url)
    with run_server_in_thread(inspector) as (inspector_url, _):
        page = httpx.get(f"{inspector_url}/sagas/{saga_id}", params={"refresh": "0"}, timeout=10).text
    assert 'paymentExecuted<br><span class="outcome-failed not-taken">not taken by the machine' in page
    assert page.count("not taken by the machine") == 1


def test_an_outcome_found_by_reconciliation_reaches_the_waiting_saga(stack: SagaStack) -> None:
    # The sandbox faults (HTTP 500) and creates nothing: the PGM answers nothing to the saga, and only
    # reconciliation learns that the payment never existed.
    saga_id = stack.create_saga(
        {
            "amount": 900,
            "currency": "EUR",
            "provider": "sandbox",
            "paymentMethod": "credit-cards",
            "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
            "payRequestData": {"providerData": {"sandboxOutcome": "ERROR"}},
        }
    )
    stack.send_event(saga_id, "scheduleRequested")
    wait_settled(stack, saga_id, 1000, lambda metadata: "never created" in str(metadata.get("error")))
    # The Flow Manager moves the saga before the PGM records the delivery: wait for the record.
    seen = inspection_when(
        stack, saga_id, lambda view: bool(view["events"]) and view["events"][-1]["delivery"]["status"] == "DELIVERED"
    )
    assert [(e["label"], e["takenByFlowManager"]) for e in seen["events"]] == [("paymentFailed", True)]
    assert seen["payments"][0]["status"] == "FAILED"
    assert [(c["route"], c["status"]) for c in seen["commands"]] == [("pay", "DONE")]


def test_a_refund_whose_callback_never_came_is_found_by_reconciliation(
    unheard_stack: SagaStack, bank: PgmProcess, machine: str
) -> None:
    stack = unheard_stack
    saga_id, paid = paid_saga(stack)
    payment_id = paid["metadata"]["paymentId"]
    # Refunded in the provider's own API; its webhook goes to the bank, never to this PGM.
    response = httpx.post(
        f"{bank.url}/sandbox/api/v1/payments/{payment_id}/refunds",
        json={"amount": 400, "outcome": "OK"},
        headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"},
    )
    assert response.status_code == 201, response.text
    assert event_labels(stack, saga_id) == ["paymentExecuted"]

    [looked] = [row for row in reconcile_now(stack.pgm) if row["id"] == payment_id]
    assert looked["checked"] is True
    saga = wait_settled(stack, saga_id, PARTIALLY_REFUNDED, refunded(400))
    assert event_labels(stack, saga_id) == ["paymentExecuted", "refundRequested", "partialRefundExecuted"]
    [command] = refund_commands(stack, saga_id, 1)
    assert "started outside the saga" in command["result"]
    if machine == "contract":
        states = [entry["state"] for entry in saga["history"]["states"]]
        assert states[-2:] == ["REFUND_REQUESTED", "PARTIALLY_REFUNDED"]
    assert sandbox_refunds(stack, saga, bank) == [(400, "ACCEPTED")]

    # Looking again finds nothing new: the refund is recorded once.
    reconcile_now(stack.pgm)
    view = stack.pgm.get(f"/-/sagas/{saga_id}").json()
    assert [event["label"] for event in view["events"]] == [
        "paymentExecuted",
        "refundRequested",
        "partialRefundExecuted",
    ]
    assert sandbox_refunds(stack, saga, bank) == [(400, "ACCEPTED")]
