"""Satispay through a real PGM process and the stateful Satispay fake, over real HTTP: pay, refunds,
authorization tokens and subscription payments, status and check, unsigned callbacks confirmed by a
lookup, provider faults, out-of-order callbacks and start-up checks. A last test talks to Satispay's
real staging environment when credentials are given."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pgm.config import Settings
from pgm.providers.base import PayRequest, PayResultCode
from pgm.providers.satispay import SatispayAdapter, build
from tests.fakes.recording import calls_naming
from tests.fakes.satispay import MOBILE_REDIRECT, WEB_REDIRECT, SatispayFake, running_satispay_fake
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for


@pytest.fixture(scope="module")
def fake() -> Iterator[SatispayFake]:
    """The Satispay fake of this module, with short callback retries."""
    with running_satispay_fake() as running:
        running.callback_retry_delays = (0.2, 0.4, 0.8)
        yield running


@pytest.fixture(scope="module")
def satispay_pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: SatispayFake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with Satispay pointed at the fake; the fake's callbacks go to it."""
    with pgm_with_provider("satispay", fake, backend, tmp_path_factory.mktemp("pgm-satispay"), receiver[1]) as process:
        yield process


def pay_body(shop_id: str, amount: int = 1000, **extra: Any) -> dict[str, Any]:
    """A pay request for Satispay (no providerData needed)."""
    return {"amount": amount, "currency": "EUR", "shopTransactionId": shop_id, **extra}


def pay(pgm: PgmProcess, shop_id: str, amount: int = 1000, **kwargs: Any) -> dict[str, Any]:
    """Pay and return the answer."""
    response = pgm.post("/v3/satispay/satispay/pay", pay_body(shop_id, amount), **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def lookups_of(fake: SatispayFake, identifier: str) -> int:
    """How many times the PGM asked Satispay about this id."""
    return sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(f"/{identifier}"))


def delivered(fake: SatispayFake, identifier: str) -> bool:
    """Whether the fake's callback for this id was accepted by the PGM."""
    return any(d["id"] == identifier and d["status"] == 200 for d in list(fake.deliveries))


