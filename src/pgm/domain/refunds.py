"""Refund arithmetic, derived from the ledger rather than from flags."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pgm.domain.statuses import Status


@dataclass(frozen=True)
class RefundEntry:
    """One refund in a payment's ledger: its amount and where it stands."""

    amount: int
    status: Status


@dataclass(frozen=True)
class RefundPosition:
    """How much of a paid amount is refunded, on its way to being refunded, and left."""

    paid: int
    succeeded: tuple[int, ...]
    in_flight: int

    @property
    def total_refunded(self) -> int:
        """Sum of the refunds the provider confirmed."""
        return sum(self.succeeded)

    @property
    def refundable(self) -> int:
        """What may still be requested: paid - succeeded - pending (pending counts as spent)."""
        return self.paid - self.total_refunded - self.in_flight

    @property
    def is_total(self) -> bool:
        """Everything paid has come back."""
        return self.paid > 0 and self.total_refunded >= self.paid


def refund_position(paid: int, refunds: Iterable[RefundEntry]) -> RefundPosition:
    """Summarise a payment's refunds in ledger order; unknown outcomes count as in flight."""
    succeeded: list[int] = []
    in_flight = 0
    for entry in refunds:
        if entry.status is Status.ACCEPTED:
            succeeded.append(entry.amount)
        elif entry.status in (Status.PENDING, Status.UNKNOWN):
            in_flight += entry.amount
    return RefundPosition(paid=paid, succeeded=tuple(succeeded), in_flight=in_flight)


def refund_refusal(position: RefundPosition, requested: int) -> str | None:
    """Why a refund of `requested` must not be sent to the provider, or None when it may."""
    if position.paid <= 0:
        return "the payment has not been paid, so there is nothing to refund"
    if requested > position.refundable:
        return (
            f"refund of {requested} exceeds the refundable amount {position.refundable} "
            f"(paid {position.paid}, refunded {position.total_refunded}, pending {position.in_flight})"
        )
    return None
