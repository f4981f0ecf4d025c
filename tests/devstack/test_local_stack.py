"""`pgm dev` and `pgm demo` end to end, the saga inspector's pages, and docs/local-stack.md's examples."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import httpx
import pytest

from pgm.devstack.dev import StackOptions, running_stack
from tests.support import preloaded
from tests.support.dev_process import DevProcess, pgm_dev, sandbox_metadata
from tests.support.doc_examples import Runner, wait_saga

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "local-stack.md"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    """One `pgm dev` for the module, on free ports in a directory of its own."""
    with pgm_dev(tmp_path_factory.mktemp("dev")) as running:
        yield running


def test_every_part_answers_where_the_banner_says(dev: DevProcess) -> None:
    assert httpx.get(f"{dev.pgm}/-/ready").status_code == 200
    assert httpx.get(f"{dev.pgm}/documentation").status_code == 200
    # The Flow Manager is ready only when its CRUD answers: this checks that wiring too.
    assert httpx.get(f"{dev.flow_manager}/-/ready").json() == {"status": "OK"}
    assert httpx.get(f"{dev.crud}/-/healthz").status_code == 200
    assert httpx.get(f"{dev.inspector}/-/healthz").status_code == 200
    log = dev.log()
    assert "Try it: pgm demo" in log


def test_every_link_of_the_banner_and_of_the_home_pages_works(dev: DevProcess) -> None:
    banner = dev.log().split("Try it: pgm demo")[0]
    links = {url.rstrip("),.") for url in re.findall(r"http://[^\s<>]+", banner)}
    assert f"{dev.pgm}/sandbox/" in links
    for home in (dev.pgm, dev.flow_manager):
        page = httpx.get(f"{home}/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        links |= {f"{home}{href}" for href in re.findall(r'href="(/[^"]*)"', page.text)}
    assert f"{dev.pgm}/documentation" in links
    assert f"{dev.flow_manager}/sagas" in links
    for url in sorted(links):
        assert httpx.get(url, follow_redirects=True).status_code < 400, url


def test_a_saga_runs_through_the_wired_stack(dev: DevProcess) -> None:
    saga_id = dev.create_saga(sandbox_metadata("OK"))
    dev.send_event(saga_id, "scheduleRequested")
    saga = dev.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert saga["commands"][0]["url"] == f"{dev.pgm}/saga/pay"
    assert saga["metadata"]["paymentId"].startswith("sbx_pay_")
    # The Flow Manager persists through the CRUD stand-in, which is where the PGM reads sagas.
    stored = httpx.get(f"{dev.crud}/fm-transactions/", params={"sagaId": saga_id}).json()
    assert [document["currentState"] for document in stored] == ["PAYMENT_EXECUTED"]
    pgm_view = httpx.get(f"{dev.pgm}/-/sagas/{saga_id}").json()
    assert [(event["label"], event["delivery"]["status"]) for event in pgm_view["events"]] == [
        ("paymentExecuted", "DELIVERED")
    ]


def test_the_log_under_the_banner_is_short_plain_lines(dev: DevProcess) -> None:
    saga_id = dev.create_saga(sandbox_metadata("OK"))
    dev.send_event(saga_id, "scheduleRequested")
    dev.wait_state(saga_id, "PAYMENT_EXECUTED")
    after_banner = dev.log().split("Try it: pgm demo", 1)[1].strip().splitlines()
    assert after_banner
    for line in after_banner:
        assert not line.startswith("{"), line
        assert "\x1b[" not in line, line
        if re.match(r"\d\d:\d\d:\d\d ", line):  # a log record (Python's warnings print their own way)
            assert len(line) < 200, line
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d POST /saga/pay -> 202 \(\d+ ms\)", line) for line in after_banner)
    assert any(
        line.endswith(f"saga {saga_id}: paymentExecuted moved PAYMENT_SCHEDULE_REQUESTED -> PAYMENT_EXECUTED")
        for line in after_banner
    )


def test_the_inspector_shows_the_saga_its_timeline_deliveries_and_the_machine(dev: DevProcess) -> None:
    saga_id = dev.create_saga(sandbox_metadata("REDIRECT_TO_URL", amount=2000))
    dev.send_event(saga_id, "scheduleRequested")
    pending = dev.wait_state(saga_id, "PAYMENT_PENDING")
    page = pending["metadata"]["payRequestData"]["redirectToUrl"]
    assert httpx.post(page, data={"decision": "approve"}).status_code == 200
    dev.wait_state(saga_id, "PAYMENT_EXECUTED")
    dev.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 500}})
    dev.wait_state(saga_id, "PARTIALLY_REFUNDED")

    listing = httpx.get(f"{dev.inspector}/")
    assert listing.status_code == 200
    row = re.search(rf'<tr class="saga" data-saga-id="{saga_id}">(.*?)</tr>', listing.text, re.S)
    assert row is not None
    assert "PARTIALLY_REFUNDED" in row.group(1)
    assert "2 PAYMENT_PARTIALLY_REFUNDED" in row.group(1)

    html = httpx.get(f"{dev.inspector}/sagas/{saga_id}").text
    assert re.search(r'id="current-state">PARTIALLY_REFUNDED<', html)
    assert '<dd id="business-state">2 PAYMENT_PARTIALLY_REFUNDED</dd>' in html
    timeline = re.findall(r'<tr class="timeline-entry" data-event="(\w+)" data-state="(\w+)">', html)
    assert timeline == [
        ("paymentCreated", "PAYMENT_CREATED"),
        ("scheduleRequested", "PAYMENT_SCHEDULE_REQUESTED"),
        ("paymentScheduled", "PAYMENT_PENDING"),
        ("paymentExecuted", "PAYMENT_EXECUTED"),
        ("refundRequested", "REFUND_REQUESTED"),
        ("partialRefundExecuted", "PARTIALLY_REFUNDED"),
    ]
    assert re.findall(r'<tr class="fm-command" data-outcome="(\w+)">', html) == ["sent", "sent"]
    deliveries = re.findall(r'<tr class="delivery" data-event="(\w+)" data-status="(\w*)">', html)
    assert [event for event, _ in deliveries] == ["paymentScheduled", "paymentExecuted", "partialRefundExecuted"]
    assert deliveries[0][1] == "DELIVERED"
    metadata = re.search(r'<pre id="metadata">(.*?)</pre>', html, re.S)
    assert metadata is not None
    assert json.loads(unescape(metadata.group(1)))["refundDetails"] == {
        "totalRefundedAmount": 500,
        "refundedAmounts": [500],
    }
    # The diagram: one box per state of the machine, the current one highlighted, the path taken marked.
    machine = httpx.get(f"{dev.flow_manager}/machine-definition").json()
    boxes = re.findall(r'<g class="(state[^"]*)" id="state-(\w+)"', html)
    assert sorted(state for _, state in boxes) == sorted(state["id"] for state in machine["states"])
    assert [state for classes, state in boxes if "current" in classes.split()] == ["PARTIALLY_REFUNDED"]
    taken = re.findall(r'<g class="transition \w+ taken" data-source="(\w+)" data-target="(\w+)"', html)
    assert ("PAYMENT_PENDING", "PAYMENT_EXECUTED") in taken
    assert ("REFUND_REQUESTED", "PARTIALLY_REFUNDED") in taken
    assert "http://" not in re.sub(r'http://(127\.0\.0\.1|www\.w3\.org/2000/svg|shop\.example)[^"<\s]*', "", html)


def test_the_inspector_follows_changes_through_a_fingerprint(dev: DevProcess) -> None:
    saga_id = dev.create_saga(sandbox_metadata("OK"))
    before = httpx.get(f"{dev.inspector}/sagas/{saga_id}", params={"format": "fingerprint"}).text
    assert f'<meta name="fingerprint" content="{before}">' in httpx.get(f"{dev.inspector}/sagas/{saga_id}").text
    dev.send_event(saga_id, "scheduleRequested")
    dev.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert httpx.get(f"{dev.inspector}/sagas/{saga_id}", params={"format": "fingerprint"}).text != before


def test_the_inspector_says_when_a_saga_does_not_exist(dev: DevProcess) -> None:
    response = httpx.get(f"{dev.inspector}/sagas/no-such-saga")
    assert response.status_code == 404
    assert "The Flow Manager has no saga no-such-saga" in response.text


def test_pgm_demo_finds_the_running_stack_on_the_ports_it_was_given(dev: DevProcess) -> None:
    # No URL given: `pgm demo` in the directory `pgm dev` runs from finds it on its (free, not default) ports.
    result = preloaded.run(
        "pgm",
        ["demo"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=dev.log_path.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"using the pgm dev running from this directory: Flow Manager {dev.flow_manager}" in result.stdout
    saga_id = re.search(r"^saga (\w+):", result.stdout, re.M)
    assert saga_id is not None
    assert f"{dev.inspector}/sagas/{saga_id.group(1)}" in result.stdout
    assert dev.saga(saga_id.group(1))["currentState"] == "TOTALLY_REFUNDED"


def test_the_local_stack_document_examples_run(dev: DevProcess) -> None:
    hosts = {
        "http://localhost:3000": dev.pgm,
        "http://localhost:3100": dev.flow_manager,
        "http://localhost:3200": dev.crud,
        "http://localhost:3300": dev.inspector,
    }
    runner = Runner(hosts, directives={"wait-saga": wait_saga(dev.flow_manager)})
    runner.run(DOCUMENT)
    assert runner.ran >= 8


def test_pgm_dev_keeps_the_token_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    with pgm_dev(tmp_path, PGM_API_TOKEN="local-secret") as dev:
        saga_id = dev.create_saga(sandbox_metadata("OK"))
        dev.send_event(saga_id, "scheduleRequested")
        dev.wait_state(saga_id, "PAYMENT_EXECUTED")
        assert httpx.get(f"{dev.pgm}/-/sagas/{saga_id}").status_code == 401
        assert "API token        required" in dev.log()
        # The inspector sends the PGM the token it was started with.
        html = httpx.get(f"{dev.inspector}/sagas/{saga_id}").text
        assert 'data-event="paymentExecuted" data-status="DELIVERED"' in html
        assert "pgm-error" not in html

        assert dev.interrupt() == 0
        assert "pgm dev: stopped" in dev.log()
        assert "Traceback" not in dev.log()
        for url in (dev.pgm, dev.flow_manager, dev.crud, dev.inspector):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/-/healthz", timeout=2)
    # Everything lives in the working directory by default.
    assert (tmp_path / "pgm.sqlite3").exists()
    assert (tmp_path / "crud.sqlite3").exists()


def test_pgm_dev_names_the_port_it_cannot_take(tmp_path: Path) -> None:
    with pgm_dev(tmp_path) as dev:
        port = dev.flow_manager.rsplit(":", 1)[1]
        result = preloaded.run(
            "pgm",
            ["dev", "--pgm-port", "0", "--flow-manager-port", port],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} for the Flow Manager" in result.stderr
    assert "PGM_DEV_FLOW_MANAGER_PORT" in result.stderr


def test_pgm_demo_start_runs_its_own_stack(tmp_path: Path) -> None:
    result = preloaded.run("pgm", ["demo", "--start"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    moves = re.findall(r"^\s+[\d.]+s\s+(\w+)\s+-> (\w+)\s+business state (\d+)", result.stdout, re.M)
    assert moves == [
        ("paymentCreated", "PAYMENT_CREATED", "0"),
        ("scheduleRequested", "PAYMENT_SCHEDULE_REQUESTED", "0"),
        ("paymentScheduled", "PAYMENT_PENDING", "0"),
        ("paymentExecuted", "PAYMENT_EXECUTED", "1"),
        ("refundRequested", "REFUND_REQUESTED", "1"),
        ("partialRefundExecuted", "PARTIALLY_REFUNDED", "2"),
        ("refundRequested", "SUBSEQUENT_REFUND_REQUESTED", "2"),
        ("totalRefundExecuted", "TOTALLY_REFUNDED", "3"),
    ]
    assert "submitting decision=approve" in result.stdout
    assert '{"totalRefundedAmount": 1299, "refundedAmounts": [499, 800]}' in result.stdout
    assert result.stdout.rstrip().endswith("pgm demo: OK")
    # A throwaway stack: nothing is left in the working directory.
    assert list(tmp_path.iterdir()) == []


def test_pgm_demo_fails_without_a_flow_manager() -> None:
    result = preloaded.run(
        "pgm",
        ["demo", "--flow-manager-url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no Flow Manager at http://127.0.0.1:9" in result.stderr
    assert "pgm demo --start" in result.stderr


def test_every_part_of_the_stack_cuts_off_a_client_trickling_its_headers(tmp_path: Path) -> None:
    # `pgm dev --host 0.0.0.0` exposes the stack: its servers have `pgm serve`'s header deadline.
    options = StackOptions(
        pgm_port=0,
        flow_manager_port=0,
        crud_port=0,
        inspector_port=0,
        crud_database=str(tmp_path / "crud.sqlite3"),
        env={"PGM_DATABASE_URL": f"sqlite:///{tmp_path / 'pgm.sqlite3'}", "PGM_HEADER_TIMEOUT_SECONDS": "0.5"},
    )
    with running_stack(options) as stack:
        assert stack.urls is not None
        for url in (stack.urls.pgm, stack.urls.flow_manager, stack.urls.crud, stack.urls.inspector):
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as connection:
                connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                answer = connection.recv(1024)  # returns once the server answers and closes
            assert answer.startswith(b"HTTP/1.1 408"), (url, answer)
