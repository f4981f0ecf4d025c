"""Reconciliation (docs/reliability.md): payments left pending are looked up at the provider on a schedule and
resolved; after the final attempt they fail with a clear reason. The schedule is driven in-process by a clock
the test moves; a crash in the middle of a check needs a real process."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from tests.fakes.external import ExternalService, running_external_service
from tests.support.in_process import (
    ManualClock,
    delivered_statuses,
    delivering,
    external_providers,
    payment_awaiting_the_payer,
    services,
)
from tests.support.notifications import STATUS_PATH, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.servers import RecordingReceiver, recording_receiver, run_server_in_thread


def test_pending_payment_is_settled_by_reconciliation_when_its_callback_is_lost(
    backend: str, tmp_path: Path, shop_id: str
) -> None:
    clock = ManualClock()

    async def scenario(acme: ExternalService, receiver: RecordingReceiver, receiver_url: str) -> None:
        config = external_providers(tmp_path, acme=acme.base_url)
        env = {"EXTERNAL_PROVIDERS_CONFIG": config, "PAYMENT_CALLBACK_URL": f"{receiver_url}{STATUS_PATH}"}
        async with services(backend, tmp_path, clock, **env) as service, delivering(service):
            payment_id = await payment_awaiting_the_payer(service, shop_id)
            # The payer pays at acme, whose callback never reaches the PGM: only reconciliation can learn it.
            acme.set_status((await service.payments.reload(payment_id)).provider_payment_id or "", "ACCEPTED")
            assert await service.reconciler.run_once() == 0  # not due before its first check
            clock.advance(service.settings.reconcile_after_seconds)
            assert await service.reconciler.run_once() == 1
            assert (await service.payments.reload(payment_id)).status == "ACCEPTED"
            assert await delivered_statuses(receiver, shop_id, 2) == ["PENDING", "ACCEPTED"]

    with running_external_service() as acme, recording_receiver() as (receiver, receiver_url):
        asyncio.run(scenario(acme, receiver, receiver_url))


def test_payment_never_settled_fails_after_the_final_check(backend: str, tmp_path: Path, shop_id: str) -> None:
    clock = ManualClock()

    async def scenario(acme: ExternalService, receiver: RecordingReceiver, receiver_url: str) -> None:
        env = {
            "EXTERNAL_PROVIDERS_CONFIG": external_providers(tmp_path, acme=acme.base_url),
            "PAYMENT_CALLBACK_URL": f"{receiver_url}{STATUS_PATH}",
            "PGM_RECONCILE_MAX_ATTEMPTS": "2",
        }
        async with services(backend, tmp_path, clock, **env) as service, delivering(service):
            payment_id = await payment_awaiting_the_payer(service, shop_id)
            checks = 0
            while (await service.payments.reload(payment_id)).status != "FAILED":
                assert checks < 2, "still unsettled after the final check"
                clock.advance(service.settings.reconcile_max_interval_seconds)
                checks += await service.reconciler.run_once()
            assert checks == 2
            assert await delivered_statuses(receiver, shop_id, 2) == ["PENDING", "FAILED"]
            assert "after 2 checks" in ((await service.payments.reload(payment_id)).description or "")

    with running_external_service() as acme, recording_receiver() as (receiver, receiver_url):
        asyncio.run(scenario(acme, receiver, receiver_url))


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
