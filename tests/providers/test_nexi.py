"""Nexi XPay through a real PGM process and the stateful Nexi fake, over real HTTP: hosted-page orders
(paid, declined, 3-D Secure, abandoned), partial and total refunds, cancellation of an authorization
not captured, recurring contracts (start, then merchant-initiated pays), status and check, notifications
trusted only after reading the order back (duplicate and forged ones), lost answers found again, and
start-up checks. A last test talks to Nexi's real sandbox when an API key is given."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pgm.config import Settings
from pgm.providers.base import PayRequest, PayResultCode
from pgm.providers.nexi import SANDBOX_BASE_URL, NexiAdapter, build, notification_signature
from tests.fakes.nexi import NexiFake, running_nexi_fake
from tests.fakes.recording import calls_naming
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pay_requests import pay_request
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for


@pytest.fixture(scope="module")
def fake() -> Iterator[NexiFake]:
    """The Nexi fake of this module."""
    with running_nexi_fake() as running:
        yield running


@pytest.fixture(scope="module")
def nexi_pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: NexiFake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with Nexi pointed at the fake; the fake's notifications go to it."""
    with pgm_with_provider("nexi", fake, backend, tmp_path_factory.mktemp("pgm-nexi"), receiver[1]) as process:
        yield process


def pay_body(shop_id: str, amount: int = 1000, **extra: Any) -> dict[str, Any]:
    """A pay request for Nexi's hosted page."""
    return pay_request(shop_id, amount, **extra)


def pay(pgm: PgmProcess, shop_id: str, amount: int = 1000, **kwargs: Any) -> dict[str, Any]:
    """Pay and return the answer."""
    body = pay_body(shop_id, amount, **kwargs.pop("extra", {}))
    response = pgm.post("/v3/nexi/credit-cards/pay", body, **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def lookups_of(fake: NexiFake, order_id: str) -> int:
    """How many times the PGM read this order back from Nexi."""
    return sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(f"/orders/{order_id}"))


