"""Calls to adapters, timed and counted by provider, operation and outcome."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

from pgm.observability.metrics import Metrics
from pgm.providers.base import OutcomeUnknown, ProviderRejected

T = TypeVar("T")


async def observed(metrics: Metrics, provider: str, operation: str, call: Awaitable[T]) -> T:
    """Await an adapter call and record its latency and outcome."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        return await call
    except OutcomeUnknown:
        outcome = "unknown"
        raise
    except ProviderRejected:
        outcome = "refused"
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        metrics.provider_calls.labels(provider, operation, outcome).inc()
        metrics.provider_latency.labels(provider, operation).observe(time.perf_counter() - started)
