"""The sandbox's webhook secret: SANDBOX_WEBHOOK_SECRET when set, else one generated once and kept in
the store, so every replica and every restart signs and verifies with the same secret."""

from __future__ import annotations

import secrets

from pgm.store.database import Database

SETTING_KEY = "sandbox_webhook_secret"


async def webhook_secret(database: Database, configured: str | None) -> str:
    """The secret to sign and verify sandbox callbacks with."""
    if configured:
        return configured
    async with database.snapshot() as tx:
        stored = await tx.settings.get(SETTING_KEY)
    if stored is not None:
        return stored
    # Several replicas may start at once: the first secret written wins, and every one reads it back.
    async with database.transaction() as tx:
        await tx.settings.add_if_absent(SETTING_KEY, "whsec_" + secrets.token_hex(24))
        stored = await tx.settings.get(SETTING_KEY)
    assert stored is not None
    return stored
