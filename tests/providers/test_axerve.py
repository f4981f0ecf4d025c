"""Axerve (ex GestPay) through a real PGM process and the stateful Axerve fake, over real HTTP: card
payments with a token (approved, declined, 3-D Secure passed, failed), Apple Pay and Google Pay tokens,
PayPal and Satispay on Axerve's page (paid, abandoned), pay-by-link, partial and total refunds and the
over-refund refused, merchant-managed subscriptions (start, pay with the card token or the PayPal
token), the payment-token utility, status and check, notifications trusted only after reading the
payment back (duplicate and forged ones), lost answers found again, and start-up checks. A last test
talks to Axerve's real sandbox when credentials are given."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pgm.config import Settings
from pgm.providers.axerve import SANDBOX_BASE_URL, AxerveAdapter, build, notification_signature
from pgm.providers.base import PayRequest, PayResultCode
from tests.fakes.axerve import (
    APPLE_PAY_TOKEN,
    DECLINED_CARD,
    GOOGLE_PAY_TOKEN,
    THREE_DS_CARD,
    AxerveFake,
    running_axerve_fake,
)
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pay_requests import pay_request
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for


@pytest.fixture(scope="module")
def fake() -> Iterator[AxerveFake]:
    """The Axerve fake of this module."""
    with running_axerve_fake() as running:
        yield running


@pytest.fixture(scope="module")
def axerve_pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: AxerveFake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with Axerve pointed at the fake; the fake's notifications go to it."""
    with pgm_with_provider("axerve", fake, backend, tmp_path_factory.mktemp("pgm-axerve"), receiver[1]) as process:
        yield process


def pay_body(shop_id: str, amount: int = 1000, **provider_data: Any) -> dict[str, Any]:
    """A pay request; providerData as given."""
    return pay_request(shop_id, amount, **({"providerData": provider_data} if provider_data else {}))


