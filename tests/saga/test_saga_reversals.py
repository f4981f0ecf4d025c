"""A signed callback reversing a settled saga payment (docs/reliability.md#nothing-is-lost): believed only
when the provider confirms it; then the saga hears of it, with the reason."""

from __future__ import annotations

from typing import Any

from tests.support.saga_stack import SagaStack, paid_saga
from tests.support.servers import wait_for
from tests.support.signing import sandbox_event, send_callback
from tests.support.store import execute


def failed(payment_id: str) -> bytes:
    return sandbox_event("payment.updated", {"id": payment_id, "status": "FAILED", "amount": 1000, "currency": "EUR"})


def saga_events(stack: SagaStack, saga_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = stack.pgm.get(f"/-/sagas/{saga_id}").json()["events"]
    return events


def test_a_signed_failure_after_payment_executed_emits_no_payment_failed(stack: SagaStack) -> None:
    saga_id, saga = paid_saga(stack)
    payment_id = saga["metadata"]["paymentId"]
    assert send_callback(stack.pgm, failed(payment_id)).status_code == 200
    view = stack.pgm.get(f"/-/sagas/{saga_id}").json()
    assert [e["label"] for e in view["events"]] == ["paymentExecuted"]
    assert [p["status"] for p in view["payments"]] == ["ACCEPTED"]


def test_a_reversal_the_provider_confirms_reaches_the_saga_with_its_reason(stack: SagaStack) -> None:
    saga_id, saga = paid_saga(stack)
    payment_id = saga["metadata"]["paymentId"]
    # The provider's back office reverses the payment (a chargeback), then notifies.
    execute(
        stack.pgm.env["PGM_DATABASE_URL"], "UPDATE sandbox_payments SET status = 'FAILED' WHERE id = :id", id=payment_id
    )
    assert send_callback(stack.pgm, failed(payment_id)).status_code == 200
    wait_for(
        lambda: [e["label"] for e in saga_events(stack, saga_id)] == ["paymentExecuted", "paymentFailed"],
        timeout=10,
        interval=0.1,
        what="paymentFailed after paymentExecuted",
    )
    reversal = saga_events(stack, saga_id)[1]["messagePayload"]
    assert "reversed by the provider from ACCEPTED to FAILED" in reversal["error"]
    assert "confirmed by a lookup" in reversal["error"]
