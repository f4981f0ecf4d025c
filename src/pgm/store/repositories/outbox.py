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

# The heads (the oldest pending message of each ordering key, due and not leased), found and leased in one
# statement (one round trip where a SELECT and an UPDATE took two): each destination's first `room` heads
# not already being delivered by this process (`running`: a delivery that outlived its lease), oldest
# first, at most `limit` in all. The lease is a compare-and-set: PostgreSQL re-checks the outer WHERE on a
# row another process leased since the selection read it, and skips that row (SQLite has one writer).
# row_number() counts a destination's heads in id order; a head within the first `limit` by id has all of
# its destination's older heads there too, so taking `place <= room` is exact.
_LEASE_HEADS = """
    UPDATE outbox SET lease_until = :until
    WHERE id IN (
        SELECT h.id FROM (
            SELECT o.id, o.destination, row_number() OVER (PARTITION BY o.destination ORDER BY o.id) AS place
            FROM outbox o
            WHERE o.status = 'PENDING' AND o.destination = ANY(:destinations) AND o.next_attempt_at <= :now
              AND (o.lease_until IS NULL OR o.lease_until < :now)
              AND NOT (o.id = ANY(:running))
              AND NOT EXISTS (
                SELECT 1 FROM outbox e
                WHERE e.destination = o.destination AND e.ordering_key = o.ordering_key
                  AND e.status = 'PENDING' AND e.id < o.id)
        ) h
        WHERE h.place <= CASE h.destination {rooms} END
        ORDER BY h.id LIMIT :limit)
      AND status = 'PENDING' AND (lease_until IS NULL OR lease_until < :now)
    RETURNING {columns}
"""
# One statement per set of destinations (a dispatcher has one: its senders'), built on first use.
_LEASE_HEADS_FOR: dict[tuple[str, ...], Sql] = {}
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

    async def lease_heads(
        self, room: dict[str, int], running: list[int], now: float, until: float, limit: int
    ) -> list[OutboxMessage]:
        """Find the heads due (the oldest pending, due and unleased message of each ordering key) and lease
        them, in one statement: at most `room[destination]` of each destination and `limit` in all, none of
        `running`; oldest first. A head another process leased in between is not returned."""
        destinations = tuple(room)
        sql = _LEASE_HEADS_FOR.get(destinations)
        if sql is None:
            rooms = " ".join(f"WHEN :destination_{n} THEN CAST(:room_{n} AS INTEGER)" for n in range(len(destinations)))
            sql = Sql(_LEASE_HEADS.format(rooms=rooms, columns=", ".join(OutboxMessage.TABLE.columns)))
            _LEASE_HEADS_FOR[destinations] = sql
        parameters: dict[str, object] = {
            "destinations": list(destinations),
            "running": running,
            "now": now,
            "until": until,
            "limit": limit,
        }
        for n, destination in enumerate(destinations):
            parameters[f"destination_{n}"] = destination
            parameters[f"room_{n}"] = room[destination]
        leased = await self.tx.select(OutboxMessage, sql, parameters)
        return sorted(leased, key=lambda message: message.id)

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
