"""The composition root: builds every part of the service from its Settings, once, and owns their start
and stop. Nothing below imports this module except to name the parts it hands out (docs/architecture.md).

The parts are built inside the running event loop (the lifespan of the web app): the store's pool and
the outgoing HTTP client belong to the loop that uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from pgm.clock import Clock, SystemClock
from pgm.config import Settings
from pgm.observability.metrics import Metrics
from pgm.outbound import HttpClient, Routes, Transport, routed
from pgm.outbox.dispatcher import OutboxDispatcher, RetryPolicy, Sender
from pgm.outbox.writer import Destination
from pgm.providers.registry import ProviderRegistry, build_registry
from pgm.saga.commands import SagaCommands
from pgm.saga.crud import SagaCrud
from pgm.saga.events import SagaEvents, flow_manager_senders
from pgm.saga.inbox import Inbox
from pgm.sandbox.books import Books
from pgm.sandbox.context import SandboxContext
from pgm.sandbox.secret import webhook_secret
from pgm.sandbox.webhooks import webhook_sender
from pgm.services.adoption import Adoption
from pgm.services.callbacks import CallbackService
from pgm.services.notifications import PaymentStatusNotifier, payment_callback_sender
from pgm.services.outcome_metrics import OutcomeMetrics
from pgm.services.payments import PaymentService
from pgm.services.reconciliation import Reconciler
from pgm.services.settlement import OutcomeListener, ReconcilePolicy, RefundWatch, Settlement
from pgm.store import migrator
from pgm.store.database import Database, PoolSettings

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_SECONDS = 10.0


@dataclass
class Service:
    """The parts of a running service, built once and shared by the routes and the background loops."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    database: Database
    registry: ProviderRegistry
    payments: PaymentService
    callbacks: CallbackService
    reconciler: Reconciler
    dispatcher: OutboxDispatcher
    notifier: PaymentStatusNotifier
    outbound: list[HttpClient]
    saga_inbox: Inbox | None
    saga_crud: SagaCrud | None
    sandbox: SandboxContext | None

    def start_background(self) -> list[asyncio.Task[None]]:
        """Start the loops that work without a request: the outbox, reconciliation, raw-callback pruning
        and, with a Flow Manager, the saga inbox."""
        settings = self.settings
        tasks = [
            asyncio.create_task(self.dispatcher.run(), name="outbox"),
            asyncio.create_task(self.reconciler.run_forever(settings.reconcile_poll_seconds), name="reconciliation"),
            asyncio.create_task(
                self.callbacks.prune_forever(settings.callback_retention_seconds), name="callback-pruning"
            ),
        ]
        if self.saga_inbox is not None:
            tasks.append(asyncio.create_task(self.saga_inbox.run(), name="saga-inbox"))
        return tasks

    async def aclose(self) -> None:
        """Release what the parts hold: connections to providers, to receivers and to the store."""
        if self.saga_inbox is not None:
            await self.saga_inbox.aclose()
        await self.registry.aclose()
        for client in self.outbound:
            await client.aclose()
        await self.database.dispose()


def pool_settings(settings: Settings) -> PoolSettings:
    """The store's connection pool from the PGM_DATABASE_* settings."""
    return PoolSettings(
        size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        timeout_seconds=settings.database_pool_timeout_seconds,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
    )


