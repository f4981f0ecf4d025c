"""FlowPay (current v2 API) through a real PGM process and the stateful FlowPay fake, over real HTTP:
payment requests with the checkout redirect (executed, rejected by the bank, abandoned by the payer, held),
Ed25519-signed webhooks (duplicate, forged, stale and unsigned ones), the payer's GET return read back,
status and check, adoption of a payment made before the switch, lost answers found again by lookup,
refunds answered 501, and start-up checks. A last test talks to FlowPay's real sandbox when a key is given."""

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
from pgm.providers.flowpay import SANDBOX_BASE_URL, FlowPayAdapter, build
from tests.fakes.flowpay import FlowPayFake, running_flowpay_fake
from tests.fakes.recording import calls_naming
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pay_requests import pay_request
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for

PROVIDER_DATA = {
    "debtorFiscalCode": "RSSMRA80A01H501U",
    "creditorFiscalCode": "01234567890",
    "creditorIban": "IT60X0542811101000000123456",
    "remittanceDescription": "Order payment",
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FlowPayFake]:
    """The FlowPay fake of this module."""
    with running_flowpay_fake() as running:
        yield running


@pytest.fixture(scope="module")
def flowpay_pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: FlowPayFake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with FlowPay pointed at the fake; the fake's webhooks go to it."""
    with pgm_with_provider("flowpay", fake, backend, tmp_path_factory.mktemp("pgm-flowpay"), receiver[1]) as process:
        yield process


def pay_body(shop_id: str, amount: int = 1000, **extra: Any) -> dict[str, Any]:
    """A pay request for a FlowPay transfer."""
    return pay_request(shop_id, amount, **{"providerData": dict(PROVIDER_DATA), **extra})


