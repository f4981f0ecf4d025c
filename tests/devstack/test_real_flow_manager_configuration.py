"""A configuration written for Mia-Platform's real Flow Manager loads in the stand-in: the settings' object
form, business events, command hooks, side effects, secret files and Kafka channels it cannot use are
loaded with a warning, never refused. The shipped machine carries the Payment Integration Hub's names."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from pgm.devstack.flow_manager import (
    FlowManagerConfigError,
    config_warnings,
    packaged_config,
    point_channels_at,
    validate_config,
)
from tests.support.pgm_process import free_port
from tests.support.servers import RecordingReceiver, StartFlowManager, wait_for

HOOK = {"type": "file", "encoding": "plain", "content": "export default ({ saga }) => ({ payload: saga.metadata })"}


@pytest.fixture
def real_config(minimal_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The minimal machine grown into what production configurations hold: START --done--> QUEUED (a command
    on Kafka) --finished--> END, with business events, hooks, side effects and a header read from a secret."""
    secret = tmp_path / "auth-header"
    secret.write_text("Bearer from-a-mounted-secret\n")
    config = copy.deepcopy(minimal_config)
    config["communicationProtocols"][0]["configurations"]["headers"] = {
        "x-source": "flow-manager",
        "authorization": {"type": "file", "path": str(secret)},
    }
    config["communicationProtocols"].append(
        {
            "id": "events-bus",
            "type": "kafka",
            "configurations": {
                "brokers": "kafka-1:9092,kafka-2:9092",
                "outputTopics": ["payment-commands"],
                "inputTopics": ["payment-events"],
                "consumerGroup": "flow-manager",
            },
        }
    )
    machine = config["machineDefinition"]
    start, end = machine["states"]
    start["outputCommand"]["hook"] = HOOK
    start["sideEffects"] = [{"channel": "events-bus", "label": "notifyStart"}]
    start["outgoingTransitions"] = [
        {
            "inputEvent": "done",
            "targetState": "QUEUED",
            "businessEventId": 10,
            "payloadValidationSchema": {"type": "object"},
        }
    ]
    queued = {
        "id": "QUEUED",
        "description": "waiting for a service reached through Kafka",
        "isFinal": False,
        "businessStateId": 0,
        "outputCommand": {"channel": "events-bus", "label": "processIt"},
        "outgoingTransitions": [{"inputEvent": "finished", "targetState": "END", "businessEventId": 11}],
    }
    machine["states"] = [start, queued, end]
    machine["businessEvents"] = [{"id": 10, "description": "STARTED"}, {"id": 11, "description": "ENDED"}]
    # The Flow Manager's schema makes a business state's description optional.
    del machine["businessStates"][1]["description"]
    config["settings"] = {"deepMergeMetadata": {"enabled": True, "hook": HOOK}, "throwOnUnexpectedEvents": False}
    return config


def test_a_real_configuration_loads_and_says_what_the_stand_in_leaves_out(real_config: dict[str, Any]) -> None:
    warnings = config_warnings(validate_config(real_config))
    assert warnings == [
        "communicationProtocols: Kafka channel 'events-bus' is not connected (the stand-in has no broker)",
        "machineDefinition.states[START].outputCommand.hook is not run: the command carries the whole metadata",
        "machineDefinition.states[START].sideEffects are not sent",
        "machineDefinition.states[START].outgoingTransitions[done].payloadValidationSchema is not checked",
        "machineDefinition.states[QUEUED]: command 'processIt' goes to Kafka channel 'events-bus': not sent",
        "settings.deepMergeMetadata.hook is not run: metadata is deep-merged without a customizer",
    ]


