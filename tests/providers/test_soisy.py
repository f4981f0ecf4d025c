"""Soisy through a real PGM process and the stateful Soisy fake, over real HTTP: loan requests with their
redirect, the outcome callbacks (approved, verified, disbursed, refused) trusted only after reading the
order back (duplicate and forged ones), the payer abandoning the loan page, status and check, refunds
answered 501, lost answers found again by the order reference, and start-up checks. A last test talks
to Soisy's real sandbox when SOISY_REAL_SANDBOX is set."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pgm.config import Settings
from pgm.providers.base import PayRequest, PayResultCode
from pgm.providers.soisy import (
    SANDBOX_BASE_URL,
    SANDBOX_PARTNER_KEY,
    SANDBOX_SHOP_ID,
    SoisyAdapter,
    build,
)
from tests.fakes.recording import calls_naming
from tests.fakes.soisy import SoisyFake, running_soisy_fake
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pay_requests import pay_request
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for


@pytest.fixture(scope="module")
def fake() -> Iterator[SoisyFake]:
    """The Soisy fake of this module."""
    with running_soisy_fake() as running:
        yield running


@pytest.fixture(scope="module")
def soisy_pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: SoisyFake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with Soisy pointed at the fake; the fake's callbacks go to it."""
    with pgm_with_provider("soisy", fake, backend, tmp_path_factory.mktemp("pgm-soisy"), receiver[1]) as process:
        yield process


def pay_body(shop_id: str, amount: int = 120_000, **extra: Any) -> dict[str, Any]:
    """A loan request."""
    return pay_request(shop_id, amount, **extra)


def pay(pgm: PgmProcess, shop_id: str, amount: int = 120_000, **kwargs: Any) -> dict[str, Any]:
    """Request a loan and return the answer."""
    body = pay_body(shop_id, amount, **kwargs.pop("extra", {}))
    response = pgm.post("/v3/soisy/soisy/pay", body, **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def lookups_of(fake: SoisyFake, token: str) -> int:
    """How many times the PGM read this order back from Soisy."""
    return sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(f"/orders/{token}"))


def granted(pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str) -> str:
    """A loan approved and verified (the payment ACCEPTED); its token."""
    token = str(pay(pgm, shop_id)["paymentId"])
    fake.complete(token)
    fake.approve(token)
    fake.verify(token)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    return token


