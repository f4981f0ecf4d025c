"""The Flow Manager stand-in drives sagas over real HTTP: commands out, events in, sagas stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from pgm.devstack.flow_manager import packaged_config, pgm_saga_config, point_channels_at
from tests.support.servers import RecordingReceiver, StartFlowManager, run_server_in_thread, wait_for

METADATA: dict[str, Any] = {
    "amount": 1299,
    "currency": "EUR",
    "provider": "sandbox",
    "paymentMethod": "credit-cards",
    "shopTransactionId": "order-1",
    "payRequestData": {"successRedirect": "https://shop.test/ok", "failureRedirect": "https://shop.test/ko"},
}


def send_event(client: httpx.Client, saga_id: str, label: str, payload: dict[str, Any] | None = None) -> httpx.Response:
    envelope = {"key": saga_id, "value": {"messageLabel": label, "messagePayload": payload or {}}}
    return client.post("/event", json=envelope)


def create_saga(client: httpx.Client, metadata: dict[str, Any]) -> str:
    response = client.post("/saga", json={"associatedEntityId": "order-1", "metadata": metadata})
    assert response.status_code == 200, response.text
    saga_id: str = response.json()["sagaId"]
    return saga_id


def saga(client: httpx.Client, saga_id: str) -> dict[str, Any]:
    response = client.get(f"/sagas/{saga_id}")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def settled_commands(client: httpx.Client, saga_id: str, count: int) -> list[dict[str, Any]]:
    def done() -> bool:
        commands = saga(client, saga_id)["commands"]
        return len(commands) >= count and all(c["outcome"] != "pending" for c in commands)

    wait_for(done, what=f"{count} commands of saga {saga_id} to settle")
    commands: list[dict[str, Any]] = saga(client, saga_id)["commands"]
    return commands


@pytest.fixture
def flow_manager(
    receiver: tuple[RecordingReceiver, str], start_flow_manager: StartFlowManager
) -> Iterator[httpx.Client]:
    """A Flow Manager on the packaged machine (sagas in memory) whose channels reach the recording receiver."""
    _, pgm_url = receiver
    with httpx.Client(base_url=start_flow_manager(pgm_saga_config(pgm_url)), timeout=10) as client:
        yield client


def test_saga_goes_from_created_to_executed_and_the_pgm_receives_the_pay_command(
    flow_manager: httpx.Client, receiver: tuple[RecordingReceiver, str]
) -> None:
    recorder, pgm_url = receiver
    saga_id = create_saga(flow_manager, METADATA)
    created = saga(flow_manager, saga_id)
    assert created["currentState"] == "PAYMENT_CREATED"
    assert (created["businessStateId"], created["businessStateDescription"]) == (0, "PAYMENT_CREATED")
    assert created["latestEvent"] == "paymentCreated"
    assert created["associatedEntityId"] == "order-1"
    assert created["metadata"] == METADATA

    answer = send_event(flow_manager, saga_id, "scheduleRequested")
    assert answer.status_code == 200
    assert answer.json() == {"sagaId": saga_id, "accepted": True, "currentState": "PAYMENT_SCHEDULE_REQUESTED"}
    [command] = recorder.wait_for_requests(1, path="/saga/pay")
    assert command.method == "POST"
    assert command.json == {"key": saga_id, "value": {"messageLabel": "paymentScheduled", "messagePayload": METADATA}}

    redirect = {**METADATA["payRequestData"], "redirectToUrl": "https://pay.test/p/1"}
    send_event(flow_manager, saga_id, "paymentScheduled", {"paymentId": "pay_1", "payRequestData": redirect})
    assert saga(flow_manager, saga_id)["currentState"] == "PAYMENT_PENDING"
    send_event(flow_manager, saga_id, "paymentExecuted", {"paymentId": "pay_1"})

    executed = saga(flow_manager, saga_id)
    assert executed["currentState"] == "PAYMENT_EXECUTED"
    assert (executed["businessStateId"], executed["businessStateDescription"]) == (1, "PAYMENT_PAID")
    assert executed["latestEvent"] == "paymentExecuted"
    assert executed["isFinal"] is False
    assert executed["metadata"]["paymentId"] == "pay_1"
    assert executed["metadata"]["payRequestData"]["redirectToUrl"] == "https://pay.test/p/1"
    assert [s["state"] for s in executed["history"]["states"]] == [
        "PAYMENT_CREATED",
        "PAYMENT_SCHEDULE_REQUESTED",
        "PAYMENT_PENDING",
        "PAYMENT_EXECUTED",
    ]
    events = executed["history"]["events"]
    assert [e["event"] for e in events] == [
        "paymentCreated",
        "scheduleRequested",
        "paymentScheduled",
        "paymentExecuted",
    ]
    assert events[-1]["payload"] == {"paymentId": "pay_1"}
    assert all(entry["timestamp"].endswith("Z") for entry in events)

    [record] = settled_commands(flow_manager, saga_id, 1)
    assert record["channel"] == "pgm-pay"
    assert record["url"] == f"{pgm_url}/saga/pay"
    assert record["label"] == "paymentScheduled"
    assert (record["status"], record["outcome"], record["error"]) == (200, "sent", None)
    assert len(recorder.requests) == 1


def test_refund_command_carries_the_whole_metadata_and_refund_pending_is_ignored(
    flow_manager: httpx.Client, receiver: tuple[RecordingReceiver, str]
) -> None:
    recorder, _ = receiver
    saga_id = create_saga(flow_manager, METADATA)
    send_event(flow_manager, saga_id, "paymentExecuted", {"paymentId": "pay_9"})
    send_event(flow_manager, saga_id, "refundRequested", {"refundRequestData": {"amount": 1299}})
    [command] = recorder.wait_for_requests(1, path="/saga/refund")
    payload = command.json["value"]["messagePayload"]
    assert payload == {**METADATA, "paymentId": "pay_9", "refundRequestData": {"amount": 1299}}

    details = {"totalRefundedAmount": 1299, "refundedAmounts": [1299]}
    pending = send_event(flow_manager, saga_id, "refundPending", {"refundDetails": details})
    assert pending.json()["accepted"] is False
    assert saga(flow_manager, saga_id)["currentState"] == "REFUND_REQUESTED"

    send_event(flow_manager, saga_id, "totalRefundExecuted", {"refundDetails": details})
    refunded = saga(flow_manager, saga_id)
    assert refunded["currentState"] == "TOTALLY_REFUNDED"
    assert (refunded["businessStateId"], refunded["isFinal"]) == (3, True)
    assert refunded["metadata"]["refundDetails"] == details


def test_unexpected_event_is_ignored_and_kept_visible(flow_manager: httpx.Client) -> None:
    saga_id = create_saga(flow_manager, METADATA)
    answer = send_event(flow_manager, saga_id, "paymentScheduled", {"paymentId": "pay_1"})
    assert answer.status_code == 200
    assert answer.json() == {"sagaId": saga_id, "accepted": False, "currentState": "PAYMENT_CREATED"}
    unchanged = saga(flow_manager, saga_id)
    assert unchanged["currentState"] == "PAYMENT_CREATED"
    assert "paymentId" not in unchanged["metadata"]
    assert len(unchanged["history"]["events"]) == 1
    [ignored] = unchanged["ignoredEvents"]
    assert (ignored["event"], ignored["state"], ignored["payload"]) == (
        "paymentScheduled",
        "PAYMENT_CREATED",
        {"paymentId": "pay_1"},
    )


def test_unexpected_event_is_refused_when_throw_on_unexpected_events_is_set(
    start_flow_manager: StartFlowManager,
) -> None:
    config = packaged_config()
    config["settings"]["throwOnUnexpectedEvents"] = True
    with httpx.Client(base_url=start_flow_manager(config)) as client:
        saga_id = create_saga(client, METADATA)
        answer = send_event(client, saga_id, "refundRequested")
        assert answer.status_code == 400
        assert "refundRequested" in answer.json()["message"]
        assert saga(client, saga_id)["currentState"] == "PAYMENT_CREATED"


@pytest.mark.parametrize(
    ("deep", "expected"),
    [
        (False, {"keep": True, "payRequestData": {"redirectToUrl": "u"}, "paymentId": "p"}),
        (True, {"keep": True, "payRequestData": {"successRedirect": "s", "redirectToUrl": "u"}, "paymentId": "p"}),
    ],
)
def test_event_payload_merges_into_metadata_shallow_or_deep(
    deep: bool,
    expected: dict[str, Any],
    minimal_config: dict[str, Any],
    receiver: tuple[RecordingReceiver, str],
    start_flow_manager: StartFlowManager,
) -> None:
    _, receiver_url = receiver
    config = point_channels_at(minimal_config, receiver_url)
    config["settings"]["deepMergeMetadata"] = {"enabled": deep}
    with httpx.Client(base_url=start_flow_manager(config)) as client:
        saga_id = create_saga(client, {"keep": True, "payRequestData": {"successRedirect": "s"}})
        send_event(client, saga_id, "done", {"payRequestData": {"redirectToUrl": "u"}, "paymentId": "p"})
        assert saga(client, saga_id)["metadata"] == expected


def test_sagas_persist_through_the_crud_with_system_fields(
    crud_url: str, receiver: tuple[RecordingReceiver, str], start_flow_manager: StartFlowManager
) -> None:
    _, pgm_url = receiver
    fm_url = start_flow_manager(pgm_saga_config(pgm_url), crud_url)
    with httpx.Client(base_url=fm_url) as fm, httpx.Client(base_url=crud_url) as crud:
        assert fm.get("/-/ready").status_code == 200
        saga_id = create_saga(fm, METADATA)
        send_event(fm, saga_id, "paymentExecuted", {"paymentId": "pay_7"})
        [document] = crud.get("/fm-transactions/", params={"sagaId": saga_id}).json()
        assert document["currentState"] == "PAYMENT_EXECUTED"
        assert document["metadata"]["paymentId"] == "pay_7"
        assert document["__STATE__"] == "PUBLIC"
        assert {"_id", "createdAt", "updatedAt", "creatorId", "updaterId"} <= set(document)
        assert [e["event"] for e in document["history"]["events"]] == ["paymentCreated", "paymentExecuted"]
        by_payment = crud.get("/fm-transactions/", params={"_q": '{"metadata.paymentId": "pay_7"}'}).json()
        assert [d["sagaId"] for d in by_payment] == [saga_id]
        assert saga(fm, saga_id)["_id"] == document["_id"]


def test_concurrent_events_for_one_saga_are_applied_one_at_a_time(
    crud_url: str, receiver: tuple[RecordingReceiver, str], start_flow_manager: StartFlowManager
) -> None:
    _, pgm_url = receiver
    config = pgm_saga_config(pgm_url)
    machine = {
        s["id"]: {t["inputEvent"]: t["targetState"] for t in s["outgoingTransitions"]}
        for s in config["machineDefinition"]["states"]
    }
    with httpx.Client(base_url=start_flow_manager(config, crud_url), timeout=10) as fm:
        saga_id = create_saga(fm, METADATA)
        send_event(fm, saga_id, "scheduleRequested")
        labels = ["paymentScheduled", "update", "paymentExecuted", "update", "paymentFailed", "sendNotification"]
        with ThreadPoolExecutor(max_workers=len(labels)) as pool:
            answers = list(pool.map(lambda label: send_event(fm, saga_id, label, {label: True}), labels))
        accepted = [r.json()["accepted"] for r in answers]
        final = saga(fm, saga_id)
    states = [s["state"] for s in final["history"]["states"]]
    events = [e["event"] for e in final["history"]["events"]]
    assert len(events) == 2 + sum(accepted)
    for before, event, after in zip(states[:-1], events[1:], states[1:], strict=True):
        assert machine[before][event] == after
    assert final["currentState"] == states[-1]


def test_commands_of_one_saga_leave_in_order_even_when_the_first_is_slow(
    flow_manager: httpx.Client, receiver: tuple[RecordingReceiver, str]
) -> None:
    recorder, _ = receiver
    recorder.respond(200, path="/saga/pay", delay=0.3)
    saga_id = create_saga(flow_manager, METADATA)
    send_event(flow_manager, saga_id, "scheduleRequested")
    send_event(flow_manager, saga_id, "paymentExecuted", {"paymentId": "pay_1"})
    send_event(flow_manager, saga_id, "refundRequested", {"refundRequestData": {"amount": 100}})
    pay, refund = recorder.wait_for_requests(2)
    assert (pay.path, refund.path) == ("/saga/pay", "/saga/refund")
    assert refund.received_at - pay.received_at >= 0.3


def test_failed_command_is_recorded_and_not_retried(
    minimal_config: dict[str, Any], receiver: tuple[RecordingReceiver, str], start_flow_manager: StartFlowManager
) -> None:
    recorder, receiver_url = receiver
    recorder.respond(503)
    with httpx.Client(base_url=start_flow_manager(point_channels_at(minimal_config, receiver_url))) as client:
        saga_id = create_saga(client, {"amount": 1})
        [record] = settled_commands(client, saga_id, 1)
    assert (record["status"], record["outcome"]) == (503, "failed")
    assert record["error"].startswith("HTTP 503")
    assert [r.path for r in recorder.requests] == ["/cmd"]
    assert recorder.requests[0].json == {
        "key": saga_id,
        "value": {"messageLabel": "doIt", "messagePayload": {"amount": 1}},
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(envelope: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = envelope
        for part in parents:
            target = target[part]
        target[leaf] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(envelope: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = envelope
        for part in parents:
            target = target[part]
        del target[leaf]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        pytest.param(_set("extra", 1), "extra", id="extra-top-level-key"),
        pytest.param(_set("value.sagaId", "s"), "value.sagaId", id="extra-value-key"),
        pytest.param(_drop("value.messagePayload"), "value.messagePayload", id="no-payload"),
        pytest.param(_drop("value"), "value", id="no-value"),
        pytest.param(_set("key", 5), "key", id="key-not-a-string"),
        pytest.param(_set("value.messagePayload", [1]), "value.messagePayload", id="payload-not-an-object"),
        pytest.param(_set("value.messageLabel", None), "value.messageLabel", id="label-not-a-string"),
    ],
)
def test_malformed_event_is_refused_with_400_naming_the_field(
    flow_manager: httpx.Client, mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    saga_id = create_saga(flow_manager, METADATA)
    envelope: dict[str, Any] = {"key": saga_id, "value": {"messageLabel": "scheduleRequested", "messagePayload": {}}}
    mutate(envelope)
    response = flow_manager.post("/event", json=envelope)
    assert response.status_code == 400
    assert field in response.json()["message"]
    assert saga(flow_manager, saga_id)["currentState"] == "PAYMENT_CREATED"


def test_event_that_is_not_json_is_refused_with_400(flow_manager: httpx.Client) -> None:
    response = flow_manager.post("/event", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_saga_creation_refuses_unknown_keys(flow_manager: httpx.Client) -> None:
    response = flow_manager.post("/saga", json={"associatedEntityId": "o", "metadata": {}, "sagaId": "mine"})
    assert response.status_code == 400
    assert "sagaId" in response.json()["message"]


def test_event_for_an_unknown_saga_answers_404(flow_manager: httpx.Client) -> None:
    assert send_event(flow_manager, "no-such-saga", "scheduleRequested").status_code == 404
    assert flow_manager.get("/sagas/no-such-saga").status_code == 404


def test_machine_definition_and_probes_are_served(flow_manager: httpx.Client) -> None:
    assert flow_manager.get("/machine-definition").json() == packaged_config()["machineDefinition"]
    assert flow_manager.get("/-/healthz").status_code == 200
    assert flow_manager.get("/-/ready").status_code == 200
    saga_id = create_saga(flow_manager, METADATA)
    assert [s["sagaId"] for s in flow_manager.get("/sagas").json()] == [saga_id]


def test_unreachable_crud_makes_the_flow_manager_unready_and_answer_503(
    receiver: tuple[RecordingReceiver, str], start_flow_manager: StartFlowManager
) -> None:
    recorder, pgm_url = receiver
    with run_server_in_thread(RecordingReceiver().app) as (gone_url, stop):
        stop()
    with httpx.Client(base_url=start_flow_manager(pgm_saga_config(pgm_url), gone_url)) as fm:
        assert fm.get("/-/ready").status_code == 503
        creation = fm.post("/saga", json={"associatedEntityId": "o", "metadata": {}})
        assert creation.status_code == 503
        assert send_event(fm, "any", "scheduleRequested").status_code == 503
    assert recorder.requests == []