def test_a_real_configuration_drives_sagas_over_http(
    real_config: dict[str, Any], receiver: tuple[RecordingReceiver, str], start_flow_manager: StartFlowManager
) -> None:
    recorder, receiver_url = receiver
    config = point_channels_at(real_config, receiver_url)
    with httpx.Client(base_url=start_flow_manager(config), timeout=10) as client:
        created = client.post("/saga", json={"associatedEntityId": "o-1", "metadata": {"order": {"id": "o-1"}}})
        assert created.status_code == 200, created.text
        saga_id = created.json()["sagaId"]
        [command] = recorder.wait_for_requests(1, path="/cmd")
        # The secret header is read from its file; the command is sent as the REST channel says.
        assert command.headers["authorization"] == "Bearer from-a-mounted-secret"
        assert command.headers["x-source"] == "flow-manager"
        assert command.json["value"]["messageLabel"] == "doIt"

        event = {"key": saga_id, "value": {"messageLabel": "done", "messagePayload": {"order": {"paid": True}}}}
        assert client.post("/event", json=event).status_code == 200
        document = client.get(f"/sagas/{saga_id}").json()
        assert document["currentState"] == "QUEUED"
        # {"enabled": true} turns the deep merge on.
        assert document["metadata"] == {"order": {"id": "o-1", "paid": True}}
        assert document["history"]["events"][-1]["businessEventId"] == 10
        assert document["history"]["states"][-1]["businessStateDescription"] == "started"
        # QUEUED's command goes to Kafka: nothing is sent, nothing is recorded as failed.
        assert [command["label"] for command in document["commands"]] == ["doIt"]
        assert len(recorder.requests) == 1

        finished = {"key": saga_id, "value": {"messageLabel": "finished", "messagePayload": {}}}
        assert client.post("/event", json=finished).status_code == 200
        ended = client.get(f"/sagas/{saga_id}").json()
        assert (ended["currentState"], ended["businessStateId"], ended["businessStateDescription"]) == ("END", 1, None)


def test_the_boolean_form_of_the_merge_setting_still_loads_with_a_warning(minimal_config: dict[str, Any]) -> None:
    minimal_config["settings"]["deepMergeMetadata"] = True
    parsed = validate_config(minimal_config)
    assert parsed.settings.deep_merge_enabled is True
    assert config_warnings(parsed) == [
        'settings.deepMergeMetadata: the Flow Manager expects {"enabled": true}, not a boolean'
    ]


def test_what_the_flow_manager_refuses_is_refused(minimal_config: dict[str, Any], tmp_path: Path) -> None:
    unknown_type = copy.deepcopy(minimal_config)
    unknown_type["communicationProtocols"][0]["type"] = "grpc"
    with pytest.raises(FlowManagerConfigError) as refused:
        validate_config(unknown_type)
    assert any(problem.startswith("communicationProtocols[0]") for problem in refused.value.problems)

    missing_secret = copy.deepcopy(minimal_config)
    missing_secret["communicationProtocols"][0]["configurations"]["headers"] = {
        "authorization": {"type": "file", "path": str(tmp_path / "absent")}
    }
    with pytest.raises(FlowManagerConfigError, match="cannot read the secret file"):
        validate_config(missing_secret)

    effect_on_nothing = copy.deepcopy(minimal_config)
    effect_on_nothing["machineDefinition"]["states"][0]["sideEffects"] = [{"channel": "nowhere", "label": "x"}]
    with pytest.raises(FlowManagerConfigError, match=r"sideEffects\[0\]\.channel: unknown channel 'nowhere'"):
        validate_config(effect_on_nothing)


def test_pgm_flow_manager_command_starts_on_a_real_configuration(real_config: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "saga.json"
    path.write_text(json.dumps(real_config))
    port = free_port()
    log = tmp_path / "flow-manager.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "pgm", "flow-manager", "--config", str(path), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:

        def serving() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/-/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(serving, timeout=30, interval=0.1, what="pgm flow-manager to serve")
        machine = httpx.get(f"http://127.0.0.1:{port}/machine-definition", timeout=5).json()
        assert machine["businessEvents"] == real_config["machineDefinition"]["businessEvents"]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "Kafka channel 'events-bus' is not connected" in log.read_text()


def test_shipped_machine_uses_the_payment_integration_hub_names() -> None:
    config = packaged_config()
    machine = config["machineDefinition"]
    assert machine["creationEvent"] == "paymentCreated"
    labels = {state["id"]: state["outputCommand"]["label"] for state in machine["states"] if "outputCommand" in state}
    assert labels["AUTHORIZATION_REQUESTED"] == "getAuthorization"
    assert labels["LINK_REQUESTED"] == "createLink"
    assert labels["PAYMENT_SCHEDULE_REQUESTED"] == "paymentScheduled"
    assert labels["REFUND_REQUESTED"] == labels["SUBSEQUENT_REFUND_REQUESTED"] == "refundRequested"
    assert all(state.get("description") for state in machine["states"])
    business_events = {event["id"] for event in machine["businessEvents"]}
    used = {t["businessEventId"] for s in machine["states"] for t in s["outgoingTransitions"] if "businessEventId" in t}
    assert used == business_events
    assert config["settings"]["deepMergeMetadata"] == {"enabled": True}
    assert config_warnings(validate_config(config)) == []
