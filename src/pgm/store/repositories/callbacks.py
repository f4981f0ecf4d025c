"""Provider callbacks (stored raw before anything else is done) and the verified events read from them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import ProviderCallback, ProviderEvent

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction


class CallbackRepository:
    """Callbacks and provider events of one transaction."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def add(self, callback: ProviderCallback) -> ProviderCallback:
        """Store a callback as received (tracked: its status is set once it is processed)."""
        return await self.tx.insert(callback)

    async def get(self, callback_id: int) -> ProviderCallback | None:
        return await self.tx.get(ProviderCallback, callback_id)

    async def event(self, event_id: int) -> ProviderEvent | None:
        return await self.tx.get(ProviderEvent, event_id)
