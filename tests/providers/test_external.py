"""External providers (spec 02): /v3/<name>/... is forwarded to the service named in
EXTERNAL_PROVIDERS_CONFIG, callbacks included, and sagas use it like any provider."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgm.devstack.testing import RecordingReceiver, run_server_in_thread
from tests.fakes.external import CALLBACK_TOKEN, ExternalService, running_external_service
from tests.support.notifications import STATUS_PATH, wait_for_status
from tests.support.pgm_process import PgmProcess


@pytest.fixture
def acme() -> Iterator[ExternalService]:
    """The external provider service."""
    with running_external_service() as service:
        yield service


@pytest.fixture
def pgm_with_acme(
    start_pgm: Callable[..., PgmProcess], acme: ExternalService, tmp_path: Path
) -> Iterator[tuple[PgmProcess, RecordingReceiver]]:
    """A PGM with `acme` configured as an external provider."""
    config = tmp_path / "external.json"
    config.write_text(json.dumps({"externalServices": [{"externalService": "acme", "baseUrl": acme.base_url}]}))
    receiver = RecordingReceiver()
    with run_server_in_thread(receiver.app) as (url, _):
        pgm = start_pgm(EXTERNAL_PROVIDERS_CONFIG=str(config), PAYMENT_CALLBACK_URL=f"{url}{STATUS_PATH}")
        yield pgm, receiver


def test_pay_is_forwarded_with_provider_data_untouched_and_our_idempotency_key(
    pgm_with_acme: tuple[PgmProcess, RecordingReceiver], acme: ExternalService, shop_id: str
) -> None:
    pgm, receiver = pgm_with_acme
    body = {
        "amount": 700,
        "currency": "EUR",
        "shopTransactionId": shop_id,
        "providerData": {"acmeOutcome": "OK", "x": [1]},
    }
    answer = pgm.post("/v3/acme/credit-cards/pay", body).json()
    assert answer["result"] == "OK"
    assert answer["paymentId"].startswith("acme_")
    forwarded = [b for method, path, b in acme.received if path == "/credit-cards/pay"]
    assert forwarded[0]["providerData"] == {"acmeOutcome": "OK", "x": [1]}
    wait_for_status(receiver, shop_id, "ACCEPTED")
    again = pgm.post("/v3/acme/credit-cards/pay", body, headers={"Idempotency-Key": "k1"}).json()
    assert pgm.post("/v3/acme/credit-cards/pay", body, headers={"Idempotency-Key": "k1"}).json() == again
    assert len(acme.payments_for(shop_id)) == 2


def _pay_awaiting_the_payer(pgm: PgmProcess, shop_id: str) -> dict[str, Any]:
    """A payment the external service leaves to its payer (REDIRECT_TO_URL until a callback settles it)."""
    answer: dict[str, Any] = pgm.post(
        "/v3/acme/credit-cards/pay", {"amount": 700, "currency": "EUR", "shopTransactionId": shop_id}
    ).json()
    return answer


def test_callback_is_verified_by_the_external_service_and_applied(
    pgm_with_acme: tuple[PgmProcess, RecordingReceiver], acme: ExternalService, shop_id: str
) -> None:
    pgm, receiver = pgm_with_acme
    answer = _pay_awaiting_the_payer(pgm, shop_id)
    assert answer["result"] == "REDIRECT_TO_URL"
    forged = pgm.get("/v3/acme/callback", params={"payment": answer["paymentId"], "token": "guess"})
    assert forged.status_code == 401
    ok = pgm.get("/v3/acme/callback", params={"payment": answer["paymentId"], "token": CALLBACK_TOKEN, "event": "e1"})
    assert ok.status_code == 200
    wait_for_status(receiver, shop_id, "ACCEPTED")
    assert pgm.get("/v3/acme/status", params={"paymentId": answer["paymentId"]}).json()["status"] == "ACCEPTED"


def test_callback_the_external_service_cannot_read_now_is_refused_with_503_and_accepted_later(
    pgm_with_acme: tuple[PgmProcess, RecordingReceiver], acme: ExternalService, shop_id: str
) -> None:
    pgm, receiver = pgm_with_acme
    answer = _pay_awaiting_the_payer(pgm, shop_id)
    params = {"payment": answer["paymentId"], "token": CALLBACK_TOKEN, "event": "e-outage"}
    acme.callbacks_down = True
    unread = pgm.get("/v3/acme/callback", params=params)
    assert unread.status_code == 503, unread.text
    assert unread.json()["code"] == "callback_not_processed"
    assert pgm.get("/v3/acme/status", params={"paymentId": answer["paymentId"]}).json()["status"] == "PENDING"
    acme.callbacks_down = False
    assert pgm.get("/v3/acme/callback", params=params).status_code == 200
    wait_for_status(receiver, shop_id, "ACCEPTED")


def test_refund_and_subscription_status_are_forwarded(
    pgm_with_acme: tuple[PgmProcess, RecordingReceiver], shop_id: str
) -> None:
    pgm, _ = pgm_with_acme
    body = {"amount": 700, "currency": "EUR", "shopTransactionId": shop_id, "providerData": {"acmeOutcome": "OK"}}
    payment_id = pgm.post("/v3/acme/credit-cards/pay", body).json()["paymentId"]
    assert (
        pgm.post("/v3/acme/refund", {"amount": 200, "currency": "EUR", "paymentId": payment_id}).json()["result"]
        == "OK"
    )
    over = pgm.post("/v3/acme/refund", {"amount": 600, "currency": "EUR", "paymentId": payment_id}).json()
    assert over["result"] == "KO"
    assert pgm.get("/v3/acme/subscription/status/tok_1").json()["status"] == "ACTIVE"
