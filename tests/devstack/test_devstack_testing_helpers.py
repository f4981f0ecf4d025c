"""The reusable test helpers: threaded servers and the recording receiver."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest

from pgm.devstack.cli import add_commands
from pgm.devstack.flow_manager import PACKAGED_CONFIG_PATH
from pgm.devstack.testing import RecordingReceiver, recording_receiver, run_server_in_thread


def test_receiver_records_json_bodies_in_order_and_scripts_statuses() -> None:
    with recording_receiver() as (receiver, base_url), httpx.Client(base_url=base_url) as client:
        receiver.respond(503, times=2)
        receiver.respond(409, path="/only/here")
        statuses = [client.post("/a", json={"n": n}).status_code for n in range(3)]
        assert statuses == [503, 503, 200]
        assert client.put("/only/here", json={"n": 3}).status_code == 409
        assert client.post("/elsewhere", json={"n": 4}).status_code == 200
        assert receiver.bodies() == [{"n": n} for n in range(5)]
        assert receiver.bodies("/only/here") == [{"n": 3}]
        assert [r.status for r in receiver.requests] == [503, 503, 200, 409, 200]


def test_standing_failure_lasts_until_replaced() -> None:
    with recording_receiver() as (receiver, base_url), httpx.Client(base_url=base_url) as client:
        receiver.respond(503)
        assert [client.post("/e").status_code for _ in range(3)] == [503, 503, 503]
        receiver.respond(202, {"ok": True})
        answer = client.post("/e")
        assert (answer.status_code, answer.json()) == (202, {"ok": True})


def test_wait_for_requests_times_out_naming_what_arrived() -> None:
    with recording_receiver() as (receiver, base_url):
        httpx.post(f"{base_url}/one")
        assert [r.path for r in receiver.wait_for_requests(1)] == ["/one"]
        with pytest.raises(TimeoutError, match="/one"):
            receiver.wait_for_requests(2, timeout=0.05)


def test_stopped_server_no_longer_answers() -> None:
    with run_server_in_thread(RecordingReceiver().app) as (base_url, stop):
        assert httpx.get(f"{base_url}/x").status_code == 200
        stop()
        stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base_url}/x")


def test_cli_registers_both_stand_ins_with_their_defaults() -> None:
    parser = argparse.ArgumentParser(prog="pgm")
    add_commands(parser.add_subparsers(dest="command", required=True))
    flow_manager = parser.parse_args(["flow-manager"])
    assert (flow_manager.port, flow_manager.crud_url, flow_manager.pgm_url) == (3100, "http://127.0.0.1:3200", None)
    assert flow_manager.config == str(PACKAGED_CONFIG_PATH)
    assert callable(flow_manager.func)
    crud = parser.parse_args(["crud", "--port", "4000"])
    assert (crud.port, crud.database) == (4000, "crud.sqlite3")


def test_cli_refuses_an_invalid_configuration_with_exit_status_2(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="pgm")
    add_commands(parser.add_subparsers(dest="command", required=True))
    broken = tmp_path / "saga.json"
    broken.write_text('{"communicationProtocols": []}', encoding="utf-8")
    args = parser.parse_args(["flow-manager", "--config", str(broken)])
    assert args.func(args) == 2