def paid(
    pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str, amount: int, **extra: Any
) -> str:
    """An accepted payment's order id."""
    order_id = str(pay(pgm, shop_id, amount, extra=extra)["paymentId"])
    fake.approve(order_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    return order_id


def refund(pgm: PgmProcess, order_id: str, amount: int, **kwargs: Any) -> dict[str, Any]:
    """Refund and return the answer."""
    response = pgm.post("/v3/nexi/refund", {"amount": amount, "currency": "EUR", "paymentId": order_id}, **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_pay_redirects_to_the_hosted_page_and_the_notification_is_confirmed_by_reading_the_order(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(nexi_pgm, shop_id, 1299, extra={"providerData": {"language": "eng"}})
    assert answer["result"] == "REDIRECT_TO_URL"
    order_id = answer["paymentId"]
    assert httpx.URL(answer["redirectToUrl"]).path == f"/hpp/{order_id}"
    assert httpx.URL(answer["redirectToUrl"]).params["language"] == "eng"
    (order,) = fake.payments(shop_id)
    assert order["orderStatus"]["order"]["amount"] == "1299"
    assert order["operations"] == []
    create = next(call for call in fake.requests if call.method == "POST" and shop_id.encode() in call.body)
    assert create.headers["x-api-key"] == fake.api_key
    wait_for_status(notifications, shop_id, "PENDING")
    before = lookups_of(fake, order_id)
    fake.approve(order_id)
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert (status["paymentId"], status["providerName"], status["paymentMethod"]) == (order_id, "nexi", "credit-cards")
    assert lookups_of(fake, order_id) > before
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_every_call_carries_a_fresh_correlation_id(nexi_pgm: PgmProcess, fake: NexiFake, shop_id: str) -> None:
    order_id = pay(nexi_pgm, shop_id)["paymentId"]
    nexi_pgm.get("/v3/nexi/status", params={"paymentId": order_id})
    ids = [
        call.headers["correlation-id"]
        for call in fake.requests
        if order_id in call.path or shop_id.encode() in call.body
    ]
    assert len(ids) == len(set(ids)) >= 2


def test_a_declined_card_fails_the_payment(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    order_id = pay(nexi_pgm, shop_id)["paymentId"]
    fake.decline(order_id)
    wait_for_status(notifications, shop_id, "FAILED")
    assert nexi_pgm.get("/v3/nexi/status", params={"paymentId": order_id}).json()["status"] == "FAILED"


def test_three_d_secure_keeps_the_payment_pending_until_the_authorization(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    order_id = pay(nexi_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    before = lookups_of(fake, order_id)
    fake.three_ds(order_id)
    wait_for(lambda: lookups_of(fake, order_id) > before, what="the PGM reading the order back")
    assert nexi_pgm.get("/v3/nexi/status", params={"paymentId": order_id}).json()["status"] == "PENDING"
    fake.approve(order_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_failed_three_d_secure_challenge_fails_the_payment(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    order_id = pay(nexi_pgm, shop_id)["paymentId"]
    fake.fail_three_ds(order_id)
    wait_for_status(notifications, shop_id, "FAILED")


def test_the_payer_abandoning_the_hosted_page_fails_the_payment(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    order_id = pay(nexi_pgm, shop_id)["paymentId"]
    fake.cancel(order_id)
    wait_for_status(notifications, shop_id, "FAILED")
    assert fake.order(order_id)["operations"][0]["operationResult"] == "CANCELED"


def test_a_duplicate_notification_changes_nothing(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    order_id = paid(nexi_pgm, fake, notifications, shop_id, 1000)
    sent = [n for n in fake.notifications if n["body"]["operation"]["orderId"] == order_id]
    assert fake.resend(sent[-1]) == 200
    assert fake.resend(sent[-1]) == 200
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_a_forged_notification_is_refused_or_changes_nothing(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    order_id = pay(nexi_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    claim = {
        "eventId": "forged-1",
        "eventTime": "2026-12-03T10:00:00.000Z",
        "securityToken": "0" * 32,
        "operation": {
            "orderId": order_id,
            "operationId": "1",
            "operationType": "AUTHORIZATION",
            "operationResult": "EXECUTED",
        },
    }
    # Without our signature of the order in the URL, or with another order's: refused.
    assert nexi_pgm.client.post("/v3/nexi/callback", json=claim).status_code == 401
    other = notification_signature(fake.api_key, "P" + "0" * 26)
    assert nexi_pgm.client.post(f"/v3/nexi/callback?pgmSignature={other}", json=claim).status_code == 401
    # With the right URL but not Nexi's securityToken for the order: refused as well.
    signed = f"/v3/nexi/callback?pgmSignature={notification_signature(fake.api_key, order_id)}"
    assert nexi_pgm.client.post(signed, json=claim).status_code == 401
    assert nexi_pgm.client.post(signed, content=b"not json").status_code == 401
    assert nexi_pgm.get("/v3/nexi/status", params={"paymentId": order_id}).json()["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]


def test_a_notification_whose_claim_nexi_does_not_confirm_changes_nothing(
    start_pgm: Callable[..., PgmProcess], receiver: tuple[RecordingReceiver, str], fake: NexiFake, shop_id: str
) -> None:
    # A PGM that did not create the order (a restarted replica) knows no securityToken: the claim is a
    # hint, and the order read back from Nexi decides.
    first = start_pgm(ENABLED_PROVIDERS="nexi", PAYMENT_CALLBACK_URL=f"{receiver[1]}/payment-status", **fake.env())
    order_id = pay(first, shop_id)["paymentId"]
    claim = {
        "eventId": f"claim-{shop_id}",
        "eventTime": "2026-12-03T10:00:00.000Z",
        "securityToken": "forged",
        "operation": {
            "orderId": order_id,
            "operationId": "1",
            "operationType": "AUTHORIZATION",
            "operationResult": "EXECUTED",
        },
    }
    first.stop()
    second = start_pgm(ENABLED_PROVIDERS="nexi", PAYMENT_CALLBACK_URL=f"{receiver[1]}/payment-status", **fake.env())
    before = lookups_of(fake, order_id)
    signed = f"/v3/nexi/callback?pgmSignature={notification_signature(fake.api_key, order_id)}"
    assert second.client.post(signed, json=claim).status_code == 200
    wait_for(lambda: lookups_of(fake, order_id) > before, what="the PGM reading the order back")
    assert second.get("/v3/nexi/status", params={"paymentId": order_id}).json()["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(receiver[0], shop_id)] == ["PENDING"]


def test_partial_then_total_refund_then_over_refund_refused(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    order_id = paid(nexi_pgm, fake, notifications, shop_id, 1000)
    first = refund(nexi_pgm, order_id, 400)
    assert first["result"] == "OK"
    assert refund(nexi_pgm, order_id, 600)["result"] == "OK"
    refused = refund(nexi_pgm, order_id, 1)
    assert refused["result"] == "KO"
    assert "exceeds the refundable amount" in refused["resultDescription"]
    (order,) = fake.payments(shop_id)
    assert [(r["operationAmount"], r["operationResult"]) for r in order["refunds"]] == [
        ("400", "EXECUTED"),
        ("600", "EXECUTED"),
    ]
    assert first["refundId"] == order["refunds"][0]["operationId"]
    refunds = [call for call in fake.requests if call.path.endswith("/refunds")]
    assert all(call.headers.get("idempotency-key") for call in refunds)
    wait_for(
        lambda: sum(1 for s in statuses_for(notifications, shop_id) if s["action"] == "REFUND") >= 2,
        what="two refund notifications",
    )


def test_an_authorization_not_captured_is_cancelled_as_a_whole(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    order_id = paid(nexi_pgm, fake, notifications, shop_id, 800, providerData={"captureType": "EXPLICIT"})
    partial = refund(nexi_pgm, order_id, 300)
    assert partial["result"] == "KO"
    assert "cannot partially refund" in partial["resultDescription"]
    total = refund(nexi_pgm, order_id, 800)
    assert total["result"] == "OK"
    (order,) = fake.payments(shop_id)
    assert [(r["operationType"], r["operationResult"]) for r in order["refunds"]] == [("VOID", "VOIDED")]
    assert total["refundId"] == order["refunds"][0]["operationId"]


def test_recurring_contract_start_then_merchant_initiated_pays(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    start = nexi_pgm.post(
        "/v3/nexi/credit-cards/subscription/start",
        {**pay_body(shop_id, 999), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}},
    ).json()
    assert start["result"] == "REDIRECT_TO_URL"
    contract_id = start["subscriptionToken"]
    create = next(call for call in fake.requests if call.path.endswith("/orders/hpp") and shop_id.encode() in call.body)
    recurrence = httpx.Response(200, content=create.body).json()["paymentSession"]["recurrence"]
    assert recurrence == {"action": "CONTRACT_CREATION", "contractId": contract_id, "contractType": "MIT_UNSCHEDULED"}
    fake.approve(start["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert fake.contracts[contract_id]["status"] == "ACTIVE"

    charge_id = f"{shop_id}-2"
    charge = nexi_pgm.post(
        "/v3/nexi/credit-cards/subscription/pay",
        {**pay_body(charge_id, 999), "subscriptionInfo": {"token": contract_id}},
    ).json()
    assert charge["result"] == "OK"
    assert charge["subscriptionToken"] == contract_id
    (order,) = fake.payments(charge_id)
    assert (order["orderStatus"]["order"]["orderId"], order["operations"][0]["operationResult"]) == (
        charge["paymentId"],
        "EXECUTED",
    )
    wait_for_status(notifications, charge_id, "ACCEPTED")
    # The merchant-initiated payment is refunded like any other.
    assert refund(nexi_pgm, charge["paymentId"], 999)["result"] == "OK"

    fake.decline_next_mit()
    declined = nexi_pgm.post(
        "/v3/nexi/credit-cards/subscription/pay",
        {**pay_body(f"{shop_id}-3", 999), "subscriptionInfo": {"token": contract_id}},
    ).json()
    assert declined["result"] == "KO"
    assert "DECLINED" in declined["resultDescription"]


def test_a_contract_never_paid_cannot_be_charged(nexi_pgm: PgmProcess, fake: NexiFake, shop_id: str) -> None:
    start = nexi_pgm.post(
        "/v3/nexi/credit-cards/subscription/start",
        {**pay_body(shop_id), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}},
    ).json()
    answer = nexi_pgm.post(
        "/v3/nexi/credit-cards/subscription/pay",
        {**pay_body(f"{shop_id}-2"), "subscriptionInfo": {"token": start["subscriptionToken"]}},
    ).json()
    assert answer["result"] == "KO"
    assert "not an active contract" in answer["resultDescription"]


def test_status_reads_the_order_and_check_also_notifies(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.webhook_url, webhook = None, fake.webhook_url  # the payer pays, the notification never arrives
    try:
        order_id = pay(nexi_pgm, shop_id)["paymentId"]
        assert nexi_pgm.get("/v3/nexi/status", params={"paymentId": order_id}).json()["status"] == "PENDING"
        fake.approve(order_id)
        checked = nexi_pgm.get("/v3/nexi/check", params={"paymentId": order_id}).json()
    finally:
        fake.webhook_url = webhook
    assert checked["status"] == "ACCEPTED"
    assert checked["shopTransactionId"] == shop_id
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_an_order_paid_before_the_switch_is_adopted_with_what_nexi_refunded_already(
    nexi_pgm: PgmProcess, fake: NexiFake, shop_id: str
) -> None:
    order_id = fake.create_paid_order(shop_id, 1000)
    status = nexi_pgm.get("/v3/nexi/status", params={"paymentId": order_id}).json()
    assert (status["status"], status["shopTransactionId"]) == ("ACCEPTED", shop_id)
    assert refund(nexi_pgm, order_id, 300)["result"] == "OK"
    over = refund(nexi_pgm, order_id, 701)
    assert over["result"] == "KO"
    assert "exceeds the refundable amount" in over["resultDescription"]
    # Partly refunded in Nexi's back office before the switch: only what is left can be refunded here.
    other = fake.create_paid_order(f"{shop_id}-b", 500)
    fake.refund_directly(other, 300)
    calls = len(fake.requests)
    refused = refund(nexi_pgm, other, 201)
    assert refused["result"] == "KO"
    assert "exceeds the refundable amount" in refused["resultDescription"]  # refused here, not by Nexi
    assert not [call for call in fake.requests[calls:] if call.path.endswith("/refunds")]
    assert refund(nexi_pgm, other, 200)["result"] == "OK"
    (order,) = fake.payments(shop_id)
    assert [r["operationAmount"] for r in order["refunds"]] == ["300"]


def test_status_of_an_order_nexi_does_not_know_is_404(nexi_pgm: PgmProcess) -> None:
    assert nexi_pgm.get("/v3/nexi/status", params={"paymentId": "P" + "1" * 26}).status_code == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v3/nexi/pay-by-link", pay_body("order-x")),
        (
            "/v3/nexi/credit-cards/subscription/schedule",
            {**pay_body("order-x"), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}},
        ),
        ("/v3/nexi/paypal/pay", pay_body("order-x")),
    ],
)
def test_what_nexi_does_not_offer_answers_501_naming_it(nexi_pgm: PgmProcess, path: str, body: Any) -> None:
    response = nexi_pgm.post(path, body)
    assert response.status_code == 501, response.text
    assert "nexi" in response.text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"successRedirectUrl": None}, "successRedirectUrl"),
        ({"providerData": {"language": "italiano"}}, "providerData.language"),
        ({"providerData": {"captureType": "LATER"}}, "providerData.captureType"),
        ({"providerData": {"expirationDate": "31/12/2026"}}, "providerData.expirationDate"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_before_any_call(
    nexi_pgm: PgmProcess, fake: NexiFake, shop_id: str, extra: dict[str, Any], field: str
) -> None:
    body = {key: value for key, value in {**pay_body(shop_id), **extra}.items() if value is not None}
    response = nexi_pgm.post("/v3/nexi/credit-cards/pay", body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert not calls_naming(fake.requests, shop_id)


def test_provider_5xx_leaves_the_payment_unknown_and_reconciliation_fails_it(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.fail_next(500)
    answer = pay(nexi_pgm, shop_id)
    assert answer["result"] == "PENDING"
    wait_for_status(notifications, shop_id, "FAILED")
    assert fake.payments(shop_id) == []


def test_a_lost_answer_is_found_again_by_reading_the_order_and_a_retry_creates_no_second_order(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.delay_next(2.5)  # longer than PGM_PROVIDER_TIMEOUT_SECONDS (1 s): the answer is lost
    headers = {"Idempotency-Key": f"retry-{shop_id}"}
    answer = pay(nexi_pgm, shop_id, headers=headers)
    (order,) = fake.payments(shop_id)
    order_id = order["orderStatus"]["order"]["orderId"]
    assert answer["result"] == "PENDING"
    assert answer["paymentId"] == order_id
    assert pay(nexi_pgm, shop_id, headers=headers)["paymentId"] == order_id
    assert len(fake.payments(shop_id)) == 1
    fake.approve(order_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_lost_answer_to_a_merchant_initiated_pay_is_settled_by_reading_the_order(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    start = nexi_pgm.post(
        "/v3/nexi/credit-cards/subscription/start",
        {**pay_body(shop_id), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}},
    ).json()
    fake.approve(start["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")
    fake.malformed_next()
    charge_id = f"{shop_id}-2"
    answer = nexi_pgm.post(
        "/v3/nexi/credit-cards/subscription/pay",
        {**pay_body(charge_id), "subscriptionInfo": {"token": start["subscriptionToken"]}},
    ).json()
    (order,) = fake.payments(charge_id)
    assert answer["result"] == "OK"
    assert answer["paymentId"] == order["orderStatus"]["order"]["orderId"]


def test_a_lost_refund_answer_is_settled_by_asking_again_with_the_same_key(
    nexi_pgm: PgmProcess, fake: NexiFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    order_id = paid(nexi_pgm, fake, notifications, shop_id, 1000)
    fake.malformed_next()
    answer = refund(nexi_pgm, order_id, 250)
    (order,) = fake.payments(shop_id)
    (made,) = order["refunds"]
    assert answer["result"] == "OK"
    assert answer["refundId"] == made["operationId"]


def test_a_request_with_an_api_key_nexi_does_not_know_is_refused(
    start_pgm: Callable[..., PgmProcess], fake: NexiFake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="nexi", **{**fake.env(), "NEXI_API_KEY": "revoked-key"})
    answer = pay(pgm, shop_id)
    assert answer["result"] == "KO"
    assert "401" in answer["resultDescription"]
    assert fake.payments(shop_id) == []


@pytest.mark.parametrize("missing", ["NEXI_BASE_URL", "NEXI_API_KEY"])
def test_start_up_is_refused_without_a_required_variable(
    start_pgm: Callable[..., PgmProcess], fake: NexiFake, missing: str
) -> None:
    env = {name: value for name, value in fake.env().items() if name != missing}
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,nexi", **env)
    assert missing in str(refused.value)


def test_start_up_is_refused_with_a_callback_url_that_has_a_query(
    start_pgm: Callable[..., PgmProcess], fake: NexiFake
) -> None:
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="nexi", NEXI_CALLBACK_URL="https://pgm.example/cb?x=1", **fake.env())
    assert "NEXI_CALLBACK_URL" in str(refused.value)


REAL_API_KEY = os.environ.get("NEXI_REAL_API_KEY")


@pytest.mark.real_sandbox
@pytest.mark.skipif(not REAL_API_KEY, reason="set NEXI_REAL_API_KEY (an XPay sandbox API key) to run")
def test_real_sandbox_accepts_our_key_and_creates_a_hosted_order(shop_id: str) -> None:
    adapter = build(
        Settings(
            public_url="https://pgm.example",
            provider_timeout_seconds=20,
            provider_env={"NEXI_BASE_URL": SANDBOX_BASE_URL, "NEXI_API_KEY": REAL_API_KEY or ""},
        )
    )
    assert isinstance(adapter, NexiAdapter)

    async def scenario() -> None:
        try:
            request = PayRequest(
                100,
                "EUR",
                shop_id,
                "credit-cards",
                f"pgm-real-{shop_id}",
                success_redirect_url="https://example.com/ok",
            )
            created = await adapter.pay(request)
            assert created.result is PayResultCode.REDIRECT_TO_URL
            assert created.payment_id
            looked_up = await adapter.payment_status(created.payment_id)
            assert looked_up.status.value == "PENDING"
            assert looked_up.shop_transaction_id == shop_id
        finally:
            await adapter.aclose()

    asyncio.run(scenario())
