"""Fnmpay through a real PGM process and the stateful Fnmpay fake, over real HTTP: payments with their
redirect to the hosted page (paid, declined, abandoned), pay-by-link, signed callbacks read back before
they are trusted (duplicate and forged ones), status and check, refunds answered 501, a lost answer
found again by the order id, bad input and start-up checks. A last test talks to Fnmpay's real sandbox
when FNMPAY_REAL_BASE_URL and its credentials are set."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgm.config import Settings
from pgm.providers.base import PayRequest, PayResultCode
from pgm.providers.fnmpay import FnmpayAdapter, build, signature, status_of
from tests.fakes.fnmpay import FnmpayFake, running_fnmpay_fake
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pay_requests import pay_request
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for

PAY_PATH = "/v3/fnmpay/credit-cards/pay"


@pytest.fixture(scope="module")
def fake() -> Iterator[FnmpayFake]:
    """The Fnmpay fake of this module."""
    with running_fnmpay_fake() as running:
        yield running


@pytest.fixture(scope="module")
def fnmpay_pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: FnmpayFake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with Fnmpay pointed at the fake; the fake's callbacks go to it."""
    with pgm_with_provider("fnmpay", fake, backend, tmp_path_factory.mktemp("pgm-fnmpay"), receiver[1]) as process:
        yield process


def pay_body(shop_id: str, amount: int = 2_500, **extra: Any) -> dict[str, Any]:
    """A card payment on Fnmpay's page."""
    return pay_request(shop_id, amount, **{"providerData": {"transactionType": "SALE"}, **extra})


def pay(pgm: PgmProcess, shop_id: str, amount: int = 2_500, **kwargs: Any) -> dict[str, Any]:
    """Create a payment and return the answer."""
    body = pay_body(shop_id, amount, **kwargs.pop("extra", {}))
    response = pgm.post(PAY_PATH, body, **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def lookups_of(fake: FnmpayFake, payment_id: str) -> int:
    """How many times the PGM read this payment back from Fnmpay."""
    return sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(f"/payments/{payment_id}"))


