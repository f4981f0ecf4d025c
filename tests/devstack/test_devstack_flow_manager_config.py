"""Flow Manager configurations are checked like the real service does, and the packaged one is the machine of
docs/flow-manager.md."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pgm.devstack.flow_manager import (
    FlowManagerConfigError,
    load_config,
    packaged_config,
    pgm_saga_config,
    validate_config,
)

PAY_OUTCOMES = {
    "paymentScheduled": "PAYMENT_PENDING",
    "paymentExecuted": "PAYMENT_EXECUTED",
    "paymentExecutedBySystem": "PAYMENT_EXECUTED",
    "paymentFailed": "PAYMENT_FAILED",
    "paymentFailedBySystem": "PAYMENT_FAILED",
}

# The machine of docs/flow-manager.md: state -> (command path on entry, {event: next state}, business state).
SPEC_MACHINE: dict[str, tuple[str | None, dict[str, str], int]] = {
    "PAYMENT_CREATED": (
        None,
        {
            "scheduleRequested": "PAYMENT_SCHEDULE_REQUESTED",
            "subscriptionScheduledRequested": "SUBSCRIPTION_SCHEDULED_REQUESTED",
            "subscriptionStart": "SUBSCRIPTION_STARTED",
            "subscriptionPaymentRequested": "SUBSCRIPTION_PAYMENT_REQUESTED",
            "authorizationRequested": "AUTHORIZATION_REQUESTED",
            "linkRequested": "LINK_REQUESTED",
            "paymentExecuted": "PAYMENT_EXECUTED",
            "paymentFailed": "PAYMENT_FAILED",
        },
        0,
    ),
    "PAYMENT_SCHEDULE_REQUESTED": ("/saga/pay", PAY_OUTCOMES, 0),
    "SUBSCRIPTION_SCHEDULED_REQUESTED": ("/saga/subscription/schedule", PAY_OUTCOMES, 0),
    "SUBSCRIPTION_STARTED": ("/saga/subscription/start", PAY_OUTCOMES, 0),
    "SUBSCRIPTION_PAYMENT_REQUESTED": ("/saga/subscription/pay", PAY_OUTCOMES, 0),
    "AUTHORIZATION_REQUESTED": (
        "/saga/subscription/authorization",
        {"authorizationScheduled": "AUTHORIZATION_PENDING"},
        0,
    ),
    "AUTHORIZATION_PENDING": (
        None,
        {
            "subscriptionStart": "SUBSCRIPTION_STARTED",
            "subscriptionPaymentRequested": "SUBSCRIPTION_PAYMENT_REQUESTED",
            "paymentFailed": "PAYMENT_FAILED",
        },
        0,
    ),
    "LINK_REQUESTED": ("/saga/pay-by-link", {"linkCreated": "LINK_CREATED", "paymentFailed": "PAYMENT_FAILED"}, 0),
    "LINK_CREATED": (None, {"notificationSent": "PAYMENT_PENDING", "paymentFailed": "PAYMENT_FAILED"}, 0),
    "PAYMENT_PENDING": (
        None,
        {"update": "PAYMENT_PENDING", **{k: v for k, v in PAY_OUTCOMES.items() if k != "paymentScheduled"}},
        0,
    ),
    "PAYMENT_EXECUTED": (None, {"refundRequested": "REFUND_REQUESTED", "sendNotification": "PAYMENT_EXECUTED"}, 1),
    "REFUND_REQUESTED": (
        "/saga/refund",
        {
            "refundFailed": "REFUND_FAILED",
            "partialRefundExecuted": "PARTIALLY_REFUNDED",
            "totalRefundExecuted": "TOTALLY_REFUNDED",
        },
        1,
    ),
    "REFUND_FAILED": (None, {"refundRequested": "REFUND_REQUESTED"}, 1),
    "PARTIALLY_REFUNDED": (
        None,
        {"refundRequested": "SUBSEQUENT_REFUND_REQUESTED", "sendNotification": "PARTIALLY_REFUNDED"},
        2,
    ),
    "SUBSEQUENT_REFUND_REQUESTED": (
        "/saga/refund",
        {
            "partialRefundExecuted": "PARTIALLY_REFUNDED",
            "refundFailed": "SUBSEQUENT_REFUND_FAILED",
            "totalRefundExecuted": "TOTALLY_REFUNDED",
        },
        2,
    ),
    "SUBSEQUENT_REFUND_FAILED": (None, {"refundRequested": "SUBSEQUENT_REFUND_REQUESTED"}, 2),
    "TOTALLY_REFUNDED": (None, {"sendNotification": "TOTALLY_REFUNDED"}, 3),
    "PAYMENT_FAILED": (None, {"sendNotification": "PAYMENT_FAILED"}, 1000),
}


def test_packaged_configuration_validates_and_is_the_spec_machine() -> None:
    config = packaged_config()
    validate_config(config)
    channels = {c["id"]: c["configurations"] for c in config["communicationProtocols"]}
    machine = config["machineDefinition"]
    assert machine["initialState"] == "PAYMENT_CREATED"
    actual: dict[str, tuple[str | None, dict[str, str], int]] = {}
    for state in machine["states"]:
        command = state.get("outputCommand")
        path = channels[command["channel"]]["path"] if command else None
        transitions = {t["inputEvent"]: t["targetState"] for t in state["outgoingTransitions"]}
        actual[state["id"]] = (path, transitions, state["businessStateId"])
    assert actual == SPEC_MACHINE
    assert {b["id"]: b["description"] for b in machine["businessStates"]} == {
        0: "PAYMENT_CREATED",
        1: "PAYMENT_PAID",
        2: "PAYMENT_PARTIALLY_REFUNDED",
        3: "PAYMENT_TOTALLY_REFUNDED",
        1000: "PAYMENT_FAILED",
    }
    assert config["persistencyManagement"] == {"type": "crud", "configurations": {"collectionName": "fm-transactions"}}
    assert config["settings"]["deepMergeMetadata"] == {"enabled": True}


def test_packaged_configuration_has_one_rest_channel_per_pgm_saga_route() -> None:
    channels = packaged_config()["communicationProtocols"]
    paths = sorted(c["configurations"]["path"] for c in channels)
    assert paths == sorted(
        [
            "/saga/pay",
            "/saga/refund",
            "/saga/subscription/schedule",
            "/saga/subscription/start",
            "/saga/subscription/pay",
            "/saga/subscription/authorization",
            "/saga/pay-by-link",
        ]
    )
    for channel in channels:
        assert channel["type"] == "rest"
        assert channel["configurations"]["endpoint"] == "localhost"
        assert channel["configurations"]["port"] == 3000
        assert channel["configurations"]["method"] == "POST"


def test_pgm_saga_config_points_every_channel_at_the_given_pgm() -> None:
    config = pgm_saga_config("https://pgm.test:8443/base/")
    for channel in config["communicationProtocols"]:
        settings = channel["configurations"]
        assert (settings["protocol"], settings["endpoint"], settings["port"]) == ("https", "pgm.test", 8443)
        assert settings["path"].startswith("/base/saga/")
    without_port = pgm_saga_config("http://pgm")["communicationProtocols"][0]["configurations"]
    assert "port" not in without_port
    assert packaged_config()["communicationProtocols"][0]["configurations"]["port"] == 3000


def test_invalid_configuration_names_every_bad_item(minimal_config: dict[str, Any]) -> None:
    config = minimal_config
    machine = config["machineDefinition"]
    machine["initialState"] = "NOWHERE"
    machine["states"][0]["outgoingTransitions"].append({"inputEvent": "oops", "targetState": "GHOST"})
    machine["states"][0]["outputCommand"]["channel"] = "kafka-main"
    machine["states"][1]["businessStateId"] = 7
    with pytest.raises(FlowManagerConfigError) as raised:
        validate_config(config, "test.json")
    problems = raised.value.problems
    assert "machineDefinition.initialState: unknown state 'NOWHERE'" in problems
    assert "machineDefinition.states[START].outgoingTransitions[oops].targetState: unknown state 'GHOST'" in problems
    assert "machineDefinition.states[START].outputCommand.channel: unknown channel 'kafka-main'" in problems
    assert "machineDefinition.states[END].businessStateId: unknown business state 7" in problems
    assert len(problems) == 4
    assert "test.json" in str(raised.value)


def test_schema_errors_name_their_location(minimal_config: dict[str, Any]) -> None:
    config = minimal_config
    config["communicationProtocols"][0]["configurations"]["method"] = "GET"
    del config["machineDefinition"]["states"][1]["isFinal"]
    with pytest.raises(FlowManagerConfigError) as raised:
        validate_config(config)
    joined = "\n".join(raised.value.problems)
    assert "communicationProtocols[0].configurations.method" in joined
    assert "machineDefinition.states[1].isFinal" in joined


def test_duplicate_ids_and_ambiguous_transitions_are_refused(minimal_config: dict[str, Any]) -> None:
    config = minimal_config
    machine = config["machineDefinition"]
    machine["states"].append(copy.deepcopy(machine["states"][1]))
    machine["states"][0]["outgoingTransitions"].append({"inputEvent": "done", "targetState": "START"})
    with pytest.raises(FlowManagerConfigError) as raised:
        validate_config(config)
    assert raised.value.problems == [
        "machineDefinition.states: state id 'END' is defined more than once",
        "machineDefinition.states[START].outgoingTransitions: event 'done' has more than one transition",
    ]


def test_crud_persistency_needs_a_collection_name(minimal_config: dict[str, Any]) -> None:
    config = minimal_config
    config["persistencyManagement"]["configurations"] = {}
    with pytest.raises(FlowManagerConfigError, match="collectionName"):
        validate_config(config)


def test_load_config_reads_a_file_and_reports_bad_json(tmp_path: Path, minimal_config: dict[str, Any]) -> None:
    good = tmp_path / "saga.json"
    good.write_text(json.dumps(minimal_config), encoding="utf-8")
    assert load_config(good)["machineDefinition"]["initialState"] == "START"
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(FlowManagerConfigError, match="not valid JSON"):
        load_config(bad)
