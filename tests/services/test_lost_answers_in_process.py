"""A lost provider answer in the payment service (docs/reliability.md), in the test's process: the Stripe
adapter, unchanged, reaches the Stripe fake's ASGI app through an in-process transport (`Wiring.transports`).
The payment is recorded UNKNOWN before the call; a lost answer is followed by one lookup at the provider,
which settles it when the provider has the payment and leaves it UNKNOWN (PENDING to the caller) for
reconciliation when it has not; reconciliation's look (the test moves the clock) then fails it. No port,
no sleep: the time-out is a fraction of a second."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from pgm.domain.statuses import Status
from pgm.outbound import ASGITransport
from pgm.providers.base import Operation, PayRequest, PayResultCode
from pgm.store.records import Payment
from tests.fakes.stripe import StripeFake
from tests.support.in_process import ManualClock, services
from tests.support.stripe_requests import SESSIONS

STRIPE = "http://stripe.test"
# The fake answers at once unless told to hold an answer back: a short time-out keeps a lost answer short.
LOST_QUICKLY = {"PGM_PROVIDER_TIMEOUT_SECONDS": "0.3", "PGM_RECONCILE_AFTER_SECONDS": "0.3"}


def request(shop_id: str) -> PayRequest:
    return PayRequest(
        1000,
        "EUR",
        shop_id,
        "credit-cards",
        idempotency_key=f"key-{shop_id}",
        success_redirect_url="https://shop.example/ok",
        failure_redirect_url="https://shop.example/ko",
    )


async def pay_with_a_fault(backend: str, directory: Path, fault: str) -> tuple[PayResultCode, Payment, int, Payment]:
    """Pay on Stripe with `fault` on the session's creation; (result, stored payment, payments at Stripe, the
    payment after reconciliation's first look)."""
    fake, clock = StripeFake(), ManualClock()
    fake.base_url = STRIPE
    env = {"ENABLED_PROVIDERS": "stripe", **fake.env(), **LOST_QUICKLY}
    async with services(backend, directory, clock, {STRIPE: ASGITransport(fake.app)}, **env) as service:
        if fault == "answer-lost":
            fake.delay_next(60, method="POST", path=SESSIONS)  # done at Stripe, answered after the time-out
        else:
            fake.fail_next(500, method="POST", path=SESSIONS)  # refused before doing anything
        adapter = service.registry.get("stripe")
        assert adapter is not None
        shop_id = f"order-{uuid.uuid4().hex[:10]}"
        outcome = await service.payments.start(adapter, Operation.PAY, request(shop_id))
        stored = await service.payments.reload(outcome.payment.id)
        clock.advance(float(LOST_QUICKLY["PGM_RECONCILE_AFTER_SECONDS"]))
        assert await service.reconciler.run_once() == 1  # an UNKNOWN or PENDING payment is due for a look
        return outcome.result, stored, len(fake.payments(shop_id)), await service.payments.reload(stored.id)


def test_a_lost_answer_is_settled_by_asking_the_provider_once(backend: str, tmp_path: Path) -> None:
    result, payment, sessions, reconciled = asyncio.run(pay_with_a_fault(backend, tmp_path, "answer-lost"))
    # Stripe made the session: the lookup finds it, waiting for its payer.
    assert sessions == 1
    assert payment.status == Status.PENDING.value
    assert payment.provider_payment_id
    # The session found again still sends the payer to Stripe's page, as the lost answer would have.
    assert result is PayResultCode.REDIRECT_TO_URL
    assert payment.redirect_url == f"{STRIPE}/c/pay/{payment.provider_payment_id}"
    assert reconciled.status == Status.PENDING.value  # the payer has not acted yet


def test_a_payment_the_provider_never_made_is_unknown_until_reconciliation_fails_it(
    backend: str, tmp_path: Path
) -> None:
    result, payment, sessions, reconciled = asyncio.run(pay_with_a_fault(backend, tmp_path, "refused-before-acting"))
    assert sessions == 0
    assert payment.status == Status.UNKNOWN.value
    assert payment.provider_payment_id is None
    assert result is PayResultCode.PENDING
    # Reconciliation asks again: Stripe has no such session, so the payment failed and nobody was charged.
    assert reconciled.status == Status.FAILED.value
    assert "never created" in (reconciled.description or "")
