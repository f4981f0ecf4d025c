"""The FastAPI application: routers, middleware, and the lifespan that wires and runs everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from pgm import __version__
from pgm.clock import Clock, SystemClock
from pgm.config import Settings
from pgm.container import Container
from pgm.crypto import timestamped_hmac
from pgm.domain.saga import Event, envelope
from pgm.http import errors
from pgm.http.middleware import AdmissionLimit, BodySizeLimit, RejectUnstorableText, RequestContext
from pgm.http.routes import home, inspection, ops, v3
from pgm.http.routes import saga as saga_routes
from pgm.observability.metrics import Metrics
from pgm.observability.outcomes import OutcomeMetrics
from pgm.outbound import http_client
from pgm.outbox.dispatcher import OutboxDispatcher, RetryPolicy, Sender
from pgm.outbox.writer import Destination, message_id_header
from pgm.providers.registry import build_registry
from pgm.saga.commands import SagaCommands
from pgm.saga.crud import SagaCrud
from pgm.saga.events import SagaEvents
from pgm.sandbox import routes as sandbox_routes
from pgm.sandbox.books import Books
from pgm.sandbox.secret import webhook_secret
from pgm.services.adoption import Adoption
from pgm.services.callbacks import CallbackService
from pgm.services.notifications import PaymentStatusNotifier
from pgm.services.payments import PaymentService
from pgm.services.reconciliation import Reconciler
from pgm.services.settlement import OutcomeListener, ReconcilePolicy, Settlement
from pgm.store import migrations
from pgm.store.database import Database, PoolSettings
from pgm.store.models import OutboxMessage

log = logging.getLogger(__name__)

DESCRIPTION = """Payment providers behind one API, and a participant in Flow Manager payment sagas.

Amounts are integers in minor units. Every error answers with one JSON shape: `statusCode`, `error`,
`code`, `message`, and `field` when one field is at fault. Send `Idempotency-Key` to repeat a request
safely. When `PGM_API_TOKEN` is set, send `Authorization: Bearer <token>` (callbacks excepted)."""
DOCS_STATIC = "/documentation/static"
DELIVERY_TIMEOUT_SECONDS = 10.0
PRUNE_INTERVAL_MAX_SECONDS = 300.0


def create_app(settings: Settings, clock: Clock | None = None, background: bool = True) -> FastAPI:
    """Build the service; `background=False` leaves the outbox and reconciliation loops to the caller."""
    the_clock = clock or SystemClock()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrations.upgrade, settings.database_url)
        container = await _wire(app, settings, the_clock, metrics)
        app.state.container = container
        tasks: list[asyncio.Task[None]] = []
        if background:
            tasks.append(asyncio.create_task(container.dispatcher.run(), name="outbox"))
            tasks.append(asyncio.create_task(_reconcile_forever(container), name="reconciliation"))
            tasks.append(asyncio.create_task(_prune_callbacks_forever(container), name="callback-pruning"))
            if container.saga_commands is not None:
                tasks.append(asyncio.create_task(container.saga_commands.run(), name="saga-commands"))
        log.info("PGM started", extra={"providers": container.registry.names, "port": settings.http_port})
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if container.saga_commands is not None:
                await container.saga_commands.aclose()
            await container.registry.aclose()
            await container.outbound.aclose()
            await container.database.dispose()

    app = FastAPI(
        title="Payment Gateway Manager",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/documentation/openapi.json",
    )
    errors.install(app)
    app.include_router(home.build_router())
    app.include_router(ops.build_router())
    app.include_router(ops.build_docs_router(DOCS_STATIC))
    app.mount(DOCS_STATIC, StaticFiles(directory=swagger_ui_path), name="documentation-static")
    if "braintree" in settings.enabled_providers:
        # Imported only when enabled, as the registry imports a provider's module (its SDK).
        from pgm.http.routes import braintree as braintree_routes

        app.include_router(braintree_routes.build_router())
    if "axerve" in settings.enabled_providers:
        from pgm.http.routes import axerve as axerve_routes

        app.include_router(axerve_routes.build_router())
    app.include_router(v3.build_router())
    if settings.saga_enabled:
        app.include_router(saga_routes.build_router())
        app.include_router(inspection.build_router())
    if "sandbox" in settings.enabled_providers:
        app.include_router(sandbox_routes.build_router())
    app.add_middleware(RejectUnstorableText)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, callback_max_bytes=settings.callback_max_bytes)
    # Outside the body checks: a shed request costs no read of its body.
    app.add_middleware(AdmissionLimit, max_in_flight=settings.max_in_flight, metrics=metrics)
    app.add_middleware(RequestContext, metrics=metrics)
    return app


def pool_settings(settings: Settings) -> PoolSettings:
    """The store's connection pool from the PGM_DATABASE_* settings."""
    return PoolSettings(
        size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        timeout_seconds=settings.database_pool_timeout_seconds,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
    )


