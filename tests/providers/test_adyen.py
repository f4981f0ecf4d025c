"""Adyen through /v3 over real HTTP: a real PGM process talking to the stateful Adyen fake, which
answers the API and sends signed notifications back to the PGM."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from pgm.config import Settings
from pgm.providers import adyen
from pgm.providers.base import Operation, PayRequest, PayResultCode
from tests.fakes.adyen import (
    API_PREFIX,
    MERCHANT_ACCOUNT,
    REFUSED_CARD,
    THREE_DS_CARD,
    Fake,
    notification_body,
    running_adyen_fake,
)
from tests.support.adyen_requests import card, pay, pay_body, refund
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    """The Adyen fake shared by the module (each test uses its own merchant reference)."""
    with running_adyen_fake() as running:
        yield running


@pytest.fixture(scope="module")
def pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: Fake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with Adyen enabled against the fake; the fake's notifications go to its callback.

    Its provider time-out is 2 s: an answer held back 0.6 s must still arrive in time on a loaded machine
    (with 1 s it had 0.4 s to spare), and one held back 2.5 s is lost however loaded the machine is."""
    with pgm_with_provider(
        "adyen",
        fake,
        backend,
        tmp_path_factory.mktemp("pgm-adyen"),
        receiver[1],
        PGM_PROVIDER_TIMEOUT_SECONDS="2",
        PGM_RECONCILE_AFTER_SECONDS="2.5",
    ) as process:
        yield process


def accepted_deliveries(fake: Fake, event: str, psp: str) -> list[Any]:
    """Deliveries of this event the PGM acknowledged with [accepted]."""
    return [d for d in fake.delivered(event, psp) if d.status == 200 and d.answer == b"[accepted]"]


