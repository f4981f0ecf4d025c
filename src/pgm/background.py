"""Background loops: a step repeated on an interval for as long as the service runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def repeat(step: Callable[[], Awaitable[object]], interval_seconds: float, what: str) -> None:
    """Run `step` every `interval_seconds` until cancelled. A step that fails is logged and tried again
    at the next interval: one bad pass must not stop the loop for the life of the process."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(interval_seconds)
