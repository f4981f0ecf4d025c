"""Reconciliation (spec 04): payments left pending are looked up at the provider on a schedule and
resolved; after the final attempt they fail with a clear reason."""

from __future__ import annotations

from collections.abc import Callable

from pgm.devstack.testing import RecordingReceiver, run_server_in_thread
from tests.http.test_v3_sandbox_flows import pay_body
from tests.support.notifications import STATUS_PATH, statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess


def test_pending_payment_is_settled_by_reconciliation_when_its_callback_is_lost(
    start_pgm: Callable[..., PgmProcess], shop_id: str
) -> None:
    receiver = RecordingReceiver()
    with run_server_in_thread(receiver.app) as (url, _):
        # The sandbox's webhooks go nowhere: only reconciliation can learn the outcome.
        pgm = start_pgm(PAYMENT_CALLBACK_URL=f"{url}{STATUS_PATH}", SANDBOX_WEBHOOK_SECRET="whsec_other_than_the_pgms")
        payment = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "PENDING")).json()
        pgm.decide(payment["redirectToUrl"], "approve")
        status = wait_for_status(receiver, shop_id, "ACCEPTED", timeout=20)
        assert status["paymentId"] == payment["paymentId"]


def test_payment_never_settled_fails_after_the_final_check(start_pgm: Callable[..., PgmProcess], shop_id: str) -> None:
    receiver = RecordingReceiver()
    with run_server_in_thread(receiver.app) as (url, _):
        pgm = start_pgm(PAYMENT_CALLBACK_URL=f"{url}{STATUS_PATH}", PGM_RECONCILE_MAX_ATTEMPTS="2")
        payment = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "PENDING")).json()
        assert payment["result"] == "PENDING"
        wait_for_status(receiver, shop_id, "FAILED", timeout=20)
        statuses = [s["status"] for s in statuses_for(receiver, shop_id)]
        assert statuses == ["PENDING", "FAILED"]
