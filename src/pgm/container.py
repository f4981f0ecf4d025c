"""The parts of a running service, wired once at start-up and shared by routes and background loops."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from pgm.clock import Clock
from pgm.config import Settings
from pgm.observability.metrics import Metrics
from pgm.outbox.dispatcher import OutboxDispatcher
from pgm.providers.registry import ProviderRegistry
from pgm.saga.commands import SagaCommands
from pgm.services.callbacks import CallbackService
from pgm.services.notifications import PaymentStatusNotifier
from pgm.services.payments import PaymentService
from pgm.services.reconciliation import Reconciler
from pgm.store.database import Database


@dataclass
class Container:
    """Everything a request handler or a background loop may need."""

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
    outbound: httpx.AsyncClient
    saga_commands: SagaCommands | None = None
