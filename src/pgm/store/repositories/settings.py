"""Settings: small pieces of state every replica must agree on (e.g. a generated webhook secret)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import Setting
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

# The first writer wins; a later one keeps what is there (several replicas start at once).
_ADD_IF_ABSENT = Sql("INSERT INTO settings (key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING")


class SettingRepository:
    """Settings of one transaction."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def get(self, key: str) -> str | None:
        """A setting's value, None when unset."""
        setting = await self.tx.get(Setting, key)
        return setting.value if setting is not None else None

    async def add_if_absent(self, key: str, value: str) -> None:
        """Set a setting unless one is set already."""
        await self.tx.execute(_ADD_IF_ABSENT, {"key": key, "value": value})
