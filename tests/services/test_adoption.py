"""Payments made before the switch (docs/reliability.md#adopting-payments-made-before-the-switch): a
payment that exists only at the provider (made by the previous PGM) is refunded, looked up, checked and
settled by callbacks through this PGM, which adopts it from the provider and from then on treats it as
one of its own. Every payment here is created at the provider's fake directly (the sandbox: through
its own API), never through the PGM."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.adyen import API_PREFIX, THREE_DS_CARD, running_adyen_fake
from tests.fakes.external import ExternalService, running_external_service
from tests.fakes.satispay import running_satispay_fake
from tests.fakes.stripe import API_VERSION, running_stripe_fake
from tests.support.adyen_requests import card
from tests.support.databases import fresh_database
from tests.support.notifications import STATUS_PATH, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.saga_stack import SharedSagaPgm, shared_saga_pgm
from tests.support.servers import RecordingReceiver, recording_receiver, wait_for

SANDBOX_KEY = "Bearer sk_sandbox_local"


def _reference() -> str:
    return f"order-{uuid.uuid4().hex[:10]}"


def _refund(pgm: PgmProcess, provider: str, payment_id: str, amount: int) -> dict[str, Any]:
    answer = pgm.post(f"/v3/{provider}/refund", {"amount": amount, "currency": "EUR", "paymentId": payment_id})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


# ----- the sandbox, through its own API ------------------------------------------------------------


def _sandbox_payment(pgm: PgmProcess, reference: str, amount: int, outcome: str = "OK") -> str:
    """A payment made at the sandbox's API directly, as the previous PGM did."""
    answer = httpx.post(
        f"{pgm.url}/sandbox/api/v1/payments",
        json={"amount": amount, "currency": "EUR", "reference": reference, "outcome": outcome},
        headers={"Authorization": SANDBOX_KEY},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _sandbox_refund(pgm: PgmProcess, payment_id: str, amount: int) -> None:
    answer = httpx.post(
        f"{pgm.url}/sandbox/api/v1/payments/{payment_id}/refunds",
        json={"amount": amount, "outcome": "OK"},
        headers={"Authorization": SANDBOX_KEY},
    )
    assert answer.status_code == 201, answer.text


def test_a_refund_of_a_payment_made_before_the_switch_is_adopted_with_what_was_refunded_already(
    pgm: PgmProcess,
) -> None:
    payment_id = _sandbox_payment(pgm, _reference(), 1000)
    _sandbox_refund(pgm, payment_id, 200)

    first = _refund(pgm, "sandbox", payment_id, 700)
    assert first["result"] == "OK", first
    over = _refund(pgm, "sandbox", payment_id, 200)
    assert over["result"] == "KO"
    assert over["resultDescription"] == (
        "refund of 200 exceeds the refundable amount 100 (paid 1000, refunded 900, pending 0)"
    )
    status = pgm.get("/v3/sandbox/status", params={"paymentId": payment_id}).json()
    assert status["status"] == "ACCEPTED"


def test_two_first_refunds_at_the_same_moment_adopt_the_payment_once(pgm: PgmProcess) -> None:
    payment_id = _sandbox_payment(pgm, _reference(), 1000)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: _refund(pgm, "sandbox", payment_id, 600), range(2)))
    assert sorted(answer["result"] for answer in answers) == ["KO", "OK"]
    refused = next(answer for answer in answers if answer["result"] == "KO")
    assert "exceeds the refundable amount" in refused["resultDescription"]


def test_an_unknown_payment_is_still_refused_clearly(pgm: PgmProcess) -> None:
    answer = _refund(pgm, "sandbox", "sbx_pay_never_made", 100)
    assert answer["result"] == "KO"
    assert "is not known to provider sandbox" in answer["resultDescription"]


