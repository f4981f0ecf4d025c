"""Scalapay through a real PGM process and the stateful Scalapay fake, over real HTTP: orders with their
checkout redirect, capture when the payer approves (signed callbacks, read back before they are
trusted; duplicate and forged ones), a capture Scalapay declines, the payer abandoning the checkout,
partial and total refunds and an over-refund refused, status and check, a lost answer found again with
its key, and start-up checks. A last test talks to Scalapay's integration environment when
SCALAPAY_REAL_API_KEY is set."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pgm.config import Settings
from pgm.providers.base import PayRequest, PayResultCode
from pgm.providers.scalapay import SANDBOX_BASE_URL, ScalapayAdapter, build, to_decimal, to_minor
from tests.fakes.recording import calls_naming
from tests.fakes.scalapay import ScalapayFake, running_scalapay_fake
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for

CONSUMER = {"givenNames": "Mario", "surname": "Rossi", "email": "mario@example.com"}


@pytest.fixture(scope="module")
def fake() -> Iterator[ScalapayFake]:
    """The Scalapay fake of this module."""
    with running_scalapay_fake() as running:
        yield running


@pytest.fixture(scope="module")
def scalapay_pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: ScalapayFake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with Scalapay pointed at the fake; the fake's webhooks go to it."""
    directory = tmp_path_factory.mktemp("pgm-scalapay")
    with pgm_with_provider("scalapay", fake, backend, directory, receiver[1]) as process:
        yield process


def pay_body(shop_id: str, amount: int = 30_000, **extra: Any) -> dict[str, Any]:
    """An order of `amount` cents."""
    return {
        "amount": amount,
        "currency": "EUR",
        "shopTransactionId": shop_id,
        "providerData": {"consumer": CONSUMER},
        **extra,
    }