def paid(pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str) -> str:
    """A payment the payer completed (ACCEPTED); its id."""
    payment_id = str(pay(pgm, shop_id)["paymentId"])
    fake.pay(payment_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    return payment_id


def test_a_payment_redirects_to_fnmpay_and_the_payer_paying_accepts_it(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    provider_data = {
        "transactionType": "AUTH",
        "description": "Order 42",
        "language": "it",
        "customer": {"name": "Mario", "lastname": "Rossi", "email": "mario@example.com"},
        "addressDetail": {"country": "IT", "city": "Milano", "zip": "20121"},
        "products": [{"productName": "Ticket", "quantity": "1", "amount": "25.00"}],
    }
    answer = pay(fnmpay_pgm, shop_id, extra={"providerData": provider_data})
    assert answer["result"] == "REDIRECT_TO_URL"
    payment_id = answer["paymentId"]
    assert answer["redirectToUrl"] == f"{fake.base_url}/checkout/{payment_id}"
    (payment,) = fake.payments(shop_id)
    assert (payment["amount"], payment["transactionType"], payment["shopId"]) == (2_500, "AUTH", fake.shop_id)
    assert payment["customer"] == provider_data["customer"]
    assert payment["products"] == provider_data["products"]
    assert payment["cancelUrl"] == "https://shop.example/ko"
    assert fake.callback_url_of(payment_id) == f"{fnmpay_pgm.url}/v3/fnmpay/callback"
    create = next(call for call in fake.requests if call.method == "POST" and shop_id.encode() in call.body)
    assert create.headers["x-api-key"] == fake.api_key
    wait_for_status(notifications, shop_id, "PENDING")
    fake.pay(payment_id)
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert (status["paymentId"], status["providerName"], status["paymentMethod"]) == (
        payment_id,
        "fnmpay",
        "credit-cards",
    )
    assert fnmpay_pgm.get("/v3/fnmpay/status", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"


def test_the_request_body_wins_over_the_shop_and_callback_variables(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, shop_id: str
) -> None:
    hook = "https://merchant.example/fnmpay-hook"
    extra = {"providerData": {"transactionsType": "SALE", "shopId": fake.other_shop_id, "callbackUrl": hook}}
    payment_id = pay(fnmpay_pgm, shop_id, extra=extra)["paymentId"]
    assert fake.payment(payment_id)["shopId"] == fake.other_shop_id
    assert fake.callback_url_of(payment_id) == hook


def test_a_declined_card_fails_the_payment(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(fnmpay_pgm, shop_id)["paymentId"]
    fake.decline(payment_id)
    wait_for_status(notifications, shop_id, "FAILED")
    assert fnmpay_pgm.get("/v3/fnmpay/status", params={"paymentId": payment_id}).json()["status"] == "FAILED"


def test_the_payer_abandoning_the_page_fails_the_payment(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(fnmpay_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    fake.abandon(payment_id)
    wait_for_status(notifications, shop_id, "FAILED")
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "FAILED"]


def test_a_payment_link_is_paid_through_fnmpay(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    response = fnmpay_pgm.post("/v3/fnmpay/pay-by-link", {**pay_body(shop_id), "paymentMethod": "credit-cards"})
    assert response.status_code == 200, response.text
    answer = response.json()
    (payment,) = fake.payments(shop_id)
    assert answer["link"] == f"{fake.base_url}/link/{payment['paymentId']}"
    fake.pay(payment["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_payment_link_for_another_method_is_a_400(fnmpay_pgm: PgmProcess, shop_id: str) -> None:
    response = fnmpay_pgm.post("/v3/fnmpay/pay-by-link", {**pay_body(shop_id), "paymentMethod": "pay-pal"})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "paymentMethod"


def test_a_duplicate_callback_changes_nothing(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(fnmpay_pgm, fake, notifications, shop_id)
    sent = [n for n in fake.notifications if json.loads(n["body"])["paymentId"] == payment_id]
    assert fake.resend(sent[-1]) == 200
    assert fake.resend(sent[-1]) == 200
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_a_forged_callback_is_refused_and_a_signed_claim_is_read_back(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(fnmpay_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    claim = json.dumps({"eventId": "evt_forged", "paymentId": payment_id, "transactionCode": "00"}).encode()
    headers = {"Content-Type": "application/json"}
    # No signature, a wrong one, the signature of another body: refused.
    for given in ("", "0" * 64, fake.sign(claim + b" ")):
        response = fnmpay_pgm.client.post(
            "/v3/fnmpay/callback", content=claim, headers={**headers, "X-Fnmpay-Signature": given}
        )
        assert response.status_code == 401, response.text
    assert fnmpay_pgm.client.get("/v3/fnmpay/callback", params={"paymentId": payment_id}).status_code == 401
    # Even a correctly signed claim is only a hint: the PGM reads the payment back, still unpaid.
    before = lookups_of(fake, payment_id)
    signed = {**headers, "X-Fnmpay-Signature": fake.sign(claim)}
    assert fnmpay_pgm.client.post("/v3/fnmpay/callback", content=claim, headers=signed).status_code == 200
    wait_for(lambda: lookups_of(fake, payment_id) > before, what="the PGM reading the payment back")
    assert fnmpay_pgm.get("/v3/fnmpay/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]


def test_status_reads_the_payment_and_check_also_notifies(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.webhook_url, webhook = None, fake.webhook_url  # Fnmpay's callbacks never arrive
    try:
        payment_id = pay(fnmpay_pgm, shop_id)["paymentId"]
        assert fnmpay_pgm.get("/v3/fnmpay/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
        fake.pay(payment_id)
        checked = fnmpay_pgm.get("/v3/fnmpay/check", params={"paymentId": payment_id}).json()
    finally:
        fake.webhook_url = webhook
    assert (checked["status"], checked["shopTransactionId"]) == ("ACCEPTED", shop_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_payment_made_before_the_switch_is_adopted_by_its_id(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, shop_id: str
) -> None:
    payment_id = fake.create_paid_payment(shop_id, 9_900)
    status = fnmpay_pgm.get("/v3/fnmpay/status", params={"paymentId": payment_id}).json()
    assert (status["status"], status["shopTransactionId"]) == ("ACCEPTED", shop_id)


def test_a_signed_callback_for_a_payment_made_before_the_switch_adopts_and_notifies_it(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = fake.create_paid_payment(shop_id, 4_200)
    body = json.dumps({"eventId": f"evt_{payment_id}", "paymentId": payment_id, "transactionCode": "00"}).encode()
    headers = {"Content-Type": "application/json", "X-Fnmpay-Signature": fake.sign(body)}
    assert fnmpay_pgm.client.post("/v3/fnmpay/callback", content=body, headers=headers).status_code == 200
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert status["paymentId"] == payment_id


def test_the_callback_signature_is_hex_hmac_sha256_of_the_body() -> None:
    # Known answer computed independently: `openssl dgst -sha256 -hmac fnmpay-test-key` of the body.
    body = b'{"eventId":"evt_1","paymentId":"p1"}'
    assert signature("fnmpay-test-key", body) == "aadfef304e6c01337e5fac801c0a40d192be1fe36eba5162d1f1adfc0d261751"


def test_status_of_a_payment_fnmpay_does_not_know_is_404(fnmpay_pgm: PgmProcess) -> None:
    response = fnmpay_pgm.get("/v3/fnmpay/status", params={"paymentId": "0" * 24})
    assert response.status_code == 404, response.text


def test_a_refund_answers_501_naming_fnmpay_and_reaches_nobody(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(fnmpay_pgm, fake, notifications, shop_id)

    def writes() -> int:
        # Reconciliation looks pending payments up (GET) in the background meanwhile; a refund would write.
        return sum(1 for call in fake.requests if call.method != "GET")

    calls = writes()
    for amount in (1_000, 2_500, 2_501):  # partial, total, over: Mia documents no Fnmpay refund
        response = fnmpay_pgm.post("/v3/fnmpay/refund", {"amount": amount, "currency": "EUR", "paymentId": payment_id})
        assert response.status_code == 501, response.text
        assert "fnmpay" in response.text
        assert "refund" in response.text
    assert writes() == calls


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v3/fnmpay/credit-cards/subscription/schedule",
            {**pay_body("order-x"), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}},
        ),
        ("/v3/fnmpay/pay-pal/pay", pay_body("order-x")),
    ],
)
def test_what_fnmpay_does_not_offer_answers_501_naming_it(fnmpay_pgm: PgmProcess, path: str, body: Any) -> None:
    response = fnmpay_pgm.post(path, body)
    assert response.status_code == 501, response.text
    assert "fnmpay" in response.text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"successRedirectUrl": None}, "successRedirectUrl"),
        ({"providerData": {}}, "providerData.transactionType"),
        ({"providerData": {"transactionType": "CAPTURE"}}, "providerData.transactionType"),
        ({"providerData": {"transactionType": "SALE", "shopId": 7}}, "providerData.shopId"),
        ({"providerData": {"transactionType": "SALE", "callbackUrl": "ftp://x"}}, "providerData.callbackUrl"),
        ({"providerData": {"transactionType": "SALE", "callbackUrl": "http://[::1"}}, "providerData.callbackUrl"),
        ({"providerData": {"transactionType": "SALE", "cancelUrl": "http://a b"}}, "providerData.cancelUrl"),
        ({"providerData": {"transactionType": "SALE", "customer": "Mario"}}, "providerData.customer"),
        ({"providerData": {"transactionType": "SALE", "customer": {"age": "40"}}}, "providerData.customer"),
        (
            {"providerData": {"transactionType": "SALE", "products": [{"quantity": 1}]}},
            "providerData.products[0].quantity",
        ),
        ({"providerData": {"transactionType": "SALE", "description": "x" * 300}}, "providerData.description"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_before_any_call(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, shop_id: str, extra: dict[str, Any], field: str
) -> None:
    response = fnmpay_pgm.post(PAY_PATH, {**pay_body(shop_id), **extra})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert not [call for call in fake.requests if shop_id.encode() in call.body]


def test_provider_5xx_leaves_the_payment_unknown_and_reconciliation_fails_it(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.fail_next(500)
    assert pay(fnmpay_pgm, shop_id)["result"] == "PENDING"
    wait_for_status(notifications, shop_id, "FAILED")
    assert fake.payments(shop_id) == []


def test_a_lost_answer_is_found_again_by_its_order_id_and_a_retry_creates_no_second_payment(
    fnmpay_pgm: PgmProcess, fake: FnmpayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.delay_next(2.5)  # longer than PGM_PROVIDER_TIMEOUT_SECONDS (1 s): the answer is lost
    headers = {"Idempotency-Key": f"retry-{shop_id}"}
    answer = pay(fnmpay_pgm, shop_id, headers=headers)
    (payment,) = fake.payments(shop_id)
    # Fnmpay takes no idempotency key: the PGM finds the payment by its orderId and keeps its id.
    assert answer["result"] == "PENDING"
    assert answer["paymentId"] == payment["paymentId"]
    assert pay(fnmpay_pgm, shop_id, headers=headers)["paymentId"] == payment["paymentId"]
    assert len(fake.payments(shop_id)) == 1
    fake.pay(payment["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_an_api_key_fnmpay_does_not_know_is_refused(
    start_pgm: Callable[..., PgmProcess], fake: FnmpayFake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="fnmpay", **{**fake.env(), "FNMPAY_API_KEY": "revoked-key"})
    answer = pay(pgm, shop_id)
    assert answer["result"] == "KO"
    assert "401" in answer["resultDescription"]
    assert fake.payments(shop_id) == []


@pytest.mark.parametrize("missing", ["FNMPAY_BASE_URL", "FNMPAY_API_KEY", "FNMPAY_MERCHANT_ID", "FNMPAY_SHOP_ID"])
def test_start_up_is_refused_without_a_required_variable(
    start_pgm: Callable[..., PgmProcess], fake: FnmpayFake, missing: str
) -> None:
    env = {name: value for name, value in fake.env().items() if name != missing}
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,fnmpay", **env)
    assert missing in str(refused.value)


def test_the_status_table_is_mias() -> None:
    assert [status_of(code).value for code in ("00", "05", "17", None, "")] == [
        "ACCEPTED",
        "FAILED",
        "FAILED",
        "PENDING",
        "PENDING",
    ]


REAL_VARIABLES = ("FNMPAY_REAL_BASE_URL", "FNMPAY_REAL_API_KEY", "FNMPAY_REAL_MERCHANT_ID", "FNMPAY_REAL_SHOP_ID")


@pytest.mark.real_sandbox
@pytest.mark.skipif(
    not all(os.environ.get(name) for name in REAL_VARIABLES),
    reason=f"set {', '.join(REAL_VARIABLES)} to run against Fnmpay's sandbox",
)
def test_real_sandbox_creates_a_payment_and_reads_it_back(shop_id: str) -> None:
    adapter = build(
        Settings(
            public_url="https://pgm.example",
            provider_timeout_seconds=20,
            provider_env={name.replace("_REAL", ""): os.environ[name] for name in REAL_VARIABLES},
        )
    )
    assert isinstance(adapter, FnmpayAdapter)

    async def scenario() -> None:
        try:
            request = PayRequest(
                2_500,
                "EUR",
                shop_id,
                "credit-cards",
                f"pgm-real-{shop_id}",
                success_redirect_url="https://example.com/ok",
                provider_data={"transactionType": "SALE"},
            )
            created = await adapter.pay(request)
            assert created.result is PayResultCode.REDIRECT_TO_URL
            assert created.payment_id
            looked_up = await adapter.payment_status(created.payment_id)
            assert looked_up.status.value == "PENDING"
        finally:
            await adapter.aclose()

    asyncio.run(scenario())
