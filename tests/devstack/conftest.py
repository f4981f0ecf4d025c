"""Real local servers for the devstack tests: a CRUD on SQLite, a recording receiver, Flow Managers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from pgm.devstack.crud import create_crud_app
from pgm.devstack.flow_manager import create_flow_manager_app
from tests.support.servers import RecordingReceiver, StartFlowManager, recording_receiver, run_server_in_thread


@pytest.fixture(scope="session")
def crud_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = create_crud_app(str(tmp_path_factory.mktemp("crud") / "crud.sqlite3"))
    with run_server_in_thread(app) as (base_url, _):
        yield base_url


@pytest.fixture
def receiver() -> Iterator[tuple[RecordingReceiver, str]]:
    with recording_receiver() as pair:
        yield pair


@pytest.fixture
def start_flow_manager() -> Iterator[StartFlowManager]:
    with ExitStack() as stack:

        def start(config: dict[str, Any], crud_base_url: str | None = None) -> str:
            app = create_flow_manager_app(config, crud_base_url)
            base_url, _ = stack.enter_context(run_server_in_thread(app))
            return base_url

        yield start


@pytest.fixture
def minimal_config() -> dict[str, Any]:
    """A small valid saga.json: START --done--> END, START sends `doIt` on channel `svc`."""
    return {
        "communicationProtocols": [
            {
                "id": "svc",
                "type": "rest",
                "configurations": {"protocol": "http", "endpoint": "svc", "method": "POST", "path": "/cmd"},
            }
        ],
        "persistencyManagement": {"type": "crud", "configurations": {"collectionName": "sagas"}},
        "machineDefinition": {
            "initialState": "START",
            "creationEvent": "__created__",
            "states": [
                {
                    "id": "START",
                    "isFinal": False,
                    "businessStateId": 0,
                    "outputCommand": {"channel": "svc", "label": "doIt"},
                    "outgoingTransitions": [{"inputEvent": "done", "targetState": "END"}],
                },
                {"id": "END", "isFinal": True, "businessStateId": 1, "outgoingTransitions": []},
            ],
            "businessStates": [{"id": 0, "description": "started"}, {"id": 1, "description": "ended"}],
            "businessEvents": [],
        },
        "settings": {"deepMergeMetadata": {"enabled": False}, "throwOnUnexpectedEvents": False},
    }
