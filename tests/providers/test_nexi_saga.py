"""Nexi XPay through the saga API: the Flow Manager stand-in runs the repository's configuration, the
PGM talks to the Nexi fake, the payer acts on the fake's hosted page and Nexi's notifications (read back
before they are trusted) settle the saga."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.nexi import NexiFake, running_nexi_fake
from tests.support.saga_stack import SagaStack, provider_saga_stack
from tests.support.servers import wait_for


@pytest.fixture(scope="module")
def rig(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, NexiFake]]:
    """A saga stack whose PGM has Nexi enabled against the fake."""
    directory = tmp_path_factory.mktemp("nexi-saga")
    with running_nexi_fake() as fake, provider_saga_stack("nexi", fake, backend, directory) as stack:
        yield stack, fake


def metadata(**extra: Any) -> dict[str, Any]:
    """Saga metadata for a Nexi card payment on the hosted page."""
    data: dict[str, Any] = {
        "amount": 1000,
        "currency": "EUR",
        "provider": "nexi",
        "paymentMethod": "credit-cards",
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "payRequestData": {
            "successRedirect": "https://shop.example/ok",
            "failureRedirect": "https://shop.example/ko",
            "providerData": {"language": "ita"},
        },
    }
    data.update(extra)
    return data


def pending_saga(stack: SagaStack, data: dict[str, Any], event: str = "scheduleRequested") -> tuple[str, str]:
    """Start a saga and wait until the payer is sent to Nexi's hosted page: (saga id, order id)."""
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, event)
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    assert pending["metadata"]["payRequestData"]["redirectToUrl"]
    return saga_id, str(pending["metadata"]["paymentId"])


def test_pay_then_partial_and_total_refund_then_over_refund_refused(rig: tuple[SagaStack, NexiFake]) -> None:
    stack, fake = rig
    saga_id, order_id = pending_saga(stack, metadata())
    fake.approve(order_id)
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    reference = saga["metadata"]["shopTransactionId"]
    for amount, state in ((400, "PARTIALLY_REFUNDED"), (600, "TOTALLY_REFUNDED")):
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": amount}})
        saga = stack.wait_state(saga_id, state)
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 1000, "refundedAmounts": [400, 600]}
    assert [r["operationAmount"] for r in fake.payments(reference)[0]["refunds"]] == ["400", "600"]


def test_a_refund_over_the_paid_amount_never_reaches_nexi(rig: tuple[SagaStack, NexiFake]) -> None:
    stack, fake = rig
    saga_id, order_id = pending_saga(stack, metadata())
    fake.approve(order_id)
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 1001}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "exceeds the refundable amount" in saga["metadata"]["error"]
    assert fake.payments(saga["metadata"]["shopTransactionId"])[0]["refunds"] == []


@pytest.mark.parametrize("payer", ["decline", "cancel", "fail_three_ds"])
def test_a_declined_abandoned_or_failed_three_d_secure_payment_fails_the_saga(
    rig: tuple[SagaStack, NexiFake], payer: str
) -> None:
    stack, fake = rig
    saga_id, order_id = pending_saga(stack, metadata())
    getattr(fake, payer)(order_id)
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert saga["metadata"]["error"]


def test_three_d_secure_then_authorization_executes_the_saga(rig: tuple[SagaStack, NexiFake]) -> None:
    stack, fake = rig
    saga_id, order_id = pending_saga(stack, metadata())
    fake.three_ds(order_id)
    wait_for(lambda: any(n["body"]["operation"]["orderId"] == order_id for n in fake.notifications), what="3DS")
    assert stack.saga(saga_id)["currentState"] == "PAYMENT_PENDING"
    fake.approve(order_id)
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")


def test_recurring_contract_start_then_merchant_initiated_pay(rig: tuple[SagaStack, NexiFake]) -> None:
    stack, fake = rig
    data = metadata(type="SUBSCRIPTION")
    data["payRequestData"]["subscriptionInfo"] = {"interval": "MONTH", "intervalCount": 1}
    first, order_id = pending_saga(stack, data, "subscriptionStart")
    fake.approve(order_id)
    token = stack.wait_state(first, "PAYMENT_EXECUTED")["metadata"]["payRequestData"]["subscriptionInfo"]["token"]
    assert fake.contracts[token]["status"] == "ACTIVE"

    renewal = metadata(type="SUBSCRIPTION")
    renewal["payRequestData"]["subscriptionInfo"] = {"token": token}
    second = stack.create_saga(renewal)
    stack.send_event(second, "subscriptionPaymentRequested")
    saga = stack.wait_state(second, "PAYMENT_EXECUTED")
    (order,) = fake.payments(saga["metadata"]["shopTransactionId"])
    assert order["operations"][0]["channel"] == "MIT"


def test_a_lost_answer_is_reconciled_by_reading_the_order(rig: tuple[SagaStack, NexiFake]) -> None:
    stack, fake = rig
    data = metadata(type="SUBSCRIPTION")
    data["payRequestData"]["subscriptionInfo"] = {"interval": "MONTH", "intervalCount": 1}
    first, order_id = pending_saga(stack, data, "subscriptionStart")
    fake.approve(order_id)
    token = stack.wait_state(first, "PAYMENT_EXECUTED")["metadata"]["payRequestData"]["subscriptionInfo"]["token"]
    renewal = metadata(type="SUBSCRIPTION")
    renewal["payRequestData"]["subscriptionInfo"] = {"token": token}
    fake.delay_next(2.5)  # longer than the PGM's provider time-out: Nexi charges, the answer is lost
    second = stack.create_saga(renewal)
    stack.send_event(second, "subscriptionPaymentRequested")
    saga = stack.wait_state(second, "PAYMENT_EXECUTED")
    (order,) = fake.payments(saga["metadata"]["shopTransactionId"])
    order_id = order["orderStatus"]["order"]["orderId"]
    assert saga["metadata"]["paymentId"] == order_id
    assert any(call.method == "GET" and call.path.endswith(f"/orders/{order_id}") for call in fake.requests)


def test_pay_by_link_fails_the_saga_naming_what_nexi_does_not_support(rig: tuple[SagaStack, NexiFake]) -> None:
    stack, _fake = rig
    saga_id = stack.create_saga(metadata(type="PAY_BY_LINK"))
    stack.send_event(saga_id, "linkRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert "does not support pay-by-link" in saga["metadata"]["error"]
