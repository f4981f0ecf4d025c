"""The outbox: messages written in the transaction of the change they report, leased and delivered by
the dispatcher (outbox/dispatcher.py, docs/reliability.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import OutboxMessage
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

PENDING = "PENDING"
DELIVERED = "DELIVERED"
DEAD = "DEAD"
_SELECT = OutboxMessage.TABLE.select
_COLUMNS = ", ".join(f"o.{column}" for column in OutboxMessage.TABLE.columns)

# The oldest pending message of each ordering key, due and not leased.
_HEADS = Sql(f"""
    SELECT {_COLUMNS} FROM outbox o
    WHERE o.status = 'PENDING' AND o.destination = ANY(:destinations) AND o.next_attempt_at <= :now
      AND (o.lease_until IS NULL OR o.lease_until < :now)
      AND NOT EXISTS (
        SELECT 1 FROM outbox e
        WHERE e.destination = o.destination AND e.ordering_key = o.ordering_key
          AND e.status = 'PENDING' AND e.id < o.id)
    ORDER BY o.id LIMIT :limit
""")
# Compare-and-set on the lease: a row another process leased in between is not returned.
_LEASE = Sql("""
    UPDATE outbox SET lease_until = :until
    WHERE id = ANY(:ids) AND status = 'PENDING' AND (lease_until IS NULL OR lease_until < :now)
    RETURNING id
""")
_RENEW = Sql("UPDATE outbox SET lease_until = :until WHERE id = ANY(:ids) AND status = 'PENDING'")
_DELIVERED = Sql("""
    UPDATE outbox SET status = 'DELIVERED', attempts = attempts + 1, lease_until = NULL,
      last_status_code = :code, last_error = NULL, delivered_at = :at
    WHERE id = :id
""")
_BY_IDS = Sql(f"{_SELECT} WHERE id = ANY(:ids) ORDER BY id")
_BY_STATUS = Sql(f"{_SELECT} WHERE status = :status ORDER BY id LIMIT :limit")
_MESSAGE_ID = Sql("SELECT message_id FROM outbox WHERE id = :id")
_BACKLOG = Sql(
    "SELECT destination, status, COUNT(*) FROM outbox WHERE status <> 'DELIVERED' GROUP BY destination, status"
)
_RESEND = Sql("""
    UPDATE outbox SET status = 'PENDING', attempts = 0, next_attempt_at = :now, lease_until = NULL
    WHERE id = :id AND status = 'DEAD'
""")


class OutboxRepository:
    """Outbox rows of one transaction."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def add(self, message: OutboxMessage) -> int:
        """Insert a message; the database wakes the dispatcher once this transaction commits."""
        await self.tx.insert(message, tracked=False)
        self.tx.wrote_outbox = True
        return message.id

    async def heads(self, destinations: list[str], now: float, limit: int) -> list[OutboxMessage]:
        """The oldest pending, due and unleased message of each ordering key, oldest first."""
        return await self.tx.select(OutboxMessage, _HEADS, {"destinations": destinations, "now": now, "limit": limit})

    async def lease(self, ids: list[int], now: float, until: float) -> set[int]:
        """Lease the messages not leased by anyone since; return the ids leased."""
        return {row[0] for row in await self.tx.fetch(_LEASE, {"ids": ids, "now": now, "until": until})}

    async def renew(self, ids: list[int], until: float) -> None:
        """Extend the leases of deliveries still running (a delivered or dead message keeps its status)."""
        await self.tx.execute(_RENEW, {"ids": ids, "until": until})

    async def delivered(self, deliveries: list[tuple[int, int | None]], at: float) -> None:
        """Mark messages delivered: (id, HTTP status) each, one statement for all."""
        await self.tx.executemany(_DELIVERED, [{"id": id_, "code": code, "at": at} for id_, code in deliveries])

    async def by_ids(self, ids: list[int]) -> list[OutboxMessage]:
        """Messages by id (tracked: changes are written back)."""
        return await self.tx.select(OutboxMessage, _BY_IDS, {"ids": ids})

    async def with_status(self, status: str, limit: int) -> list[OutboxMessage]:
        """Messages in one status, oldest first."""
        return await self.tx.select(OutboxMessage, _BY_STATUS, {"status": status, "limit": limit})

    async def message_id(self, outbox_id: int) -> str | None:
        """The X-Pgm-Message-Id a message was sent with (None: its row id)."""
        value = await self.tx.fetchval(_MESSAGE_ID, {"id": outbox_id})
        return str(value) if value is not None else None

    async def backlog(self) -> list[tuple[str, str, int]]:
        """(destination, status, count) of every message not delivered."""
        return [(row[0], row[1], int(row[2])) for row in await self.tx.fetch(_BACKLOG)]

    async def resend(self, outbox_id: int, now: float) -> bool:
        """Put a dead letter back in line; False when there is no such dead letter."""
        resent = await self.tx.execute(_RESEND, {"id": outbox_id, "now": now}) == 1
        if resent:
            self.tx.wrote_outbox = True
        return resent
