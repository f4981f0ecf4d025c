"""The saga inbox: every delivery of a saga command, stored before it is acknowledged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import InboxCommand
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

_OF_SAGA = Sql(f"{InboxCommand.TABLE.select} WHERE saga_id = :saga_id ORDER BY id")
_PENDING = Sql("SELECT COUNT(*), MIN(created_at) FROM inbox WHERE status = 'PENDING'")


class InboxRepository:
    """Inbox rows of one transaction."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def add(self, command: InboxCommand) -> InboxCommand:
        """Store a delivery (tracked: its status changes are written back)."""
        return await self.tx.insert(command)

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
