"""Reconciliation (docs/reliability.md): payments and refunds left PENDING or UNKNOWN are looked up at the
provider on a back-off schedule and resolved; after the final attempt they fail with a clear reason.
It also retries callbacks that were waiting for their payment to become known, and looks at paid
payments of sagas for refunds made at the provider whose notification never came (the refund watch,
docs/reliability.md#refunds-made-at-the-provider): one it finds is recorded as a refund the PGM did not
ask for, so the saga hears `refundRequested` and then the refund's outcome.

Safe with several replicas: a row is claimed by moving its next_check_at a few seconds ahead with a
compare-and-set, so one replica checks it at a time; the claim is renewed while the check runs, so a
claim left by a process that died frees the row within seconds (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from pgm.background import repeat
from pgm.clock import Clock
from pgm.domain.statuses import Status
from pgm.observability.metrics import Metrics
from pgm.providers.base import (
    ListedRefund,
    NotSupported,
    OutcomeUnknown,
    PaymentLookup,
    ProviderRejected,
    RefundResult,
)
from pgm.providers.registry import ProviderRegistry
from pgm.services.adoption import Adoption
from pgm.services.callbacks import CallbackService
from pgm.services.lookups import Unanswered, ask_about_payment, ask_about_refund
from pgm.services.payments import PaymentService
from pgm.services.settlement import Settlement, Source, refund_position_of
from pgm.store.database import Database

log = logging.getLogger(__name__)

# Short: a claim left by a process that died holds its payment or refund this long at most.
CLAIM_SECONDS = 5.0
BATCH = 50


class Reconciler:
    """Settles what callbacks alone did not."""

    def __init__(
        self,
        database: Database,
        registry: ProviderRegistry,
        payments: PaymentService,
        settlement: Settlement,
        adoption: Adoption,
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
        self.settlement = settlement
        self.adoption = adoption
        self.policy = settlement.policy

    async def run_once(self) -> int:
        """One pass over everything due; returns how many items it looked at."""
        handled = 0
        for refunds, check in ((False, self.check_payment), (True, self.check_refund)):
            for row_id, next_check_at in await self._due(refunds):
                # Claimed one at a time, right before its check: a claim is short, and a batch claimed at
                # once would run out while the first checks wait for their providers.
                claim = await self._claim(refunds, row_id, next_check_at)
                if claim is None:
                    continue  # another replica has it
                async with self._holding(refunds, row_id, claim):
                    await check(row_id)
                handled += 1
        for row_id, next_check_at in await self._due_watched():
            claim = await self._claim(False, row_id, next_check_at)
            if claim is None:
                continue
            async with self._holding(False, row_id, claim):
                await self.look_for_refunds(row_id)
            handled += 1
        for provider, event_id in await self.callbacks.due_deferred():
            adapter = self.registry.get(provider)
            if adapter is not None:
                await self.callbacks.apply(adapter, event_id)
                handled += 1
        return handled

    async def run_forever(self, poll_seconds: float) -> None:
        """A pass every `poll_seconds` for as long as the service runs."""
        await repeat(self.run_once, poll_seconds, "reconciliation pass")

    async def _due(self, refunds: bool) -> list[tuple[str, float]]:
        """Unsettled payments (or refunds) whose next check is due."""
        now = self.clock.now()
        async with self.database.snapshot() as tx:
            if refunds:
                return await tx.payments.due_refunds(now, BATCH)
            return await tx.payments.due_payments(now, BATCH)

    async def _due_watched(self) -> list[tuple[str, float]]:
        """Paid payments whose next look for refunds made at the provider is due (the refund watch)."""
        async with self.database.snapshot() as tx:
            return await tx.payments.due_watched(self.clock.now(), BATCH)

    async def _claim(self, refund: bool, row_id: str, next_check_at: float) -> float | None:
        """Claim a payment (or refund) by moving its next check CLAIM_SECONDS ahead (compare-and-set);
        returns the new value, None when another replica moved it first."""
        until = self.clock.now() + CLAIM_SECONDS
        return await self._move_check(refund, row_id, next_check_at, until)

    async def _move_check(self, refund: bool, row_id: str, expected: float, until: float) -> float | None:
        async with self.database.transaction() as tx:
            moved = await tx.payments.move_check(refund, row_id, expected, until)
        return until if moved else None

    @contextlib.asynccontextmanager
    async def _holding(self, refund: bool, row_id: str, claim: float) -> AsyncIterator[None]:
        """Keep a claim while its check runs (a provider call may take up to its time-out): renewed every
        third of CLAIM_SECONDS, by compare-and-set, so a claim whose process died frees the row within
        CLAIM_SECONDS. The renewals stop once the check has rescheduled the row itself."""

        async def renew() -> None:
            until: float | None = claim
            while until is not None:
                await asyncio.sleep(CLAIM_SECONDS / 3)
                until = await self._move_check(refund, row_id, until, self.clock.now() + CLAIM_SECONDS)

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)

    async def check_payment(self, payment_id: str) -> None:
        """Ask the provider about one unsettled payment and act on the answer."""
        payment = await self.payments.reload(payment_id)
        adapter = self.registry.get(payment.provider)
        if adapter is None:
            return
        answer = await ask_about_payment(adapter, payment)
        lookup = answer if isinstance(answer, PaymentLookup) else None
        error = answer.reason if isinstance(answer, Unanswered) else None
        if lookup is not None:
            payment = await self.payments.apply_lookup(adapter, payment_id, lookup, Source.RECONCILIATION)
        async with self.database.transaction() as tx:
            locked = await tx.payments.lock(payment_id)
            if Status(locked.status).is_final:
                self.metrics.reconciliations.labels(adapter.name, "settled").inc()
                return
            locked.check_attempts += 1
            if lookup is None and error is None and locked.status == Status.UNKNOWN:
                reason = "the provider has no record of this payment: it was never created"
                await self.settlement.payment_status(tx, locked, Status.FAILED, Source.RECONCILIATION, reason)
                self.metrics.reconciliations.labels(adapter.name, "not_found").inc()
            elif locked.check_attempts >= self.policy.max_attempts:
                reason = f"still {Status(locked.status).public} after {locked.check_attempts} checks with the provider"
                await self.settlement.payment_status(tx, locked, Status.FAILED, Source.RECONCILIATION, reason)
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
        answer = await ask_about_refund(adapter, payment, refund)
        found = answer if isinstance(answer, RefundResult) else None
        error = answer.reason if isinstance(answer, Unanswered) else None
        if found is not None:
            refund, payment = await self.payments.apply_refund_result(refund_id, found, Source.RECONCILIATION)
        async with self.database.transaction() as tx:
            locked = await tx.payments.lock(payment.id)
            current = await tx.payments.fresh_refund(refund_id)
            assert current is not None
            if Status(current.status).is_final:
                self.metrics.reconciliations.labels(adapter.name, "settled").inc()
                return
            current.check_attempts += 1
            if found is None and error is None and current.status == Status.UNKNOWN:
                reason = "the provider has no record of this refund: it was never created"
                await self.settlement.refund_status(tx, locked, current, Status.FAILED, Source.RECONCILIATION, reason)
            elif current.check_attempts >= self.policy.max_attempts:
                reason = (
                    f"still {Status(current.status).public} after {current.check_attempts} checks with the provider"
                )
                await self.settlement.refund_status(tx, locked, current, Status.FAILED, Source.RECONCILIATION, reason)
            else:
                current.next_check_at = self.clock.now() + self.policy.delay(current.check_attempts)

    async def look_for_refunds(self, payment_id: str) -> None:
        """List a paid payment's refunds at the provider; record those the PGM has never heard of as
        refunds it did not ask for (through the same path as a provider's notification of one), then
        schedule the next look, or end the watch once the window is over or everything came back."""
        payment = await self.payments.reload(payment_id)
        adapter = self.registry.get(payment.provider)
        listed: list[ListedRefund] = []
        error: str | None = None
        # False when asking again cannot help: the provider lists no refunds, or not this payment's (a
        # Stripe subscription's are its invoices').
        listable = bool(adapter is not None and adapter.capabilities.lists_refunds and payment.provider_payment_id)
        if adapter is not None and listable and payment.provider_payment_id and payment.status == Status.ACCEPTED:
            try:
                listed = await adapter.list_refunds(payment.provider_payment_id)
            except OutcomeUnknown as exc:
                error = str(exc)
            except (ProviderRejected, NotSupported) as exc:
                error, listable = str(exc), False
        settlement = self.settlement
        async with self.database.transaction() as tx:
            locked = await tx.payments.lock(payment_id)
            if locked.status != Status.ACCEPTED:
                return  # no longer paid (a reversal): nothing to watch; its own schedule stands
            found = 0
            for refund in listed:
                if refund.status is Status.FAILED:
                    continue  # moved no money: nothing for the saga to follow
                adopted = await self.adoption.adopt_refund(
                    tx, locked, refund.refund_id, refund.amount, Source.RECONCILIATION
                )
                if adopted is not None and adopted[1]:
                    note = "found at the provider by reconciliation"
                    await settlement.refund_status(tx, locked, adopted[0], refund.status, Source.RECONCILIATION, note)
                    found += 1
            locked.check_attempts += 1
            if not listable:
                locked.next_check_at = None
            elif (await refund_position_of(tx, locked)).is_total:
                locked.next_check_at = None  # everything came back: nothing left to refund anywhere
            else:
                # updated_at is when the payment was paid: only a status change moves it.
                locked.next_check_at = settlement.watch.next_check(
                    locked.updated_at, locked.check_attempts, self.clock.now()
                )
            outcome = "error" if error else "refund_found" if found else "no_new_refund"
            self.metrics.reconciliations.labels(payment.provider, outcome).inc()
