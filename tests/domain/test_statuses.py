"""The payment state machine: stale news never moves a payment back; reversals are followed."""

from __future__ import annotations

import pytest

from pgm.domain.statuses import Status, transition


@pytest.mark.parametrize(
    ("current", "reported", "expected", "changed", "reversal"),
    [
        (Status.UNKNOWN, Status.PENDING, Status.PENDING, True, False),
        (Status.UNKNOWN, Status.ACCEPTED, Status.ACCEPTED, True, False),
        (Status.UNKNOWN, Status.FAILED, Status.FAILED, True, False),
        (Status.PENDING, Status.ACCEPTED, Status.ACCEPTED, True, False),
        (Status.PENDING, Status.FAILED, Status.FAILED, True, False),
        (Status.PENDING, Status.UNKNOWN, Status.PENDING, False, False),
        (Status.PENDING, Status.PENDING, Status.PENDING, False, False),
        (Status.ACCEPTED, Status.PENDING, Status.ACCEPTED, False, False),
        (Status.ACCEPTED, Status.UNKNOWN, Status.ACCEPTED, False, False),
        (Status.ACCEPTED, Status.ACCEPTED, Status.ACCEPTED, False, False),
        (Status.FAILED, Status.PENDING, Status.FAILED, False, False),
        (Status.ACCEPTED, Status.FAILED, Status.FAILED, True, True),
        (Status.FAILED, Status.ACCEPTED, Status.ACCEPTED, True, True),
    ],
)
def test_transition_table(current: Status, reported: Status, expected: Status, changed: bool, reversal: bool) -> None:
    moved = transition(current, reported)
    assert (moved.status, moved.changed, moved.reversal) == (expected, changed, reversal)


def test_unknown_is_reported_as_pending_to_clients() -> None:
    assert Status.UNKNOWN.public == "PENDING"
    assert Status.ACCEPTED.public == "ACCEPTED"
    assert not Status.UNKNOWN.is_final
    assert Status.FAILED.is_final
