"""Saga events: every event sent to a saga, kept to replay an outcome and to show a timeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import SagaEvent
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

_SELECT = SagaEvent.TABLE.select
_COUNT = Sql("SELECT COUNT(*) FROM saga_events WHERE operation_key = :key AND label = :label")
_LATEST = Sql(f"{_SELECT} WHERE operation_key = :key ORDER BY id DESC LIMIT 1")
_OF_SAGA = Sql(f"{_SELECT} WHERE saga_id = :saga_id ORDER BY id")


class SagaEventRepository:
    """Saga events of one transaction."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def add(self, event: SagaEvent) -> None:
        """Record an event (written once, never changed; on PostgreSQL sent with the transaction's next
        statement: Transaction.insert_later)."""
        await self.tx.insert_later(event)

    async def count(self, operation_key: str, label: str) -> int:
        """How many events of `label` an operation has had."""
        return int(await self.tx.fetchval(_COUNT, {"key": operation_key, "label": label}) or 0)

    async def latest(self, operation_key: str) -> SagaEvent | None:
        """The last event sent about an operation."""
        rows = await self.tx.select(SagaEvent, _LATEST, {"key": operation_key})
        return rows[0] if rows else None

    async def of_saga(self, saga_id: str) -> list[SagaEvent]:
        """A saga's events in the order they were written."""
        return await self.tx.select(SagaEvent, _OF_SAGA, {"saga_id": saga_id})
