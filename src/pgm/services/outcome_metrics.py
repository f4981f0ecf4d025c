"""Counts recorded outcomes in Prometheus: an OutcomeListener of the settlement, like the notifier."""

from __future__ import annotations

from pgm.observability.metrics import Metrics
from pgm.providers.base import PayResult
from pgm.services.settlement import PaymentChange, RefundChange
from pgm.store.records import Payment, Refund
from pgm.store.transaction import Transaction


class OutcomeMetrics:
    """pgm_payments_total and pgm_refunds_total, by the status each payment and refund moves to.

    Counted inside the recording transaction: a transaction that then fails to commit has been counted
    (rare, and the next recording of the same outcome is not counted twice, since it is no change)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def payment_answered(self, tx: Transaction, payment: Payment, result: PayResult) -> None:
        """The status move that follows is what is counted."""

    async def payment_changed(self, tx: Transaction, payment: Payment, change: PaymentChange) -> None:
        """Count the payment's new status."""
        self.metrics.payments.labels(payment.provider, payment.kind, change.transition.status.value).inc()

    async def refund_changed(self, tx: Transaction, payment: Payment, refund: Refund, change: RefundChange) -> None:
        """Count the refund's new status."""
        self.metrics.refunds.labels(payment.provider, change.transition.status.value).inc()

    async def refund_started(self, tx: Transaction, payment: Payment, refund: Refund) -> None:
        """Counted when its status moves, like every refund."""