def pay(pgm: PgmProcess, shop_id: str, amount: int = 30_000, **kwargs: Any) -> dict[str, Any]:
    """Create an order and return the answer."""
    response = pgm.post("/v3/scalapay/scalapay/pay", pay_body(shop_id, amount, **kwargs.pop("extra", {})), **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def charged(pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str) -> str:
    """An order approved by the payer and captured (the payment ACCEPTED); its token."""
    token = str(pay(pgm, shop_id)["paymentId"])
    fake.approve(token)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    return token


def refund(pgm: PgmProcess, token: str, amount: int) -> httpx.Response:
    """POST /v3/scalapay/refund."""
    return pgm.post("/v3/scalapay/refund", {"amount": amount, "currency": "EUR", "paymentId": token})


def test_an_order_redirects_to_scalapay_and_approval_captures_it(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    items = [{"quantity": 2, "price": {"amount": "150.00", "currency": "EUR"}, "name": "Shoes", "sku": "S-1"}]
    shipping = {"countryCode": "IT", "name": "Mario Rossi", "postCode": "20100", "line1": "Via Roma 1"}
    answer = pay(
        scalapay_pgm,
        shop_id,
        extra={
            "providerData": {"consumer": CONSUMER, "items": items, "shipping": shipping},
            "successRedirectUrl": "https://shop.example/ok",
        },
    )
    assert answer["result"] == "REDIRECT_TO_URL"
    token = answer["paymentId"]
    assert answer["redirectToUrl"] == f"{fake.base_url}/checkout?token={token}"
    create = next(call for call in fake.requests if call.path == "/v2/orders" and shop_id.encode() in call.body)
    assert create.headers["authorization"] == f"Bearer {fake.api_key}"
    sent = json.loads(create.body)
    assert sent["totalAmount"] == {"amount": "300.00", "currency": "EUR"}
    assert sent["shipping"]["postcode"] == "20100"
    # The request's URL wins over SCALAPAY_SUCCESS_REDIRECT_URL; the failure one comes from the variable.
    assert sent["merchant"] == {
        "redirectConfirmUrl": "https://shop.example/ok",
        "redirectCancelUrl": "https://shop.example/scalapay/ko",
    }
    wait_for_status(notifications, shop_id, "PENDING")
    fake.approve(token)  # the `authorized` webhook: the PGM reads the order back and captures it
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert (status["paymentId"], status["providerName"]) == (token, "scalapay")
    assert fake.order(token)["status"] == "charged"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_pay_without_the_method_segment_means_scalapay(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, shop_id: str
) -> None:
    response = scalapay_pgm.post("/v3/scalapay/pay", pay_body(shop_id))
    assert response.status_code == 200, response.text
    assert len(fake.payments(shop_id)) == 1


def test_a_capture_scalapay_declines_fails_the_payment(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = pay(scalapay_pgm, shop_id)["paymentId"]
    fake.decline_next_capture()
    fake.approve(token)
    wait_for_status(notifications, shop_id, "FAILED")
    assert scalapay_pgm.get("/v3/scalapay/status", params={"paymentId": token}).json()["status"] == "FAILED"


def test_the_payer_abandoning_the_checkout_fails_the_payment(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = pay(scalapay_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    fake.abandon(token)
    wait_for_status(notifications, shop_id, "FAILED")
    assert not any(call.path == "/v2/payments/capture" and token.encode() in call.body for call in fake.requests)


def test_partial_and_total_refund_then_over_refund_refused(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = charged(scalapay_pgm, fake, notifications, shop_id)
    first = refund(scalapay_pgm, token, 10_000)
    assert first.status_code == 200, first.text
    assert first.json()["result"] == "OK"
    assert fake.order(token)["status"] == "partially_refunded"
    refund_calls = sum(1 for call in fake.requests if call.path.endswith("/refund"))
    over = refund(scalapay_pgm, token, 20_001)
    assert (over.status_code, over.json()["result"]) == (200, "KO"), over.text
    assert "exceeds" in over.json()["resultDescription"]
    assert sum(1 for call in fake.requests if call.path.endswith("/refund")) == refund_calls  # never sent
    rest = refund(scalapay_pgm, token, 20_000)
    assert rest.status_code == 200, rest.text
    assert rest.json()["result"] == "OK"
    order = fake.order(token)
    assert order["status"] == "refunded"
    assert [r["amount"]["amount"] for r in order["refunds"]] == ["100.00", "200.00"]
    assert refund(scalapay_pgm, token, 1).json()["result"] == "KO"
    # Refunded, the payment stays ACCEPTED: the refunds are recorded on their own.
    assert scalapay_pgm.get("/v3/scalapay/status", params={"paymentId": token}).json()["status"] == "ACCEPTED"


def test_a_duplicate_webhook_changes_nothing(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = charged(scalapay_pgm, fake, notifications, shop_id)
    sent = [n for n in fake.notifications if token.encode() in n["body"]]

    def captures() -> int:
        return sum(1 for call in fake.requests if call.path == "/v2/payments/capture" and token.encode() in call.body)

    before = captures()
    assert fake.resend(sent[0]) == 200  # the `authorized` webhook once more: the order is charged already
    assert fake.resend(sent[-1]) == 200
    assert captures() == before
    assert fake.order(token)["status"] == "charged"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_a_forged_or_stale_webhook_is_refused(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    token = pay(scalapay_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    body = json.dumps({"orderToken": token, "status": "charged", "merchantReference": shop_id}).encode()
    url = "/v3/scalapay/callback"
    forged = fake.sign(body, key="not-the-api-key")
    assert scalapay_pgm.client.post(url, content=body, headers=forged).status_code == 401
    stale = fake.sign(body, timestamp=str(int(time.time()) - 3600))
    assert scalapay_pgm.client.post(url, content=body, headers=stale).status_code == 401
    tampered = fake.sign(body)
    assert (
        scalapay_pgm.client.post(url, content=body.replace(b"charged", b"refunded"), headers=tampered).status_code
        == 401
    )
    assert scalapay_pgm.client.post(url, content=body).status_code == 401
    assert scalapay_pgm.client.get(url, params={"orderToken": token}).status_code == 401
    # Signed but claiming what is not so: only a hint, the order read back is still `created`.
    assert scalapay_pgm.client.post(url, content=body, headers=fake.sign(body)).status_code == 200
    assert scalapay_pgm.get("/v3/scalapay/status", params={"paymentId": token}).json()["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]


def test_check_captures_an_approved_order_whose_webhook_never_came(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.webhook_url, webhook = None, fake.webhook_url
    try:
        token = pay(scalapay_pgm, shop_id)["paymentId"]
        fake.approve(token)
        checked = scalapay_pgm.get("/v3/scalapay/check", params={"paymentId": token}).json()
    finally:
        fake.webhook_url = webhook
    assert (checked["status"], checked["shopTransactionId"]) == ("ACCEPTED", shop_id)
    assert fake.order(token)["status"] == "charged"
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_an_order_charged_before_the_switch_is_adopted_by_its_token(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, shop_id: str
) -> None:
    token = fake.create_charged_order(shop_id, 45_000)
    status = scalapay_pgm.get("/v3/scalapay/status", params={"paymentId": token}).json()
    assert (status["status"], status["shopTransactionId"]) == ("ACCEPTED", shop_id)


def test_status_of_an_order_scalapay_does_not_know_is_404(scalapay_pgm: PgmProcess) -> None:
    response = scalapay_pgm.get("/v3/scalapay/status", params={"paymentId": "UNKNOWN0TOKEN"})
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v3/scalapay/pay-by-link", pay_body("order-x")),
        (
            "/v3/scalapay/scalapay/subscription/schedule",
            {**pay_body("order-x"), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}},
        ),
        ("/v3/scalapay/credit-cards/pay", pay_body("order-x")),
    ],
)
def test_what_scalapay_does_not_offer_answers_501_naming_it(scalapay_pgm: PgmProcess, path: str, body: Any) -> None:
    response = scalapay_pgm.post(path, body)
    assert response.status_code == 501, response.text
    assert "scalapay" in response.text


@pytest.mark.parametrize(
    ("provider_data", "field"),
    [
        ({}, "providerData.consumer"),
        ({"consumer": {"givenNames": "Mario"}}, "providerData.consumer.surname"),
        ({"consumer": CONSUMER, "items": []}, "providerData.items"),
        ({"consumer": CONSUMER, "items": [{"quantity": 0, "name": "x"}]}, "providerData.items[0].quantity"),
        (
            {"consumer": CONSUMER, "items": [{"quantity": 1, "name": "x", "price": {"amount": "1.001"}}]},
            "providerData.items[0].price",
        ),
        ({"consumer": CONSUMER, "shipping": {"countryCode": "IT"}}, "providerData.shipping.name"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_before_any_call(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, shop_id: str, provider_data: dict[str, Any], field: str
) -> None:
    response = scalapay_pgm.post("/v3/scalapay/scalapay/pay", {**pay_body(shop_id), "providerData": provider_data})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert not calls_naming(fake.requests, shop_id)


def test_a_lost_answer_is_found_again_with_its_key_and_a_retry_creates_no_second_order(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.delay_next(2.5)  # longer than PGM_PROVIDER_TIMEOUT_SECONDS (1 s): the answer is lost
    headers = {"Idempotency-Key": f"retry-{shop_id}"}
    answer = pay(scalapay_pgm, shop_id, headers=headers)
    (order,) = fake.payments(shop_id)
    assert answer["result"] == "PENDING"
    wait_for(
        lambda: scalapay_pgm.get("/v3/scalapay/status", params={"paymentId": order["token"]}).status_code == 200,
        what="the lost order reconciled by asking again with its key",
    )
    assert pay(scalapay_pgm, shop_id, headers=headers)["paymentId"] == order["token"]
    assert len(fake.payments(shop_id)) == 1
    fake.approve(order["token"])
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_provider_5xx_leaves_the_payment_unknown_and_reconciliation_settles_it(
    scalapay_pgm: PgmProcess, fake: ScalapayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.fail_next(500)
    assert pay(scalapay_pgm, shop_id)["result"] == "PENDING"
    # The order was never made: asked again with its key, Scalapay makes it now, and the payer can go on.
    wait_for(lambda: len(fake.payments(shop_id)) == 1, what="the order made when asked again")


def test_an_api_key_scalapay_does_not_know_is_refused(
    start_pgm: Callable[..., PgmProcess], fake: ScalapayFake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="scalapay", **{**fake.env(), "SCALAPAY_API_KEY": "revoked-key"})
    answer = pay(pgm, shop_id)
    assert answer["result"] == "KO"
    assert "401" in answer["resultDescription"]
    assert fake.payments(shop_id) == []


@pytest.mark.parametrize(
    "missing",
    ["SCALAPAY_BASE_PATH", "SCALAPAY_API_KEY", "SCALAPAY_SUCCESS_REDIRECT_URL", "SCALAPAY_FAILURE_REDIRECT_URL"],
)
def test_start_up_is_refused_without_a_required_variable(
    start_pgm: Callable[..., PgmProcess], fake: ScalapayFake, missing: str
) -> None:
    env = {name: value for name, value in fake.env().items() if name != missing}
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,scalapay", **env)
    assert missing in str(refused.value)


def test_base_path_names_an_environment_or_a_url() -> None:
    def base(value: str) -> str:
        env = {
            "SCALAPAY_BASE_PATH": value,
            "SCALAPAY_API_KEY": "k",
            "SCALAPAY_SUCCESS_REDIRECT_URL": "https://a.example",
            "SCALAPAY_FAILURE_REDIRECT_URL": "https://b.example",
        }
        adapter = build(Settings(provider_env=env))
        assert isinstance(adapter, ScalapayAdapter)
        url = adapter.base_url
        asyncio.run(adapter.aclose())
        return url

    assert base("integration") == SANDBOX_BASE_URL
    assert base("production") == "https://api.scalapay.com"
    assert base("https://proxy.example/") == "https://proxy.example"
    assert (to_decimal(1), to_decimal(123_456), to_minor("12.50"), to_minor("1.005")) == ("0.01", "1234.56", 1250, None)


@pytest.mark.real_sandbox
@pytest.mark.skipif(
    not os.environ.get("SCALAPAY_REAL_API_KEY"),
    reason="set SCALAPAY_REAL_API_KEY (Scalapay's published integration key) to run against its integration API",
)
def test_real_sandbox_creates_an_order_with_a_checkout(shop_id: str) -> None:
    adapter = build(
        Settings(
            provider_timeout_seconds=20,
            provider_env={
                "SCALAPAY_BASE_PATH": os.environ.get("SCALAPAY_REAL_BASE_PATH", "integration"),
                "SCALAPAY_API_KEY": os.environ["SCALAPAY_REAL_API_KEY"],
                "SCALAPAY_SUCCESS_REDIRECT_URL": "https://example.com/ok",
                "SCALAPAY_FAILURE_REDIRECT_URL": "https://example.com/ko",
            },
        )
    )

    async def scenario() -> None:
        try:
            request = PayRequest(
                30_000,
                "EUR",
                shop_id,
                "scalapay",
                f"pgm-real-{shop_id}",
                provider_data={"consumer": CONSUMER},
            )
            created = await adapter.pay(request)
            assert created.result is PayResultCode.REDIRECT_TO_URL
            assert created.payment_id
            assert created.redirect_url
            looked_up = await adapter.payment_status(created.payment_id)
            assert looked_up.status.value == "PENDING"
        finally:
            await adapter.aclose()

    asyncio.run(scenario())
