"""The life of a payment or a refund, written down as an explicit state machine (Kill Bill style).

UNKNOWN is kept apart from PENDING: PENDING means the provider told us the outcome comes later;
UNKNOWN means we asked and lost the answer (time-out, crash, provider fault), so only a lookup at the
provider may settle it. ACCEPTED and FAILED are final, except that a provider may change its mind
(a refund reported successful and later failed): that is a reversal, recorded as such.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.StrEnum):
    """Status of one money movement (a payment or a refund) at the provider."""

    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        """ACCEPTED and FAILED are outcomes; the others wait for one."""
        return self in (Status.ACCEPTED, Status.FAILED)

    @property
    def public(self) -> str:
        """The PaymentStatus value (docs/api.md) has no UNKNOWN: the caller sees PENDING until it is settled."""
        return Status.PENDING.value if self is Status.UNKNOWN else self.value


class OperationKind(enum.StrEnum):
    """What a ledger entry moves."""

    PAYMENT = "PAYMENT"
    REFUND = "REFUND"


class PaymentKind(enum.StrEnum):
    """Which use case created the payment; decides which follow-ups make sense."""

    PAYMENT = "PAYMENT"
    SUBSCRIPTION_SCHEDULE = "SUBSCRIPTION_SCHEDULE"
    SUBSCRIPTION_START = "SUBSCRIPTION_START"
    SUBSCRIPTION_PAY = "SUBSCRIPTION_PAY"
    AUTHORIZATION = "AUTHORIZATION"
    PAY_BY_LINK = "PAY_BY_LINK"


@dataclass(frozen=True)
class Transition:
    """What a reported status does to the recorded one."""

    status: Status
    changed: bool
    reversal: bool = False


def transition(current: Status, reported: Status) -> Transition:
    """Apply a status reported by the provider (answer, callback, lookup) to the recorded status.

    Stale news never moves a payment backwards: a late PENDING after ACCEPTED is ignored. A final
    outcome replaced by the opposite one is a reversal: the provider changed its mind and we follow it.
    """
    if reported == current:
        return Transition(current, changed=False)
    if reported in (Status.UNKNOWN, Status.PENDING):
        if current is Status.UNKNOWN and reported is Status.PENDING:
            return Transition(Status.PENDING, changed=True)
        return Transition(current, changed=False)
    if current.is_final:
        return Transition(reported, changed=True, reversal=True)
    return Transition(reported, changed=True)
