"""The one place that turns what a provider said into state, ledger entries and outbox messages,
whether it said it in a synchronous answer, a callback, a status check or during reconciliation.

Everything here runs inside the caller's write transaction, with the payment locked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from pgm.clock import Clock
from pgm.domain.refunds import RefundEntry, RefundPosition, refund_position
from pgm.domain.statuses import OperationKind, PaymentKind, Status, Transition, transition
from pgm.providers.base import PayResult
from pgm.store.records import LedgerEntry, Payment, Refund
from pgm.store.transaction import Transaction


class Source(enum.StrEnum):
    """Who told us."""

    REQUEST = "REQUEST"
    ANSWER = "ANSWER"
    CALLBACK = "CALLBACK"
    STATUS_CHECK = "STATUS_CHECK"
    RECONCILIATION = "RECONCILIATION"
    # A payment made before the switch, recorded from what the provider says (services/adoption.py).
    ADOPTION = "ADOPTION"


@dataclass(frozen=True)
class PaymentChange:
    """A payment's recorded status moved."""

    transition: Transition
    previous: Status
    source: Source


@dataclass(frozen=True)
class RefundChange:
    """A refund's recorded status moved; `position` is the payment's refund position after the move."""

    transition: Transition
    previous: Status
    source: Source
    position: RefundPosition


class OutcomeListener(Protocol):
    """Reacts to recorded outcomes by writing outbox messages in the same transaction."""

    async def payment_answered(self, tx: Transaction, payment: Payment, result: PayResult) -> None:
        """The provider's synchronous answer to a pay-like request was recorded."""
        ...

    async def payment_changed(self, tx: Transaction, payment: Payment, change: PaymentChange) -> None:
        """A payment's status moved."""
        ...

    async def refund_changed(self, tx: Transaction, payment: Payment, refund: Refund, change: RefundChange) -> None:
        """A refund's status moved."""
        ...

    async def refund_started(self, tx: Transaction, payment: Payment, refund: Refund) -> None:
        """A refund that no saga command asked for was recorded (the /v3 API, or one the provider
        reported): called before any status of it is applied."""
        ...


@dataclass(frozen=True)
class ReconcilePolicy:
    """When unsettled payments and refunds are looked up at the provider."""

    first_after_seconds: float
    max_interval_seconds: float
    max_attempts: int

    def delay(self, attempts: int) -> float:
        """Seconds until the next check after `attempts` checks (exponential, capped)."""
        return float(min(self.first_after_seconds * (2**attempts), self.max_interval_seconds))


@dataclass(frozen=True)
class RefundWatch:
    """Which paid payments reconciliation looks at for refunds made at the provider whose notification
    never reached the PGM, and when (docs/reliability.md#refunds-made-at-the-provider): a saga's payment
    (the saga follows its money) at a provider that lists refunds, first `first_after_seconds` after it
    was paid, then at doubling intervals, with a last look when `window_seconds` have passed since it was
    paid. A payment's `next_check_at` holds the schedule, so an idle watch costs one indexed query per pass.
    `window_seconds` 0 turns the watch off."""

    window_seconds: float = 0.0
    first_after_seconds: float = 600.0
    providers: frozenset[str] = frozenset()

    def covers(self, payment: Payment) -> bool:
        """Whether the payment, once paid, is watched."""
        return (
            self.window_seconds > 0
            and payment.saga_id is not None
            and payment.provider in self.providers
            and payment.kind != PaymentKind.AUTHORIZATION
        )

    def next_check(self, paid_at: float, looks: int, now: float) -> float | None:
        """When to look again after `looks` looks; None once the window is over."""
        end = paid_at + self.window_seconds
        if now >= end:
            return None
        return min(now + self.first_after_seconds * 2.0**looks, end)


