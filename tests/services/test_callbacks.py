"""Provider callbacks (docs/sandbox.md, docs/reliability.md): verified, de-duplicated, never lost when early."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pgm.providers.base import CallbackRequest
from pgm.services.callbacks import CallbackRejected
from tests.fakes.external import CALLBACK_TOKEN, ExternalService, running_external_service
from tests.support.in_process import (
    ManualClock,
    delivered_statuses,
    delivering,
    external_providers,
    payment_awaiting_the_payer,
    services,
)
from tests.support.notifications import STATUS_PATH, statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.sandbox_requests import pay_body
from tests.support.servers import RecordingReceiver, recording_receiver, wait_for
from tests.support.signing import sandbox_event, send_callback
from tests.support.store import execute


def pending_payment(pgm: PgmProcess, shop_id: str) -> str:
    """A payment waiting for its outcome; returns its paymentId."""
    return str(pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "PENDING")).json()["paymentId"])


def accepted(payment_id: str) -> dict[str, object]:
    """The data of a sandbox payment.updated event saying the payment was accepted."""
    return {"id": payment_id, "status": "ACCEPTED", "amount": 1299, "currency": "EUR"}


def test_the_same_callback_twice_gives_one_notification(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pending_payment(pgm, shop_id)
    wait_for_status(notifications, shop_id, "PENDING")
    body = sandbox_event("payment.updated", accepted(payment_id))
    assert send_callback(pgm, body).status_code == 200
    assert send_callback(pgm, body).status_code == 200
    wait_for_status(notifications, shop_id, "ACCEPTED")
    # A third, distinct notification of the same fact changes nothing either.
    assert send_callback(pgm, sandbox_event("payment.updated", accepted(payment_id))).status_code == 200
    pgm.get("/v3/sandbox/status", params={"paymentId": payment_id})
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


@pytest.mark.parametrize(
    ("secret", "age_seconds", "reason"),
    [
        ("whsec_forged", 0, "does not match"),
        (None, 0, "missing"),
        ("whsec_test_sandbox_secret", 301, "older than"),
    ],
)
def test_forged_missing_or_stale_signature_is_refused_and_changes_nothing(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str, secret: str | None, age_seconds: int, reason: str
) -> None:
    payment_id = pending_payment(pgm, shop_id)
    body = sandbox_event("payment.updated", accepted(payment_id))
    response = send_callback(pgm, body, secret=secret, timestamp=int(time.time()) - age_seconds)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert reason in response.json()["message"]
    wait_for_status(notifications, shop_id, "PENDING")
    assert pgm.get("/v3/sandbox/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]


def test_signed_garbage_is_refused(pgm: PgmProcess) -> None:
    assert send_callback(pgm, b"not json").status_code == 401
    assert send_callback(pgm, b'{"id": "evt_1"}').status_code == 401


def deferred_callbacks(pgm: PgmProcess) -> float:
    """How many callbacks had to wait for their payment, from the metrics."""
    for line in pgm.get("/-/metrics").text.splitlines():
        if line.startswith('pgm_provider_callbacks_total{provider="sandbox",result="deferred"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_callback_arriving_before_the_synchronous_answer_is_applied(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    # The sandbox notifies at once but answers 700 ms later: its callback beats the answer.
    before = deferred_callbacks(pgm)
    body = pay_body(shop_id, providerData={"sandboxOutcome": "OK", "sandboxDelayMs": 700})
    answer = pgm.post("/v3/sandbox/credit-cards/pay", body).json()
    assert answer["result"] == "OK"
    assert deferred_callbacks(pgm) > before
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["ACCEPTED"]


def test_stale_pending_answer_after_the_callback_does_not_undo_the_payment(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    body = pay_body(shop_id, providerData={"sandboxOutcome": "PENDING", "sandboxDelayMs": 1500})
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(pgm.post, "/v3/sandbox/credit-cards/pay", body)
        # While the PGM still waits for the answer, the payer approves at the sandbox.
        wait_for(lambda: bool(pgm.sandbox_payments(shop_id)), what="the sandbox payment")
        payment_id = pgm.sandbox_payments(shop_id)[0]["paymentId"]
        assert pgm.decide(f"{pgm.url}/sandbox/checkout/{payment_id}", "approve").status_code == 200
        assert answer.result().json()["result"] in ("PENDING", "OK")
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert pgm.get("/v3/sandbox/status", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"
    assert "PENDING" not in [s["status"] for s in statuses_for(notifications, shop_id)][-1:]


def test_callback_for_a_payment_never_seen_is_kept_not_dropped(pgm: PgmProcess) -> None:
    body = sandbox_event("payment.updated", accepted("sbx_pay_not_ours_yet"))
    assert send_callback(pgm, body).status_code == 200
    metrics = pgm.get("/-/metrics").text
    wait_for(lambda: 'result="deferred"' in pgm.get("/-/metrics").text, what="a deferred callback")
    assert "pgm_provider_callbacks_total" in metrics


def callback_results(pgm: PgmProcess, result: str) -> float:
    """How many callbacks ended with `result`, from the metrics."""
    for line in pgm.get("/-/metrics").text.splitlines():
        if line.startswith(f'pgm_provider_callbacks_total{{provider="sandbox",result="{result}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def paid(pgm: PgmProcess, shop_id: str, outcome: str) -> str:
    answer = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, outcome)).json()
    assert answer["result"] == outcome
    return str(answer["paymentId"])


def test_a_signed_failure_for_a_payment_the_provider_holds_as_accepted_changes_nothing(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(pgm, shop_id, "OK")
    wait_for_status(notifications, shop_id, "ACCEPTED")
    before = callback_results(pgm, "unconfirmed")
    failed = sandbox_event("payment.updated", {"id": payment_id, "status": "FAILED", "amount": 1299, "currency": "EUR"})
    # Validly signed: the signature proves who sent it, not that it is the latest truth.
    assert send_callback(pgm, failed).status_code == 200
    assert pgm.get("/v3/sandbox/status", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"
    assert callback_results(pgm, "unconfirmed") == before + 1
    refund = pgm.post("/v3/sandbox/refund", {"amount": 100, "currency": "EUR", "paymentId": payment_id}).json()
    assert refund["result"] == "OK"
    wait_for_status(notifications, shop_id, "ACCEPTED", action="REFUND")
    assert [s["status"] for s in statuses_for(notifications, shop_id) if s["action"] == "PAYMENT"] == ["ACCEPTED"]


def test_a_signed_acceptance_after_a_decline_changes_nothing(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(pgm, shop_id, "KO")
    wait_for_status(notifications, shop_id, "FAILED")
    assert send_callback(pgm, sandbox_event("payment.updated", accepted(payment_id))).status_code == 200
    assert pgm.get("/v3/sandbox/status", params={"paymentId": payment_id}).json()["status"] == "FAILED"
    refund = pgm.post("/v3/sandbox/refund", {"amount": 100, "currency": "EUR", "paymentId": payment_id})
    assert refund.json()["result"] == "KO"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["FAILED"]


def test_a_reversal_the_provider_confirms_is_followed_and_reported_as_one(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(pgm, shop_id, "OK")
    wait_for_status(notifications, shop_id, "ACCEPTED")
    # The provider's back office reverses the payment (a chargeback), then notifies.
    execute(pgm.env["PGM_DATABASE_URL"], "UPDATE sandbox_payments SET status = 'FAILED' WHERE id = :id", id=payment_id)
    failed = sandbox_event("payment.updated", {"id": payment_id, "status": "FAILED", "amount": 1299, "currency": "EUR"})
    assert send_callback(pgm, failed).status_code == 200
    reversed_status = wait_for_status(notifications, shop_id, "FAILED")
    assert reversed_status["metadata"]["reversedFrom"] == "ACCEPTED"
    assert pgm.get("/v3/sandbox/status", params={"paymentId": payment_id}).json()["status"] == "FAILED"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["ACCEPTED", "FAILED"]


# In-process: the CallbackService composed as the service composes it, with an external provider that
# reads back its own callbacks (docs/api.md#external-providers).


def test_a_callback_is_verified_by_the_provider_applied_once_and_a_refused_one_changes_nothing(
    backend: str, tmp_path: Path, shop_id: str
) -> None:
    clock = ManualClock()

    async def scenario(acme: ExternalService, receiver: RecordingReceiver, receiver_url: str) -> None:
        env = {
            "EXTERNAL_PROVIDERS_CONFIG": external_providers(tmp_path, acme=acme.base_url),
            "PAYMENT_CALLBACK_URL": f"{receiver_url}{STATUS_PATH}",
        }
        async with services(backend, tmp_path, clock, **env) as service, delivering(service):
            adapter = service.registry.get("acme")
            assert adapter is not None
            payment_id = await payment_awaiting_the_payer(service, shop_id)
            at_acme = (await service.payments.reload(payment_id)).provider_payment_id or ""

            def callback(token: str) -> CallbackRequest:
                query = {"payment": at_acme, "token": token, "event": "paid-1"}
                return CallbackRequest("GET", "/v3/acme/callback", query, {}, b"", clock.now())

            with pytest.raises(CallbackRejected):
                await service.callbacks.receive(adapter, callback("guessed"))
            assert (await service.payments.reload(payment_id)).status == "PENDING"
            for _ in range(2):
                await service.callbacks.receive(adapter, callback(CALLBACK_TOKEN))
            assert (await service.payments.reload(payment_id)).status == "ACCEPTED"
            counted = service.metrics.registry.get_sample_value
            assert counted("pgm_provider_callbacks_total", {"provider": "acme", "result": "duplicate"}) == 1
            assert counted("pgm_provider_callbacks_total", {"provider": "acme", "result": "rejected"}) == 1
            assert await delivered_statuses(receiver, shop_id, 2) == ["PENDING", "ACCEPTED"]

    with running_external_service() as acme, recording_receiver() as (receiver, receiver_url):
        asyncio.run(scenario(acme, receiver, receiver_url))
