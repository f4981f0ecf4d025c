"""Soisy through the saga API: the Flow Manager stand-in runs the repository's configuration, the PGM
talks to the Soisy fake, the payer applies for the loan on the fake's page and Soisy's callbacks (read
back before they are trusted) settle the saga; refunds fail the refund naming what Soisy lacks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.soisy import SoisyFake, running_soisy_fake
from tests.support.saga_stack import SagaStack, provider_saga_stack
from tests.support.servers import wait_for


@pytest.fixture(scope="module")
def rig(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, SoisyFake]]:
    """A saga stack whose PGM has Soisy enabled against the fake."""
    directory = tmp_path_factory.mktemp("soisy-saga")
    with running_soisy_fake() as fake, provider_saga_stack("soisy", fake, backend, directory) as stack:
        yield stack, fake


def metadata(**extra: Any) -> dict[str, Any]:
    """Saga metadata for a Soisy loan."""
    data: dict[str, Any] = {
        "amount": 120_000,
        "currency": "EUR",
        "provider": "soisy",
        "paymentMethod": "soisy",
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "payRequestData": {
            "successRedirect": "https://shop.example/ok",
            "failureRedirect": "https://shop.example/ko",
            "providerData": {"email": "mario@example.com", "instalments": 12},
        },
    }
    data.update(extra)
    return data


def pending_saga(stack: SagaStack, data: dict[str, Any]) -> tuple[str, str]:
    """Start a saga and wait until the payer is sent to Soisy's loan page: (saga id, order token)."""
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    assert "#/loan-request?token=" in pending["metadata"]["payRequestData"]["redirectToUrl"]
    return saga_id, str(pending["metadata"]["paymentId"])


def granted_saga(stack: SagaStack, fake: SoisyFake) -> tuple[str, str]:
    """A saga whose loan Soisy approved and verified: (saga id, order token)."""
    saga_id, token = pending_saga(stack, metadata())
    fake.complete(token)
    fake.approve(token)
    wait_for(lambda: sum(n["body"]["orderToken"] == token for n in fake.notifications) == 2, what="approval")
    assert stack.saga(saga_id)["currentState"] == "PAYMENT_PENDING"
    fake.verify(token)
    stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    return saga_id, token


def test_a_verified_loan_executes_the_saga(rig: tuple[SagaStack, SoisyFake]) -> None:
    stack, fake = rig
    saga_id, token = granted_saga(stack, fake)
    assert stack.saga(saga_id)["metadata"]["paymentId"] == token


@pytest.mark.parametrize("payer", ["reject", "abandon"])
def test_a_refused_or_abandoned_loan_fails_the_saga(rig: tuple[SagaStack, SoisyFake], payer: str) -> None:
    stack, fake = rig
    saga_id, token = pending_saga(stack, metadata())
    if payer == "reject":
        fake.complete(token)
    # Refused: Soisy's callback says so. Abandoned: Soisy calls nobody, reconciliation reads it cancelled.
    getattr(fake, payer)(token)
    saga = stack.wait_state(saga_id, "PAYMENT_FAILED")
    assert saga["metadata"]["error"]


@pytest.mark.parametrize("amount", [50_000, 120_000, 120_001])
def test_a_partial_total_or_over_refund_fails_naming_what_soisy_does_not_support(
    rig: tuple[SagaStack, SoisyFake], amount: int
) -> None:
    stack, fake = rig
    saga_id, _token = granted_saga(stack, fake)
    calls = len([call for call in fake.requests if call.method == "POST"])
    stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": amount}})
    saga = stack.wait_state(saga_id, "REFUND_FAILED")
    assert "soisy" in saga["metadata"]["error"]
    assert len([call for call in fake.requests if call.method == "POST"]) == calls


def test_a_lost_answer_is_reconciled_by_finding_the_order_by_its_reference(rig: tuple[SagaStack, SoisyFake]) -> None:
    stack, fake = rig
    data = metadata()
    fake.delay_next(2.5)  # longer than the PGM's provider time-out: Soisy creates the order, the answer is lost
    saga_id = stack.create_saga(data)
    stack.send_event(saga_id, "scheduleRequested")
    wait_for(lambda: len(fake.payments(data["shopTransactionId"])) == 1, what="the order the lost request created")
    (order,) = fake.payments(data["shopTransactionId"])
    fake.complete(order["token"])
    fake.approve(order["token"])
    fake.verify(order["token"])
    saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
    assert saga["metadata"]["paymentId"] == order["token"]
    assert len(fake.payments(data["shopTransactionId"])) == 1


def test_a_duplicate_callback_changes_nothing_in_the_saga(rig: tuple[SagaStack, SoisyFake]) -> None:
    stack, fake = rig
    saga_id, token = granted_saga(stack, fake)
    sent = [n for n in fake.notifications if n["body"]["orderToken"] == token]
    assert fake.resend(sent[-1]) == 200
    assert fake.resend(sent[-1]) == 200
    # A later real callback (the disbursement) read back after the duplicates: by then any event the
    # duplicates caused would have reached the Flow Manager, which records events it ignores.
    before = sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(token))
    fake.disburse(token)
    wait_for(
        lambda: sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(token)) > before,
        what="the disbursement read back",
    )
    saga = stack.saga(saga_id)
    assert saga["currentState"] == "PAYMENT_EXECUTED"
    assert not saga.get("ignoredEvents")


def test_a_forged_callback_does_not_execute_the_saga(rig: tuple[SagaStack, SoisyFake]) -> None:
    stack, fake = rig
    saga_id, token = pending_saga(stack, metadata())
    forged = {
        "eventId": "LoanWasVerified",
        "eventMessage": "forged",
        "eventDate": "2026-12-03T10:00:00Z",
        "orderToken": token,
        "orderReference": "x",
        "amount": "120000",
    }
    before = sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(token))
    assert stack.pgm.client.post("/v3/soisy/callback", data=forged).status_code == 200
    wait_for(
        lambda: sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(token)) > before,
        what="the PGM reading the order back",
    )
    assert stack.saga(saga_id)["currentState"] == "PAYMENT_PENDING"
