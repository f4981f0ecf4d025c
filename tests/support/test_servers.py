"""The test helpers of tests/support/servers.py: threaded servers and the recording receiver."""

from __future__ import annotations

import httpx
import pytest

from tests.support.servers import RecordingReceiver, recording_receiver, run_server_in_thread


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
