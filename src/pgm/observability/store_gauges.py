"""Gauges read from the store when /-/metrics is scraped: the reconciliation queue and the saga inbox.

Every replica reads the same store, so every replica exports the same values: dashboards and alerts
take max() over instances, not sum()."""

from __future__ import annotations

from pgm.observability.metrics import Metrics
from pgm.store.database import Database


async def refresh(database: Database, metrics: Metrics, now: float) -> None:
    """Set the store-derived gauges."""
    async with database.snapshot() as tx:
        payments, refunds = await tx.payments.unsettled_by_provider()
        pending, oldest = await tx.inbox.pending()
    metrics.reconciliation_queue.clear()
    for kind, rows in (("payment", payments), ("refund", refunds)):
        for provider, count in rows:
            metrics.reconciliation_queue.labels(kind, provider).set(count)
    metrics.inbox_pending.set(pending)
    metrics.inbox_oldest_pending.set(max(0.0, now - oldest) if oldest is not None else 0.0)
