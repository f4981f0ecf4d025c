"""Deterministic keys: one per operation we perform, and the provider's key derived from it."""

from __future__ import annotations

import hashlib


def provider_idempotency_key(operation_key: str) -> str:
    """The key sent to a provider for an operation; the same operation always sends the same key.

    Hashed so that saga ids or client keys never travel to a provider verbatim and always fit the
    providers' length limits (Stripe: 255, Adyen: 64).
    """
    return "pgm-" + hashlib.sha256(operation_key.encode("utf-8")).hexdigest()[:40]


def saga_operation_key(saga_id: str, operation: str, attempt: int) -> str:
    """The key of one attempt of one saga command (a saga pays once but may refund many times)."""
    return f"saga:{saga_key_part(saga_id)}:{operation}:{attempt}"


# Operation keys are stored in String(255) columns (payments, refunds, inbox, saga events).
MAX_KEY_LENGTH = 255
# A saga id (up to 255 characters) longer than this is replaced by its hash in the keys derived from it,
# so that `saga:<id>:subscription/schedule:1` or `saga:<id>:refund:<n>:<attempt>` always fits.
MAX_SAGA_ID_IN_KEY = 160


def saga_key_part(saga_id: str) -> str:
    """The saga id as it appears in its operation keys: itself, or `sha256-<hex>` when it is long."""
    if len(saga_id) <= MAX_SAGA_ID_IN_KEY:
        return saga_id
    return "sha256-" + hashlib.sha256(saga_id.encode("utf-8")).hexdigest()


def storable_key(key: str) -> str:
    """An operation key that fits the store: itself, or its start and the SHA-256 of the whole when longer.
    The hash keeps distinct keys distinct; the start keeps it readable."""
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{key[: MAX_KEY_LENGTH - len(digest) - 8]}:sha256-{digest}"