class Settlement:
    """Applies provider outcomes to the store and tells the listeners."""

    def __init__(
        self,
        clock: Clock,
        policy: ReconcilePolicy,
        listeners: list[OutcomeListener],
        watch: RefundWatch | None = None,
    ) -> None:
        self.clock = clock
        self.policy = policy
        self.listeners = listeners
        self.watch = watch or RefundWatch()

    async def record(
        self,
        tx: Transaction,
        payment: Payment,
        status: Status,
        source: Source,
        note: str | None,
        refund: Refund | None = None,
        reversal: bool = False,
    ) -> None:
        """Append one fact to the ledger (the payment and the refund must be in the store already)."""
        await tx.payments.record(
            LedgerEntry(
                payment_id=payment.id,
                refund_id=refund.id if refund else None,
                operation=(OperationKind.REFUND if refund else OperationKind.PAYMENT).value,
                status=status.value,
                amount=refund.amount if refund else payment.amount,
                source=source.value,
                reversal=reversal,
                note=note,
                created_at=self.clock.now(),
            )
        )

    async def answered(self, tx: Transaction, payment: Payment, result: PayResult) -> Transition:
        """Record the synchronous answer to a pay-like request, then its status."""
        if result.payment_id and not payment.provider_payment_id:
            payment.provider_payment_id = result.payment_id
        payment.redirect_url = result.redirect_url or payment.redirect_url
        payment.redirect_url_mobile = result.redirect_url_mobile or payment.redirect_url_mobile
        payment.subscription_token = result.subscription_token or payment.subscription_token
        payment.link = result.link or payment.link
        if result.metadata:
            payment.provider_metadata = {**payment.provider_metadata, **result.metadata}
        for listener in self.listeners:
            await listener.payment_answered(tx, payment, result)
        return await self.payment_status(tx, payment, result.result.status, Source.ANSWER, result.description)

    async def payment_status(
        self, tx: Transaction, payment: Payment, reported: Status, source: Source, note: str | None
    ) -> Transition:
        """Apply a reported payment status; stale news is ignored, reversals are followed and recorded."""
        previous = Status(payment.status)
        moved = transition(previous, reported)
        now = self.clock.now()
        # Scheduled before the listeners run: a query of theirs flushes the row, and one UPDATE is enough.
        if moved.status is Status.ACCEPTED and self.watch.covers(payment):
            if moved.changed:
                # Paid now: watched for refunds made at the provider (a repeated ACCEPTED keeps the schedule).
                payment.check_attempts = 0
                payment.next_check_at = self.watch.next_check(now, 0, now)
        else:
            self._schedule(payment, moved.status, now)
        if moved.changed:
            payment.status = moved.status.value
            payment.description = note or payment.description
            payment.updated_at = now
            await self.record(tx, payment, moved.status, source, note, reversal=moved.reversal)
            change = PaymentChange(moved, previous, source)
            for listener in self.listeners:
                await listener.payment_changed(tx, payment, change)
        return moved

    async def refund_status(
        self,
        tx: Transaction,
        payment: Payment,
        refund: Refund,
        reported: Status,
        source: Source,
        note: str | None,
    ) -> Transition:
        """Apply a reported refund status; partial or total is derived from the ledger afterwards."""
        previous = Status(refund.status)
        moved = transition(previous, reported)
        now = self.clock.now()
        if moved.changed:
            refund.status = moved.status.value
            refund.description = note or refund.description
            refund.updated_at = now
            await self.record(tx, payment, moved.status, source, note, refund=refund, reversal=moved.reversal)
            position = await refund_position_of(tx, payment)
            change = RefundChange(moved, previous, source, position)
            for listener in self.listeners:
                await listener.refund_changed(tx, payment, refund, change)
        self._schedule(refund, Status(refund.status), now)
        return moved

    async def refund_started(self, tx: Transaction, payment: Payment, refund: Refund) -> None:
        """Tell the listeners about a refund no saga command asked for, before its first status."""
        for listener in self.listeners:
            await listener.refund_started(tx, payment, refund)

    def _schedule(self, row: Payment | Refund, status: Status, now: float) -> None:
        if status.is_final:
            row.next_check_at = None
        elif row.next_check_at is None:
            row.next_check_at = now + self.policy.delay(row.check_attempts)


async def refund_position_of(tx: Transaction, payment: Payment) -> RefundPosition:
    """The payment's refund position as the store holds it: what was paid, and its refunds in the order they
    were asked for (read in the caller's transaction, under the payment's lock when the caller holds it)."""
    refunds = await tx.payments.refunds_of(payment.id)
    paid = payment.amount if payment.status == Status.ACCEPTED else 0
    return refund_position(paid, [RefundEntry(r.amount, Status(r.status)) for r in refunds])