def test_check_of_a_payment_made_before_the_switch_notifies_it(
    pgm: PgmProcess, receiver: tuple[RecordingReceiver, str]
) -> None:
    reference = _reference()
    payment_id = _sandbox_payment(pgm, reference, 1000, outcome="PENDING")
    checked = pgm.get("/v3/sandbox/check", params={"paymentId": payment_id})
    assert checked.status_code == 200, checked.text
    assert checked.json()["status"] == "PENDING"
    notified = wait_for_status(receiver[0], reference, "PENDING")
    assert notified["paymentId"] == payment_id


def test_a_callback_for_a_payment_made_before_the_switch_is_applied_and_notified(
    pgm: PgmProcess, receiver: tuple[RecordingReceiver, str]
) -> None:
    reference = _reference()
    payment_id = _sandbox_payment(pgm, reference, 1000, outcome="REDIRECT_TO_URL")
    # The payer approves on the sandbox's page: its signed callback reaches this PGM, not the old one.
    decided = httpx.post(f"{pgm.url}/sandbox/checkout/{payment_id}", data={"decision": "approve"})
    assert decided.status_code == 200
    notified = wait_for_status(receiver[0], reference, "ACCEPTED")
    assert notified["paymentId"] == payment_id
    refunded = _refund(pgm, "sandbox", payment_id, 1000)
    assert refunded["result"] == "OK", refunded


def test_a_saga_refunds_a_payment_made_before_the_switch(
    acme_module_pgm: tuple[SharedSagaPgm, ExternalService],
) -> None:
    with acme_module_pgm[0].stack_for() as stack:
        reference = _reference()
        payment_id = _sandbox_payment(stack.pgm, reference, 1000)
        saga_id = f"saga-{uuid.uuid4().hex[:12]}"
        metadata = {
            "amount": 1000,
            "currency": "EUR",
            "provider": "sandbox",
            "paymentMethod": "credit-cards",
            "shopTransactionId": reference,
            "paymentId": payment_id,
            "payRequestData": {},
        }
        # The saga as the previous PGM left it: paid.
        stack.put_saga(saga_id, "PAYMENT_EXECUTED", metadata)
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 400}})
        saga = stack.wait_state(saga_id, "PARTIALLY_REFUNDED")
        assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 400, "refundedAmounts": [400]}
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 600}})
        saga = stack.wait_state(saga_id, "TOTALLY_REFUNDED")
        assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 1000, "refundedAmounts": [400, 600]}


# ----- an external provider service -------------------------------------------------------------


@pytest.fixture(scope="module")
def acme_module_pgm(
    backend: str, receiver: tuple[RecordingReceiver, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SharedSagaPgm, ExternalService]]:
    """A PGM with the external service `acme` and the saga stand-ins, shared by the module's tests that need
    either (each with its own references and sagas)."""
    directory = tmp_path_factory.mktemp("acme")
    with running_external_service() as acme, fresh_database(backend, directory) as url:
        config = directory / "external.json"
        config.write_text(json.dumps({"externalServices": [{"externalService": "acme", "baseUrl": acme.base_url}]}))
        with shared_saga_pgm(
            url, directory, EXTERNAL_PROVIDERS_CONFIG=str(config), PAYMENT_CALLBACK_URL=f"{receiver[1]}{STATUS_PATH}"
        ) as shared:
            yield shared, acme


@pytest.fixture
def acme_pgm(
    acme_module_pgm: tuple[SharedSagaPgm, ExternalService],
) -> Iterator[tuple[PgmProcess, ExternalService]]:
    """The module's PGM with `acme`; a test that makes the service behave otherwise has it behave again after."""
    shared, acme = acme_module_pgm
    yield shared.pgm, acme
    acme.callbacks_down = acme.status_down = False
    acme.implements_callback = acme.implements_check = acme.reports_amounts = True


