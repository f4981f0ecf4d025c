"""Fnmpay through the saga API: the Flow Manager stand-in runs the repository's configuration, the PGM
talks to the Fnmpay fake, the payer pays, is declined or cancels on the fake's hosted page and Fnmpay's
signed callbacks (read back before they are trusted) settle the saga; a payment link is paid; refunds
fail the refund naming what Fnmpay lacks; a lost answer is reconciled by the order id."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.fnmpay import FnmpayFake, running_fnmpay_fake
from tests.support.saga_stack import SagaStack, provider_saga_stack
from tests.support.servers import wait_for


@pytest.fixture(scope="module")
def rig(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, FnmpayFake]]:
    """A saga stack whose PGM has Fnmpay enabled against the fake."""
    directory = tmp_path_factory.mktemp("fnmpay-saga")
    with running_fnmpay_fake() as fake, provider_saga_stack("fnmpay", fake, backend, directory) as stack:
        yield stack, fake


def metadata(**extra: Any) -> dict[str, Any]:
    """Saga metadata for a Fnmpay card payment."""
    data: dict[str, Any] = {
        "amount": 2_500,
        "currency": "EUR",
        "provider": "fnmpay",
        "paymentMethod": "credit-cards",
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "payRequestData": {
            "successRedirect": "https://shop.example/ok",
            "failureRedirect": "https://shop.example/ko",
            "providerData": {"transactionType": "SALE", "description": "Order"},
        },
    }
    data.update(extra)
    return data


def reads_of(fake: FnmpayFake, payment_id: str) -> int:
    """How many times the PGM read this payment back."""
    return sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(f"/payments/{payment_id}"))


def pending_saga(stack: SagaStack, data: dict[str, Any]) -> tuple[str, str]:
    """Start a saga and wait until the payer is sent to Fnmpay's page: (saga id, payment id)."""
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    payment_id = str(pending["metadata"]["paymentId"])
    assert pending["metadata"]["payRequestData"]["redirectToUrl"].endswith(f"/checkout/{payment_id}")
    return saga_id, payment_id


def paid_saga(stack: SagaStack, fake: FnmpayFake) -> tuple[str, str]:
    """A saga whose payer paid: (saga id, payment id)."""
    saga_id, payment_id = pending_saga(stack, metadata())
    fake.pay(payment_id)
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    return saga_id, payment_id


def test_a_paid_payment_executes_the_saga(rig: tuple[SagaStack, FnmpayFake]) -> None:
    stack, fake = rig
    saga_id, payment_id = paid_saga(stack, fake)
    assert stack.saga(saga_id)["metadata"]["paymentId"] == payment_id
    assert fake.payment(payment_id)["transactionType"] == "SALE"


@pytest.mark.parametrize("payer", ["decline", "abandon"])
def test_a_declined_or_abandoned_payment_fails_the_saga(rig: tuple[SagaStack, FnmpayFake], payer: str) -> None:
    stack, fake = rig
    saga_id, payment_id = pending_saga(stack, metadata())
    getattr(fake, payer)(payment_id)
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert saga["metadata"]["error"]


def test_pay_by_link_through_the_saga(rig: tuple[SagaStack, FnmpayFake]) -> None:
    stack, fake = rig
    saga_id = stack.create_saga(metadata() | {"type": "PAY_BY_LINK"})
    stack.send_event(saga_id, "linkRequested")
    saga = stack.wait_state(saga_id, "LINK_CREATED")
    assert saga["metadata"]["link"].endswith(f"/link/{saga['metadata']['paymentId']}")
    stack.send_event(saga_id, "notificationSent")
    stack.wait_state(saga_id, "PAYMENT_PENDING")
    fake.pay(str(saga["metadata"]["paymentId"]))
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")


@pytest.mark.parametrize("amount", [1_000, 2_500, 2_501])
def test_a_partial_total_or_over_refund_fails_naming_what_fnmpay_does_not_support(
    rig: tuple[SagaStack, FnmpayFake], amount: int
) -> None:
    stack, fake = rig
    saga_id, _payment_id = paid_saga(stack, fake)
    calls = len([call for call in fake.requests if call.method == "POST"])
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": amount}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "fnmpay" in saga["metadata"]["error"]
    assert len([call for call in fake.requests if call.method == "POST"]) == calls


def test_a_lost_answer_is_reconciled_by_finding_the_payment_by_its_order_id(
    rig: tuple[SagaStack, FnmpayFake],
) -> None:
    stack, fake = rig
    data = metadata()
    fake.delay_next(2.5)  # longer than the PGM's provider time-out: Fnmpay creates the payment, the answer is lost
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    wait_for(lambda: len(fake.payments(data["shopTransactionId"])) == 1, what="the payment the lost request created")
    (payment,) = fake.payments(data["shopTransactionId"])
    fake.pay(payment["paymentId"])
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert saga["metadata"]["paymentId"] == payment["paymentId"]
    assert len(fake.payments(data["shopTransactionId"])) == 1


def test_a_duplicate_callback_changes_nothing_in_the_saga(rig: tuple[SagaStack, FnmpayFake]) -> None:
    stack, fake = rig
    saga_id, payment_id = paid_saga(stack, fake)
    sent = [n for n in fake.notifications if json.loads(n["body"])["paymentId"] == payment_id]
    before = reads_of(fake, payment_id)
    assert fake.resend(sent[-1]) == 200
    assert fake.resend(sent[-1]) == 200
    # A status read after the duplicates: by then any event they caused would have reached the Flow
    # Manager, which records events it ignores.
    assert stack.pgm.get("/v3/fnmpay/status", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"
    assert reads_of(fake, payment_id) > before
    saga = stack.saga(saga_id)
    assert saga["currentState"] == "PAYMENT_EXECUTED"
    assert not saga.get("ignoredEvents")


def test_a_forged_callback_does_not_execute_the_saga(rig: tuple[SagaStack, FnmpayFake]) -> None:
    stack, fake = rig
    saga_id, payment_id = pending_saga(stack, metadata())
    forged = json.dumps({"eventId": "evt_forged", "paymentId": payment_id, "transactionCode": "00"}).encode()
    headers = {"Content-Type": "application/json", "X-Fnmpay-Signature": "0" * 64}
    assert stack.pgm.client.post("/v3/fnmpay/callback", content=forged, headers=headers).status_code == 401
    # Signed (as if the key had leaked) but untrue: read back, still unpaid.
    before = reads_of(fake, payment_id)
    headers["X-Fnmpay-Signature"] = fake.sign(forged)
    assert stack.pgm.client.post("/v3/fnmpay/callback", content=forged, headers=headers).status_code == 200
    wait_for(lambda: reads_of(fake, payment_id) > before, what="the PGM reading the payment back")
    assert stack.saga(saga_id)["currentState"] == "PAYMENT_PENDING"
