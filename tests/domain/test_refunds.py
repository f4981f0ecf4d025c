"""Refund arithmetic from the ledger: paid - succeeded - pending >= requested."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pgm.domain.refunds import RefundEntry, refund_position, refund_refusal
from pgm.domain.statuses import Status


def test_pending_and_unknown_refunds_count_as_spent() -> None:
    position = refund_position(
        1000,
        [
            RefundEntry(300, Status.ACCEPTED),
            RefundEntry(200, Status.PENDING),
            RefundEntry(100, Status.UNKNOWN),
            RefundEntry(400, Status.FAILED),
        ],
    )
    assert position.total_refunded == 300
    assert position.in_flight == 300
    assert position.refundable == 400
    assert refund_refusal(position, 400) is None
    refusal = refund_refusal(position, 401)
    assert refusal == "refund of 401 exceeds the refundable amount 400 (paid 1000, refunded 300, pending 300)"


def test_total_is_derived_not_flagged() -> None:
    assert not refund_position(1000, [RefundEntry(999, Status.ACCEPTED)]).is_total
    assert refund_position(1000, [RefundEntry(400, Status.ACCEPTED), RefundEntry(600, Status.ACCEPTED)]).is_total
    assert refund_position(1000, [RefundEntry(400, Status.ACCEPTED)]).succeeded == (400,)


def test_nothing_paid_nothing_refundable() -> None:
    assert refund_refusal(refund_position(0, []), 1) == "the payment has not been paid, so there is nothing to refund"


@given(
    paid=st.integers(min_value=1, max_value=10**9),
    requests=st.lists(st.tuples(st.integers(min_value=1, max_value=10**9), st.sampled_from(list(Status))), max_size=20),
)
def test_accepting_only_what_is_refundable_never_refunds_more_than_paid(
    paid: int, requests: list[tuple[int, Status]]
) -> None:
    ledger: list[RefundEntry] = []
    for amount, outcome in requests:
        if refund_refusal(refund_position(paid, ledger), amount) is None:
            ledger.append(RefundEntry(amount, outcome))
    position = refund_position(paid, ledger)
    assert position.total_refunded + position.in_flight <= paid
    assert position.refundable >= 0
