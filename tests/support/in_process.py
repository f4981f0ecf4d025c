"""The PGM's services built in the test's own process, wired as the service wires them, on a real database
(SQLite or PostgreSQL) and the clock the test chooses (a ManualClock it moves, for schedules): the middle of
the test pyramid, between the pure domain and a PGM process spoken to over HTTP. Background loops do not
run by themselves: a test runs a pass, or the dispatcher while it acts (`delivering`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pgm.clock import Clock
from pgm.config import load_settings
from pgm.observability.metrics import Metrics
from pgm.outbound import Routes
from pgm.providers.base import Operation, PayRequest, PayResultCode
from pgm.store import migrator
from pgm.wiring import Service, compose
from tests.support.databases import fresh_database
from tests.support.notifications import STATUS_PATH, statuses_for
from tests.support.pgm_process import FAST
from tests.support.servers import RecordingReceiver


class ManualClock:
    """A clock that moves only when the test says so (starting at the wall clock's time)."""

    def __init__(self) -> None:
        self._now = time.time()

    def now(self) -> float:
        """The current time in UNIX seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self._now += seconds


def external_providers(directory: Path, **base_urls: str) -> str:
    """An EXTERNAL_PROVIDERS_CONFIG file naming each external provider service's base URL; its path."""
    path = directory / "external-providers.json"
    services = [{"externalService": name, "baseUrl": url} for name, url in base_urls.items()]
    path.write_text(json.dumps({"externalServices": services}), encoding="utf-8")
    return str(path)


@asynccontextmanager
async def services(
    backend: str, directory: Path, clock: Clock, transports: Routes | None = None, **env: str
) -> AsyncIterator[Service]:
    """The parts of a PGM configured by `env`, composed as `pgm serve` composes them, on a fresh migrated
    database; their background loops are not started. Released at the end. `transports` routes origins
    (a provider's base URL, the Flow Manager's) to in-process transports: no port, no thread."""
    with fresh_database(backend, directory) as url:
        settings = load_settings({**FAST, "PGM_DATABASE_URL": url, **env})
        await asyncio.to_thread(migrator.upgrade, settings.database_url)
        service = await compose(settings, clock, Metrics(), transports)
        try:
            yield service
        finally:
            await service.aclose()


@asynccontextmanager
async def delivering(service: Service) -> AsyncIterator[None]:
    """The outbox dispatcher running in this event loop while the test acts."""
    task = asyncio.create_task(service.dispatcher.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def payment_awaiting_the_payer(service: Service, shop_id: str, provider: str = "acme") -> str:
    """A payment the external provider leaves waiting for its payer (REDIRECT_TO_URL); its id at the PGM."""
    adapter = service.registry.get(provider)
    assert adapter is not None
    request = PayRequest(1299, "EUR", shop_id, "credit-cards", idempotency_key=f"key-{shop_id}")
    outcome = await service.payments.start(adapter, Operation.PAY, request)
    assert outcome.result is PayResultCode.REDIRECT_TO_URL
    return outcome.payment.id


async def delivered_statuses(receiver: RecordingReceiver, shop_id: str, count: int) -> list[str]:
    """The PaymentStatus values delivered for `shop_id`, once `count` notifications arrived."""
    await asyncio.to_thread(receiver.wait_for_requests, count, path=STATUS_PATH)
    return [status["status"] for status in statuses_for(receiver, shop_id)]