def test_a_loan_request_redirects_to_soisy_and_verification_accepts_the_payment(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    provider_data = {"email": "mario@example.com", "firstname": "Mario", "lastname": "Rossi", "instalments": 10}
    answer = pay(soisy_pgm, shop_id, extra={"providerData": {**provider_data, "zeroInterestRate": True}})
    assert answer["result"] == "REDIRECT_TO_URL"
    token = answer["paymentId"]
    assert answer["redirectToUrl"] == f"{fake.base_url}/shop/{fake.shop_id}#/loan-request?token={token}"
    (order,) = fake.payments(shop_id)
    assert (order["amount"], order["status"], order["instalments"], order["zeroInterestRate"]) == (
        120_000,
        "quote",
        10,
        True,
    )
    assert order["email"] == "mario@example.com"
    create = next(call for call in fake.requests if call.method == "POST" and shop_id.encode() in call.body)
    assert create.headers["x-auth-token"] == fake.partner_key
    wait_for_status(notifications, shop_id, "PENDING")
    # Sent, approved by the credit check: still PENDING until Soisy verifies the payer.
    fake.complete(token)
    fake.approve(token)
    wait_for(lambda: len(fake.deliveries) >= 2 and lookups_of(fake, token) >= 2, what="both callbacks read back")
    assert soisy_pgm.get("/v3/soisy/status", params={"paymentId": token}).json()["status"] == "PENDING"
    fake.verify(token)
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert (status["paymentId"], status["providerName"], status["paymentMethod"]) == (token, "soisy", "soisy")
    fake.disburse(token)
    wait_for(lambda: fake.order(token)["status"] == "disbursed", what="the disbursement")
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_pay_without_the_method_segment_means_soisy(soisy_pgm: PgmProcess, fake: SoisyFake, shop_id: str) -> None:
    response = soisy_pgm.post("/v3/soisy/pay", pay_body(shop_id))
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "REDIRECT_TO_URL"
    assert len(fake.payments(shop_id)) == 1


def test_a_payer_refused_by_soisy_fails_the_payment(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = pay(soisy_pgm, shop_id)["paymentId"]
    fake.complete(token)
    fake.reject(token)
    wait_for_status(notifications, shop_id, "FAILED")
    assert soisy_pgm.get("/v3/soisy/status", params={"paymentId": token}).json()["status"] == "FAILED"


def test_the_payer_abandoning_the_loan_page_fails_the_payment_once_soisy_cancels_it(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = pay(soisy_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    fake.abandon(token)  # Soisy calls nobody: /check reads the cancelled order and notifies
    checked = soisy_pgm.get("/v3/soisy/check", params={"paymentId": token}).json()
    assert checked["status"] == "FAILED"
    wait_for_status(notifications, shop_id, "FAILED")


def test_a_duplicate_callback_changes_nothing(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = granted(soisy_pgm, fake, notifications, shop_id)
    sent = [n for n in fake.notifications if n["body"]["orderToken"] == token]
    assert fake.resend(sent[-1]) == 200
    assert fake.resend(sent[-1]) == 200
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_a_forged_callback_is_refused_or_changes_nothing(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = pay(soisy_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    claim = {
        "eventId": "LoanWasVerified",
        "eventMessage": "forged",
        "eventDate": "2026-12-03T10:00:00Z",
        "orderToken": token,
        "orderReference": shop_id,
        "amount": "120000",
    }
    before = lookups_of(fake, token)
    # Unsigned, so the claim is only a hint: the PGM reads the order back, which is still a quote.
    assert soisy_pgm.client.post("/v3/soisy/callback", data=claim).status_code == 200
    wait_for(lambda: lookups_of(fake, token) > before, what="the PGM reading the order back")
    assert soisy_pgm.get("/v3/soisy/status", params={"paymentId": token}).json()["status"] == "PENDING"
    # Not even a Soisy callback: refused.
    assert soisy_pgm.client.post("/v3/soisy/callback", data={"orderToken": "../x"}).status_code == 401
    assert soisy_pgm.client.post("/v3/soisy/callback", json={"eventId": "LoanWasVerified"}).status_code == 401
    assert soisy_pgm.client.get("/v3/soisy/callback", params=claim).status_code == 401
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]


def test_status_reads_the_order_and_check_also_notifies(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.webhook_url, webhook = None, fake.webhook_url  # Soisy's callbacks never arrive
    try:
        token = pay(soisy_pgm, shop_id)["paymentId"]
        assert soisy_pgm.get("/v3/soisy/status", params={"paymentId": token}).json()["status"] == "PENDING"
        fake.complete(token)
        fake.approve(token)
        fake.verify(token)
        checked = soisy_pgm.get("/v3/soisy/check", params={"paymentId": token}).json()
    finally:
        fake.webhook_url = webhook
    assert checked["status"] == "ACCEPTED"
    assert checked["shopTransactionId"] == shop_id
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_loan_granted_before_the_switch_is_adopted_by_its_token(
    soisy_pgm: PgmProcess, fake: SoisyFake, shop_id: str
) -> None:
    token = fake.create_paid_order(shop_id, 150_000)
    status = soisy_pgm.get("/v3/soisy/status", params={"paymentId": token}).json()
    assert (status["status"], status["shopTransactionId"]) == ("ACCEPTED", shop_id)


def test_status_of_an_order_soisy_does_not_know_is_404(soisy_pgm: PgmProcess) -> None:
    response = soisy_pgm.get("/v3/soisy/status", params={"paymentId": "0" * 32})
    assert response.status_code == 404, response.text


def test_a_refund_answers_501_naming_soisy_and_reaches_nobody(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = granted(soisy_pgm, fake, notifications, shop_id)

    def calls_naming_the_loan() -> int:
        # The fake serves the whole module, and reconciliation looks pending loans up (GET) in the
        # background, this one included. Any call a refund could make is a write naming the loan.
        return sum(
            1 for call in fake.requests if call.method != "GET" and (token in call.path or token.encode() in call.body)
        )

    calls = calls_naming_the_loan()
    for amount in (50_000, 120_000, 120_001):  # partial, total, over: Soisy refunds nothing via its API
        response = soisy_pgm.post("/v3/soisy/refund", {"amount": amount, "currency": "EUR", "paymentId": token})
        assert response.status_code == 501, response.text
        assert "soisy" in response.text
        assert "refund" in response.text
    assert calls_naming_the_loan() == calls


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v3/soisy/pay-by-link", pay_body("order-x")),
        (
            "/v3/soisy/soisy/subscription/schedule",
            {**pay_body("order-x"), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}},
        ),
        ("/v3/soisy/credit-cards/pay", pay_body("order-x")),
    ],
)
def test_what_soisy_does_not_offer_answers_501_naming_it(soisy_pgm: PgmProcess, path: str, body: Any) -> None:
    response = soisy_pgm.post(path, body)
    assert response.status_code == 501, response.text
    assert "soisy" in response.text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"successRedirectUrl": None}, "successRedirectUrl"),
        ({"amount": 5_000}, "amount"),
        ({"providerData": {"instalments": 2}}, "providerData.instalments"),
        ({"providerData": {"instalments": "ten"}}, "providerData.instalments"),
        ({"providerData": {"zeroInterestRate": "yes"}}, "providerData.zeroInterestRate"),
        ({"providerData": {"email": 42}}, "providerData.email"),
        ({"providerData": {"fiscalCode": "x" * 300}}, "providerData.fiscalCode"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_before_any_call(
    soisy_pgm: PgmProcess, fake: SoisyFake, shop_id: str, extra: dict[str, Any], field: str
) -> None:
    body = {**pay_body(shop_id), **extra}
    response = soisy_pgm.post("/v3/soisy/soisy/pay", body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert not calls_naming(fake.requests, shop_id)


def test_provider_5xx_leaves_the_payment_unknown_and_reconciliation_fails_it(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.fail_next(500)
    answer = pay(soisy_pgm, shop_id)
    assert answer["result"] == "PENDING"
    wait_for_status(notifications, shop_id, "FAILED")
    assert fake.payments(shop_id) == []


def test_a_lost_answer_is_found_again_by_its_reference_and_a_retry_creates_no_second_order(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.delay_next(2.5)  # longer than PGM_PROVIDER_TIMEOUT_SECONDS (1 s): the answer is lost
    headers = {"Idempotency-Key": f"retry-{shop_id}"}
    answer = pay(soisy_pgm, shop_id, headers=headers)
    (order,) = fake.payments(shop_id)
    # Soisy takes no idempotency key: the PGM finds the order by its reference and keeps its token.
    assert answer["result"] == "PENDING"
    assert answer["paymentId"] == order["token"]
    assert pay(soisy_pgm, shop_id, headers=headers)["paymentId"] == order["token"]
    assert len(fake.payments(shop_id)) == 1
    fake.complete(order["token"])
    fake.approve(order["token"])
    fake.verify(order["token"])
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_partner_key_soisy_does_not_know_is_refused(
    start_pgm: Callable[..., PgmProcess], fake: SoisyFake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="soisy", **{**fake.env(), "SOISY_PARTNER_KEY": "revoked-key"})
    answer = pay(pgm, shop_id)
    assert answer["result"] == "KO"
    assert "401" in answer["resultDescription"]
    assert fake.payments(shop_id) == []


@pytest.mark.parametrize("missing", ["SOISY_SHOP_ID", "SOISY_PARTNER_KEY", "SOISY_BASE_URL"])
def test_start_up_is_refused_without_a_required_variable(
    start_pgm: Callable[..., PgmProcess], fake: SoisyFake, missing: str
) -> None:
    env = {name: value for name, value in fake.env().items() if name != missing}
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,soisy", **env)
    assert missing in str(refused.value)


def test_start_up_is_refused_with_a_base_url_that_names_the_shop_path(
    start_pgm: Callable[..., PgmProcess], fake: SoisyFake
) -> None:
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="soisy", **{**fake.env(), "SOISY_BASE_URL": f"{fake.base_url}/api/shops"})
    assert "SOISY_BASE_URL" in str(refused.value)


def test_the_loan_page_is_on_soisys_shop_site_for_its_own_hosts() -> None:
    from pgm.providers.soisy import loan_page_url

    assert loan_page_url(SANDBOX_BASE_URL, "acme", "t1") == "https://shop.sandbox.soisy.it/acme#/loan-request?token=t1"
    assert loan_page_url("https://api.soisy.it", "acme", "t1") == "https://shop.soisy.it/acme#/loan-request?token=t1"


@pytest.mark.real_sandbox
@pytest.mark.skipif(
    not os.environ.get("SOISY_REAL_SANDBOX"),
    reason="set SOISY_REAL_SANDBOX=1 to run against Soisy's sandbox with its published demo shop",
)
def test_real_sandbox_accepts_the_demo_shop_and_creates_a_loan_request(shop_id: str) -> None:
    adapter = build(
        Settings(
            public_url="https://pgm.example",
            provider_timeout_seconds=20,
            provider_env={
                "SOISY_BASE_URL": os.environ.get("SOISY_REAL_BASE_URL", SANDBOX_BASE_URL),
                "SOISY_SHOP_ID": os.environ.get("SOISY_REAL_SHOP_ID", SANDBOX_SHOP_ID),
                "SOISY_PARTNER_KEY": os.environ.get("SOISY_REAL_PARTNER_KEY", SANDBOX_PARTNER_KEY),
            },
        )
    )
    assert isinstance(adapter, SoisyAdapter)

    async def scenario() -> None:
        try:
            request = PayRequest(
                120_000,
                "EUR",
                shop_id,
                "soisy",
                f"pgm-real-{shop_id}",
                success_redirect_url="https://example.com/ok",
                provider_data={"email": "sandbox@example.com", "firstname": "Mario", "lastname": "Rossi"},
            )
            created = await adapter.pay(request)
            assert created.result is PayResultCode.REDIRECT_TO_URL
            assert created.payment_id
            assert httpx.URL(created.redirect_url or "").host == "shop.sandbox.soisy.it"
            looked_up = await adapter.payment_status(created.payment_id)
            assert looked_up.status.value == "PENDING"
        finally:
            await adapter.aclose()

    asyncio.run(scenario())


def test_a_callback_for_a_loan_requested_before_the_switch_adopts_it(
    soisy_pgm: PgmProcess, fake: SoisyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = fake.create_paid_order(shop_id, 150_000)  # requested through the old PGM, now disbursed
    body = {
        "eventId": "LoanWasDisbursed",
        "eventMessage": "disbursed",
        "eventDate": "2026-12-03T10:00:00Z",
        "orderToken": token,
        "orderReference": shop_id,
        "amount": "150000",
    }
    assert soisy_pgm.client.post("/v3/soisy/callback", data=body).status_code == 200
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert (status["paymentId"], status["providerName"]) == (token, "soisy")
