"""Gauges read from the store when /-/metrics is scraped: the reconciliation queue and the saga inbox.

Every replica reads the same store, so every replica exports the same values: dashboards and alerts
take max() over instances, not sum()."""

from __future__ import annotations

from sqlalchemy import func, select

from pgm.domain.statuses import Status
from pgm.observability.metrics import Metrics
from pgm.store.database import Database
from pgm.store.models import InboxCommand, Payment, Refund

UNSETTLED = (Status.PENDING.value, Status.UNKNOWN.value)
# The inbox's status of a command not yet done (pgm.saga.commands).
INBOX_PENDING = "PENDING"


async def refresh(database: Database, metrics: Metrics, now: float) -> None:
    """Set the store-derived gauges."""
    async with database.read() as session:
        payments = (
            await session.execute(
                select(Payment.provider, func.count()).where(Payment.status.in_(UNSETTLED)).group_by(Payment.provider)
            )
        ).all()
        refunds = (
            await session.execute(
                select(Payment.provider, func.count())
                .join(Refund, Refund.payment_id == Payment.id)
                .where(Refund.status.in_(UNSETTLED))
                .group_by(Payment.provider)
            )
        ).all()
        pending, oldest = (
            await session.execute(
                select(func.count(), func.min(InboxCommand.created_at)).where(InboxCommand.status == INBOX_PENDING)
            )
        ).one()
    metrics.reconciliation_queue.clear()
    for kind, rows in (("payment", payments), ("refund", refunds)):
        for provider, count in rows:
            metrics.reconciliation_queue.labels(kind, provider).set(count)
    metrics.inbox_pending.set(pending)
    metrics.inbox_oldest_pending.set(max(0.0, now - oldest) if oldest is not None else 0.0)
