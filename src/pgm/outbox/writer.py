"""Writing to the outbox, always inside the caller's transaction."""

from __future__ import annotations

import enum
from typing import Any

from pgm.store.records import OutboxMessage
from pgm.store.transaction import Transaction


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


async def enqueue(
    tx: Transaction,
    destination: Destination,
    ordering_key: str,
    payload: dict[str, Any],
    now: float,
    message_id: str | None = None,
) -> int:
    """Add a message and return its id; it is delivered only if the surrounding transaction commits.

    `message_id` is the X-Pgm-Message-Id to send, when the message carries a logical event that may be
    sent again in another row (a saga event); otherwise the row's id is sent. The dispatcher is woken once
    the transaction commits (Database.on_outbox_commit)."""
    message = OutboxMessage(
        message_id=message_id,
        destination=destination.value,
        ordering_key=ordering_key,
        payload=payload,
        status=DeliveryStatus.PENDING.value,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    return await tx.outbox.add(message)


def message_id_header(message: OutboxMessage) -> dict[str, str]:
    """The X-Pgm-Message-Id header of a message: the same on every retry and on every re-send of its event."""
    return {"X-Pgm-Message-Id": message.message_id or str(message.id)}
