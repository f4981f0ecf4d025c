"""Scalapay through the saga API: the Flow Manager stand-in runs the repository's configuration, the
PGM talks to the Scalapay fake, the payer approves (or abandons) on the fake's checkout, and Scalapay's
signed webhooks, read back and the order captured, settle the saga."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.scalapay import ScalapayFake, running_scalapay_fake
from tests.support.saga_stack import SagaStack, provider_saga_stack
from tests.support.servers import wait_for


@pytest.fixture(scope="module")
def rig(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, ScalapayFake]]:
    """A saga stack whose PGM has Scalapay enabled against the fake."""
    directory = tmp_path_factory.mktemp("scalapay-saga")
    with running_scalapay_fake() as fake, provider_saga_stack("scalapay", fake, backend, directory) as stack:
        yield stack, fake


def metadata(**extra: Any) -> dict[str, Any]:
    """Saga metadata for a Scalapay order of 100.00 EUR."""
    data: dict[str, Any] = {
        "amount": 10_000,
        "currency": "EUR",
        "provider": "scalapay",
        "paymentMethod": "scalapay",
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "payRequestData": {"providerData": {"consumer": {"givenNames": "Mario", "surname": "Rossi"}}},
    }
    data.update(extra)
    return data


def pending_saga(stack: SagaStack, data: dict[str, Any]) -> tuple[str, str]:
    """Start a saga and wait until the payer is sent to Scalapay's checkout: (saga id, order token)."""
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    assert pending["metadata"]["payRequestData"]["redirectToUrl"]
    return saga_id, str(pending["metadata"]["paymentId"])


def test_approval_captures_then_partial_and_total_refund(rig: tuple[SagaStack, ScalapayFake]) -> None:
    stack, fake = rig
    saga_id, token = pending_saga(stack, metadata())
    fake.approve(token)
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert fake.order(token)["status"] == "charged"
    for amount, state in ((4_000, "PARTIALLY_REFUNDED"), (6_000, "TOTALLY_REFUNDED")):
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": amount}})
        saga = stack.wait_state(saga_id, state)
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 10_000, "refundedAmounts": [4_000, 6_000]}
    assert [r["amount"]["amount"] for r in fake.order(token)["refunds"]] == ["40.00", "60.00"]


def test_a_refund_over_the_paid_amount_never_reaches_scalapay(rig: tuple[SagaStack, ScalapayFake]) -> None:
    stack, fake = rig
    saga_id, token = pending_saga(stack, metadata())
    fake.approve(token)
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 10_001}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "exceeds the refundable amount" in saga["metadata"]["error"]
    assert fake.order(token)["refunds"] == []


def test_the_payer_abandoning_the_checkout_fails_the_saga(rig: tuple[SagaStack, ScalapayFake]) -> None:
    stack, fake = rig
    saga_id, token = pending_saga(stack, metadata())
    fake.abandon(token)
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert saga["metadata"]["error"]


def test_a_capture_scalapay_declines_fails_the_saga(rig: tuple[SagaStack, ScalapayFake]) -> None:
    stack, fake = rig
    saga_id, token = pending_saga(stack, metadata())
    fake.decline_next_capture()
    fake.approve(token)
    stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert fake.order(token)["status"] == "declined"


def test_a_lost_answer_is_reconciled_by_asking_again_with_its_key(rig: tuple[SagaStack, ScalapayFake]) -> None:
    stack, fake = rig
    data = metadata()
    fake.delay_next(2.5)  # longer than the PGM's provider time-out: Scalapay makes the order, the answer is lost
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    wait_for(lambda: len(fake.payments(data["shopTransactionId"])) == 1, what="the order made at Scalapay")
    (order,) = fake.payments(data["shopTransactionId"])
    wait_for(
        lambda: stack.pgm.get("/v3/scalapay/status", params={"paymentId": order["token"]}).status_code == 200,
        timeout=20,
        what="the PGM learning the order's token by asking again with its key",
    )
    fake.approve(order["token"])
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert saga["metadata"]["paymentId"] == order["token"]
    assert len(fake.payments(data["shopTransactionId"])) == 1


def test_pay_by_link_fails_the_saga_naming_what_scalapay_does_not_support(
    rig: tuple[SagaStack, ScalapayFake],
) -> None:
    stack, _fake = rig
    saga_id = stack.create_saga(metadata(type="PAY_BY_LINK"))
    stack.send_event(saga_id, "linkRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert "does not support pay-by-link" in saga["metadata"]["error"]
