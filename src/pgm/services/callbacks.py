"""Provider callbacks (docs/reliability.md): verified the provider's way before anything is stored,
then stored raw, de-duplicated on the provider's event id, and applied. A notification about a payment we
do not know yet is kept (DEFERRED) and applied as soon as the payment is known: never acknowledged and
lost. One that would move a payment or refund out of a final status is applied only once the provider,
asked through its lookup, says the same: a signature proves who sent it, not that it is the latest truth.
Raw callbacks are pruned after a retention period; one that fails verification is not kept at all.
One still unknown at its first retry is a payment made before the switch: it is adopted from the
provider (docs/reliability.md#adopting-payments-made-before-the-switch) and then applied.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from pgm.background import repeat
from pgm.clock import Clock
from pgm.domain.statuses import Status, transition
from pgm.observability.metrics import Metrics
from pgm.providers.base import (
    CallbackAnswer,
    CallbackRequest,
    InvalidCallback,
    Notification,
    NotSupported,
    OutcomeUnknown,
    ProviderAdapter,
    ProviderRejected,
    Subject,
)
from pgm.services.adoption import Adoption, AdoptionRefused, facts_of_lookup, facts_of_notification
from pgm.services.settlement import Settlement, Source
from pgm.store.database import Database
from pgm.store.records import Payment, ProviderCallback, ProviderEvent, Refund
from pgm.store.transaction import DuplicateKey, Transaction

log = logging.getLogger(__name__)

# Headers worth keeping with a raw callback: enough to re-verify, nothing that authenticates us.
KEPT_HEADERS = frozenset({"content-type", "user-agent", "sandbox-signature", "stripe-signature", "x-request-id"})
DEFERRED_RETRY_SECONDS = 1.0
DEFERRED_MAX_ATTEMPTS = 40
# Raw callbacks (and their events) pruned per statement: bounded transactions on a large backlog.
PRUNE_BATCH = 500
PRUNE_INTERVAL_MAX_SECONDS = 300.0


class EventStatus(enum.StrEnum):
    """Where a verified notification stands."""

    DEFERRED = "DEFERRED"
    PROCESSED = "PROCESSED"
    ORPHANED = "ORPHANED"
    # A reversal of a final status the provider did not confirm (it disagrees, or cannot be asked):
    # nothing changed; kept for an operator with the reason.
    UNCONFIRMED = "UNCONFIRMED"


class CallbackResult(enum.StrEnum):
    """What became of a callback or one of its notifications, as counted in pgm_provider_callbacks_total."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REFUSED = "refused"
    UNPROCESSED = "unprocessed"
    DUPLICATE = "duplicate"
    DEFERRED = "deferred"
    REVERSAL = "reversal"
    UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True)
class ProviderAnswer:
    """What the provider said when asked about a notification's subject. `status` None: no answer;
    `final` says asking again cannot help (the provider has no lookup)."""

    status: Status | None
    detail: str = ""
    final: bool = False


class CallbackRejected(Exception):
    """The callback is not provably from the provider; answer 401 and change nothing."""


class CallbackRefusedByProvider(Exception):
    """The provider side that reads the callback refused it (an external service's 4xx): nothing changed."""


class CallbackNotProcessed(Exception):
    """The callback could not be read now (the provider side needed to read it did not answer): nothing
    changed, answer 503 so the provider delivers it again."""


