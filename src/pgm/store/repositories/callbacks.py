"""Provider callbacks (stored raw before anything else is done) and the verified events read from them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import ProviderCallback, ProviderEvent
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

_SEEN = Sql("SELECT id FROM provider_events WHERE provider = :provider AND event_id = :event_id")
_DEFERRED_OF = Sql("""
    SELECT id FROM provider_events
    WHERE provider = :provider AND subject_id = :subject_id AND status = 'DEFERRED' ORDER BY id
""")
_DUE_DEFERRED = Sql("""
    SELECT provider, id FROM provider_events
    WHERE status = 'DEFERRED' AND next_attempt_at <= :now ORDER BY id LIMIT :limit
""")
# Raw callbacks older than the cutoff with no notification still waiting (DEFERRED).
_PRUNABLE = Sql("""
    SELECT id FROM provider_callbacks
    WHERE received_at < :cutoff
      AND id NOT IN (SELECT callback_id FROM provider_events WHERE status = 'DEFERRED')
    ORDER BY id LIMIT :limit
""")
_DELETE_EVENTS = Sql("DELETE FROM provider_events WHERE callback_id = ANY(:ids)")
_DELETE_CALLBACKS = Sql("DELETE FROM provider_callbacks WHERE id = ANY(:ids)")


class CallbackRepository:
    """Callbacks and provider events of one transaction."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def add(self, callback: ProviderCallback) -> ProviderCallback:
        """Store a callback as received (tracked: its status is set once it is processed)."""
        return await self.tx.insert(callback)

    async def add_event(self, event: ProviderEvent) -> ProviderEvent:
        """Store a verified notification as it ends up (written once in this transaction); DuplicateKey when
        another delivery stored the same event id at the same moment."""
        return await self.tx.insert(event, tracked=False)

    async def get(self, callback_id: int) -> ProviderCallback | None:
        return await self.tx.get(ProviderCallback, callback_id)

    async def event(self, event_id: int) -> ProviderEvent | None:
        """A stored notification (tracked: its status changes are written back)."""
        return await self.tx.get(ProviderEvent, event_id)

    async def seen(self, provider: str, event_id: str) -> bool:
        """Whether a notification with this event id was stored before."""
        return await self.tx.fetchrow(_SEEN, {"provider": provider, "event_id": event_id}) is not None

    async def deferred_of(self, provider: str, subject_id: str) -> list[int]:
        """The notifications waiting (DEFERRED) for a payment or refund, oldest first."""
        rows = await self.tx.fetch(_DEFERRED_OF, {"provider": provider, "subject_id": subject_id})
        return [int(row[0]) for row in rows]

    async def due_deferred(self, now: float, limit: int) -> list[tuple[str, int]]:
        """(provider, event id) of the waiting notifications whose next attempt is due, oldest first."""
        rows = await self.tx.fetch(_DUE_DEFERRED, {"now": now, "limit": limit})
        return [(row[0], int(row[1])) for row in rows]

    async def prune(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` raw callbacks received before `cutoff`, with their notifications, except
        those with a notification still waiting; returns how many callbacks went."""
        ids = [int(row[0]) for row in await self.tx.fetch(_PRUNABLE, {"cutoff": cutoff, "limit": limit})]
        if ids:
            await self.tx.execute(_DELETE_EVENTS, {"ids": ids})
            await self.tx.execute(_DELETE_CALLBACKS, {"ids": ids})
        return len(ids)
