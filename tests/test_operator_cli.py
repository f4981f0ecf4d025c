"""`pgm payments|outbox|reconcile`: the operator's commands against a running PGM's database."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import preloaded
from tests.support.databases import fresh_database
from tests.support.notifications import STATUS_PATH
from tests.support.pgm_process import PgmProcess
from tests.support.saga_stack import saga_stack
from tests.support.sandbox_requests import metadata, pay_body, refund
from tests.support.servers import RecordingReceiver, run_server_in_thread, wait_for


def pgm_command(pgm: PgmProcess, *arguments: str) -> subprocess.CompletedProcess[str]:
    return preloaded.run(
        "pgm",
        list(arguments),
        env={**pgm.env, "PGM_DATABASE_URL": pgm.env["PGM_DATABASE_URL"]},
        capture_output=True,
        text=True,
        timeout=60,
    )


def as_json(pgm: PgmProcess, *arguments: str) -> Any:
    result = pgm_command(pgm, *arguments, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# A dozen `pgm` processes, each a Python start-up: on a loaded machine that alone takes a minute.
@pytest.mark.timeout(300)
def test_an_operator_looks_at_payments_resends_dead_letters_and_reconciles(
    start_pgm: Callable[..., PgmProcess], shop_id: str
) -> None:
    receiver = RecordingReceiver()
    receiver.respond(400, {"error": "refused"})
    with run_server_in_thread(receiver.app) as (url, _):
        # Reconciliation would first look after ten minutes: only `pgm reconcile` makes it look now.
        pgm = start_pgm(PAYMENT_CALLBACK_URL=f"{url}{STATUS_PATH}", PGM_RECONCILE_AFTER_SECONDS="600")
        paid = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK", amount=1500)).json()
        assert paid["result"] == "OK"
        assert refund(pgm, paid["paymentId"], 500)["result"] == "OK"
        pending = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(f"{shop_id}-p", "PENDING")).json()
        assert pending["result"] == "PENDING"

        listed = as_json(pgm, "payments", "list")
        by_id = {row["paymentId"]: row for row in listed}
        assert by_id[paid["paymentId"]]["status"] == "ACCEPTED"
        assert by_id[paid["paymentId"]]["shopTransactionId"] == shop_id
        assert by_id[pending["paymentId"]]["status"] == "PENDING"
        assert [row["paymentId"] for row in as_json(pgm, "payments", "list", "--status", "PENDING")] == [
            pending["paymentId"]
        ]

        # Every notification is refused (400) until it is a dead letter.
        dead: list[dict[str, Any]] = []

        def three_dead_letters() -> bool:
            dead[:] = as_json(pgm, "outbox", "list")
            return len(dead) >= 3

        wait_for(three_dead_letters, timeout=30, interval=0.2, what="three dead letters")
        assert {row["destination"] for row in dead} == {"payment-callback"}
        assert all(row["lastStatusCode"] == 400 for row in dead)

        # By shopTransactionId or by paymentId: the same payment, its ledger, refund and events.
        for reference in (shop_id, paid["paymentId"]):
            (shown,) = as_json(pgm, "payments", "show", reference)
            assert shown["paymentId"] == paid["paymentId"]
            assert [r["amount"] for r in shown["refunds"]] == [500]
            assert ("PAYMENT", "ACCEPTED", 1500) in [
                (e["operation"], e["status"], e["amount"]) for e in shown["ledger"]
            ]
            assert ("REFUND", "ACCEPTED", 500) in [(e["operation"], e["status"], e["amount"]) for e in shown["ledger"]]
            notifications = [e for e in shown["events"] if e["kind"] == "payment-callback"]
            assert notifications
            assert {e["status"] for e in notifications} == {"DEAD"}
        table = pgm_command(pgm, "payments", "show", shop_id)
        assert table.returncode == 0
        assert "ledger:" in table.stdout
        assert "refunds:" in table.stdout
        assert paid["paymentId"] in table.stdout

        receiver.respond(200)
        resent = as_json(pgm, "outbox", "resend", "--all-dead")
        assert sorted(row["id"] for row in resent) == sorted(row["id"] for row in dead)
        wait_for(lambda: len([r for r in receiver.requests if r.status == 200]) == len(dead), timeout=30, what="resent")
        assert as_json(pgm, "outbox", "list") == []
        again = pgm_command(pgm, "outbox", "resend", str(dead[0]["id"]))
        assert again.returncode == 1
        assert "not dead letters" in again.stderr

        checked = as_json(pgm, "reconcile", "--wait", "30")
        (row,) = [r for r in checked if r["id"] == pending["paymentId"]]
        assert row["checked"] is True
        assert row["checkAttempts"] >= 1

    missing = pgm_command(pgm, "payments", "show", "no-such-payment")
    assert missing.returncode == 1
    assert missing.stderr == "pgm: no payment has the paymentId, shopTransactionId or saga id 'no-such-payment'\n"


@pytest.mark.timeout(300)
def test_a_saga_id_shows_its_payment_with_the_events_sent_to_the_flow_manager(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as url, saga_stack(url, tmp_path) as stack:
        saga_id = stack.create_saga(metadata("OK", amount=2100))
        stack.send_event(saga_id, "scheduleRequested")
        stack.wait_state(saga_id, "PAYMENT_EXECUTED")
        wait_for(
            lambda: (
                [e["delivery"]["status"] for e in stack.pgm.get(f"/-/sagas/{saga_id}").json()["events"]]
                == ["DELIVERED"]
            ),
            timeout=20,
            what="paymentExecuted delivered",
        )
        (shown,) = as_json(stack.pgm, "payments", "show", saga_id)
        assert (shown["sagaId"], shown["status"], shown["amount"]) == (saga_id, "ACCEPTED", 2100)
        assert [(e["kind"], e["what"], e["status"]) for e in shown["events"] if e["kind"] == "flow-manager"] == [
            ("flow-manager", "paymentExecuted", "DELIVERED")
        ]
        assert [row["paymentId"] for row in as_json(stack.pgm, "payments", "list", "--saga", saga_id)] == [
            shown["paymentId"]
        ]
