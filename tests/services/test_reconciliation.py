"""Reconciliation (docs/reliability.md): payments left pending are looked up at the provider on a schedule and
resolved; after the final attempt they fail with a clear reason."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from tests.fakes.external import ExternalService
from tests.support.notifications import STATUS_PATH, statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.sandbox_requests import pay_body
from tests.support.servers import RecordingReceiver, run_server_in_thread


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


class HangingStatusLookups:
    """A provider's app whose status lookups hang until `release` is set; `asked` is set by the first."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.asked = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/status" and not self.release.is_set():
            self.asked.set()
            await asyncio.to_thread(self.release.wait)
        await self.app(scope, receive, send)


def test_a_check_interrupted_by_a_crash_is_taken_up_within_seconds_of_the_restart(
    start_pgm: Callable[..., PgmProcess], tmp_path: Path, shop_id: str
) -> None:
    acme = ExternalService()
    provider = HangingStatusLookups(acme.app)
    receiver = RecordingReceiver()
    with run_server_in_thread(provider) as (acme_url, _), run_server_in_thread(receiver.app) as (url, _):
        acme.base_url = acme_url
        config = tmp_path / "external.json"
        config.write_text(json.dumps({"externalServices": [{"externalService": "acme", "baseUrl": acme_url}]}))
        try:
            pgm = start_pgm(
                EXTERNAL_PROVIDERS_CONFIG=str(config),
                PAYMENT_CALLBACK_URL=f"{url}{STATUS_PATH}",
                PGM_PROVIDER_TIMEOUT_SECONDS="3",
                PGM_RECONCILE_AFTER_SECONDS="3",
            )
            body = {"amount": 700, "currency": "EUR", "shopTransactionId": shop_id}
            payment_id = pgm.post("/v3/acme/credit-cards/pay", body).json()["paymentId"]
            # Reconciliation claims the payment and asks the provider, which hangs: the process dies there.
            assert provider.asked.wait(timeout=15)
            pgm.kill()
            with acme.lock:
                acme.payments[payment_id]["status"] = "FAILED"
            provider.release.set()
            pgm.start()
            restarted = (
                time.monotonic()
            )  # measured from the restarted process being ready (start-up time varies with load)
            # The dead process's claim runs out within seconds; the restarted one checks and settles it.
            wait_for_status(receiver, shop_id, "FAILED", timeout=20)
            assert time.monotonic() - restarted < 10
        finally:
            provider.release.set()
