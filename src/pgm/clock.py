"""Time as a dependency, so background schedules and signature ages can be tested without sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Something that tells the time in UNIX seconds."""

    def now(self) -> float:
        """The current time in UNIX seconds."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        """The current time in UNIX seconds."""
        return time.time()
