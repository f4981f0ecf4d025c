"""Reconciliation (spec 04): payments and refunds left PENDING or UNKNOWN are looked up at the
provider on a back-off schedule and resolved; after the final attempt they fail with a clear reason.
It also retries callbacks that were waiting for their payment to become known.

Safe with several replicas: a row is claimed by moving its next_check_at with a compare-and-set, so
one replica checks it at a time.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from pgm.clock import Clock
from pgm.domain.idempotency import provider_idempotency_key
from pgm.domain.statuses import Status
from pgm.observability.metrics import Metrics
from pgm.providers.base import NotSupported, OutcomeUnknown, PaymentLookup, ProviderRejected, RefundResult
from pgm.providers.registry import ProviderRegistry
from pgm.services.callbacks import CallbackService
from pgm.services.payments import PaymentService
from pgm.services.provider_calls import observed
from pgm.services.settlement import Source
from pgm.store.database import Database
from pgm.store.models import Payment, Refund

log = logging.getLogger(__name__)

CLAIM_SECONDS = 120.0
BATCH = 50
UNSETTLED = (Status.PENDING.value, Status.UNKNOWN.value)


class Reconciler:
    """Settles what callbacks alone did not."""

    def __init__(
        self,
        database: Database,
        registry: ProviderRegistry,
        payments: PaymentService,
        callbacks: CallbackService,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.database = database
        self.registry = registry
        self.payments = payments
        self.callbacks = callbacks
        self.clock = clock
        self.metrics = metrics
        self.policy = payments.settlement.policy

    async def run_once(self) -> int:
        """One pass over everything due; returns how many items it looked at."""
        handled = 0
        for payment_id in await self._claim(Payment):
            await self.check_payment(payment_id)
            handled += 1
        for refund_id in await self._claim(Refund):
            await self.check_refund(refund_id)
            handled += 1
        for provider, event_id in await self.callbacks.due_deferred():
            adapter = self.registry.get(provider)
            if adapter is not None:
                await self.callbacks.apply(adapter, event_id)
                handled += 1
        return handled

    async def _claim(self, model: type[Payment] | type[Refund]) -> list[str]:
        now = self.clock.now()
        async with self.database.read() as session:
            due = (
                await session.execute(
                    select(model.id, model.next_check_at)
                    .where(model.status.in_(UNSETTLED), model.next_check_at <= now)
                    .order_by(model.next_check_at)
                    .limit(BATCH)
                )
            ).all()
        claimed = []
        for row_id, next_check_at in due:
            async with self.database.write() as session:
                result = await session.execute(
                    update(model)
                    .where(model.id == row_id, model.next_check_at == next_check_at)
                    .values(next_check_at=now + CLAIM_SECONDS)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(row_id)
        return claimed

    async def check_payment(self, payment_id: str) -> None:
        """Ask the provider about one unsettled payment and act on the answer."""
        payment = await self.payments.reload(payment_id)
        adapter = self.registry.get(payment.provider)
        if adapter is None:
            return
        lookup: PaymentLookup | None = None
        error: str | None = None
        try:
            if payment.provider_payment_id:
                lookup = await observed(
                    self.metrics, adapter.name, "status", adapter.payment_status(payment.provider_payment_id)
                )
            else:
                lookup = await observed(
                    self.metrics,
                    adapter.name,
                    "find payment",
                    adapter.find_payment(
                        provider_idempotency_key(payment.idempotency_key), payment.shop_transaction_id
                    ),
                )
        except (OutcomeUnknown, ProviderRejected, NotSupported) as exc:
            error = str(exc)
        if lookup is not None:
            payment = await self.payments.apply_lookup(adapter, payment_id, lookup, Source.RECONCILIATION)
        async with self.database.write() as session:
            locked = await self.database.lock_payment(session, payment_id)
            assert locked is not None
            if Status(locked.status).is_final:
                self.metrics.reconciliations.labels(adapter.name, "settled").inc()
                return
            locked.check_attempts += 1
            settlement = self.payments.settlement
            if lookup is None and error is None and locked.status == Status.UNKNOWN:
                reason = "the provider has no record of this payment: it was never created"
                await settlement.payment_status(session, locked, Status.FAILED, Source.RECONCILIATION, reason)
                self.metrics.reconciliations.labels(adapter.name, "not_found").inc()
            elif locked.check_attempts >= self.policy.max_attempts:
                reason = f"still {Status(locked.status).public} after {locked.check_attempts} checks with the provider"
                await settlement.payment_status(session, locked, Status.FAILED, Source.RECONCILIATION, reason)
                self.metrics.reconciliations.labels(adapter.name, "gave_up").inc()
            else:
                locked.next_check_at = self.clock.now() + self.policy.delay(locked.check_attempts)
                self.metrics.reconciliations.labels(adapter.name, "error" if error else "unsettled").inc()

    async def check_refund(self, refund_id: str) -> None:
        """Ask the provider about one unsettled refund and act on the answer."""
        refund, payment = await self.payments.reload_refund(refund_id)
        adapter = self.registry.get(payment.provider)
        if adapter is None or not payment.provider_payment_id:
            return
        found: RefundResult | None = None
        error: str | None = None
        try:
            found = await observed(
                self.metrics,
                adapter.name,
                "refund status",
                adapter.refund_status(
                    payment.provider_payment_id,
                    refund.provider_refund_id,
                    provider_idempotency_key(refund.idempotency_key),
                ),
            )
        except (OutcomeUnknown, ProviderRejected, NotSupported) as exc:
            error = str(exc)
        if found is not None:
            refund, payment = await self.payments.apply_refund_result(refund_id, found, Source.RECONCILIATION)
        async with self.database.write() as session:
            locked = await self.database.lock_payment(session, payment.id)
            assert locked is not None
            current = await session.get(Refund, refund_id, populate_existing=True)
            assert current is not None
            if Status(current.status).is_final:
                self.metrics.reconciliations.labels(adapter.name, "settled").inc()
                return
            current.check_attempts += 1
            settlement = self.payments.settlement
            if found is None and error is None and current.status == Status.UNKNOWN:
                reason = "the provider has no record of this refund: it was never created"
                await settlement.refund_status(session, locked, current, Status.FAILED, Source.RECONCILIATION, reason)
            elif current.check_attempts >= self.policy.max_attempts:
                reason = (
                    f"still {Status(current.status).public} after {current.check_attempts} checks with the provider"
                )
                await settlement.refund_status(session, locked, current, Status.FAILED, Source.RECONCILIATION, reason)
            else:
                current.next_check_at = self.clock.now() + self.policy.delay(current.check_attempts)
