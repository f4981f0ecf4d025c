"""Axerve through the saga API: the Flow Manager stand-in runs the repository's configuration, the PGM
talks to the Axerve fake, the payer acts on the fake's pages, and Axerve's notifications (read back
before they are trusted) settle the saga."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.axerve import (
    APPLE_PAY_TOKEN,
    DECLINED_CARD,
    GOOGLE_PAY_TOKEN,
    THREE_DS_CARD,
    AxerveFake,
    running_axerve_fake,
)
from tests.support.saga_stack import SagaStack, provider_saga_stack


@pytest.fixture(scope="module")
def rig(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, AxerveFake]]:
    """A saga stack whose PGM has Axerve enabled against the fake."""
    directory = tmp_path_factory.mktemp("axerve-saga")
    with running_axerve_fake() as fake, provider_saga_stack("axerve", fake, backend, directory) as stack:
        yield stack, fake


def metadata(method: str = "credit-cards", **provider_data: Any) -> dict[str, Any]:
    """Saga metadata for an Axerve payment."""
    return {
        "amount": 1000,
        "currency": "EUR",
        "provider": "axerve",
        "paymentMethod": method,
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "payRequestData": {
            "successRedirect": "https://shop.example/ok",
            "failureRedirect": "https://shop.example/ko",
            "providerData": provider_data,
        },
    }


def started(stack: SagaStack, data: dict[str, Any], event: str = "scheduleRequested") -> str:
    """Start a saga and send its first event."""
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, event)
    return saga_id


def test_card_pay_then_partial_and_total_refund_then_over_refund_refused(rig: tuple[SagaStack, AxerveFake]) -> None:
    stack, fake = rig
    saga_id = started(stack, metadata(token=fake.card_token()))
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    payment_id = saga["metadata"]["paymentId"]
    for amount, state in ((400, "PARTIALLY_REFUNDED"), (600, "TOTALLY_REFUNDED")):
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": amount}})
        saga = stack.wait_state(saga_id, state)
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 1000, "refundedAmounts": [400, 600]}
    assert fake.payment(payment_id)["refunds"] == [400, 600]


def test_a_refund_over_the_paid_amount_never_reaches_axerve(rig: tuple[SagaStack, AxerveFake]) -> None:
    stack, fake = rig
    saga_id = started(stack, metadata(token=fake.card_token()))
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 1001}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "exceeds the refundable amount" in saga["metadata"]["error"]
    assert fake.payment(saga["metadata"]["paymentId"])["refunds"] == []


def test_a_declined_card_fails_the_saga(rig: tuple[SagaStack, AxerveFake]) -> None:
    stack, fake = rig
    saga = stack.wait_state(started(stack, metadata(token=fake.card_token(DECLINED_CARD))), "PAYMENT_FAILED")
    assert saga["metadata"]["error"]


@pytest.mark.parametrize("payer", ["complete_three_ds", "fail_three_ds"])
def test_three_d_secure_redirect_then_the_challenge_settles_the_saga(
    rig: tuple[SagaStack, AxerveFake], payer: str
) -> None:
    stack, fake = rig
    saga_id = started(stack, metadata(token=fake.card_token(THREE_DS_CARD)))
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    assert pending["metadata"]["payRequestData"]["redirectToUrl"]
    getattr(fake, payer)(str(pending["metadata"]["paymentId"]))
    stack.wait_state(saga_id, "PAYMENT_EXECUTED" if payer == "complete_three_ds" else "PAYMENT_FAILED")


@pytest.mark.parametrize(("method", "payer"), [("pay-pal", "payer_pays"), ("satispay", "payer_abandons")])
def test_paypal_and_satispay_on_axerves_page(rig: tuple[SagaStack, AxerveFake], method: str, payer: str) -> None:
    stack, fake = rig
    saga_id = started(stack, metadata(method))
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    getattr(fake, payer)(str(pending["metadata"]["paymentId"]))
    stack.wait_state(saga_id, "PAYMENT_EXECUTED" if payer == "payer_pays" else "PAYMENT_FAILED")


@pytest.mark.parametrize("method", ["applepay", "googlepay"])
def test_wallet_tokens_pay_through_the_saga(rig: tuple[SagaStack, AxerveFake], method: str) -> None:
    stack, _fake = rig
    token = APPLE_PAY_TOKEN if method == "applepay" else GOOGLE_PAY_TOKEN
    stack.wait_state(started(stack, metadata(method, token=token)), "PAYMENT_EXECUTED")


def test_subscription_start_then_pay_with_the_card_token(rig: tuple[SagaStack, AxerveFake]) -> None:
    stack, fake = rig
    card = fake.card_token()
    data = metadata(token=card, authenticationAmount=1000) | {"type": "SUBSCRIPTION"}
    data["payRequestData"]["subscriptionInfo"] = {"interval": "DAY", "intervalCount": 30}
    first = started(stack, data, "subscriptionStart")
    token = stack.wait_state(first, "PAYMENT_EXECUTED")["metadata"]["payRequestData"]["subscriptionInfo"]["token"]
    assert token == card
    renewal = metadata() | {"type": "SUBSCRIPTION"}
    renewal["payRequestData"]["subscriptionInfo"] = {"token": token}
    second = started(stack, renewal, "subscriptionPaymentRequested")
    saga = stack.wait_state(second, "PAYMENT_EXECUTED")
    assert fake.payment(saga["metadata"]["paymentId"])["recurrent"] is True


def test_paypal_subscription_start_on_axerves_page_then_pay_with_the_returned_token(
    rig: tuple[SagaStack, AxerveFake],
) -> None:
    stack, fake = rig
    data = metadata("pay-pal", authenticationAmount=1000) | {"type": "SUBSCRIPTION"}
    data["payRequestData"]["subscriptionInfo"] = {"interval": "DAY", "intervalCount": 30}
    first = started(stack, data, "subscriptionStart")
    payment_id = str(stack.wait_state(first, "PAYMENT_PENDING")["metadata"]["paymentId"])
    fake.payer_pays(payment_id)
    token = stack.wait_state(first, "PAYMENT_EXECUTED")["metadata"]["payRequestData"]["subscriptionInfo"]["token"]
    assert token == fake.payment(payment_id)["_method_token"]
    renewal = metadata("pay-pal") | {"type": "SUBSCRIPTION"}
    renewal["payRequestData"]["subscriptionInfo"] = {"token": token}
    second = started(stack, renewal, "subscriptionPaymentRequested")
    saga = stack.wait_state(second, "PAYMENT_EXECUTED")
    assert fake.payment(saga["metadata"]["paymentId"])["recurrent"] is True


def test_a_lost_answer_is_reconciled_by_looking_the_payment_up(rig: tuple[SagaStack, AxerveFake]) -> None:
    stack, fake = rig
    fake.delay_next(2.5)  # longer than the PGM's provider time-out: Axerve pays, the answer is lost
    data = metadata(token=fake.card_token())
    saga = stack.wait_state(started(stack, data), "PAYMENT_EXECUTED")
    (payment,) = fake.payments(data["shopTransactionId"])
    assert saga["metadata"]["paymentId"] == payment["paymentID"]
    assert any(call.path.endswith("/payment/detail") for call in fake.requests)


def test_pay_by_link_through_the_saga(rig: tuple[SagaStack, AxerveFake]) -> None:
    stack, fake = rig
    saga_id = started(stack, metadata() | {"type": "PAY_BY_LINK"}, "linkRequested")
    saga = stack.wait_state(saga_id, "LINK_CREATED")
    assert saga["metadata"]["link"].endswith(f"/pagam/{saga['metadata']['paymentId']}")
    stack.send_event(saga_id, "notificationSent")
    stack.wait_state(saga_id, "PAYMENT_PENDING")
    fake.payer_pays(str(saga["metadata"]["paymentId"]))
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")
