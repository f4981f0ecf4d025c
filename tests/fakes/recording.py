"""What the provider fakes share: the record of a request they received, and faults queued per HTTP method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RecordedCall:
    """One API request the fake received (after the authentication check)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class MethodFaults:
    """Faults a test queued, each waiting for the next request of its HTTP method.

    Keyed by method because the PGM's background lookups (GET) must not consume a fault meant for the
    payment, loan request or refund (POST) a test is making."""

    fail: list[tuple[str, int]] = field(default_factory=list)
    delay: list[tuple[str, float]] = field(default_factory=list)
    malformed: list[tuple[str, bool]] = field(default_factory=list)

    def take(self, queue: list[Any], method: str) -> Any:
        """Remove and return the first queued value for `method`, or None."""
        for index, (wanted, value) in enumerate(queue):
            if wanted == method:
                del queue[index]
                return value
        return None


def calls_naming(requests: list[RecordedCall], reference: str) -> list[RecordedCall]:
    """The requests whose body carries `reference`: one payment's calls, whatever else the PGM is doing.

    A module's PGM keeps reconciling earlier tests' payments in the background, so counting every request a
    fake received races those lookups; a test asks about its own payment instead."""
    return [call for call in requests if reference.encode() in call.body]