def test_card_payment_is_authorised_once_and_its_notification_acknowledged(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(pgm, shop_id)
    assert answer["result"] == "OK"
    [held] = fake.payments(shop_id)
    assert (answer["paymentId"], held["resultCode"], held["amount"]) == (held["pspReference"], "Authorised", 1000)
    wait_for(lambda: bool(accepted_deliveries(fake, "AUTHORISATION", held["pspReference"])), what="[accepted]")
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["ACCEPTED"]
    method, _path, headers, _ = next(r for r in fake.requests if r[1] == "/v71/payments")
    assert (method, headers["x-api-key"], headers["idempotency-key"].startswith("pgm-")) == (
        "POST",
        fake.api_key,
        True,
    )


def test_refused_card_answers_ko(pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str) -> None:
    answer = pay(pgm, shop_id, REFUSED_CARD)
    assert answer["result"] == "KO"
    assert "Refused" in answer["resultDescription"]
    wait_for_status(notifications, shop_id, "FAILED")


@pytest.mark.parametrize(("approve", "final"), [(True, "ACCEPTED"), (False, "FAILED")])
def test_three_d_secure_redirects_and_the_notification_settles_the_payment(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str, approve: bool, final: str
) -> None:
    answer = pay(pgm, shop_id, THREE_DS_CARD)
    assert answer["result"] == "REDIRECT_TO_URL"
    assert answer["redirectToUrl"] == f"{fake.url}/hpp/checkout/{answer['paymentId']}"
    wait_for_status(notifications, shop_id, "PENDING")
    (fake.approve if approve else fake.decline)(answer["paymentId"])
    wait_for_status(notifications, shop_id, final)
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", final]


def test_partial_then_total_refund_stay_pending_until_adyens_refund_notification(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    first = refund(pgm, payment_id, 300)
    assert first["result"] == "PENDING"
    fake.complete_refund(first["refundId"], ok=True)
    wait_for_status(notifications, shop_id, "ACCEPTED", action="REFUND")
    second = refund(pgm, payment_id, 700)
    assert second["result"] == "PENDING"
    fake.complete_refund(second["refundId"], ok=True)

    def refunded() -> list[dict[str, Any]]:
        return [
            s for s in statuses_for(notifications, shop_id) if s["action"] == "REFUND" and s["status"] == "ACCEPTED"
        ]

    wait_for(lambda: len(refunded()) == 2, what="two refunds accepted")
    assert [s["metadata"]["refundAmount"] for s in refunded()] == [300, 700]
    # Nothing is left: the PGM refuses without asking Adyen.
    assert refund(pgm, payment_id, 1)["result"] == "KO"
    [held] = fake.payments(shop_id)
    assert [(r["amount"], r["status"]) for r in held["refunds"]] == [(300, "refunded"), (700, "refunded")]


def test_a_refund_made_in_adyens_customer_area_is_recorded_from_its_notification(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    # Not through the PGM: Adyen's own API (what its Customer Area does), then its REFUND notification.
    response = httpx.post(
        f"{fake.url}{API_PREFIX}/payments/{payment_id}/refunds",
        json={"merchantAccount": MERCHANT_ACCOUNT, "amount": {"value": 250, "currency": "EUR"}},
        headers={"x-api-key": fake.api_key, "Idempotency-Key": f"customer-area-{shop_id}"},
    )
    assert response.status_code == 201, response.text
    fake.complete_refund(response.json()["pspReference"], ok=True)
    status = wait_for_status(notifications, shop_id, "ACCEPTED", action="REFUND")
    assert (status["metadata"]["refundAmount"], status["metadata"]["totalRefundedAmount"]) == (250, 250)
    # The PGM counts it: what is left is 750.
    assert "exceeds the refundable amount 750" in refund(pgm, payment_id, 751)["resultDescription"]


def test_refund_refused_by_adyen_is_reported_failed_and_frees_the_amount(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    refused = refund(pgm, payment_id, 1000)
    fake.complete_refund(refused["refundId"], ok=False)
    wait_for_status(notifications, shop_id, "FAILED", action="REFUND")
    retried = refund(pgm, payment_id, 1000)
    assert retried["result"] == "PENDING"


def test_subscription_start_stores_the_card_and_pay_charges_the_token_until_expired(
    pgm: PgmProcess, fake: Fake, shop_id: str
) -> None:
    shopper = f"shopper-{shop_id}"
    start = pgm.post(
        "/v3/adyen/credit-cards/subscription/start",
        pay_body(
            shop_id,
            providerData={"paymentMethod": card(), "shopperReference": shopper},
            subscriptionInfo={"interval": "MONTH", "intervalCount": 1},
        ),
    ).json()
    assert start["result"] == "OK", start
    token = start["subscriptionToken"]
    stored_id = fake.payments(shop_id)[0]["storedPaymentMethodId"]
    assert token.startswith(stored_id)
    charge = pgm.post(
        "/v3/adyen/credit-cards/subscription/pay",
        pay_body(shop_id, 1500, subscriptionInfo={"token": token}),
    ).json()
    assert charge["result"] == "OK", charge
    # Clients of the older PGM send Adyen's bare id and the shopperReference: that works too.
    legacy = pgm.post(
        "/v3/adyen/credit-cards/subscription/pay",
        pay_body(shop_id, 500, subscriptionInfo={"token": stored_id}, providerData={"shopperReference": shopper}),
    ).json()
    assert legacy["result"] == "OK", legacy
    held = fake.payments(shop_id)
    assert [p["amount"] for p in held] == [1000, 1500, 500]
    assert all(p["shopperReference"] == shopper for p in held)
    charge_request = [r for r in fake.requests if r[1] == "/v71/payments"][-1]
    assert json.loads(charge_request[3])["shopperInteraction"] == "ContAuth"
    assert pgm.get(f"/v3/adyen/subscription/status/{token}").json()["status"] == "ACTIVE"
    assert pgm.client.delete(f"/v3/adyen/subscription/expire/{token}").json()["result"] == "OK"
    assert pgm.get(f"/v3/adyen/subscription/status/{token}").json()["status"] == "UNKNOWN"
    after = pgm.post(
        "/v3/adyen/credit-cards/subscription/pay", pay_body(shop_id, 700, subscriptionInfo={"token": token})
    ).json()
    assert after["result"] == "KO"
    assert "Contract not found" in after["resultDescription"]


def test_pay_by_link_gives_adyens_link_and_the_payment_settles_when_the_shopper_pays(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pgm.post("/v3/adyen/pay-by-link", pay_body(shop_id, 2500)).json()
    assert answer["resultCode"] == "OK"
    link_id = answer["paymentId"]
    assert link_id.startswith("PL")
    assert answer["link"] == f"{fake.url}/hpp/link/{link_id}"
    fake.decline(link_id)
    fake.approve(link_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert "FAILED" not in [s["status"] for s in statuses_for(notifications, shop_id)]
    paid = next(p for p in fake.payments(shop_id) if p["resultCode"] == "Authorised")
    no_psp = pgm.post("/v3/adyen/refund", {"amount": 100, "currency": "EUR", "paymentId": link_id})
    assert no_psp.status_code == 400
    assert no_psp.json()["field"] == "providerData.pspReference"
    refunded = refund(pgm, link_id, 100, providerData={"pspReference": paid["pspReference"]})
    assert refunded["result"] == "PENDING"


@pytest.mark.parametrize("path", ["/v3/adyen/status", "/v3/adyen/check"])
def test_status_and_check_are_not_supported(pgm: PgmProcess, path: str) -> None:
    response = pgm.get(path, params={"paymentId": "PSP0000000000001"})
    assert response.status_code == 501
    assert "adyen" in response.json()["message"]


def test_schedule_and_other_methods_are_not_supported(pgm: PgmProcess, shop_id: str) -> None:
    body = pay_body(shop_id, providerData=card(), subscriptionInfo={"interval": "MONTH"})
    assert pgm.post("/v3/adyen/credit-cards/subscription/schedule", body).status_code == 501
    assert pgm.post("/v3/adyen/pay-pal/pay", pay_body(shop_id, providerData=card())).status_code == 501


def test_missing_encrypted_card_fields_are_a_400_and_adyen_is_not_called(
    pgm: PgmProcess, fake: Fake, shop_id: str
) -> None:
    response = pgm.post("/v3/adyen/credit-cards/pay", pay_body(shop_id, providerData={"encryptedCardNumber": "x"}))
    assert response.status_code == 400
    assert response.json()["field"] == "providerData.encryptedExpiryMonth"
    # Only this payment's calls count: the module's PGM may still be looking up an earlier test's payment.
    assert not [request for request in fake.requests if shop_id.encode() in request[3]]


def test_forged_signature_is_refused_and_changes_nothing(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    psp = pay(pgm, shop_id, THREE_DS_CARD)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    item = authorisation(psp, shop_id)
    for forged in (notification_body([item], hmac_key="AB" * 32), notification_body([item]).replace(b"true", b"TRUE")):
        response = fake.send_raw(forged)
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_signature"
    fake.decline(psp)
    wait_for_status(notifications, shop_id, "FAILED")
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "FAILED"]


def authorisation(psp: str, shop_id: str, success: str = "true") -> dict[str, Any]:
    """An AUTHORISATION item for a payment of 1000 EUR cents."""
    return {
        "merchantAccountCode": MERCHANT_ACCOUNT,
        "eventCode": "AUTHORISATION",
        "success": success,
        "pspReference": psp,
        "merchantReference": shop_id,
        "amount": {"value": 1000, "currency": "EUR"},
        "eventDate": "2026-01-01T10:00:00+01:00",
        "additionalData": {},
    }


def test_stale_signature_from_a_rotated_hmac_key_is_refused(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    # Adyen's HMAC carries no timestamp: "stale" means signed with a key that was replaced since.
    psp = pay(pgm, shop_id, THREE_DS_CARD)["paymentId"]
    previous_key = "0123456789ABCDEF" * 4
    response = fake.send_raw(notification_body([authorisation(psp, shop_id)], hmac_key=previous_key))
    assert response.status_code == 401
    wait_for_status(notifications, shop_id, "PENDING")
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]


def test_duplicate_and_replayed_notifications_change_nothing(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    psp = pay(pgm, shop_id, THREE_DS_CARD)["paymentId"]
    fake.approve(psp)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    [original] = accepted_deliveries(fake, "AUTHORISATION", psp)
    # Adyen retries a notification it thinks was lost; an attacker may replay a captured one.
    for _ in range(2):
        response = fake.send_raw(original.body)
        assert (response.status_code, response.content) == (200, b"[accepted]")
    assert fake.send_raw(notification_body([authorisation(psp, shop_id)])).status_code == 200
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_notification_before_the_synchronous_answer_is_kept_and_applied(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    # The fake notifies at once but answers 0.6 s later (within the PGM's 2 s time-out).
    fake.delay_next(0.6)
    answer = pay(pgm, shop_id)
    assert answer["result"] == "OK"
    wait_for(lambda: bool(accepted_deliveries(fake, "AUTHORISATION", answer["paymentId"])), what="delivery")
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["ACCEPTED"]


def test_refund_notification_before_the_refund_answer_is_applied(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    fake.delay_next(0.6)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(refund, pgm, payment_id, 400)
        # While the PGM still waits for Adyen's answer, Adyen settles the refund and notifies.
        wait_for(lambda: bool(fake.payments(shop_id)[0]["refunds"]), what="the refund at Adyen")
        fake.complete_refund(fake.payments(shop_id)[0]["refunds"][0]["pspReference"], ok=True)
        answer = pending.result()
    assert answer["result"] in ("PENDING", "OK")
    wait_for_status(notifications, shop_id, "ACCEPTED", action="REFUND")


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda fake: fake.fail_next(500), id="provider-5xx"),
        pytest.param(lambda fake: fake.delay_next(2.5), id="time-out"),
        pytest.param(lambda fake: fake.malformed_next(), id="malformed-answer"),
    ],
)
def test_lost_pay_answer_is_asked_again_with_the_same_key_and_charges_once(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str, fault: Callable[[Fake], None]
) -> None:
    fault(fake)
    answer = pay(pgm, shop_id)
    assert answer["result"] == "OK", answer
    [held] = fake.payments(shop_id)
    assert answer["paymentId"] == held["pspReference"]
    wait_for_status(notifications, shop_id, "ACCEPTED")
    keys = {r[2]["idempotency-key"] for r in fake.requests if r[1] == "/v71/payments" and shop_id.encode() in r[3]}
    assert len(keys) == 1


def test_lost_refund_answer_is_asked_again_and_refunds_once(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    fake.fail_next(503)
    answer = refund(pgm, payment_id, 250)
    assert answer["result"] == "PENDING"
    [held] = fake.payments(shop_id)
    assert [r["pspReference"] for r in held["refunds"]] == [answer["refundId"]]
    fake.complete_refund(answer["refundId"], ok=True)
    wait_for_status(notifications, shop_id, "ACCEPTED", action="REFUND")


@pytest.mark.parametrize("missing", ["ADYEN_PRIVATE_KEY", "ADYEN_MERCHANT_ACCOUNT", "ADYEN_HMAC_KEY"])
def test_start_up_is_refused_when_a_required_variable_is_missing(
    start_pgm: Callable[..., PgmProcess], fake: Fake, missing: str
) -> None:
    env = {k: v for k, v in fake.env().items() if k != missing}
    with pytest.raises(RuntimeError) as refused:
        start_pgm(ENABLED_PROVIDERS="adyen", **env)
    assert "exited with 2" in str(refused.value)
    assert missing in str(refused.value)


def test_wrong_api_key_is_refused_by_adyen_and_nothing_is_charged(
    start_pgm: Callable[..., PgmProcess], fake: Fake, shop_id: str
) -> None:
    process = start_pgm(ENABLED_PROVIDERS="adyen", **{**fake.env(), "ADYEN_PRIVATE_KEY": "AQE_wrong"})
    answer = pay(process, shop_id)
    assert answer["result"] == "KO"
    assert "Unauthorized" in answer["resultDescription"]
    assert "AQE_wrong" not in answer["resultDescription"]
    assert fake.payments(shop_id) == []


REAL_KEY = os.environ.get("ADYEN_REAL_API_KEY")
REAL_MERCHANT = os.environ.get("ADYEN_REAL_MERCHANT_ACCOUNT")


@pytest.mark.real_sandbox
@pytest.mark.skipif(not (REAL_KEY and REAL_MERCHANT), reason="set ADYEN_REAL_API_KEY and ADYEN_REAL_MERCHANT_ACCOUNT")
def test_real_adyen_test_platform_authorises_a_test_card(shop_id: str) -> None:
    settings = Settings(
        provider_env={
            "ADYEN_IS_TEST": "true",
            "ADYEN_PRIVATE_KEY": REAL_KEY or "",
            "ADYEN_MERCHANT_ACCOUNT": REAL_MERCHANT or "",
            "ADYEN_HMAC_KEY": os.environ.get("ADYEN_REAL_HMAC_KEY", "00"),
        },
        provider_timeout_seconds=30,
    )
    adapter = adyen.build(settings)
    request = PayRequest(
        amount=1000,
        currency="EUR",
        shop_transaction_id=shop_id,
        payment_method="credit-cards",
        idempotency_key=f"pgm-real-{shop_id}",
        provider_data=card(),
    )
    adapter.check(Operation.PAY, request)

    async def run() -> PayResultCode:
        try:
            return (await adapter.pay(request)).result
        finally:
            await adapter.aclose()

    assert asyncio.run(run()) is PayResultCode.OK
