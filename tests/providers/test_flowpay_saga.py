"""FlowPay through the saga API: the Flow Manager stand-in runs the repository's configuration, the PGM
talks to the FlowPay fake, the payer acts on the fake's checkout and FlowPay's signed webhooks settle the
saga."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.flowpay import FlowPayFake, running_flowpay_fake
from tests.support.saga_stack import SagaStack, provider_saga_stack
from tests.support.servers import wait_for

PROVIDER_DATA = {
    "debtorFiscalCode": "RSSMRA80A01H501U",
    "creditorFiscalCode": "01234567890",
    "creditorIban": "IT60X0542811101000000123456",
}


@pytest.fixture(scope="module")
def rig(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, FlowPayFake]]:
    """A saga stack whose PGM has FlowPay enabled against the fake."""
    directory = tmp_path_factory.mktemp("flowpay-saga")
    with running_flowpay_fake() as fake, provider_saga_stack("flowpay", fake, backend, directory) as stack:
        yield stack, fake


def metadata(**extra: Any) -> dict[str, Any]:
    """Saga metadata for a FlowPay transfer."""
    data: dict[str, Any] = {
        "amount": 1000,
        "currency": "EUR",
        "provider": "flowpay",
        "paymentMethod": "wire-transfer",
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "payRequestData": {
            "successRedirect": "https://shop.example/ok",
            "failureRedirect": "https://shop.example/ko",
            "providerData": dict(PROVIDER_DATA),
        },
    }
    data.update(extra)
    return data


def pending_saga(stack: SagaStack, data: dict[str, Any]) -> tuple[str, str]:
    """Start a saga and wait until the payer is sent to FlowPay's checkout: (saga id, payment request id)."""
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    assert pending["metadata"]["payRequestData"]["redirectToUrl"]
    return saga_id, str(pending["metadata"]["paymentId"])


def test_a_transfer_the_payer_authorises_executes_the_saga(rig: tuple[SagaStack, FlowPayFake]) -> None:
    stack, fake = rig
    saga_id, payment_id = pending_saga(stack, metadata())
    assert fake.payment(payment_id)["status"] == "pending"
    fake.approve(payment_id)
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert saga["metadata"]["paymentId"] == payment_id


@pytest.mark.parametrize("payer", ["reject", "abandon"])
def test_a_rejected_or_abandoned_transfer_fails_the_saga(rig: tuple[SagaStack, FlowPayFake], payer: str) -> None:
    stack, fake = rig
    saga_id, payment_id = pending_saga(stack, metadata())
    getattr(fake, payer)(payment_id)
    stack.wait_state(saga_id, "PAYMENT_FAILED")


def test_a_held_transfer_keeps_the_saga_pending_until_executed(rig: tuple[SagaStack, FlowPayFake]) -> None:
    stack, fake = rig
    saga_id, payment_id = pending_saga(stack, metadata())
    delivered = len(fake.deliveries)
    fake.hold(payment_id)
    wait_for(lambda: len(fake.deliveries) > delivered, what="the onHold event delivered")
    assert stack.saga(saga_id)["currentState"] == "PAYMENT_PENDING"
    fake.approve(payment_id)
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")


def test_duplicate_and_forged_webhooks_change_nothing(rig: tuple[SagaStack, FlowPayFake]) -> None:
    stack, fake = rig
    saga_id, payment_id = pending_saga(stack, metadata())
    claim = json.dumps({"type": "payment.status_change", "data": {"id": payment_id, "status": "rejected"}}).encode()
    forged = FlowPayFake().signed(claim)
    assert stack.pgm.client.post("/v3/flowpay/callback", content=claim, headers=forged).status_code == 401
    stale = fake.signed(claim, int(time.time()) - 600)
    assert stack.pgm.client.post("/v3/flowpay/callback", content=claim, headers=stale).status_code == 401
    assert stack.saga(saga_id)["currentState"] == "PAYMENT_PENDING"
    fake.approve(payment_id)
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    (sent,) = [n for n in fake.notifications if payment_id.encode() in n["body"]]
    assert fake.resend(sent) == 200
    assert stack.saga(saga_id)["currentState"] == "PAYMENT_EXECUTED"


def test_a_lost_answer_is_reconciled_by_lookup(rig: tuple[SagaStack, FlowPayFake]) -> None:
    stack, fake = rig
    data = metadata()
    fake.delay_next(2.5)  # longer than the PGM's provider time-out: FlowPay creates it, the answer is lost
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    wait_for(lambda: len(fake.payments(data["shopTransactionId"])) == 1, what="the payment request at FlowPay")
    (created,) = fake.payments(data["shopTransactionId"])
    fake.approve(created["id"])
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED", timeout=30)
    assert saga["metadata"]["paymentId"] == created["id"]
    # Found by a search on its reference (the lookup of a payment whose creation answer was lost).
    assert any(call.method == "GET" and call.path.endswith("/payment-requests") for call in fake.requests)
    assert len(fake.payments(data["shopTransactionId"])) == 1


def test_a_refund_fails_the_refund_naming_what_flowpay_does_not_support(rig: tuple[SagaStack, FlowPayFake]) -> None:
    stack, fake = rig
    saga_id, payment_id = pending_saga(stack, metadata())
    fake.approve(payment_id)
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 400}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "does not support refund" in saga["metadata"]["error"]


def test_pay_by_link_fails_the_saga_naming_what_flowpay_does_not_support(rig: tuple[SagaStack, FlowPayFake]) -> None:
    stack, _fake = rig
    saga_id = stack.create_saga(metadata(type="PAY_BY_LINK"))
    stack.send_event(saga_id, "linkRequested")
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert "does not support pay-by-link" in saga["metadata"]["error"]
