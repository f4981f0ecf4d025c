"""Refunds made in Stripe's Dashboard of a saga's payment, against the Stripe fake: reported by a signed
`refund.created` that names only the PaymentIntent, or, when that webhook never comes (the event type not
enabled on the endpoint), found by reconciliation's refund watch. Either way the saga hears
`refundRequested` then the outcome, and Stripe holds one refund.

Run with the shipped machine and with the contract's, under the shipped configuration's deep merge (what
each merge does to the refund's id is the same for every provider: tests/saga/test_refunds_outside_the_saga.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.stripe import StripeFake, running_stripe_fake
from tests.support.saga_refunds import (
    MACHINES,
    PAID,
    PARTIALLY_REFUNDED,
    event_labels,
    reconcile_now,
    refund_commands,
    refunded,
    wait_settled,
)
from tests.support.saga_stack import SagaStack, provider_saga_stack


@pytest.fixture(scope="module", params=sorted(MACHINES))
def machine(request: pytest.FixtureRequest) -> str:
    """Which payment machine the Flow Manager runs."""
    return str(request.param)


@pytest.fixture(scope="module")
def rig(backend: str, machine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, StripeFake]]:
    """A saga stack whose PGM has Stripe enabled against the fake, which sends it signed webhooks."""
    directory = tmp_path_factory.mktemp("stripe-saga")
    with (
        running_stripe_fake() as fake,
        provider_saga_stack("stripe", fake, backend, directory, MACHINES[machine]) as stack,
    ):
        yield stack, fake


def paid_saga(stack: SagaStack, fake: StripeFake) -> tuple[str, str, str]:
    """A saga paid on Stripe's Checkout page: (saga id, payment id, merchant reference)."""
    shop_transaction_id = f"order-{uuid.uuid4().hex[:10]}"
    saga_id = stack.create_saga(
        {
            "amount": 1000,
            "currency": "EUR",
            "provider": "stripe",
            "paymentMethod": "credit-cards",
            "shopTransactionId": shop_transaction_id,
            "payRequestData": {"successRedirect": "https://shop.example/ok"},
        }
    )
    stack.send_event(saga_id, "scheduleRequested")
    pending = wait_settled(stack, saga_id, 0, lambda metadata: bool(metadata.get("paymentId")))
    payment_id = pending["metadata"]["paymentId"]
    fake.approve(payment_id)
    wait_settled(stack, saga_id, PAID, lambda metadata: True)
    return saga_id, payment_id, shop_transaction_id


def stripe_refunds(fake: StripeFake, shop_transaction_id: str) -> list[tuple[int, str]]:
    """The refunds Stripe holds for the saga's payment."""
    [session] = fake.payments(shop_transaction_id)
    return [(refund["amount"], refund["status"]) for refund in session["refunds"]]


def assert_followed(stack: SagaStack, saga_id: str, machine: str, saga: dict[str, Any]) -> None:
    """The saga went through REFUND_REQUESTED, and the command it sent there was the same refund."""
    assert event_labels(stack, saga_id)[-3:] == ["paymentExecuted", "refundRequested", "partialRefundExecuted"]
    [command] = refund_commands(stack, saga_id, 1)
    assert "started outside the saga" in command["result"]
    if machine == "contract":
        states = [entry["state"] for entry in saga["history"]["states"]]
        assert states[-2:] == ["REFUND_REQUESTED", "PARTIALLY_REFUNDED"]


def test_a_refund_made_in_the_dashboard_reaches_the_saga_through_its_webhook(
    rig: tuple[SagaStack, StripeFake], machine: str
) -> None:
    stack, fake = rig
    saga_id, payment_id, shop_transaction_id = paid_saga(stack, fake)

    fake.refund_in_dashboard(payment_id, 300)
    saga = wait_settled(stack, saga_id, PARTIALLY_REFUNDED, refunded(300))
    assert_followed(stack, saga_id, machine, saga)
    assert stripe_refunds(fake, shop_transaction_id) == [(300, "succeeded")]


def test_a_dashboard_refund_whose_webhook_never_came_is_found_by_reconciliation(
    rig: tuple[SagaStack, StripeFake], machine: str
) -> None:
    stack, fake = rig
    saga_id, payment_id, shop_transaction_id = paid_saga(stack, fake)
    fake.enabled_events.discard("refund.created")
    try:
        fake.refund_in_dashboard(payment_id, 400)
    finally:
        fake.enabled_events.add("refund.created")
    assert event_labels(stack, saga_id)[-1] == "paymentExecuted"

    [looked] = [row for row in reconcile_now(stack.pgm) if row["id"] == payment_id]
    assert looked["checked"] is True
    saga = wait_settled(stack, saga_id, PARTIALLY_REFUNDED, refunded(400))
    assert_followed(stack, saga_id, machine, saga)
    assert stripe_refunds(fake, shop_transaction_id) == [(400, "succeeded")]