def test_external_refund_status_check_and_callback_of_payments_made_before_the_switch(
    acme_pgm: tuple[PgmProcess, ExternalService], receiver: tuple[RecordingReceiver, str]
) -> None:
    pgm, acme = acme_pgm
    payment_id = acme.create_payment(_reference(), 1000, refunded=300)
    assert _refund(pgm, "acme", payment_id, 700)["result"] == "OK"
    over = _refund(pgm, "acme", payment_id, 1)
    assert over["result"] == "KO"
    assert "(paid 1000, refunded 1000, pending 0)" in over["resultDescription"]

    checked_reference = _reference()
    checked = acme.create_payment(checked_reference, 500)
    assert pgm.get("/v3/acme/check", params={"paymentId": checked}).json()["status"] == "ACCEPTED"
    wait_for_status(receiver[0], checked_reference, "ACCEPTED")

    acme.implements_callback = False
    pending_reference = _reference()
    pending = acme.create_payment(pending_reference, 500, status="PENDING")
    acme.set_status(pending, "ACCEPTED")
    assert pgm.get("/v3/acme/callback", params={"paymentId": pending}).status_code == 200
    wait_for_status(receiver[0], pending_reference, "ACCEPTED")


def test_a_saga_refund_waits_while_the_payment_cannot_be_looked_up(
    acme_module_pgm: tuple[SharedSagaPgm, ExternalService], acme_pgm: tuple[PgmProcess, ExternalService]
) -> None:
    shared, acme = acme_module_pgm
    with shared.stack_for() as stack:
        reference = _reference()
        payment_id = acme.create_payment(reference, 1000)
        saga_id = f"saga-{uuid.uuid4().hex[:12]}"
        metadata = {
            "amount": 1000,
            "currency": "EUR",
            "provider": "acme",
            "paymentMethod": "external",
            "shopTransactionId": reference,
            "paymentId": payment_id,
            "payRequestData": {},
        }
        stack.put_saga(saga_id, "PAYMENT_EXECUTED", metadata)
        acme.status_down = True
        before = len(acme.received)  # the service is shared: count only this saga's lookups
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 1000}})
        wait_for(
            lambda: [path for _, path, _ in acme.received[before:]].count("/status") >= 2, what="the lookup retried"
        )
        assert stack.saga(saga_id)["currentState"] == "REFUND_REQUESTED"
        acme.status_down = False
        saga = stack.wait_state(saga_id, "TOTALLY_REFUNDED")
        assert saga["metadata"]["refundDetails"] == {"totalRefundedAmount": 1000, "refundedAmounts": [1000]}
        assert acme.payment(payment_id)["refunded"] == 1000


def test_external_service_without_amounts_decides_each_refund(acme_pgm: tuple[PgmProcess, ExternalService]) -> None:
    pgm, acme = acme_pgm
    acme.reports_amounts = False
    payment_id = acme.create_payment(_reference(), 1000)
    assert _refund(pgm, "acme", payment_id, 400)["result"] == "OK"
    assert _refund(pgm, "acme", payment_id, 600)["result"] == "OK"
    refused = _refund(pgm, "acme", payment_id, 1)
    assert refused["result"] == "KO"
    assert refused["resultDescription"] == "acme: nothing left to refund"
    assert acme.payment(payment_id)["refunded"] == 1000


# ----- Stripe, Satispay, Adyen ------------------------------------------------------------------


def test_stripe_payments_made_before_the_switch(backend: str, tmp_path: Path) -> None:
    with (
        running_stripe_fake() as fake,
        recording_receiver() as (notifications, notifications_url),
        pgm_with_provider("stripe", fake, backend, tmp_path, notifications_url) as pgm,
    ):
        session_id, intent = fake.create_paid_payment(_reference(), 1000)
        earlier = httpx.post(
            f"{fake.base_url}/v1/refunds",
            data={"payment_intent": intent, "amount": 300},
            headers={
                "Authorization": f"Bearer {fake.secret_key}",
                "Stripe-Version": API_VERSION,
                "Idempotency-Key": uuid.uuid4().hex,
            },
        )
        assert earlier.status_code == 200, earlier.text
        assert _refund(pgm, "stripe", session_id, 700)["result"] == "OK"
        over = _refund(pgm, "stripe", session_id, 1)
        assert over["result"] == "KO"
        assert "(paid 1000, refunded 1000, pending 0)" in over["resultDescription"]

        # The payer completes a session the previous PGM opened: Stripe's signed webhook comes to us.
        open_reference = _reference()
        open_session = fake.create_open_payment(open_reference, 500)
        fake.approve(open_session)
        assert wait_for_status(notifications, open_reference, "ACCEPTED")["paymentId"] == open_session


