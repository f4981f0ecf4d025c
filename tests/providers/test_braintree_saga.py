"""Braintree through the saga API: the Flow Manager stand-in runs the repository's configuration, the
PGM's Braintree SDK talks to the Braintree fake, and the sagas end where the contract says."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.braintree import PLAN_ID, Fake, running_braintree_fake
from tests.support.saga_refunds import event_labels, reconcile_now, refund_commands
from tests.support.saga_stack import SagaStack, provider_saga_stack
from tests.support.servers import wait_for


@pytest.fixture(scope="module")
def rig(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, Fake]]:
    """A saga stack whose PGM has Braintree enabled against its fake."""
    directory = tmp_path_factory.mktemp("braintree-saga")
    # Braintree has no idempotency keys: "no such sale" is only true once a sale sent before can no longer
    # land. A loaded machine can hold a request past a one-second time-out, so these sagas wait longer for
    # an answer and reconcile later than the test default.
    slower = {"PGM_PROVIDER_TIMEOUT_SECONDS": "3", "PGM_RECONCILE_AFTER_SECONDS": "4"}
    with (
        running_braintree_fake() as fake,
        provider_saga_stack("braintree", fake, backend, directory, **slower) as stack,
    ):
        yield stack, fake


def metadata(**provider_data: Any) -> dict[str, Any]:
    """Saga metadata for a Braintree PayPal payment (a one-time nonce unless providerData says otherwise)."""
    return {
        "amount": 1000,
        "currency": "EUR",
        "provider": "braintree",
        "paymentMethod": "pay-pal",
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "payRequestData": {"providerData": provider_data or {"nonce": "fake-paypal-one-time-nonce"}},
    }


def paid_saga(stack: SagaStack, **provider_data: Any) -> tuple[str, dict[str, Any]]:
    """A saga whose payment Braintree accepted at once."""
    saga_id = stack.create_saga(metadata(**provider_data))
    stack.send_event(saga_id, "scheduleRequested")
    return saga_id, stack.wait_state(saga_id, "PAYMENT_EXECUTED")


def test_pay_then_partial_and_total_refund_after_settlement(rig: tuple[SagaStack, Fake]) -> None:
    stack, fake = rig
    saga_id, saga = paid_saga(stack)
    reference = saga["metadata"]["shopTransactionId"]
    [sale] = fake.payments(reference)
    assert saga["metadata"]["paymentId"] == sale["id"]
    fake.settle(sale["id"])
    for amount, state in ((400, "PARTIALLY_REFUNDED"), (600, "TOTALLY_REFUNDED")):
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": amount}})
        saga = stack.wait_state(saga_id, state)
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 1000, "refundedAmounts": [400, 600]}
    assert [r["amount"] for r in fake.payments(reference)[0]["refunds"]] == [400, 600]


def test_a_refund_made_in_the_control_panel_is_found_by_reconciliation(rig: tuple[SagaStack, Fake]) -> None:
    stack, fake = rig
    saga_id, saga = paid_saga(stack)
    payment_id, reference = saga["metadata"]["paymentId"], saga["metadata"]["shopTransactionId"]
    fake.settle(payment_id)
    # No webhook the PGM reads reports a refund: only the sale's refund ids, which reconciliation reads.
    fake.refund_in_control_panel(payment_id, 250)
    [looked] = [row for row in reconcile_now(stack.pgm) if row["id"] == payment_id]
    assert looked["checked"] is True
    saga = stack.wait_state(saga_id, "PARTIALLY_REFUNDED")
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 250, "refundedAmounts": [250]}
    assert event_labels(stack, saga_id)[-2:] == ["refundRequested", "partialRefundExecuted"]
    [command] = refund_commands(stack, saga_id, 1)
    assert "started outside the saga" in command["result"]
    assert [r["amount"] for r in fake.payments(reference)[0]["refunds"]] == [250]


def test_a_total_refund_before_settlement_voids_the_sale(rig: tuple[SagaStack, Fake]) -> None:
    stack, fake = rig
    saga_id, saga = paid_saga(stack, nonce="fake-valid-nonce")
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 1000}})
    stack.wait_state(saga_id, "TOTALLY_REFUNDED")
    assert fake.payments(saga["metadata"]["shopTransactionId"])[0]["status"] == "voided"


def test_a_partial_refund_before_settlement_fails_the_refund_and_says_why(rig: tuple[SagaStack, Fake]) -> None:
    stack, _ = rig
    saga_id, saga = paid_saga(stack)
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 300}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "can only be voided as a whole" in saga["metadata"]["error"]


def test_refund_over_the_paid_amount_never_reaches_braintree(rig: tuple[SagaStack, Fake]) -> None:
    stack, fake = rig
    saga_id, saga = paid_saga(stack)
    fake.settle(saga["metadata"]["paymentId"])
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 1001}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "exceeds the refundable amount" in saga["metadata"]["error"]
    assert fake.payments(saga["metadata"]["shopTransactionId"])[0]["refunds"] == []


@pytest.mark.parametrize(
    ("provider_data", "reason"),
    [
        ({"nonce": "fake-processor-declined-visa-nonce"}, "declined"),
        (
            {"nonce": "fake-three-d-secure-visa-failed-authentication-nonce", "threeDSecureRequired": True},
            "3-D Secure",
        ),
    ],
    ids=["declined", "3-d-secure-failed"],
)
def test_a_declined_or_unauthenticated_payment_fails_the_saga(
    rig: tuple[SagaStack, Fake], provider_data: dict[str, Any], reason: str
) -> None:
    stack, _ = rig
    data = metadata(**provider_data)
    data["paymentMethod"] = "credit-cards"
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert reason in saga["metadata"]["error"]


def test_a_lost_answer_is_reconciled_by_lookup_and_the_saga_paid_once(rig: tuple[SagaStack, Fake]) -> None:
    stack, fake = rig
    data = metadata()
    fake.lose_next()
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED", timeout=30)
    [sale] = fake.payments(data["shopTransactionId"])
    assert saga["metadata"]["paymentId"] == sale["id"]


def test_a_provider_managed_subscription_through_the_saga(rig: tuple[SagaStack, Fake]) -> None:
    stack, fake = rig
    token = fake.add_customer(f"cust-{uuid.uuid4().hex[:10]}")
    data = metadata(planId=PLAN_ID, paymentToken=token)
    data["type"] = "SUBSCRIPTION"
    data["payRequestData"]["subscriptionInfo"] = {"interval": "MONTH", "intervalCount": 1, "expiresAfter": 2}
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "subscriptionScheduledRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    subscription = saga["metadata"]["payRequestData"]["subscriptionInfo"]["token"]
    assert fake.subscription(subscription).number_of_billing_cycles == 2
    assert fake.renew(subscription) == "Expired"
    wait_for(
        lambda: stack.pgm.get(f"/v3/braintree/subscription/status/{subscription}").json()["status"] == "EXPIRED",
        what="the expired subscription",
    )


def test_pay_by_link_fails_the_saga_naming_what_braintree_cannot_do(rig: tuple[SagaStack, Fake]) -> None:
    stack, _ = rig
    data = metadata()
    data["type"] = "PAY_BY_LINK"
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "linkRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert "does not support pay-by-link" in saga["metadata"]["error"]