def pay(pgm: PgmProcess, shop_id: str, method: str = "credit-cards", amount: int = 1000, **data: Any) -> dict[str, Any]:
    """Pay and return the answer."""
    headers = data.pop("headers", None)
    response = pgm.post(f"/v3/axerve/{method}/pay", pay_body(shop_id, amount, **data), headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def refund(pgm: PgmProcess, payment_id: str, amount: int) -> dict[str, Any]:
    """Refund and return the answer."""
    response = pgm.post("/v3/axerve/refund", {"amount": amount, "currency": "EUR", "paymentId": payment_id})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def lookups_of(fake: AxerveFake, payment_id: str) -> int:
    """How many times the PGM read this payment back from Axerve."""
    return sum(
        1 for call in fake.requests if call.path.endswith("/payment/detail") and payment_id.encode() in call.body
    )


def payment_calls(fake: AxerveFake) -> int:
    """How many calls could have opened or paid something (the PGM's background lookups aside)."""
    return sum(1 for call in fake.requests if not call.path.endswith("/payment/detail"))


def test_a_card_token_pays_at_once_and_axerve_is_called_with_the_key_then_the_payment_token(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(axerve_pgm, shop_id, amount=1299, token=fake.card_token(), buyerName="Ada", buyerEmail="a@b.example")
    assert answer["result"] == "OK", answer
    (payment,) = fake.payments(shop_id)
    assert (answer["paymentId"], payment["amount"], payment["transactionResult"]) == (payment["paymentID"], 1299, "OK")
    create = next(
        call for call in fake.requests if call.path.endswith("/payment/create") and shop_id.encode() in call.body
    )
    assert create.headers["authorization"] == f"apikey {fake.api_key}"
    assert json.loads(create.body)["amount"] == "12.99"
    submit = next(
        call
        for call in fake.requests
        if call.path.endswith("/payment/submit") and call.headers.get("paymenttoken") == payment["paymentToken"]
    )
    assert "authorization" not in submit.headers
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert (status["paymentId"], status["providerName"], status["paymentMethod"]) == (
        answer["paymentId"],
        "axerve",
        "credit-cards",
    )


def test_a_declined_card_fails_the_payment(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(axerve_pgm, shop_id, token=fake.card_token(DECLINED_CARD))
    assert answer["result"] == "KO"
    assert "74" in answer["resultDescription"]
    wait_for_status(notifications, shop_id, "FAILED")
    assert axerve_pgm.get("/v3/axerve/status", params={"paymentId": answer["paymentId"]}).json()["status"] == "FAILED"


def test_three_d_secure_redirects_and_the_notification_read_back_settles_the_payment(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(axerve_pgm, shop_id, token=fake.card_token(THREE_DS_CARD))
    assert answer["result"] == "REDIRECT_TO_URL"
    payment_id = answer["paymentId"]
    assert httpx.URL(answer["redirectToUrl"]).path == f"/3ds/{payment_id}"
    wait_for_status(notifications, shop_id, "PENDING")
    before = lookups_of(fake, payment_id)
    fake.complete_three_ds(payment_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert lookups_of(fake, payment_id) > before


def test_a_failed_three_d_secure_challenge_fails_the_payment(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(axerve_pgm, shop_id, token=fake.card_token(THREE_DS_CARD))["paymentId"]
    fake.fail_three_ds(payment_id)
    wait_for_status(notifications, shop_id, "FAILED")


@pytest.mark.parametrize(
    ("method", "token", "kind"),
    [("applepay", APPLE_PAY_TOKEN, "APPLEPAY"), ("googlepay", GOOGLE_PAY_TOKEN, "GOOGLEPAY")],
)
def test_apple_pay_and_google_pay_tokens_are_submitted_to_axerve(
    axerve_pgm: PgmProcess,
    fake: AxerveFake,
    notifications: RecordingReceiver,
    shop_id: str,
    method: str,
    token: str,
    kind: str,
) -> None:
    answer = pay(axerve_pgm, shop_id, method=method, token=token)
    assert answer["result"] == "OK", answer
    (payment,) = fake.payments(shop_id)
    assert payment["paymentMethod"] == kind
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert status["paymentMethod"] == method


@pytest.mark.parametrize("method", ["pay-pal", "satispay"])
def test_paypal_and_satispay_pay_on_axerves_page_or_the_payer_abandons(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str, method: str
) -> None:
    answer = pay(axerve_pgm, shop_id, method=method)
    assert answer["result"] == "REDIRECT_TO_URL"
    assert httpx.URL(answer["redirectToUrl"]).path == f"/pagam/{answer['paymentId']}"
    (payment,) = fake.payments(shop_id)
    assert payment["paymentTypes"] == [{"pay-pal": "PAYPAL", "satispay": "SATISPAY"}[method]]
    fake.payer_pays(answer["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")

    abandoned = pay(axerve_pgm, f"{shop_id}-2", method=method)
    fake.payer_abandons(abandoned["paymentId"])
    wait_for_status(notifications, f"{shop_id}-2", "FAILED")


def test_pay_by_link_answers_axerves_page_and_the_payment_settles_when_the_payer_pays(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    response = axerve_pgm.post("/v3/axerve/pay-by-link", pay_body(shop_id))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert httpx.URL(answer["link"]).path == f"/pagam/{answer['paymentId']}"
    (payment,) = fake.payments(shop_id)
    assert payment["paymentChannel"] == {"channelType": ["EMAIL"]}
    fake.payer_pays(answer["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_duplicate_notification_changes_nothing(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(axerve_pgm, shop_id, token=fake.card_token())["paymentId"]
    wait_for_status(notifications, shop_id, "ACCEPTED")
    (sent,) = [n for n in fake.notifications if n["paymentID"] == payment_id]
    assert fake.resend(sent) == 200
    assert fake.resend(sent) == 200
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["ACCEPTED"]


def test_a_forged_notification_is_refused_or_changes_nothing(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(axerve_pgm, shop_id, method="pay-pal", headers={"Idempotency-Key": f"key-{shop_id}"})
    payment_id = answer["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    reference = next(p["shopTransactionID"] for p in fake.payments(shop_id))
    # Without our signature of the payment's reference, or with another payment's: refused.
    assert axerve_pgm.client.get("/v3/axerve/callback", params={"a": fake.shop_login, "b": "00"}).status_code == 401
    other = notification_signature(fake.api_key, "PGM" + "0" * 41)
    forged = {"pgmReference": reference, "pgmSignature": other, "a": fake.shop_login, "b": "00"}
    assert axerve_pgm.client.get("/v3/axerve/callback", params=forged).status_code == 401
    # With the right URL (a replay, say) the payment is read back: Axerve says it is still pending.
    before = lookups_of(fake, reference)
    signed = {"pgmReference": reference, "pgmSignature": notification_signature(fake.api_key, reference)}
    assert (
        axerve_pgm.client.get("/v3/axerve/callback", params={**signed, "a": fake.shop_login, "b": "0"}).status_code
        == 200
    )
    wait_for(lambda: lookups_of(fake, reference) > before, what="the PGM reading the payment back")
    assert axerve_pgm.get("/v3/axerve/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]


def test_partial_then_total_refund_then_over_refund_refused(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(axerve_pgm, shop_id, token=fake.card_token())["paymentId"]
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert refund(axerve_pgm, payment_id, 400)["result"] == "OK"
    assert refund(axerve_pgm, payment_id, 600)["result"] == "OK"
    refused = refund(axerve_pgm, payment_id, 1)
    assert refused["result"] == "KO"
    assert "exceeds the refundable amount" in refused["resultDescription"]
    assert fake.payment(payment_id)["refunds"] == [400, 600]
    refunds = [
        call for call in fake.requests if call.path.endswith("/payment/refund") and payment_id.encode() in call.body
    ]
    assert [json.loads(call.body)["amount"] for call in refunds] == ["4.00", "6.00"]


def test_subscription_start_then_pay_with_the_card_token(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    card = fake.card_token(THREE_DS_CARD)
    start = axerve_pgm.post(
        "/v3/axerve/credit-cards/subscription/start",
        {
            **pay_body(shop_id, 999, token=card, authenticationAmount=2000),
            "subscriptionInfo": {"interval": "DAY", "intervalCount": 30},
        },
    ).json()
    assert start["result"] == "REDIRECT_TO_URL", start  # the payer authenticates the card once
    assert start["subscriptionToken"] == card
    (first,) = fake.payments(shop_id)
    assert first["recurrent"] is True
    fake.complete_three_ds(start["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")

    charge = axerve_pgm.post(
        "/v3/axerve/credit-cards/subscription/pay",
        {**pay_body(f"{shop_id}-2", 999), "subscriptionInfo": {"token": card}},
    ).json()
    assert charge["result"] == "OK", charge
    assert charge["subscriptionToken"] == card
    assert refund(axerve_pgm, charge["paymentId"], 999)["result"] == "OK"

    fake.decline_next_submit()
    declined = axerve_pgm.post(
        "/v3/axerve/credit-cards/subscription/pay",
        {**pay_body(f"{shop_id}-3", 999), "subscriptionInfo": {"token": card}},
    ).json()
    assert declined["result"] == "KO"


def test_paypal_subscription_starts_on_axerves_page_then_pays_with_the_token_axerve_returned(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    start = axerve_pgm.post(
        "/v3/axerve/pay-pal/subscription/start",
        {
            **pay_body(shop_id, 999, authenticationAmount=2000),
            "subscriptionInfo": {"interval": "DAY", "intervalCount": 30},
        },
    ).json()
    assert start["result"] == "REDIRECT_TO_URL", start
    assert httpx.URL(start["redirectToUrl"]).path == f"/pagam/{start['paymentId']}"
    assert "subscriptionToken" not in start  # Axerve gives it only once the payer approved
    (first,) = fake.payments(shop_id)
    assert (first["recurrent"], first["paymentTypes"]) == (True, ["PAYPAL"])
    fake.payer_pays(start["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")
    token = fake.payment(start["paymentId"])["_method_token"]
    status = axerve_pgm.get("/v3/axerve/status", params={"paymentId": start["paymentId"]}).json()
    assert status["metadata"]["subscriptionToken"] == token, status

    charge = axerve_pgm.post(
        "/v3/axerve/pay-pal/subscription/pay",
        {**pay_body(f"{shop_id}-2", 999), "subscriptionInfo": {"token": token}},
    ).json()
    assert charge["result"] == "OK", charge
    assert charge["subscriptionToken"] == token
    (renewal,) = fake.payments(f"{shop_id}-2")
    assert (renewal["recurrent"], renewal["paymentMethod"]) == (True, "PAYPAL")
    submits = [call for call in fake.requests if call.path.endswith("/payment/submit")]
    assert json.loads(submits[-1].body)["paymentTypeDetails"]["payPal"]["recurrenceToken"] == token

    fake.decline_next_submit()
    declined = axerve_pgm.post(
        "/v3/axerve/pay-pal/subscription/pay",
        {**pay_body(f"{shop_id}-3", 999), "subscriptionInfo": {"token": token}},
    ).json()
    assert declined["result"] == "KO", declined
    wait_for_status(notifications, f"{shop_id}-3", "FAILED")


def test_subscription_start_needs_the_authentication_amount_and_a_day_interval(
    axerve_pgm: PgmProcess, fake: AxerveFake, shop_id: str
) -> None:
    calls = payment_calls(fake)
    without = axerve_pgm.post(
        "/v3/axerve/credit-cards/subscription/start",
        {**pay_body(shop_id, token=fake.card_token()), "subscriptionInfo": {"interval": "DAY", "intervalCount": 30}},
    )
    assert without.status_code == 400, without.text
    assert without.json()["field"] == "providerData.authenticationAmount"
    monthly = axerve_pgm.post(
        "/v3/axerve/credit-cards/subscription/start",
        {
            **pay_body(shop_id, token=fake.card_token(), authenticationAmount=1000),
            "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1},
        },
    )
    assert monthly.status_code == 400, monthly.text
    assert payment_calls(fake) == calls


def test_the_payment_token_utility_opens_a_payment_at_axerve(
    axerve_pgm: PgmProcess, fake: AxerveFake, shop_id: str
) -> None:
    body = {"shopLogin": fake.shop_login, "amount": 2500, "shopTransactionId": shop_id, "currency": "EUR"}
    response = axerve_pgm.post("/v3/axerve/utility/payment/token", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    (payment,) = fake.payments(shop_id)
    assert (answer["paymentToken"], answer["paymentId"], payment["amount"]) == (
        payment["paymentToken"],
        payment["paymentID"],
        2500,
    )
    wrong = axerve_pgm.post("/v3/axerve/utility/payment/token", {**body, "shopLogin": "GESPAY00000"})
    assert wrong.status_code == 400
    assert wrong.json()["field"] == "shopLogin"
    assert axerve_pgm.post("/v3/axerve/utility/payment/token", {**body, "amount": "25.00"}).status_code == 400


def test_status_reads_the_payment_and_check_also_notifies(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.webhook_url, webhook = None, fake.webhook_url  # the payer pays, the notification never arrives
    try:
        payment_id = pay(axerve_pgm, shop_id, method="satispay")["paymentId"]
        assert axerve_pgm.get("/v3/axerve/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
        fake.payer_pays(payment_id)
        checked = axerve_pgm.get("/v3/axerve/check", params={"paymentId": payment_id}).json()
    finally:
        fake.webhook_url = webhook
    assert checked["status"] == "ACCEPTED"
    assert checked["shopTransactionId"] == shop_id
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_payment_made_before_the_switch_is_adopted_and_refunded(
    axerve_pgm: PgmProcess, fake: AxerveFake, shop_id: str
) -> None:
    payment_id = fake.create_paid_payment(shop_id, 1000)
    status = axerve_pgm.get("/v3/axerve/status", params={"paymentId": payment_id}).json()
    assert (status["status"], status["shopTransactionId"]) == ("ACCEPTED", shop_id)
    assert refund(axerve_pgm, payment_id, 300)["result"] == "OK"
    over = refund(axerve_pgm, payment_id, 701)
    assert over["result"] == "KO"
    assert "exceeds the refundable amount" in over["resultDescription"]


def test_status_of_a_payment_axerve_does_not_know_is_404(axerve_pgm: PgmProcess) -> None:
    assert axerve_pgm.get("/v3/axerve/status", params={"paymentId": "999"}).status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/v3/axerve/credit-cards/subscription/schedule", "/v3/axerve/subscription/status/TK1"],
)
def test_what_axerve_does_not_offer_answers_501_naming_it(axerve_pgm: PgmProcess, path: str) -> None:
    body = {**pay_body("order-x"), "subscriptionInfo": {"interval": "DAY", "intervalCount": 1}}
    response = axerve_pgm.post(path, body) if "schedule" in path else axerve_pgm.get(path)
    assert response.status_code == 501, response.text
    assert "axerve" in response.text


@pytest.mark.parametrize(
    ("method", "data", "field"),
    [
        ("credit-cards", {}, "providerData.token"),
        ("credit-cards", {"token": "x y"}, "providerData.token"),
        ("applepay", {"token": "{not json"}, "providerData.token"),
        ("googlepay", {"token": json.dumps({"signature": "s"})}, "providerData.token"),
        ("pay-pal", {"buyerEmail": "x" * 51}, "providerData.buyerEmail"),
        ("satispay", {"serverRedirect": "yes"}, "providerData.serverRedirect"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_before_any_call(
    axerve_pgm: PgmProcess, fake: AxerveFake, method: str, data: dict[str, Any], field: str
) -> None:
    calls = payment_calls(fake)
    response = axerve_pgm.post(f"/v3/axerve/{method}/pay", pay_body("order-bad", **data))
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert payment_calls(fake) == calls


def test_a_lost_submit_answer_is_found_again_by_our_reference_and_a_retry_pays_nothing_twice(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.delay_next(2.5)  # longer than PGM_PROVIDER_TIMEOUT_SECONDS (1 s): Axerve pays, the answer is lost
    key = f"retry-{shop_id}"
    card = fake.card_token()
    answer = pay(axerve_pgm, shop_id, token=card, headers={"Idempotency-Key": key})
    (payment,) = fake.payments(shop_id)
    # Axerve holds our reference (derived from the key), the merchant's travels in customInfo.
    assert payment["shopTransactionID"].startswith("PGM")
    assert len(payment["shopTransactionID"]) == 44
    assert answer["paymentId"] == payment["paymentID"]
    assert pay(axerve_pgm, shop_id, token=card, headers={"Idempotency-Key": key})["paymentId"] == payment["paymentID"]
    assert len(fake.payments(shop_id)) == 1
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_provider_5xx_on_create_leaves_the_payment_unknown_and_reconciliation_fails_it(
    axerve_pgm: PgmProcess, fake: AxerveFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.fail_next(500, "/payment/create")
    answer = pay(axerve_pgm, shop_id, token=fake.card_token())
    assert answer["result"] == "PENDING"
    wait_for_status(notifications, shop_id, "FAILED")
    assert fake.payments(shop_id) == []


def test_a_request_with_an_api_key_axerve_does_not_know_is_refused(
    start_pgm: Callable[..., PgmProcess], fake: AxerveFake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="axerve", **{**fake.env(), "AXERVE_API_KEY": "revoked-key"})
    answer = pay(pgm, shop_id, method="pay-pal")
    assert answer["result"] == "KO"
    assert "2000" in answer["resultDescription"]
    assert fake.payments(shop_id) == []


def test_the_v2_gestpay_names_are_accepted(
    start_pgm: Callable[..., PgmProcess], fake: AxerveFake, shop_id: str
) -> None:
    env = {name.replace("AXERVE_", "GESTPAY_"): value for name, value in fake.env().items()}
    pgm = start_pgm(ENABLED_PROVIDERS="axerve", **env)
    assert pay(pgm, shop_id, token=fake.card_token())["result"] == "OK"


@pytest.mark.parametrize("missing", ["AXERVE_API_KEY", "AXERVE_SHOP_LOGIN"])
def test_start_up_is_refused_without_a_required_variable(
    start_pgm: Callable[..., PgmProcess], fake: AxerveFake, missing: str
) -> None:
    env = {name: value for name, value in fake.env().items() if name != missing}
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,axerve", **env)
    assert missing in str(refused.value)


def test_start_up_without_any_credential_names_both_variables(start_pgm: Callable[..., PgmProcess]) -> None:
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="axerve")
    assert "AXERVE_API_KEY, AXERVE_SHOP_LOGIN are not set" in str(refused.value)


REAL_API_KEY = os.environ.get("AXERVE_REAL_API_KEY")
REAL_SHOP_LOGIN = os.environ.get("AXERVE_REAL_SHOP_LOGIN")


@pytest.mark.real_sandbox
@pytest.mark.skipif(
    not (REAL_API_KEY and REAL_SHOP_LOGIN),
    reason="set AXERVE_REAL_API_KEY and AXERVE_REAL_SHOP_LOGIN (an Axerve sandbox shop) to run",
)
def test_real_sandbox_accepts_our_key_and_opens_a_paypal_payment(shop_id: str) -> None:
    adapter = build(
        Settings(
            public_url="https://pgm.example",
            provider_timeout_seconds=20,
            provider_env={
                "AXERVE_API_KEY": REAL_API_KEY or "",
                "AXERVE_SHOP_LOGIN": REAL_SHOP_LOGIN or "",
                "AXERVE_IS_SANDBOX": "true",
            },
        )
    )
    assert isinstance(adapter, AxerveAdapter)

    async def scenario() -> None:
        try:
            request = PayRequest(
                100, "EUR", shop_id, "pay-pal", f"pgm-real-{shop_id}", success_redirect_url="https://example.com/ok"
            )
            created = await adapter.pay(request)
            assert created.result is PayResultCode.REDIRECT_TO_URL
            assert created.payment_id
            looked_up = await adapter.payment_status(created.payment_id)
            assert looked_up.status.value == "PENDING"
        finally:
            await adapter.aclose()

    assert SANDBOX_BASE_URL.startswith("https://sandbox.gestpay.net")
    asyncio.run(scenario())