@dataclass(frozen=True)
class Wiring:
    """What the service is built from, known before its event loop runs: the settings, the clock (a test
    may pass one it controls), the metrics registry (the web app's middleware records into it too) and,
    for a test, transports by origin for outgoing requests (a provider's fake, in-process; none in
    production, where every client opens its own connections)."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    transports: Mapping[str, Transport] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Service]:
        """The service from start to stop: migrate the store, build the parts, run the background loops
        while the caller serves, then stop the loops and release the parts."""
        await asyncio.to_thread(migrator.upgrade, self.settings.database_url)
        service = await compose(self.settings, self.clock, self.metrics, self.transports)
        tasks = service.start_background()
        log.info("PGM started", extra={"providers": service.registry.names, "port": self.settings.http_port})
        try:
            yield service
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await service.aclose()


async def compose(settings: Settings, clock: Clock, metrics: Metrics, routes: Routes | None = None) -> Service:
    """Build every part, in dependency order, on a migrated store; nothing runs yet. `routes` sends the
    outgoing requests of every adapter and outbox sender for chosen origins to the transports given."""
    database = Database(settings.database_url, pool_settings(settings))
    secret = await webhook_secret(database, settings.sandbox_webhook_secret)
    registry = build_registry(settings, lambda: secret, metrics, routes)
    notifier = PaymentStatusNotifier(enabled=settings.payment_callback_url is not None, now=clock.now)
    listeners: list[OutcomeListener] = [notifier, OutcomeMetrics(metrics)]
    saga_events = SagaEvents(clock, metrics) if settings.saga_enabled else None
    if saga_events is not None:
        listeners.append(saga_events)
    policy = ReconcilePolicy(
        first_after_seconds=settings.reconcile_after_seconds,
        max_interval_seconds=settings.reconcile_max_interval_seconds,
        max_attempts=settings.reconcile_max_attempts,
    )
    watch = RefundWatch(
        window_seconds=settings.refund_watch_seconds,
        first_after_seconds=settings.refund_watch_after_seconds,
        providers=frozenset(adapter.name for adapter in registry if adapter.capabilities.lists_refunds),
    )
    settlement = Settlement(clock, policy, listeners, watch)
    adoption = Adoption(database, settlement, clock)
    callbacks = CallbackService(database, settlement, clock, metrics, adoption)
    payments = PaymentService(database, settlement, callbacks, clock, metrics, adoption)
    # One client (one connection pool) per destination: a slow receiver never holds another's connections.
    outbound: list[HttpClient] = []

    def client() -> HttpClient:
        outbound.append(HttpClient(DELIVERY_TIMEOUT_SECONDS, transport=routed(routes)))
        return outbound[-1]

    crud = SagaCrud(settings.saga_crud_url, client()) if settings.saga_crud_url else None
    # The wiring only registers senders: each producer of outbox messages owns the one for its messages.
    senders: dict[str, Sender] = {}
    if settings.payment_callback_url:
        senders[Destination.PAYMENT_CALLBACK.value] = payment_callback_sender(client(), settings.payment_callback_url)
    if settings.flow_manager_url and crud is not None:
        senders.update(flow_manager_senders(client(), settings.flow_manager_url, crud))
    if "sandbox" in settings.enabled_providers:
        senders[Destination.SANDBOX_WEBHOOK.value] = webhook_sender(
            client(), settings.sandbox_webhook_target, lambda: secret, clock
        )
    dispatcher = OutboxDispatcher(
        database,
        senders,
        RetryPolicy(
            settings.outbox_backoff_base_seconds, settings.outbox_backoff_max_seconds, settings.outbox_max_attempts
        ),
        clock,
        metrics,
        settings.outbox_poll_seconds,
    )
    # Every commit that writes outbox rows wakes the dispatcher (no writer has to remember to).
    database.on_outbox_commit(dispatcher.wake)
    saga_inbox = None
    if saga_events is not None and crud is not None:
        saga_inbox = Inbox(
            database,
            SagaCommands(database, registry, payments, saga_events, crud),
            clock,
            metrics,
            lease_seconds=settings.inbox_lease_seconds,
            max_attempts=settings.inbox_max_attempts,
            retry_base_seconds=settings.outbox_backoff_base_seconds,
            wake_dispatcher=dispatcher.wake,
        )
    reconciler = Reconciler(database, registry, payments, settlement, adoption, callbacks, clock, metrics)
    sandbox = None
    if "sandbox" in settings.enabled_providers:
        sandbox = SandboxContext(
            database=database,
            books=Books(settings.public_url),
            clock=clock,
            api_key=settings.sandbox_api_key,
            provider_timeout_seconds=settings.provider_timeout_seconds,
            listing_needs_key=settings.production,
        )
    return Service(
        settings=settings,
        clock=clock,
        metrics=metrics,
        database=database,
        registry=registry,
        payments=payments,
        callbacks=callbacks,
        reconciler=reconciler,
        dispatcher=dispatcher,
        notifier=notifier,
        outbound=outbound,
        saga_inbox=saga_inbox,
        saga_crud=crud,
        sandbox=sandbox,
    )
