"""The saga inbox: every delivery of a saga command, stored before it is acknowledged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import InboxCommand
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

_OF_SAGA = Sql(f"{InboxCommand.TABLE.select} WHERE saga_id = :saga_id ORDER BY id")
_PENDING = Sql("SELECT COUNT(*), MIN(created_at) FROM inbox WHERE status = 'PENDING'")
_RUNNABLE = Sql("""
    SELECT id, lease_until FROM inbox
    WHERE status = 'PENDING' AND (lease_until IS NULL OR lease_until < :now) ORDER BY id LIMIT :limit
""")
# Compare-and-set on the lease each time: a row another process leased in between is left alone.
_CLAIM_UNLEASED = Sql("""
    UPDATE inbox SET lease_until = :until, attempts = attempts + 1
    WHERE id = :id AND status = 'PENDING' AND lease_until IS NULL
""")
_CLAIM_EXPIRED = Sql("""
    UPDATE inbox SET lease_until = :until, attempts = attempts + 1
    WHERE id = :id AND status = 'PENDING' AND lease_until = :lease
""")
_RENEW = Sql("UPDATE inbox SET lease_until = :until WHERE id = :id AND status = 'PENDING' AND lease_until = :lease")
_DONE = Sql("""
    UPDATE inbox SET status = 'DONE', operation_key = :key, result = :result, updated_at = :now WHERE id = :id
""")
_REFUSED = Sql("UPDATE inbox SET status = 'DONE', result = :result, updated_at = :now WHERE id = :id")
_PUT_OFF = Sql("UPDATE inbox SET lease_until = :until, result = :result WHERE id = :id")


class InboxRepository:
    """Inbox rows of one transaction."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def add(self, command: InboxCommand, tracked: bool = True) -> InboxCommand:
        """Store a delivery (tracked unless told: its status changes are written back)."""
        return await self.tx.insert(command, tracked=tracked)

    async def get(self, command_id: int) -> InboxCommand | None:
        return await self.tx.get(InboxCommand, command_id)

    async def of_saga(self, saga_id: str) -> list[InboxCommand]:
        """A saga's deliveries in the order they arrived."""
        return await self.tx.select(InboxCommand, _OF_SAGA, {"saga_id": saga_id})

    async def pending(self) -> tuple[int, float | None]:
        """How many commands are not done yet, and when the oldest of them arrived."""
        row = await self.tx.fetchrow(_PENDING)
        assert row is not None
        return int(row[0]), row[1]

    async def runnable(self, now: float, limit: int) -> list[tuple[int, float | None]]:
        """(id, lease) of pending commands not leased, or whose lease ran out, oldest first."""
        return [(int(row[0]), row[1]) for row in await self.tx.fetch(_RUNNABLE, {"now": now, "limit": limit})]

    async def claim(self, command_id: int, lease: float | None, until: float) -> bool:
        """Lease a pending command still holding `lease` (None: never leased) and count the attempt."""
        if lease is None:
            return await self.tx.execute(_CLAIM_UNLEASED, {"id": command_id, "until": until}) == 1
        return await self.tx.execute(_CLAIM_EXPIRED, {"id": command_id, "lease": lease, "until": until}) == 1

    async def renew(self, command_id: int, lease: float, until: float) -> bool:
        """Extend a lease still holding `lease`; False when the command finished or was taken over."""
        return await self.tx.execute(_RENEW, {"id": command_id, "lease": lease, "until": until}) == 1

    async def done(self, command_id: int, operation_key: str, result: str, now: float) -> None:
        """Close a command run to its outcome."""
        await self.tx.execute(_DONE, {"id": command_id, "key": operation_key, "result": result, "now": now})

    async def refused(self, command_id: int, result: str, now: float) -> None:
        """Close a command that cannot succeed."""
        await self.tx.execute(_REFUSED, {"id": command_id, "result": result, "now": now})

    async def put_off(self, command_id: int, until: float, result: str) -> None:
        """Leave a command for a later attempt, not before `until`."""
        await self.tx.execute(_PUT_OFF, {"id": command_id, "until": until, "result": result})
