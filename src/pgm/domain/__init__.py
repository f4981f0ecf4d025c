"""The pure domain: money, statuses, refund arithmetic, idempotency keys. No I/O in this package."""
