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
    return f"saga:{saga_id}:{operation}:{attempt}"
