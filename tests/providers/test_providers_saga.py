"""Each real provider's flows through the saga API (issue 5): the Flow Manager stand-in runs the
repository's configuration, the PGM talks to the provider's fake, the fake's payer approves and its
callbacks (signed or not, as the provider does) settle the saga."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from tests.fakes.adyen import running_adyen_fake
from tests.fakes.satispay import running_satispay_fake
from tests.fakes.stripe import running_stripe_fake
from tests.support.adyen_requests import card
from tests.support.saga_stack import SagaStack, provider_saga_stack
from tests.support.servers import wait_for

FAKES: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "stripe": running_stripe_fake,
    "adyen": running_adyen_fake,
    "satispay": running_satispay_fake,
}
METHOD = {"stripe": "credit-cards", "adyen": "credit-cards", "satispay": "satispay"}


@pytest.fixture(scope="module", params=sorted(FAKES))
def provider(request: pytest.FixtureRequest) -> str:
    """The provider under test."""
    return str(request.param)


@pytest.fixture(scope="module")
def rig(provider: str, backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, Any]]:
    """A saga stack whose PGM has the provider enabled against its fake."""
    directory = tmp_path_factory.mktemp(provider)
    with FAKES[provider]() as fake, provider_saga_stack(provider, fake, backend, directory) as stack:
        yield stack, fake


def metadata(provider: str, **extra: Any) -> dict[str, Any]:
    """Saga metadata for a payment with this provider."""
    provider_data = (
        {"paymentMethod": card(), "shopperReference": f"shopper-{uuid.uuid4().hex[:8]}"} if provider == "adyen" else {}
    )
    if provider == "adyen":
        provider_data.update(card())
    data: dict[str, Any] = {
        "amount": 1000,
        "currency": "EUR",
        "provider": provider,
        "paymentMethod": METHOD[provider],
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "payRequestData": {
            "successRedirect": "https://shop.example/ok",
            "failureRedirect": "https://shop.example/ko",
            "providerData": provider_data,
        },
    }
    data.update(extra)
    return data


def paid_saga(stack: SagaStack, fake: Any, provider: str) -> tuple[str, dict[str, Any]]:
    """Pay a saga; the payer approves at the provider where the provider needs one."""
    saga_id = stack.create_saga(metadata(provider))
    stack.send_event(saga_id, "scheduleRequested")
    if provider != "adyen":
        pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
        assert pending["metadata"]["payRequestData"]["redirectToUrl"]
        fake.approve(pending["metadata"]["paymentId"])
    return saga_id, stack.wait_state(saga_id, "PAYMENT_EXECUTED")


def test_pay_then_partial_and_total_refund_through_the_saga(rig: tuple[SagaStack, Any], provider: str) -> None:
    stack, fake = rig
    saga_id, saga = paid_saga(stack, fake, provider)
    reference = saga["metadata"]["shopTransactionId"]
    assert len(fake.payments(reference)) == 1

    for amount, state in ((400, "PARTIALLY_REFUNDED"), (600, "TOTALLY_REFUNDED")):
        count = len(fake.payments(reference)[0]["refunds"])
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": amount}})
        if provider == "adyen":
            # Adyen refunds asynchronously: the saga waits in REFUND_REQUESTED until Adyen settles it.
            wait_for(lambda count=count: len(fake.payments(reference)[0]["refunds"]) > count, what="the refund")
            assert stack.saga(saga_id)["currentState"] in ("REFUND_REQUESTED", "SUBSEQUENT_REFUND_REQUESTED")
            fake.complete_refund(fake.payments(reference)[0]["refunds"][-1]["pspReference"], ok=True)
        saga = stack.wait_state(saga_id, state)
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 1000, "refundedAmounts": [400, 600]}
    assert len(fake.payments(reference)[0]["refunds"]) == 2
    assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 1000, "refundedAmounts": [400, 600]}


def test_refund_over_the_paid_amount_never_reaches_the_provider(rig: tuple[SagaStack, Any], provider: str) -> None:
    stack, fake = rig
    saga_id, saga = paid_saga(stack, fake, provider)
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 1001}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "exceeds the refundable amount" in saga["metadata"]["error"]
    assert fake.payments(saga["metadata"]["shopTransactionId"])[0]["refunds"] == []


def test_declined_payment_fails_the_saga(rig: tuple[SagaStack, Any], provider: str) -> None:
    stack, fake = rig
    data = metadata(provider)
    if provider == "adyen":
        data["payRequestData"]["providerData"].update(card("4000300011112220"))
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    if provider != "adyen":
        pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
        fake.decline(pending["metadata"]["paymentId"])
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert saga["metadata"]["error"]


def test_the_providers_subscription_kind_through_the_saga(rig: tuple[SagaStack, Any], provider: str) -> None:
    stack, fake = rig
    if provider == "stripe":
        data = metadata(provider, type="SUBSCRIPTION")
        data["payRequestData"]["subscriptionInfo"] = {"interval": "MONTH", "intervalCount": 1, "expiresAfter": 2}
        saga_id = stack.create_saga(data)
        stack.send_event(saga_id, "subscriptionScheduledRequested")
        pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
        fake.approve(pending["metadata"]["paymentId"])
        saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
        token = saga["metadata"]["payRequestData"]["subscriptionInfo"]["token"]
        assert token.startswith("sub_")
        # expiresAfter (Mia's maximum number of payments) reached Stripe: two invoices, then the end.
        assert fake.subscription(token)["cancel_at"] is not None
        assert [fake.renew(token), fake.renew(token)] == ["active", "canceled"]
        assert len(fake.invoices(token)) == 2
    elif provider == "adyen":
        data = metadata(provider, type="SUBSCRIPTION")
        data["payRequestData"]["subscriptionInfo"] = {"interval": "MONTH", "intervalCount": 1}
        first = stack.create_saga(data)
        stack.send_event(first, "subscriptionStart")
        token = stack.wait_state(first, "PAYMENT_EXECUTED")["metadata"]["payRequestData"]["subscriptionInfo"]["token"]
        renewal = metadata(provider, type="SUBSCRIPTION")
        # The same shopper pays again with the card Adyen stored for them.
        renewal["payRequestData"]["providerData"] = {
            "shopperReference": data["payRequestData"]["providerData"]["shopperReference"]
        }
        renewal["payRequestData"]["subscriptionInfo"] = {"token": token}
        second = stack.create_saga(renewal)
        stack.send_event(second, "subscriptionPaymentRequested")
        stack.wait_state(second, "PAYMENT_EXECUTED")
    else:
        saga_id = stack.create_saga(metadata(provider, type="SUBSCRIPTION"))
        stack.send_event(saga_id, "authorizationRequested")
        saga = stack.wait_state(saga_id, "AUTHORIZATION_PENDING")
        pay_request = saga["metadata"]["payRequestData"]
        fake.approve(pay_request["subscriptionInfo"]["token"])
        wait_for(
            lambda: (
                stack.pgm.get("/v3/satispay/subscription/status/" + pay_request["subscriptionInfo"]["token"]).json()[
                    "status"
                ]
                == "ACTIVE"
            ),
            what="the approved Satispay token",
        )
        stack.send_event(saga_id, "subscriptionPaymentRequested", {"payRequestData": pay_request})
        saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
        assert len(fake.payments(saga["metadata"]["shopTransactionId"])) == 1


def test_pay_by_link_through_the_saga_where_supported(rig: tuple[SagaStack, Any], provider: str) -> None:
    stack, fake = rig
    saga_id = stack.create_saga(metadata(provider, type="PAY_BY_LINK"))
    stack.send_event(saga_id, "linkRequested")
    if provider == "satispay":
        saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
        assert "does not support pay-by-link" in saga["metadata"]["error"]
        return
    saga = stack.wait_state(saga_id, "LINK_CREATED")
    assert saga["metadata"]["link"]
    stack.send_event(saga_id, "notificationSent")
    stack.wait_state(saga_id, "PAYMENT_PENDING")
    fake.approve(saga["metadata"]["paymentId"])
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")