class CallbackService:
    """Receives, verifies, de-duplicates and applies provider notifications."""

    def __init__(
        self,
        database: Database,
        settlement: Settlement,
        clock: Clock,
        metrics: Metrics,
        adoption: Adoption | None = None,
    ) -> None:
        self.database = database
        self.settlement = settlement
        self.clock = clock
        self.metrics = metrics
        self.adoption = adoption or Adoption(database, settlement, clock)

    async def receive(self, adapter: ProviderAdapter, request: CallbackRequest) -> CallbackAnswer:
        """Handle one HTTP callback end to end; raise CallbackRejected for forged or stale ones."""
        try:
            notifications = await adapter.parse_callback(request)
        except InvalidCallback as exc:
            # Verified before anything is stored: what is not provably the provider's is not kept at all, so
            # a flood of forged callbacks costs the store nothing (the log line is what an operator needs).
            self.metrics.callbacks.labels(adapter.name, CallbackResult.REJECTED).inc()
            log.warning(
                "callback rejected", extra={"provider": adapter.name, "reason": str(exc), "bytes": len(request.body)}
            )
            raise CallbackRejected(str(exc)) from exc
        except ProviderRejected as exc:
            # An external provider that reads its own callbacks answered 4xx (say, an unknown payment):
            # a clear refusal for the caller, never a crash; not verified, so not kept either.
            self.metrics.callbacks.labels(adapter.name, CallbackResult.REFUSED).inc()
            log.warning("callback refused by the provider", extra={"provider": adapter.name, "reason": str(exc)})
            raise CallbackRefusedByProvider(f"{adapter.name}: {exc}") from exc
        except OutcomeUnknown as exc:
            # An external provider reads its own callbacks: while it is down we know nothing yet, and keep
            # nothing either; the 503 makes the provider deliver it again.
            self.metrics.callbacks.labels(adapter.name, CallbackResult.UNPROCESSED).inc()
            log.warning("callback not processed", extra={"provider": adapter.name, "reason": str(exc)})
            raise CallbackNotProcessed(str(exc)) from exc
        try:
            to_ask = await self._accept(adapter, request, notifications)
        except DuplicateKey:
            # The same event delivered twice at the same moment: the other delivery stored it first; this
            # pass sees it and skips it.
            to_ask = await self._accept(adapter, request, notifications)
        for event_id in to_ask:
            await self.apply(adapter, event_id)
        return adapter.callback_answer()

    async def _accept(
        self, adapter: ProviderAdapter, request: CallbackRequest, notifications: list[Notification]
    ) -> list[int]:
        """In one transaction: store the verified callback raw, store each notification not seen before and
        apply those that carry their status. Returns the stored ones the provider must be asked about
        (unsigned hints, reversals of a final status): they are applied after, outside the transaction."""
        to_ask: list[int] = []
        async with self.database.transaction() as tx:
            callback_id = (await tx.callbacks.add(_raw_callback(adapter.name, request))).id
            for notification in notifications:
                event = await self._new_event(tx, adapter.name, callback_id, notification)
                if event is None:
                    self.metrics.callbacks.labels(adapter.name, CallbackResult.DUPLICATE).inc()
                    continue
                ask = notification.status is None
                if notification.status is not None:
                    ask = await self._settle(tx, adapter, event, notification, None)
                # Stored as it ends up (one INSERT); a delivery of the same event id at the same moment fails
                # it on the unique constraint and the whole transaction rolls back, settlement included.
                await tx.callbacks.add_event(event)
                if ask:
                    to_ask.append(event.id)
        return to_ask

    async def _new_event(
        self, tx: Transaction, provider: str, callback_id: int, notification: Notification
    ) -> ProviderEvent | None:
        """The notification as a new stored event, not yet inserted; None when its event id was seen before."""
        if await tx.callbacks.seen(provider, notification.event_id):
            return None
        return ProviderEvent(
            provider=provider,
            event_id=notification.event_id,
            callback_id=callback_id,
            subject_id=_subject_id(notification),
            notification=notification.to_json(),
            status=EventStatus.DEFERRED.value,
            attempts=0,
            next_attempt_at=self.clock.now(),
            received_at=self.clock.now(),
        )

    async def apply(self, adapter: ProviderAdapter, event_id: int) -> None:
        """Apply one stored notification, or leave it DEFERRED for later if its subject is unknown or the
        provider has not confirmed it yet."""
        async with self.database.snapshot() as tx:
            event = await tx.callbacks.event(event_id)
            if event is None or event.status != EventStatus.DEFERRED:
                return
            notification = Notification.from_json(event.notification)
            subject = await self._subject(tx, adapter.name, notification)
            retried = event.attempts > 0
        # Still unknown after the first wait, so not one of ours whose answer was on its way: a payment made
        # before the switch, adopted from the provider (services/adoption.py).
        if (
            subject is None
            and retried
            and notification.subject is Subject.PAYMENT
            and await self._adopt(adapter, notification)
        ):
            async with self.database.snapshot() as tx:
                subject = await self._subject(tx, adapter.name, notification)
        answer = None
        if subject is not None and (notification.status is None or _reverses(subject, notification.status)):
            payment_id = notification.payment_id or subject[0].provider_payment_id or ""
            answer = await self._ask_provider(adapter, notification, payment_id)
        async with self.database.transaction() as tx:
            event = await tx.callbacks.event(event_id)
            if event is None or event.status != EventStatus.DEFERRED:
                return
            # True only when the subject became final since the read: the next pass asks the provider.
            await self._settle(tx, adapter, event, notification, answer)

    async def _settle(
        self,
        tx: Transaction,
        adapter: ProviderAdapter,
        event: ProviderEvent,
        notification: Notification,
        answer: ProviderAnswer | None,
    ) -> bool:
        """Apply a stored notification under its payment's lock, or leave it DEFERRED while the payment is
        unknown or the provider has not confirmed it. Returns True when the provider must be asked first:
        it would move a final status (a reversal), and `answer` is not there yet."""
        # A payment's notification finds its payment under the lock in one statement (PostgreSQL: one round
        # trip, not a read then a lock); a refund's locks its payment below.
        subject = await self._subject(tx, adapter.name, notification, lock=True)
        if subject is None and notification.status is not None and notification.subject is Subject.REFUND:
            # Only a signed refund status is enough to record a refund the PGM never asked for.
            subject = await self._adopt_refund(tx, adapter.name, notification)
        if subject is None:
            self._defer(event, "the payment is not known yet")
            self.metrics.callbacks.labels(adapter.name, CallbackResult.DEFERRED).inc()
            return False
        payment, refund = subject
        locked = payment if refund is None else await tx.payments.lock(payment.id)
        if refund is not None:
            # Read under the lock: the status the reversal check compares with.
            refund = await tx.payments.fresh_refund(refund.id)
            assert refund is not None  # refunds are never deleted
        claimed = notification.status
        note = None
        if claimed is None:
            # An unsigned hint: the provider's own answer decides, never the callback body.
            reported = answer.status if answer is not None else None
            if reported is None:
                self._defer(event, "the provider did not confirm")
                self.metrics.callbacks.labels(adapter.name, CallbackResult.DEFERRED).inc()
                return False
        elif _reverses((locked, refund), claimed):
            recorded = Status(refund.status if refund is not None else locked.status)
            if answer is None:
                self._defer(event, f"would move {recorded} to {claimed}: to be confirmed with the provider")
                return True
            if answer.status != claimed:
                if answer.status is None and not answer.final:
                    self._defer(event, f"reversal to {claimed} not confirmed yet: {answer.detail}")
                    return False
                self._unconfirmed(adapter, event, recorded, claimed, answer)
                return False
            reported = claimed
            note = f"reversed by the provider from {recorded} to {claimed}, confirmed by a lookup at the provider"
            log.warning(
                "reversal confirmed by the provider",
                extra={
                    "provider": adapter.name,
                    "eventId": event.event_id,
                    "subjectId": event.subject_id,
                    "from": recorded.value,
                    "to": claimed.value,
                },
            )
            self.metrics.callbacks.labels(adapter.name, CallbackResult.REVERSAL).inc()
        else:
            reported = claimed
        if refund is None:
            if notification.token and not locked.subscription_token:
                locked.subscription_token = notification.token
            await self.settlement.payment_status(tx, locked, reported, Source.CALLBACK, note)
        else:
            await self.settlement.refund_status(tx, locked, refund, reported, Source.CALLBACK, note)
        event.status = EventStatus.PROCESSED.value
        event.processed_at = self.clock.now()
        self.metrics.callbacks.labels(adapter.name, CallbackResult.ACCEPTED).inc()
        return False

    def _unconfirmed(
        self, adapter: ProviderAdapter, event: ProviderEvent, recorded: Status, claimed: Status, answer: ProviderAnswer
    ) -> None:
        """A reversal the provider does not confirm: nothing changes; the event (and its raw callback) is
        kept with the reason, logged and counted, for an operator."""
        says = answer.status.value if answer.status is not None else answer.detail
        event.status = EventStatus.UNCONFIRMED.value
        event.reason = f"would move {recorded} to {claimed}, but the provider says {says}"[:1000]
        event.next_attempt_at = None
        event.processed_at = self.clock.now()
        self.metrics.callbacks.labels(adapter.name, CallbackResult.UNCONFIRMED).inc()
        log.warning(
            "reversal not confirmed by the provider: nothing changed",
            extra={
                "provider": adapter.name,
                "eventId": event.event_id,
                "subjectId": event.subject_id,
                "from": recorded.value,
                "to": claimed.value,
                "providerSays": says,
            },
        )

    async def _adopt_refund(
        self, tx: Transaction, provider: str, notification: Notification
    ) -> tuple[Payment, Refund] | None:
        """A signed refund notification naming one of our payments records the refund when the PGM did not
        ask for it (services/adoption.py: Adoption.adopt_refund)."""
        if notification.amount is None or not notification.refund_id or not notification.payment_id:
            return None
        payment = await tx.payments.by_provider_id(provider, notification.payment_id)
        if payment is None:
            return None
        locked = await tx.payments.lock(payment.id)
        adopted = await self.adoption.adopt_refund(
            tx, locked, notification.refund_id, notification.amount, Source.CALLBACK
        )
        return (locked, adopted[0]) if adopted is not None else None

    async def _adopt(self, adapter: ProviderAdapter, notification: Notification) -> bool:
        """Adopt the payment a notification names; False when it cannot be adopted now (it stays deferred)."""
        payment_id = notification.payment_id
        if not payment_id:
            return False
        try:
            lookup = await self.adoption.look_up(adapter, payment_id)
        except (OutcomeUnknown, ProviderRejected) as exc:
            log.info(
                "payment not adopted", extra={"provider": adapter.name, "paymentId": payment_id, "reason": str(exc)}
            )
            return False
        facts = facts_of_lookup(lookup) if lookup is not None else facts_of_notification(notification)
        if facts is None:
            return False
        try:
            # Announced: it enters UNKNOWN and this notification moves it, so the callback is reported.
            await self.adoption.adopt(adapter, payment_id, facts, announce=True)
        except AdoptionRefused as exc:
            log.info(
                "payment not adopted", extra={"provider": adapter.name, "paymentId": payment_id, "reason": str(exc)}
            )
            return False
        return True

    async def any_deferred(self, tx: Transaction, adapter: ProviderAdapter, subject_id: str) -> bool:
        """Whether notifications wait for this payment or refund (asked inside the caller's transaction)."""
        return bool(await tx.callbacks.deferred_of(adapter.name, subject_id))

    async def apply_deferred(self, adapter: ProviderAdapter, subject_id: str) -> int:
        """Apply the notifications that were waiting for this payment or refund to become known;
        return how many there were."""
        async with self.database.snapshot() as tx:
            waiting = await tx.callbacks.deferred_of(adapter.name, subject_id)
        for event_id in waiting:
            await self.apply(adapter, event_id)
        return len(waiting)

    async def due_deferred(self, limit: int = 100) -> list[tuple[str, int]]:
        """Deferred notifications whose next attempt is due, as (provider, event id)."""
        async with self.database.snapshot() as tx:
            return await tx.callbacks.due_deferred(self.clock.now(), limit)

    async def prune(self, retention_seconds: float) -> int:
        """Delete the raw callbacks received more than `retention_seconds` ago, with their notifications,
        except those with a notification still waiting (DEFERRED); returns how many callbacks went.

        Dropping the notifications drops their event ids from de-duplication too: a replay that old is
        refused by the timestamped signatures (five minutes), and where a provider signs without a time
        (Adyen), a replayed old outcome is either what is recorded already or a reversal, which is applied
        only if the provider confirms it."""
        cutoff = self.clock.now() - retention_seconds
        removed = 0
        while True:
            async with self.database.transaction() as tx:
                batch = await tx.callbacks.prune(cutoff, PRUNE_BATCH)
            removed += batch
            if batch < PRUNE_BATCH:
                return removed

    async def prune_forever(self, retention_seconds: float) -> None:
        """Prune for as long as the service runs: raw callbacks are kept for PGM_CALLBACK_RETENTION_SECONDS
        after they arrive (docs/reliability.md), checked at least every PRUNE_INTERVAL_MAX_SECONDS."""

        async def prune_once() -> None:
            removed = await self.prune(retention_seconds)
            if removed:
                log.info("raw callbacks pruned", extra={"removed": removed})

        await repeat(prune_once, min(retention_seconds, PRUNE_INTERVAL_MAX_SECONDS), "pruning raw callbacks")

    def _defer(self, event: ProviderEvent, reason: str) -> None:
        event.attempts += 1
        event.reason = reason[:1000]
        if event.attempts >= DEFERRED_MAX_ATTEMPTS:
            # Kept for inspection; no payment of ours ever matched it.
            event.status = EventStatus.ORPHANED.value
            event.next_attempt_at = None
            return
        event.next_attempt_at = self.clock.now() + DEFERRED_RETRY_SECONDS * min(2 ** (event.attempts - 1), 3600)

    async def _subject(
        self, tx: Transaction, provider: str, notification: Notification, lock: bool = False
    ) -> tuple[Payment, Refund | None] | None:
        """What a notification is about: a refund and its payment, or a payment (with `lock`, read under the
        payment's lock; a refund's payment is not locked here)."""
        if notification.subject is Subject.REFUND:
            if not notification.refund_id:
                return None
            return await tx.payments.refund_of_provider(provider, notification.refund_id)
        if not notification.payment_id:
            return None
        find = tx.payments.lock_by_provider_id if lock else tx.payments.by_provider_id
        payment = await find(provider, notification.payment_id)
        return (payment, None) if payment else None

    async def _ask_provider(
        self, adapter: ProviderAdapter, notification: Notification, payment_id: str
    ) -> ProviderAnswer:
        """What the provider itself says about the notification's subject (no transaction is open)."""
        try:
            if notification.subject is Subject.REFUND:
                found = await adapter.refund_status(payment_id, notification.refund_id, "")
                if found is None:
                    return ProviderAnswer(None, "the provider has no such refund")
                return ProviderAnswer(found.status)
            lookup = await adapter.payment_status(payment_id)
            return ProviderAnswer(lookup.status)
        except NotSupported as exc:
            return ProviderAnswer(None, f"it cannot be asked ({exc})", final=True)
        except (OutcomeUnknown, ProviderRejected) as exc:
            return ProviderAnswer(None, f"no answer ({exc})"[:500])


def _reverses(subject: tuple[Payment, Refund | None], claimed: Status) -> bool:
    """Whether a reported status would move the payment (or refund) out of its final status."""
    payment, refund = subject
    return transition(Status(refund.status if refund is not None else payment.status), claimed).reversal


def _raw_callback(provider: str, request: CallbackRequest) -> ProviderCallback:
    return ProviderCallback(
        provider=provider,
        method=request.method,
        path=request.path,
        query="&".join(f"{k}={v}" for k, v in request.query.items()),
        headers={k: v for k, v in request.headers.items() if k.lower() in KEPT_HEADERS},
        body=request.body,
        status="ACCEPTED",
        received_at=request.received_at,
    )


def _subject_id(notification: Notification) -> str | None:
    if notification.subject is Subject.REFUND:
        return notification.refund_id
    return notification.payment_id


def describe_event(event: ProviderEvent) -> dict[str, Any]:
    """An event as the operations endpoints show it."""
    return {
        "id": event.id,
        "provider": event.provider,
        "eventId": event.event_id,
        "status": event.status,
        "reason": event.reason,
        "attempts": event.attempts,
        "notification": event.notification,
    }
