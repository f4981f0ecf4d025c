"""The sandbox's webhook secret: SANDBOX_WEBHOOK_SECRET when set, else one generated once and kept in
the store, so every replica and every restart signs and verifies with the same secret."""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError

from pgm.store.database import Database
from pgm.store.models import Setting

SETTING_KEY = "sandbox_webhook_secret"


async def webhook_secret(database: Database, configured: str | None) -> str:
    """The secret to sign and verify sandbox callbacks with."""
    if configured:
        return configured
    async with database.read() as session:
        stored = await session.get(Setting, SETTING_KEY)
        if stored is not None:
            return stored.value
    try:
        async with database.write() as session:
            session.add(Setting(key=SETTING_KEY, value="whsec_" + secrets.token_hex(24)))
    except IntegrityError:
        pass  # another replica generated it first; read theirs
    async with database.read() as session:
        stored = await session.get(Setting, SETTING_KEY)
        assert stored is not None
        return stored.value