def test_pay_redirects_to_satispay_and_the_callback_is_confirmed_by_a_lookup(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(satispay_pgm, shop_id, 1299)
    assert answer["result"] == "REDIRECT_TO_URL"
    payment_id = answer["paymentId"]
    web, mobile = httpx.URL(answer["redirectToUrl"]), httpx.URL(answer["redirectToUrlMobile"])
    assert web.path == mobile.path == f"/pay/{payment_id}"
    assert (web.params["redirect_url"], mobile.params["redirect_url"]) == (WEB_REDIRECT, MOBILE_REDIRECT)
    (payment,) = fake.payments(shop_id)
    assert (payment["id"], payment["amount_unit"], payment["status"]) == (payment_id, 1299, "PENDING")
    create = next(c for c in fake.requests if c.method == "POST" and shop_id.encode() in c.body)
    assert create.headers["idempotency-key"].startswith("pgm-")
    wait_for_status(notifications, shop_id, "PENDING")
    before = lookups_of(fake, payment_id)
    fake.approve(payment_id)
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert status["paymentId"] == payment_id
    assert status["providerName"] == "satispay"
    assert status["paymentMethod"] == "satispay"
    assert lookups_of(fake, payment_id) > before
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_payer_declining_in_the_app_fails_the_payment(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(satispay_pgm, shop_id)["paymentId"]
    fake.decline(payment_id)
    wait_for_status(notifications, shop_id, "FAILED")
    answer = satispay_pgm.get("/v3/satispay/status", params={"paymentId": payment_id}).json()
    assert answer["status"] == "FAILED"


def test_an_expired_payment_fails(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(satispay_pgm, shop_id)["paymentId"]
    fake.expire(payment_id)
    wait_for_status(notifications, shop_id, "FAILED")


def test_a_forged_callback_is_only_a_hint_and_changes_nothing(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(satispay_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    before = lookups_of(fake, payment_id)
    forged = satispay_pgm.get("/v3/satispay/callback", params={"payment_id": payment_id})
    assert forged.status_code == 200
    wait_for(lambda: lookups_of(fake, payment_id) > before, what="the PGM asking Satispay")
    assert satispay_pgm.get("/v3/satispay/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]


@pytest.mark.parametrize("query", [{}, {"payment_id": "../../refund"}])
def test_a_callback_without_a_usable_payment_id_is_refused(satispay_pgm: PgmProcess, query: dict[str, str]) -> None:
    response = satispay_pgm.get("/v3/satispay/callback", params=query)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"


def test_the_same_callback_again_changes_nothing(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(satispay_pgm, shop_id)["paymentId"]
    fake.approve(payment_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    for _ in range(2):
        before = lookups_of(fake, payment_id)
        again = satispay_pgm.get("/v3/satispay/callback", params={"payment_id": payment_id})
        assert again.status_code == 200
        assert lookups_of(fake, payment_id) > before  # the PGM asked Satispay before answering
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def paid(pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str, amount: int) -> str:
    """An accepted payment's id."""
    payment_id = str(pay(pgm, shop_id, amount)["paymentId"])
    fake.approve(payment_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    return payment_id


def refund(pgm: PgmProcess, payment_id: str, amount: int, **kwargs: Any) -> dict[str, Any]:
    """Refund and return the answer."""
    response = pgm.post("/v3/satispay/refund", {"amount": amount, "currency": "EUR", "paymentId": payment_id}, **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_partial_then_total_refund_then_nothing_left(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(satispay_pgm, fake, notifications, shop_id, 1000)
    first = refund(satispay_pgm, payment_id, 400)
    assert first["result"] == "OK"
    assert refund(satispay_pgm, payment_id, 600)["result"] == "OK"
    refused = refund(satispay_pgm, payment_id, 1)
    assert refused["result"] == "KO"
    (payment,) = fake.payments(shop_id)
    assert [(r["amount_unit"], r["status"], r["type"]) for r in payment["refunds"]] == [
        (400, "ACCEPTED", "REFUND_TO_BUSINESS"),
        (600, "ACCEPTED", "REFUND_TO_BUSINESS"),
    ]
    assert first["refundId"] == payment["refunds"][0]["id"]
    wait_for(
        lambda: sum(1 for s in statuses_for(notifications, shop_id) if s["action"] == "REFUND") >= 2,
        what="two refund notifications",
    )


def test_authorization_token_then_subscription_payments_until_expired(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    response = satispay_pgm.post("/v3/satispay/utility/satispay/subscription/token", pay_body(shop_id))
    assert response.status_code == 200, response.text
    answer = response.json()
    token = answer["token"]
    assert answer["result"] == "REDIRECT_TO_URL"
    assert httpx.URL(answer["redirectToUrl"]).path == f"/authorize/{token}"
    assert httpx.URL(answer["redirectToUrlMobile"]).params["redirect_url"] == MOBILE_REDIRECT
    (created,) = [t for t in fake.tokens() if t["id"] == token]
    assert created["callback_url"].endswith("/v3/satispay/callback/authorization?authorization_id={uuid}")
    pending = satispay_pgm.get(f"/v3/satispay/subscription/status/{token}").json()
    assert pending["status"] == "PENDING"

    fake.approve(token)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert satispay_pgm.get(f"/v3/satispay/subscription/status/{token}").json()["status"] == "ACTIVE"

    charge_id = f"{shop_id}-1"
    charge = satispay_pgm.post(
        "/v3/satispay/satispay/subscription/pay", {**pay_body(charge_id, 499), "subscriptionInfo": {"token": token}}
    ).json()
    assert charge["result"] == "OK"
    assert charge["subscriptionToken"] == token
    (payment,) = fake.payments(charge_id)
    assert (payment["id"], payment["amount_unit"], payment["status"]) == (charge["paymentId"], 499, "ACCEPTED")
    wait_for_status(notifications, charge_id, "ACCEPTED")

    assert satispay_pgm.client.delete(f"/v3/satispay/subscription/expire/{token}").json()["result"] == "OK"
    assert satispay_pgm.get(f"/v3/satispay/subscription/status/{token}").json()["status"] == "CANCELED"
    # Older clients expire with POST; expiring twice is not an error.
    again = satispay_pgm.post(f"/v3/satispay/subscription/expire/{token}?shopTransactionId={shop_id}", None)
    assert again.status_code == 200
    refused = satispay_pgm.post(
        "/v3/satispay/satispay/subscription/pay",
        {**pay_body(f"{shop_id}-2", 499), "subscriptionInfo": {"token": token}},
    ).json()
    assert refused["result"] == "KO"
    assert fake.payments(f"{shop_id}-2") == []


def test_subscription_pay_with_a_token_never_approved_is_refused(
    satispay_pgm: PgmProcess, fake: SatispayFake, shop_id: str
) -> None:
    token = satispay_pgm.post("/v3/satispay/utility/satispay/subscription/token", pay_body(shop_id)).json()["token"]
    answer = satispay_pgm.post(
        "/v3/satispay/satispay/subscription/pay", {**pay_body(f"{shop_id}-1"), "subscriptionInfo": {"token": token}}
    ).json()
    assert answer["result"] == "KO"
    assert "not valid" in answer["resultDescription"]


def test_status_asks_satispay_and_check_also_notifies(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.webhook_url, webhook = None, fake.webhook_url  # the payer approves, the callback never arrives
    try:
        payment_id = pay(satispay_pgm, shop_id)["paymentId"]
        assert satispay_pgm.get("/v3/satispay/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
        fake.approve(payment_id)
        checked = satispay_pgm.get("/v3/satispay/check", params={"paymentId": payment_id}).json()
    finally:
        fake.webhook_url = webhook
    assert checked["status"] == "ACCEPTED"
    assert checked["shopTransactionId"] == shop_id
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_status_of_an_id_satispay_does_not_know_is_404(satispay_pgm: PgmProcess) -> None:
    response = satispay_pgm.get("/v3/satispay/status", params={"paymentId": "3e795a46-a4ea-42ba-8267-d9427aaf516d"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v3/satispay/pay-by-link", pay_body("order-x")),
        (
            "/v3/satispay/satispay/subscription/schedule",
            {**pay_body("order-x"), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}},
        ),
    ],
)
def test_operations_satispay_does_not_offer_answer_501(satispay_pgm: PgmProcess, path: str, body: Any) -> None:
    assert satispay_pgm.post(path, body).status_code == 501


def test_a_reference_longer_than_satispay_accepts_is_a_400_before_any_call(
    satispay_pgm: PgmProcess, fake: SatispayFake
) -> None:
    response = satispay_pgm.post("/v3/satispay/satispay/pay", pay_body("x" * 51))
    assert response.status_code == 400
    assert response.json()["field"] == "shopTransactionId"
    assert not calls_naming(fake.requests, "x" * 51)


def test_provider_5xx_leaves_the_payment_pending_and_reconciliation_fails_it(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.fail_next(500)
    answer = pay(satispay_pgm, shop_id)
    assert answer["result"] == "PENDING"
    assert answer["paymentId"] is None
    status = wait_for_status(notifications, shop_id, "FAILED")
    assert status["paymentId"] is None
    assert fake.payments(shop_id) == []


def test_time_out_finds_the_payment_made_with_our_key_and_a_retry_pays_once(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.delay_next(2.5)  # longer than PGM_PROVIDER_TIMEOUT_SECONDS (1 s): the answer is lost
    headers = {"Idempotency-Key": f"retry-{shop_id}"}
    answer = pay(satispay_pgm, shop_id, headers=headers)
    (payment,) = fake.payments(shop_id)
    assert answer["result"] == "PENDING"
    assert answer["paymentId"] == payment["id"]
    again = pay(satispay_pgm, shop_id, headers=headers)
    assert again["paymentId"] == payment["id"]
    assert len(fake.payments(shop_id)) == 1
    fake.approve(payment["id"])
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_malformed_answer_to_a_refund_is_settled_by_finding_the_refund(
    satispay_pgm: PgmProcess, fake: SatispayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(satispay_pgm, fake, notifications, shop_id, 1000)
    fake.malformed_next()
    answer = refund(satispay_pgm, payment_id, 250)
    (payment,) = fake.payments(shop_id)
    (made,) = payment["refunds"]
    assert answer["result"] == "OK"
    assert answer["refundId"] == made["id"]


def deferred_callbacks(pgm: PgmProcess) -> float:
    """How many Satispay callbacks had to wait for their payment, from the metrics."""
    for line in pgm.get("/-/metrics").text.splitlines():
        if line.startswith('pgm_provider_callbacks_total{provider="satispay",result="deferred"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_callback_before_the_pay_answer_is_kept_and_applied(
    start_pgm: Callable[..., PgmProcess], receiver: tuple[RecordingReceiver, str], shop_id: str
) -> None:
    with running_satispay_fake() as fake:
        pgm = start_pgm(
            ENABLED_PROVIDERS="satispay",
            PAYMENT_CALLBACK_URL=f"{receiver[1]}/payment-status",
            PGM_PROVIDER_TIMEOUT_SECONDS="10",
            PGM_RECONCILE_AFTER_SECONDS="10",
            **fake.env(),
        )
        fake.webhook_url = f"{pgm.url}/v3/satispay/callback"
        fake.delay_next(2.0)
        answers: list[dict[str, Any]] = []
        paying = threading.Thread(target=lambda: answers.append(pay(pgm, shop_id)))
        paying.start()
        wait_for(lambda: bool(fake.payments(shop_id)), what="the payment at Satispay")
        payment_id = fake.payments(shop_id)[0]["id"]
        fake.approve(payment_id)
        wait_for(lambda: delivered(fake, payment_id), what="the callback")
        assert not answers, "the callback must arrive before the pay answer"
        assert deferred_callbacks(pgm) >= 1
        paying.join(15)
        assert answers[0]["paymentId"] == payment_id
        wait_for_status(receiver[0], shop_id, "ACCEPTED")


def test_a_request_signed_with_a_key_satispay_does_not_know_is_refused(
    start_pgm: Callable[..., PgmProcess], fake: SatispayFake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="satispay", **{**fake.env(), "SATISPAY_KEY_ID": "revoked-key"})
    answer = pay(pgm, shop_id)
    assert answer["result"] == "KO"
    assert "401" in answer["resultDescription"]
    assert fake.payments(shop_id) == []


@pytest.mark.parametrize("missing", ["SATISPAY_KEY_ID", "SATISPAY_PRIVATE_KEY", "SATISPAY_IS_SANDBOX"])
def test_start_up_is_refused_without_a_required_variable(
    start_pgm: Callable[..., PgmProcess], fake: SatispayFake, missing: str
) -> None:
    env = {name: value for name, value in fake.env().items() if name != missing}
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,satispay", **env)
    assert missing in str(refused.value)


REAL_KEY_ID = os.environ.get("SATISPAY_REAL_KEY_ID")
REAL_PRIVATE_KEY = os.environ.get("SATISPAY_REAL_PRIVATE_KEY")


@pytest.mark.real_sandbox
@pytest.mark.skipif(
    not (REAL_KEY_ID and REAL_PRIVATE_KEY),
    reason="set SATISPAY_REAL_KEY_ID and SATISPAY_REAL_PRIVATE_KEY (staging credentials) to run",
)
def test_real_staging_accepts_our_signature_and_creates_a_pending_payment(shop_id: str) -> None:
    adapter = build(
        Settings(
            public_url="https://pgm.example",
            provider_timeout_seconds=20,
            provider_env={
                "SATISPAY_IS_SANDBOX": "true",
                "SATISPAY_KEY_ID": REAL_KEY_ID or "",
                "SATISPAY_PRIVATE_KEY": REAL_PRIVATE_KEY or "",
                "SATISPAY_AFTER_BUY_WEB_REDIRECT_URL": "https://example.com/satispay/done",
            },
        )
    )
    assert isinstance(adapter, SatispayAdapter)

    async def scenario() -> None:
        try:
            request = PayRequest(100, "EUR", shop_id, "satispay", f"pgm-real-{shop_id}")
            created = await adapter.pay(request)
            assert created.result is PayResultCode.REDIRECT_TO_URL
            assert created.payment_id
            looked_up = await adapter.payment_status(created.payment_id)
            assert looked_up.status.value == "PENDING"
            assert looked_up.shop_transaction_id == shop_id
        finally:
            await adapter.aclose()

    asyncio.run(scenario())