def pay(pgm: PgmProcess, shop_id: str, amount: int = 1000, **kwargs: Any) -> dict[str, Any]:
    """Pay and return the answer."""
    body = pay_body(shop_id, amount, **kwargs.pop("extra", {}))
    response = pgm.post("/v3/flowpay/wire-transfer/pay", body, **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def lookups_of(fake: FlowPayFake, payment_id: str) -> int:
    """How many times the PGM read this payment request back from FlowPay."""
    return sum(1 for call in fake.requests if call.method == "GET" and call.path.endswith(f"/{payment_id}"))


def test_pay_redirects_to_the_checkout_and_the_signed_webhook_settles_it(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(flowpay_pgm, shop_id, 1299)
    assert answer["result"] == "REDIRECT_TO_URL"
    payment_id = answer["paymentId"]
    assert answer["redirectToUrl"] == f"{fake.base_url}/checkout/{payment_id}"
    (created,) = fake.payments(shop_id)
    assert (created["amount"], created["status"]) == (1299, "pending")
    create = next(call for call in fake.requests if call.method == "POST" and shop_id.encode() in call.body)
    assert create.headers["x-api-key"] == fake.api_key
    assert create.headers["idempotency-key"]
    sent = json.loads(create.body)
    assert sent["creditor"] == {"iban": PROVIDER_DATA["creditorIban"], "fiscalCode": "01234567890"}
    assert sent["webhookUrl"].endswith("/v3/flowpay/callback")
    wait_for_status(notifications, shop_id, "PENDING")
    fake.approve(payment_id)
    status = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert (status["paymentId"], status["providerName"], status["paymentMethod"]) == (
        payment_id,
        "flowpay",
        "wire-transfer",
    )
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_the_default_payment_method_path_is_a_wire_transfer(flowpay_pgm: PgmProcess, shop_id: str) -> None:
    response = flowpay_pgm.post("/v3/flowpay/pay", pay_body(shop_id))
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "REDIRECT_TO_URL"


def test_a_transfer_the_bank_rejects_fails_the_payment(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(flowpay_pgm, shop_id)["paymentId"]
    fake.reject(payment_id)
    wait_for_status(notifications, shop_id, "FAILED")
    assert flowpay_pgm.get("/v3/flowpay/status", params={"paymentId": payment_id}).json()["status"] == "FAILED"


def test_the_payer_abandoning_the_checkout_fails_the_payment(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(flowpay_pgm, shop_id)["paymentId"]
    fake.abandon(payment_id)
    wait_for_status(notifications, shop_id, "FAILED")


def test_a_held_transfer_stays_pending_until_the_bank_executes_it(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(flowpay_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    delivered = len(fake.deliveries)
    fake.hold(payment_id)
    wait_for(lambda: len(fake.deliveries) > delivered, what="the onHold event delivered")
    assert flowpay_pgm.get("/v3/flowpay/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
    fake.approve(payment_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_duplicate_webhook_changes_nothing(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(flowpay_pgm, shop_id)["paymentId"]
    fake.approve(payment_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    sent = [n for n in fake.notifications if payment_id.encode() in n["body"]]
    assert fake.resend(sent[-1]) == 200
    assert fake.resend(sent[-1]) == 200
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING", "ACCEPTED"]


def test_forged_stale_and_unsigned_webhooks_are_refused(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(flowpay_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    claim = json.dumps(
        {"type": "payment.status_change", "data": {"id": payment_id, "status": "succeeded", "amount": 1000}}
    ).encode()
    other = FlowPayFake()  # another key pair: a signature FlowPay never made
    stale = fake.signed(claim, int(time.time()) - 301)
    tampered = {**fake.signed(claim), "X-FlowPay-Timestamp": str(int(time.time()) - 1)}
    unsigned = {key: value for key, value in fake.signed(claim).items() if key != "X-FlowPay-Signature"}
    for headers in (other.signed(claim), stale, tampered, unsigned):
        response = flowpay_pgm.client.post("/v3/flowpay/callback", content=claim, headers=headers)
        assert response.status_code == 401, response.text
    body_changed = claim.replace(b"1000", b"1001")
    signed_other_body = fake.signed(claim)
    assert (
        flowpay_pgm.client.post("/v3/flowpay/callback", content=body_changed, headers=signed_other_body).status_code
        == 401
    )
    assert flowpay_pgm.get("/v3/flowpay/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]


def test_the_payer_returning_by_get_is_read_back_from_flowpay(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.webhook_url, webhook = None, fake.webhook_url  # the webhook never arrives
    try:
        payment_id = pay(flowpay_pgm, shop_id)["paymentId"]
        fake.approve(payment_id)
    finally:
        fake.webhook_url = webhook
    before = lookups_of(fake, payment_id)
    response = flowpay_pgm.client.get("/v3/flowpay/callback", params={"paymentRequestId": payment_id})
    assert response.status_code == 200, response.text
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert lookups_of(fake, payment_id) > before
    assert flowpay_pgm.client.get("/v3/flowpay/callback", params={"paymentRequestId": "../x"}).status_code == 401


def test_status_reads_the_payment_request_and_check_also_notifies(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.webhook_url, webhook = None, fake.webhook_url
    try:
        payment_id = pay(flowpay_pgm, shop_id)["paymentId"]
        assert flowpay_pgm.get("/v3/flowpay/status", params={"paymentId": payment_id}).json()["status"] == "PENDING"
        fake.approve(payment_id)
        checked = flowpay_pgm.get("/v3/flowpay/check", params={"paymentId": payment_id}).json()
    finally:
        fake.webhook_url = webhook
    assert checked["status"] == "ACCEPTED"
    assert checked["shopTransactionId"] == shop_id
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_payment_made_before_the_switch_is_adopted_by_its_status(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, shop_id: str
) -> None:
    payment_id = fake.create_paid(shop_id, 2500)
    status = flowpay_pgm.get("/v3/flowpay/status", params={"paymentId": payment_id}).json()
    assert (status["status"], status["shopTransactionId"]) == ("ACCEPTED", shop_id)


def test_status_of_a_payment_request_flowpay_does_not_know_is_404(flowpay_pgm: PgmProcess) -> None:
    assert flowpay_pgm.get("/v3/flowpay/status", params={"paymentId": "pr_unknown"}).status_code == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v3/flowpay/refund", {"amount": 100, "currency": "EUR", "paymentId": "pr_x"}),
        ("/v3/flowpay/pay-by-link", pay_body("order-x")),
        (
            "/v3/flowpay/wire-transfer/subscription/schedule",
            {**pay_body("order-x"), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}},
        ),
        ("/v3/flowpay/credit-cards/pay", pay_body("order-x")),
    ],
)
def test_what_flowpay_does_not_offer_answers_501_naming_it(flowpay_pgm: PgmProcess, path: str, body: Any) -> None:
    response = flowpay_pgm.post(path, body)
    assert response.status_code == 501, response.text
    assert "flowpay" in response.text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"successRedirectUrl": None}, "successRedirectUrl"),
        ({"providerData": {**PROVIDER_DATA, "debtorFiscalCode": None}}, "providerData.debtorFiscalCode"),
        ({"providerData": {**PROVIDER_DATA, "creditorFiscalCode": "x"}}, "providerData.creditorFiscalCode"),
        ({"providerData": {**PROVIDER_DATA, "creditorIban": "IT60 X054"}}, "providerData.creditorIban"),
        ({"providerData": {**PROVIDER_DATA, "transferDate": "03/12/2026"}}, "providerData.transferDate"),
        ({"providerData": {**PROVIDER_DATA, "remittanceDescription": "x" * 141}}, "providerData.remittanceDescription"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_before_any_call(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, shop_id: str, extra: dict[str, Any], field: str
) -> None:
    body = {key: value for key, value in {**pay_body(shop_id), **extra}.items() if value is not None}
    response = flowpay_pgm.post("/v3/flowpay/wire-transfer/pay", body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert not calls_naming(fake.requests, shop_id)


def test_provider_5xx_leaves_the_payment_unknown_and_reconciliation_fails_it(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.fail_next(500)
    answer = pay(flowpay_pgm, shop_id)
    assert answer["result"] == "PENDING"
    wait_for_status(notifications, shop_id, "FAILED")
    assert fake.payments(shop_id) == []


def test_a_lost_answer_is_found_again_by_lookup_and_a_retry_creates_no_second_request(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.delay_next(2.5)  # longer than PGM_PROVIDER_TIMEOUT_SECONDS (1 s): the answer is lost
    headers = {"Idempotency-Key": f"retry-{shop_id}"}
    answer = pay(flowpay_pgm, shop_id, headers=headers)
    (created,) = fake.payments(shop_id)
    # Found again at once by its reference and key, with the checkout the payer still has to visit.
    assert (answer["result"], answer["paymentId"]) == ("REDIRECT_TO_URL", created["id"])
    assert answer["redirectToUrl"] == created["checkoutUrl"]
    assert pay(flowpay_pgm, shop_id, headers=headers)["paymentId"] == created["id"]
    assert len(fake.payments(shop_id)) == 1
    fake.approve(created["id"])
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_malformed_answer_is_settled_by_lookup(
    flowpay_pgm: PgmProcess, fake: FlowPayFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.malformed_next()
    answer = pay(flowpay_pgm, shop_id)
    (created,) = fake.payments(shop_id)
    assert answer["paymentId"] == created["id"]
    fake.approve(created["id"])
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_a_request_with_a_key_flowpay_does_not_know_is_refused(
    start_pgm: Callable[..., PgmProcess], fake: FlowPayFake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="flowpay", **{**fake.env(), "FLOWPAY_CLIENT_SECRET": "revoked"})
    answer = pay(pgm, shop_id)
    assert answer["result"] == "KO"
    assert "401" in answer["resultDescription"]
    assert fake.payments(shop_id) == []


@pytest.mark.parametrize("missing", ["FLOWPAY_API_BASE_URL", "FLOWPAY_CLIENT_SECRET", "FLOWPAY_PUBLIC_KEY"])
def test_start_up_is_refused_without_a_required_variable(
    start_pgm: Callable[..., PgmProcess], fake: FlowPayFake, missing: str
) -> None:
    env = {name: value for name, value in fake.env().items() if name != missing}
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,flowpay", **env)
    assert missing in str(refused.value)


def test_start_up_is_refused_with_a_public_key_that_is_not_ed25519(
    start_pgm: Callable[..., PgmProcess], fake: FlowPayFake
) -> None:
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="flowpay", **{**fake.env(), "FLOWPAY_PUBLIC_KEY": "not-a-key"})
    assert "FLOWPAY_PUBLIC_KEY" in str(refused.value)


REAL_API_KEY = os.environ.get("FLOWPAY_REAL_API_KEY")
REAL_PUBLIC_KEY = os.environ.get("FLOWPAY_REAL_PUBLIC_KEY")


@pytest.mark.real_sandbox
@pytest.mark.skipif(
    not (REAL_API_KEY and REAL_PUBLIC_KEY),
    reason="set FLOWPAY_REAL_API_KEY and FLOWPAY_REAL_PUBLIC_KEY (FlowPay v2 sandbox) to run",
)
def test_real_sandbox_accepts_our_key_and_creates_a_payment_request(shop_id: str) -> None:
    adapter = build(
        Settings(
            public_url="https://pgm.example",
            provider_timeout_seconds=20,
            provider_env={
                "FLOWPAY_API_BASE_URL": SANDBOX_BASE_URL,
                "FLOWPAY_CLIENT_SECRET": REAL_API_KEY or "",
                "FLOWPAY_PUBLIC_KEY": REAL_PUBLIC_KEY or "",
            },
        )
    )
    assert isinstance(adapter, FlowPayAdapter)

    async def scenario() -> None:
        try:
            request = PayRequest(
                100,
                "EUR",
                shop_id,
                "wire-transfer",
                f"pgm-real-{shop_id}",
                success_redirect_url="https://example.com/ok",
                provider_data=PROVIDER_DATA,
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


def test_the_fake_refuses_a_wrong_api_key(fake: FlowPayFake) -> None:
    response = httpx.get(f"{fake.base_url}/v2/payment-requests/pr_x", headers={"X-API-Key": "wrong"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
