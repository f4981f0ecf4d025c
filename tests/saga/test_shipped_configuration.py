"""The Flow Manager configuration shipped for deployments is the packaged machine, pointed at the
PGM's service, and loads in a Flow Manager."""

from __future__ import annotations

import json
from pathlib import Path

from pgm.devstack.flow_manager import load_config, packaged_config, point_channels_at

DEPLOYED = Path(__file__).resolve().parents[2] / "deploy" / "flow-manager" / "saga.json"


def test_deployed_configuration_is_the_packaged_machine_pointed_at_the_pgm_service() -> None:
    deployed = json.loads(DEPLOYED.read_text())
    assert deployed == point_channels_at(packaged_config(), "http://payment-gateway-manager")
    assert deployed["settings"]["deepMergeMetadata"] == {"enabled": True}
    assert deployed["persistencyManagement"] == {
        "type": "crud",
        "configurations": {"collectionName": "fm-transactions"},
    }
    paths = {channel["configurations"]["path"] for channel in deployed["communicationProtocols"]}
    assert paths == {
        "/saga/pay",
        "/saga/refund",
        "/saga/subscription/schedule",
        "/saga/subscription/start",
        "/saga/subscription/pay",
        "/saga/subscription/authorization",
        "/saga/pay-by-link",
    }


def test_deployed_configuration_loads() -> None:
    assert load_config(DEPLOYED)["machineDefinition"]["initialState"] == "PAYMENT_CREATED"
