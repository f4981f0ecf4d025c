"""Provider callbacks (spec 04): stored raw before anything else, verified the provider's way,
de-duplicated on the provider's event id, then applied. A notification about a payment we do not
know yet is kept (DEFERRED) and applied as soon as the payment is known: never acknowledged and lost.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pgm.clock import Clock
from pgm.domain.statuses import Status
from pgm.observability.metrics import Metrics
from pgm.providers.base import (
    CallbackAnswer,
    CallbackRequest,
    InvalidCallback,
    Notification,
    OutcomeUnknown,
    ProviderAdapter,
    ProviderRejected,
    Subject,
)
from pgm.services.provider_calls import observed
from pgm.services.settlement import Settlement, Source
from pgm.store.database import Database, insert_row
from pgm.store.models import Payment, ProviderCallback, ProviderEvent, Refund, table_of

log = logging.getLogger(__name__)

# Headers worth keeping with a raw callback: enough to re-verify, nothing that authenticates us.
KEPT_HEADERS = frozenset({"content-type", "user-agent", "sandbox-signature", "stripe-signature", "x-request-id"})
DEFERRED_RETRY_SECONDS = 1.0
DEFERRED_MAX_ATTEMPTS = 40


class EventStatus(enum.StrEnum):
    """Where a verified notification stands."""

    DEFERRED = "DEFERRED"
    PROCESSED = "PROCESSED"
    ORPHANED = "ORPHANED"


# The hot path's statements, built once: building a statement and its cache key on every call costs
# more than running it (docs/performance.md).
_CALLBACKS = table_of(ProviderCallback)
_MARK_CALLBACK = (
    update(_CALLBACKS)
    .where(_CALLBACKS.c.id == bindparam("callback_id"))
    .values(status=bindparam("new_status"), reason=bindparam("new_reason"))
)
_SEEN_EVENT = select(ProviderEvent.id).where(
    ProviderEvent.provider == bindparam("provider"), ProviderEvent.event_id == bindparam("event_id")
)
_DEFERRED_EVENT = (
    select(ProviderEvent.id)
    .where(
        ProviderEvent.provider == bindparam("provider"),
        ProviderEvent.subject_id == bindparam("subject_id"),
        ProviderEvent.status == EventStatus.DEFERRED.value,
    )
    .limit(1)
)
_PAYMENT_BY_PROVIDER_ID = select(Payment).where(
    Payment.provider == bindparam("provider"), Payment.provider_payment_id == bindparam("payment_id")
)


async def _mark_callback(session: AsyncSession, callback_id: int, status: str, reason: str | None = None) -> None:
    await session.execute(_MARK_CALLBACK, {"callback_id": callback_id, "new_status": status, "new_reason": reason})


class CallbackRejected(Exception):
    """The callback is not provably from the provider; answer 401 and change nothing."""


class CallbackRefusedByProvider(Exception):
    """The provider side that reads the callback refused it (an external service's 4xx): nothing changed."""


class CallbackNotProcessed(Exception):
    """The callback could not be read now (the provider side needed to read it did not answer): nothing
    changed, answer 503 so the provider delivers it again."""


class CallbackService:
    """Receives, verifies, de-duplicates and applies provider notifications."""

    def __init__(self, database: Database, settlement: Settlement, clock: Clock, metrics: Metrics) -> None:
        self.database = database
        self.settlement = settlement
        self.clock = clock
        self.metrics = metrics

    async def receive(self, adapter: ProviderAdapter, request: CallbackRequest) -> CallbackAnswer:
        """Handle one HTTP callback end to end; raise CallbackRejected for forged or stale ones."""
        async with self.database.write() as session:
            raw = ProviderCallback(
                provider=adapter.name,
                method=request.method,
                path=request.path,
                query="&".join(f"{k}={v}" for k, v in request.query.items()),
                headers={k: v for k, v in request.headers.items() if k.lower() in KEPT_HEADERS},
                body=request.body,
                status="RECEIVED",
                received_at=request.received_at,
            )
            callback_id = (await insert_row(session, raw)).id
        try:
            notifications = await adapter.parse_callback(request)
        except InvalidCallback as exc:
            async with self.database.write() as session:
                await _mark_callback(session, callback_id, "REJECTED", str(exc))
            self.metrics.callbacks.labels(adapter.name, "rejected").inc()
            log.warning("callback rejected", extra={"provider": adapter.name, "reason": str(exc)})
            raise CallbackRejected(str(exc)) from exc
        except ProviderRejected as exc:
            # An external provider that reads its own callbacks answered 4xx (say, an unknown payment):
            # a clear refusal for the caller, never a crash.
            async with self.database.write() as session:
                await _mark_callback(session, callback_id, "REFUSED", str(exc)[:1000])
            self.metrics.callbacks.labels(adapter.name, "refused").inc()
            log.warning("callback refused by the provider", extra={"provider": adapter.name, "reason": str(exc)})
            raise CallbackRefusedByProvider(str(exc)) from exc
        except OutcomeUnknown as exc:
            # An external provider reads its own callbacks: while it is down we know nothing yet.
            async with self.database.write() as session:
                await _mark_callback(session, callback_id, "UNPROCESSED", str(exc)[:1000])
            self.metrics.callbacks.labels(adapter.name, "unprocessed").inc()
            log.warning("callback not processed", extra={"provider": adapter.name, "reason": str(exc)})
            raise CallbackNotProcessed(str(exc)) from exc
        try:
            to_ask = await self._accept(adapter, callback_id, notifications)
        except IntegrityError:
            # The same event delivered twice at the same moment: the other delivery stored it first; this
            # pass sees it and skips it.
            to_ask = await self._accept(adapter, callback_id, notifications)
        for event_id in to_ask:
            await self.apply(adapter, event_id)
        return adapter.callback_answer()

    async def _accept(self, adapter: ProviderAdapter, callback_id: int, notifications: list[Notification]) -> list[int]:
        """In one transaction: store each notification not seen before, apply those that carry their
        status, and mark the callback ACCEPTED. Returns the stored ones whose status the provider must be
        asked for (unsigned callbacks are only hints): they are applied after, outside the transaction."""
        to_ask: list[int] = []
        async with self.database.write() as session:
            for notification in notifications:
                event = await self._new_event(session, adapter.name, callback_id, notification)
                if event is None:
                    self.metrics.callbacks.labels(adapter.name, "duplicate").inc()
                    continue
                if notification.status is not None:
                    await self._settle(session, adapter, event, notification, notification.status)
                # Stored as it ends up (one INSERT); a delivery of the same event id at the same moment fails
                # it on the unique constraint and the whole transaction rolls back, settlement included.
                await insert_row(session, event)
                if notification.status is None:
                    to_ask.append(event.id)
            await _mark_callback(session, callback_id, "ACCEPTED")
        return to_ask

    async def _new_event(
        self, session: AsyncSession, provider: str, callback_id: int, notification: Notification
    ) -> ProviderEvent | None:
        """The notification as a new stored event, not yet inserted; None when its event id was seen before."""
        duplicate = await session.scalar(_SEEN_EVENT, {"provider": provider, "event_id": notification.event_id})
        if duplicate is not None:
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
        """Apply one stored notification, or leave it DEFERRED for later if its subject is unknown."""
        async with self.database.read() as session:
            event = await session.get(ProviderEvent, event_id)
            if event is None or event.status != EventStatus.DEFERRED:
                return
            notification = Notification.from_json(event.notification)
            known = await self._subject(session, adapter.name, notification) is not None
        reported = notification.status
        if known and reported is None:
            reported = await self._ask_provider(adapter, notification)
        async with self.database.write() as session:
            event = await session.get(ProviderEvent, event_id)
            if event is None or event.status != EventStatus.DEFERRED:
                return
            await self._settle(session, adapter, event, notification, reported)

    async def _settle(
        self,
        session: AsyncSession,
        adapter: ProviderAdapter,
        event: ProviderEvent,
        notification: Notification,
        reported: Status | None,
    ) -> None:
        """Apply a stored notification under its payment's lock, or defer it while the payment is unknown."""
        subject = await self._subject(session, adapter.name, notification)
        if subject is None or reported is None:
            self._defer(event, "the payment is not known yet" if subject is None else "the provider did not confirm")
            self.metrics.callbacks.labels(adapter.name, "deferred").inc()
            return
        payment, refund = subject
        locked = await self.database.lock_payment(session, payment.id)
        assert locked is not None
        if refund is None:
            if notification.token and not locked.subscription_token:
                locked.subscription_token = notification.token
            await self.settlement.payment_status(session, locked, reported, Source.CALLBACK, None)
        else:
            await self.settlement.refund_status(session, locked, refund, reported, Source.CALLBACK, None)
        event.status = EventStatus.PROCESSED.value
        event.processed_at = self.clock.now()
        self.metrics.callbacks.labels(adapter.name, "accepted").inc()

    async def any_deferred(self, session: AsyncSession, adapter: ProviderAdapter, subject_id: str) -> bool:
        """Whether notifications wait for this payment or refund (asked inside the caller's transaction)."""
        waiting = await session.scalar(_DEFERRED_EVENT, {"provider": adapter.name, "subject_id": subject_id})
        return waiting is not None

    async def apply_deferred(self, adapter: ProviderAdapter, subject_id: str) -> int:
        """Apply the notifications that were waiting for this payment or refund to become known;
        return how many there were."""
        async with self.database.read() as session:
            waiting = (
                await session.scalars(
                    select(ProviderEvent.id)
                    .where(
                        ProviderEvent.provider == adapter.name,
                        ProviderEvent.subject_id == subject_id,
                        ProviderEvent.status == EventStatus.DEFERRED.value,
                    )
                    .order_by(ProviderEvent.id)
                )
            ).all()
        for event_id in waiting:
            await self.apply(adapter, event_id)
        return len(waiting)

    async def due_deferred(self, limit: int = 100) -> list[tuple[str, int]]:
        """Deferred notifications whose next attempt is due, as (provider, event id)."""
        async with self.database.read() as session:
            rows = (
                await session.execute(
                    select(ProviderEvent.provider, ProviderEvent.id)
                    .where(
                        ProviderEvent.status == EventStatus.DEFERRED.value,
                        ProviderEvent.next_attempt_at <= self.clock.now(),
                    )
                    .order_by(ProviderEvent.id)
                    .limit(limit)
                )
            ).all()
        return [(provider, event_id) for provider, event_id in rows]

    def _defer(self, event: ProviderEvent, reason: str) -> None:
        event.attempts += 1
        event.reason = reason
        if event.attempts >= DEFERRED_MAX_ATTEMPTS:
            # Kept for inspection; no payment of ours ever matched it.
            event.status = EventStatus.ORPHANED.value
            event.next_attempt_at = None
            return
        event.next_attempt_at = self.clock.now() + DEFERRED_RETRY_SECONDS * min(2 ** (event.attempts - 1), 3600)

    async def _subject(
        self, session: AsyncSession, provider: str, notification: Notification
    ) -> tuple[Payment, Refund | None] | None:
        if notification.subject is Subject.REFUND:
            row = (
                await session.execute(
                    select(Payment, Refund)
                    .join(Refund, Refund.payment_id == Payment.id)
                    .where(Payment.provider == provider, Refund.provider_refund_id == notification.refund_id)
                )
            ).first()
            return (row[0], row[1]) if row else None
        payment = await session.scalar(
            _PAYMENT_BY_PROVIDER_ID, {"provider": provider, "payment_id": notification.payment_id}
        )
        return (payment, None) if payment else None

    async def _ask_provider(self, adapter: ProviderAdapter, notification: Notification) -> Status | None:
        """Unsigned callbacks are hints: the provider's own answer decides."""
        try:
            if notification.subject is Subject.REFUND:
                found = await observed(
                    self.metrics,
                    adapter.name,
                    "refund status",
                    adapter.refund_status(notification.payment_id or "", notification.refund_id, ""),
                )
                return found.status if found else None
            lookup = await observed(
                self.metrics, adapter.name, "status", adapter.payment_status(notification.payment_id or "")
            )
            return lookup.status
        except (OutcomeUnknown, ProviderRejected):
            return None


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