async def _wire(app: FastAPI, settings: Settings, clock: Clock, metrics: Metrics) -> Container:
    database = Database(settings.database_url, pool_settings(settings))
    secret = await webhook_secret(database, settings.sandbox_webhook_secret)
    registry = build_registry(settings, lambda: secret)
    outbound = http_client(DELIVERY_TIMEOUT_SECONDS)
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
    settlement = Settlement(clock, policy, listeners)
    adoption = Adoption(database, settlement, clock, metrics)
    callbacks = CallbackService(database, settlement, clock, metrics, adoption)
    payments = PaymentService(database, settlement, callbacks, clock, metrics, adoption)
    crud = SagaCrud(settings.saga_crud_url, outbound) if settings.saga_crud_url else None
    senders = _senders(settings, outbound, lambda: secret, clock, crud)
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
    saga_commands = None
    if saga_events is not None and crud is not None:
        saga_commands = SagaCommands(
            database,
            registry,
            payments,
            saga_events,
            crud,
            clock,
            metrics,
            lease_seconds=settings.inbox_lease_seconds,
            max_attempts=settings.inbox_max_attempts,
            retry_base_seconds=settings.outbox_backoff_base_seconds,
            wake_dispatcher=dispatcher.wake,
        )
    reconciler = Reconciler(database, registry, payments, callbacks, clock, metrics)
    if "sandbox" in settings.enabled_providers:
        app.state.sandbox = sandbox_routes.SandboxContext(
            database=database,
            books=Books(settings.public_url),
            clock=clock,
            api_key=settings.sandbox_api_key,
            provider_timeout_seconds=settings.provider_timeout_seconds,
            wake_dispatcher=dispatcher.wake,
            listing_needs_key=settings.production,
        )
    return Container(
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
        saga_commands=saga_commands,
    )


def _senders(
    settings: Settings,
    client: httpx.AsyncClient,
    sandbox_secret: Callable[[], str],
    clock: Clock,
    crud: SagaCrud | None,
) -> dict[str, Sender]:
    senders: dict[str, Sender] = {}

    def post_json(url: str) -> Sender:
        async def send(message: OutboxMessage) -> httpx.Response:
            return await client.post(url, json=message.payload, headers=message_id_header(message))

        return send

    if settings.payment_callback_url:
        senders[Destination.PAYMENT_CALLBACK.value] = post_json(settings.payment_callback_url)
    if settings.flow_manager_url and crud is not None:
        event_url = f"{settings.flow_manager_url}/event"
        senders[Destination.FLOW_MANAGER.value] = post_json(event_url)

        async def find_saga_then_send(message: OutboxMessage) -> httpx.Response:
            # A payment the PGM did not start for a saga: its saga is the one whose metadata names it.
            document = await crud.saga_by_payment(str(message.payload["paymentId"]))
            saga_id = document.get("sagaId") if document else None
            if not isinstance(saga_id, str):
                return httpx.Response(204, request=httpx.Request("GET", crud.collection_url))
            event = envelope(saga_id, Event(message.payload["event"]), message.payload["messagePayload"])
            return await client.post(event_url, json=event, headers=message_id_header(message))

        senders[Destination.FLOW_MANAGER_LOOKUP.value] = find_saga_then_send
    if "sandbox" in settings.enabled_providers:
        target = f"{settings.internal_url}/v3/sandbox/callback"

        async def sandbox_webhook(message: OutboxMessage) -> httpx.Response:
            # Signed at send time, as a provider does: a retried webhook carries a fresh timestamp.
            body = json.dumps(message.payload, separators=(",", ":")).encode()
            signature = timestamped_hmac.header(sandbox_secret(), int(clock.now()), body)
            return await client.post(
                target, content=body, headers={"Content-Type": "application/json", "Sandbox-Signature": signature}
            )

        senders[Destination.SANDBOX_WEBHOOK.value] = sandbox_webhook
    return senders


async def _reconcile_forever(container: Container) -> None:
    while True:
        try:
            await container.reconciler.run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconciliation pass failed")
        await asyncio.sleep(container.settings.reconcile_poll_seconds)


async def _prune_callbacks_forever(container: Container) -> None:
    """Raw callbacks are kept for PGM_CALLBACK_RETENTION_SECONDS after they arrive (docs/reliability.md)."""
    retention = container.settings.callback_retention_seconds
    while True:
        try:
            removed = await container.callbacks.prune(retention)
            if removed:
                log.info("raw callbacks pruned", extra={"removed": removed})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pruning raw callbacks failed")
        await asyncio.sleep(min(retention, PRUNE_INTERVAL_MAX_SECONDS))
