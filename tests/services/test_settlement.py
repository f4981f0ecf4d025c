"""The refund watch's schedule (services/settlement.py: RefundWatch): which paid payments are watched and
when they are looked at, as plain arithmetic."""

from __future__ import annotations

import itertools

from pgm.domain.statuses import PaymentKind
from pgm.services.settlement import RefundWatch
from pgm.store.records import Payment

DAY = 86400.0
WATCH = RefundWatch(window_seconds=7 * DAY, first_after_seconds=600.0, providers=frozenset({"sandbox", "stripe"}))


def payment(
    provider: str = "sandbox", saga_id: str | None = "saga-1", kind: PaymentKind = PaymentKind.PAYMENT
) -> Payment:
    return Payment(
        id="pay_1",
        provider=provider,
        payment_method="credit-cards",
        kind=kind.value,
        status="ACCEPTED",
        amount=1000,
        currency="EUR",
        shop_transaction_id="order-1",
        idempotency_key="key-1",
        created_at=0.0,
        updated_at=0.0,
        saga_id=saga_id,
    )


def test_a_sagas_payment_at_a_provider_that_lists_refunds_is_watched() -> None:
    assert WATCH.covers(payment())
    assert WATCH.covers(payment(kind=PaymentKind.PAY_BY_LINK))
    assert not WATCH.covers(payment(saga_id=None))
    assert not WATCH.covers(payment(provider="adyen"))
    assert not WATCH.covers(payment(kind=PaymentKind.AUTHORIZATION))
    assert not RefundWatch(window_seconds=0, providers=frozenset({"sandbox"})).covers(payment())


def test_looks_double_their_interval_and_the_last_is_at_the_end_of_the_window() -> None:
    paid = 1_000_000.0
    looks = [WATCH.next_check(paid, 0, paid)]
    while looks[-1] is not None:
        looks.append(WATCH.next_check(paid, len(looks), looks[-1]))
    times = [moment - paid for moment in looks[:-1] if moment is not None]
    assert times[:3] == [600.0, 600.0 + 1200.0, 600.0 + 1200.0 + 2400.0]
    assert times[-1] == 7 * DAY
    assert len(times) == 10
    assert all(later > earlier for earlier, later in itertools.pairwise(times))