def test_satispay_payments_made_before_the_switch(backend: str, tmp_path: Path) -> None:
    with (
        running_satispay_fake() as fake,
        recording_receiver() as (notifications, notifications_url),
        pgm_with_provider("satispay", fake, backend, tmp_path, notifications_url) as pgm,
    ):
        # Confirmed in the app before the switch: its unsigned "look it up" callback now comes to us.
        pending_reference = _reference()
        callback = f"{pgm.url}/v3/satispay/callback?payment_id={{uuid}}"
        pending = fake.create_payment(pending_reference, 500, status="PENDING", callback_url=callback)
        fake.approve(pending)
        assert wait_for_status(notifications, pending_reference, "ACCEPTED")["paymentId"] == pending

        payment_id = fake.create_payment(_reference(), 1000)
        assert pgm.get("/v3/satispay/status", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"
        assert _refund(pgm, "satispay", payment_id, 400)["result"] == "OK"
        over = _refund(pgm, "satispay", payment_id, 700)
        assert over["result"] == "KO"
        assert "exceeds the refundable amount 600" in over["resultDescription"]


def _adyen_payment(fake: Any, reference: str, number: str) -> str:
    answer = httpx.post(
        f"{fake.url}{API_PREFIX}/payments",
        json={
            "merchantAccount": fake.merchant_account,
            "reference": reference,
            "amount": {"value": 1000, "currency": "EUR"},
            "paymentMethod": {"type": "scheme", **card(number)},
            "returnUrl": "https://shop.example/back",
        },
        headers={"X-API-Key": fake.api_key, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["pspReference"])


def test_adyen_payments_made_before_the_switch(backend: str, tmp_path: Path) -> None:
    """Adyen cannot look payments up: a refund's answer decides, and a signed notification carries the terms."""
    with (
        running_adyen_fake() as fake,
        recording_receiver() as (old_pgm, old_url),
        recording_receiver() as (notifications, notifications_url),
        pgm_with_provider("adyen", fake, backend, tmp_path, notifications_url) as pgm,
    ):
        our_callback = fake.webhook_url
        # The previous PGM made it and received its AUTHORISATION notification.
        fake.webhook_url = f"{old_url}/adyen"
        reference = _reference()
        paid = _adyen_payment(fake, reference, card()["encryptedCardNumber"])
        wait_for(lambda: len(old_pgm.requests) >= 1, what="the notification to the previous PGM")
        fake.webhook_url = our_callback

        assert _refund(pgm, "adyen", paid, 400)["result"] == "PENDING"
        fake.complete_refund(fake.payments(reference)[0]["refunds"][0]["pspReference"], ok=True)
        # Adyen's refund answer carries no merchant reference: the notification names the payment.
        refunded: list[dict[str, Any]] = []

        def refund_notified() -> bool:
            refunded[:] = [
                request.json
                for request in notifications.requests
                if request.path == STATUS_PATH
                and isinstance(request.json, dict)
                and request.json["paymentId"] == paid
                and (request.json["action"], request.json["status"]) == ("REFUND", "ACCEPTED")
            ]
            return bool(refunded)

        wait_for(refund_notified, timeout=10, what="the refund's notification")
        assert refunded[0]["metadata"]["refundAmount"] == 400

        # One still waiting for 3-D Secure at the switch: its notification comes to us and settles it.
        waiting_reference = _reference()
        waiting = _adyen_payment(fake, waiting_reference, THREE_DS_CARD)
        fake.approve(waiting)
        notified = wait_for_status(notifications, waiting_reference, "ACCEPTED")
        assert notified["paymentId"] == waiting
        assert _refund(pgm, "adyen", waiting, 1001)["result"] == "KO"
