"""FlowPay's older API generation (selected by FLOWPAY_CORE_BASE_URL, Mia's variables) through a real PGM
process and its fake, over /v3 and through a saga: the OAuth token and tenant, transfer plus checkout
redirect, GET and POST callbacks confirmed by reading the transfer back (a forged one changes nothing),
a rejected transfer, a revoked token renewed once, and start-up checks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.flowpay_legacy import FlowPayLegacyFake, running_flowpay_legacy_fake
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.saga_stack import SagaStack, provider_saga_stack
from tests.support.servers import RecordingReceiver

PROVIDER_DATA = {
    "debtorFiscalCode": "RSSMRA80A01H501U",
    "creditorFiscalCode": "01234567890",
    "creditorIban": "IT60X0542811101000000123456",
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FlowPayLegacyFake]:
    """The fake of FlowPay's older API."""
    with running_flowpay_legacy_fake() as running:
        yield running


@pytest.fixture(scope="module")
def legacy_pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: FlowPayLegacyFake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with FlowPay's older API pointed at the fake."""
    with pgm_with_provider("flowpay", fake, backend, tmp_path_factory.mktemp("pgm-flowpay-v1"), receiver[1]) as pgm:
        yield pgm


def pay(pgm: PgmProcess, shop_id: str, amount: int = 1000) -> dict[str, Any]:
    """Pay and return the answer."""
    body = {
        "amount": amount,
        "currency": "EUR",
        "shopTransactionId": shop_id,
        "successRedirectUrl": "https://shop.example/ok",
        "failureRedirectUrl": "https://shop.example/ko",
        "providerData": {**PROVIDER_DATA, "remittanceDescription": f"Order {shop_id}"},
    }
    response = pgm.post("/v3/flowpay/wire-transfer/pay", body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_transfer_with_checkout_redirect_settled_by_a_callback_read_back(
    legacy_pgm: PgmProcess, fake: FlowPayLegacyFake, notifications: RecordingReceiver, shop_id: str, method: str
) -> None:
    fake.callback_method = method
    answer = pay(legacy_pgm, shop_id, 4200)
    assert answer["result"] == "REDIRECT_TO_URL"
    fingerprint = answer["paymentId"]
    assert httpx.URL(answer["redirectToUrl"]).path.startswith("/checkout/")
    (transfer,) = fake.transfers(shop_id)
    assert (transfer["fingerprint"], transfer["amount"], transfer["status"]) == (fingerprint, 4200, "CREATED")
    api_calls = [call for call in fake.requests if call.path.startswith(f"/api/{fake.tenant_id}/")]
    assert api_calls
    assert all(call.headers["authorization"].startswith("Bearer ") for call in api_calls)
    fake.approve(fingerprint)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    status = legacy_pgm.get("/v3/flowpay/status", params={"paymentId": fingerprint}).json()
    assert status["status"] == "ACCEPTED"


def test_a_rejected_transfer_fails_the_payment(
    legacy_pgm: PgmProcess, fake: FlowPayLegacyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fingerprint = pay(legacy_pgm, shop_id)["paymentId"]
    fake.reject(fingerprint)
    wait_for_status(notifications, shop_id, "FAILED")


def test_a_forged_callback_changes_nothing(
    legacy_pgm: PgmProcess, fake: FlowPayLegacyFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fingerprint = pay(legacy_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    claim = {"fingerprint": fingerprint, "status": "CONCLUDED"}
    assert legacy_pgm.client.post("/v3/flowpay/callback", json=claim).status_code == 200
    assert legacy_pgm.get("/v3/flowpay/status", params={"paymentId": fingerprint}).json()["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == ["PENDING"]
    assert legacy_pgm.client.post("/v3/flowpay/callback", json={"status": "CONCLUDED"}).status_code == 401


def test_a_revoked_token_is_renewed_once_and_the_call_succeeds(
    legacy_pgm: PgmProcess, fake: FlowPayLegacyFake, shop_id: str
) -> None:
    pay(legacy_pgm, shop_id)
    issued = fake.tokens_issued
    fake.revoke_tokens()
    assert pay(legacy_pgm, f"{shop_id}-b")["result"] == "REDIRECT_TO_URL"
    assert fake.tokens_issued == issued + 1


def test_a_client_flowpay_does_not_know_is_refused(
    start_pgm: Callable[..., PgmProcess], fake: FlowPayLegacyFake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="flowpay", **{**fake.env(), "FLOWPAY_CLIENT_SECRET": "revoked"})
    answer = pay(pgm, shop_id)
    assert answer["result"] == "KO"
    assert "401" in answer["resultDescription"]
    assert fake.transfers(shop_id) == []


@pytest.mark.parametrize("missing", ["FLOWPAY_CLIENT_ID", "FLOWPAY_CHECKOUT_BASE_URL"])
def test_start_up_is_refused_without_a_variable_the_older_api_needs(
    start_pgm: Callable[..., PgmProcess], fake: FlowPayLegacyFake, missing: str
) -> None:
    env = {name: value for name, value in fake.env().items() if name != missing}
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,flowpay", **env)
    assert missing in str(refused.value)


@pytest.fixture(scope="module")
def rig(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SagaStack, FlowPayLegacyFake]]:
    """A saga stack whose PGM has FlowPay's older API enabled against its own fake."""
    directory = tmp_path_factory.mktemp("flowpay-v1-saga")
    with running_flowpay_legacy_fake() as legacy, provider_saga_stack("flowpay", legacy, backend, directory) as stack:
        yield stack, legacy


@pytest.mark.parametrize(("outcome", "state"), [("approve", "PAYMENT_EXECUTED"), ("reject", "PAYMENT_FAILED")])
def test_a_saga_is_settled_by_the_transfer_outcome(
    rig: tuple[SagaStack, FlowPayLegacyFake], outcome: str, state: str
) -> None:
    stack, legacy = rig
    saga_id = stack.create_saga(
        {
            "amount": 1500,
            "currency": "EUR",
            "provider": "flowpay",
            "paymentMethod": "wire-transfer",
            "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
            "payRequestData": {
                "successRedirect": "https://shop.example/ok",
                "failureRedirect": "https://shop.example/ko",
                "providerData": dict(PROVIDER_DATA),
            },
        }
    )
    stack.send_event(saga_id, "scheduleRequested")
    pending = stack.wait_state(saga_id, "PAYMENT_PENDING")
    getattr(legacy, outcome)(pending["metadata"]["paymentId"])
    stack.wait_state(saga_id, state)
