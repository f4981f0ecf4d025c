"""Writing to the outbox, always inside the caller's transaction."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from pgm.store.models import OutboxMessage, table_of


class Destination(enum.StrEnum):
    """Where an outbox message goes; each destination has one sender in the dispatcher."""

    PAYMENT_CALLBACK = "payment-callback"
    FLOW_MANAGER = "flow-manager"
    FLOW_MANAGER_LOOKUP = "flow-manager-lookup"
    SANDBOX_WEBHOOK = "sandbox-webhook"


class DeliveryStatus(enum.StrEnum):
    """Where a message stands."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    DEAD = "DEAD"


_OUTBOX = table_of(OutboxMessage)
# Built once: building a statement and its cache key on every call costs more than running it.
_ENQUEUE = insert(_OUTBOX).returning(_OUTBOX.c.id)


async def enqueue(
    session: AsyncSession, destination: Destination, ordering_key: str, payload: dict[str, Any], now: float
) -> int:
    """Add a message and return its id; it is delivered only if the surrounding transaction commits."""
    # A Core INSERT, not an ORM object: nothing reads the message back in this transaction, and the ORM's
    # unit of work costs about twice the statement (docs/performance.md).
    inserted = await session.execute(
        _ENQUEUE,
        {
            "destination": destination.value,
            "ordering_key": ordering_key,
            "payload": payload,
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
    )
    return int(inserted.scalar_one())
