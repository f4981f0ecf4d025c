"""External providers (docs/api.md#external-providers): /v3/<name>/... is forwarded to the service
named in EXTERNAL_PROVIDERS_CONFIG on Mia-Platform's paths (no payment-method segment) and on the older
paths with one, callbacks included, and sagas use it with `paymentMethod: external`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.external import CALLBACK_TOKEN, ExternalService, running_external_service
from tests.support.databases import fresh_database
from tests.support.notifications import STATUS_PATH, statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.saga_stack import saga_stack
from tests.support.servers import RecordingReceiver, run_server_in_thread, wait_for


@pytest.fixture(scope="module")
def acme(backend: str) -> Iterator[ExternalService]:
    """The external provider service, shared by the module's tests on one backend (each its own references)."""
    with running_external_service() as service:
        yield service


@pytest.fixture(autouse=True)
def acme_as_configured(acme: ExternalService) -> Iterator[None]:
    """A test that makes the service misbehave has it behave again for the next one."""
    yield
    acme.callbacks_down = acme.status_down = False
    acme.implements_callback = acme.implements_check = acme.reports_amounts = True


@pytest.fixture(scope="module")
def pgm_with_acme(
    backend: str, acme: ExternalService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PgmProcess, RecordingReceiver]]:
    """A PGM with `acme` configured as an external provider, shared by the module's tests on one backend.

    Its reconciliation looks only after an hour: these tests read the requests the service received last,
    and a background look at an earlier test's pending payment would come in between."""
    directory = tmp_path_factory.mktemp("external")
    config = directory / "external.json"
    config.write_text(json.dumps({"externalServices": [{"externalService": "acme", "baseUrl": acme.base_url}]}))
    receiver = RecordingReceiver()
    with fresh_database(backend, directory) as url, run_server_in_thread(receiver.app) as (receiver_url, _):
        pgm = PgmProcess(
            url,
            directory / "pgm.log",
            EXTERNAL_PROVIDERS_CONFIG=str(config),
            PAYMENT_CALLBACK_URL=f"{receiver_url}{STATUS_PATH}",
            PGM_RECONCILE_AFTER_SECONDS="3600",
        ).start()
        try:
            yield pgm, receiver
        finally:
            pgm.stop()


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
    forwarded = [b for _, path, b in acme.received if path == "/credit-cards/pay" and b["shopTransactionId"] == shop_id]
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


def _paths(acme: ExternalService) -> list[str]:
    return [f"{method} {path}" for method, path, _ in acme.received]


def test_mia_paths_without_a_payment_method_are_forwarded_to_the_same_paths(
    pgm_with_acme: tuple[PgmProcess, RecordingReceiver], acme: ExternalService, shop_id: str
) -> None:
    pgm, receiver = pgm_with_acme
    body = {"amount": 700, "currency": "EUR", "shopTransactionId": shop_id, "providerData": {"acmeOutcome": "OK"}}
    before = len(acme.received)
    paid = pgm.post("/v3/acme/pay", body)
    assert paid.status_code == 200, paid.text
    assert paid.json()["result"] == "OK"
    payment_id = paid.json()["paymentId"]
    assert acme.received[-1] == ("POST", "/pay", {**body, "successRedirectUrl": None, "failureRedirectUrl": None})

    terms = {"interval": "MONTH", "intervalCount": 1}
    started = pgm.post("/v3/acme/subscription/start", {**body, "subscriptionInfo": terms}).json()
    token = started["subscriptionToken"]
    assert started["result"] == "OK"
    assert token.startswith("acme_sub_")
    scheduled = pgm.post("/v3/acme/subscription/schedule", {**body, "subscriptionInfo": terms}).json()
    assert scheduled["subscriptionToken"].startswith("acme_sub_")
    again = pgm.post("/v3/acme/subscription/pay", {**body, "subscriptionInfo": {"token": token}}).json()
    assert again["result"] == "OK"
    assert acme.received[-1][2]["subscriptionInfo"]["token"] == token
    updated = pgm.post(f"/v3/acme/subscription/update/{token}", {**body, "amount": 900, "subscriptionInfo": terms})
    assert updated.json()["result"] == "OK", updated.text
    assert acme.subscriptions[token]["amount"] == 900
    assert pgm.client.delete(f"/v3/acme/subscription/expire/{token}").json()["result"] == "OK"
    assert pgm.get(f"/v3/acme/subscription/status/{token}").json()["status"] == "EXPIRED"
    assert _paths(acme)[before + 1 :] == [
        "POST /subscription/start",
        "POST /subscription/schedule",
        "POST /subscription/pay",
        f"POST /subscription/update/{token}",
        f"DELETE /subscription/expire/{token}",
    ]

    refunded = pgm.post("/v3/acme/refund", {"amount": 200, "currency": "EUR", "paymentId": payment_id}).json()
    assert refunded["result"] == "OK"
    assert acme.received[-1][:2] == ("POST", "/refund")
    assert pgm.get("/v3/acme/status", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"
    assert acme.received[-1][:2] == ("GET", "/status")
    checked = pgm.get("/v3/acme/check", params={"paymentId": payment_id}).json()
    assert checked["status"] == "ACCEPTED"
    assert checked["providerName"] == "acme"
    assert acme.received[-1][:2] == ("GET", "/check")
    notified = len([s for s in statuses_for(receiver, shop_id) if s["action"] == "PAYMENT"])
    acme.implements_check = False
    assert pgm.get("/v3/acme/check", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"
    assert acme.received[-1][:2] == ("GET", "/status")

    def every_check_notified() -> bool:
        return len([s for s in statuses_for(receiver, shop_id) if s["action"] == "PAYMENT"]) >= notified + 1

    wait_for(every_check_notified, what="the second /check's notification")


def test_the_payment_method_form_stays_an_alias_and_shipped_providers_still_need_a_method(
    pgm_with_acme: tuple[PgmProcess, RecordingReceiver], acme: ExternalService, shop_id: str
) -> None:
    pgm, _ = pgm_with_acme
    body = {"amount": 700, "currency": "EUR", "shopTransactionId": shop_id, "providerData": {"acmeOutcome": "OK"}}
    answer = pgm.post("/v3/acme/credit-cards/subscription/start", {**body, "subscriptionInfo": {"interval": "DAY"}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "OK"
    assert acme.received[-1][1] == "/credit-cards/subscription/start"
    refused = pgm.post("/v3/sandbox/pay", body)
    assert refused.status_code == 404
    assert "needs a payment method in the path" in refused.json()["message"]


def test_a_callback_the_service_does_not_implement_asks_its_status_and_every_new_status_counts(
    pgm_with_acme: tuple[PgmProcess, RecordingReceiver], acme: ExternalService, shop_id: str
) -> None:
    pgm, receiver = pgm_with_acme
    acme.implements_callback = False
    payment_id = pgm.post("/v3/acme/pay", {"amount": 700, "currency": "EUR", "shopTransactionId": shop_id}).json()[
        "paymentId"
    ]
    # The service calls us with the same query each time something changes: each new status is news.
    acme.set_status(payment_id, "ACCEPTED")
    first = pgm.get("/v3/acme/callback", params={"paymentId": payment_id})
    assert first.status_code == 200, first.text
    wait_for_status(receiver, shop_id, "ACCEPTED")
    acme.set_status(payment_id, "FAILED")
    assert pgm.get("/v3/acme/callback", params={"paymentId": payment_id}).status_code == 200
    wait_for_status(receiver, shop_id, "FAILED")

    unknown = pgm.get("/v3/acme/callback", params={"paymentId": "acme_nobody"})
    assert unknown.status_code == 502, unknown.text
    assert unknown.json()["code"] == "provider_rejected"
    assert "HTTP 404" in unknown.json()["message"]
    nameless = pgm.get("/v3/acme/callback")
    assert nameless.status_code == 401
    assert "names no paymentId" in nameless.json()["message"]


def test_a_saga_pays_and_refunds_with_payment_method_external(
    acme: ExternalService, backend: str, tmp_path: Path
) -> None:
    config = tmp_path / "external.json"
    config.write_text(json.dumps({"externalServices": [{"externalService": "acme", "baseUrl": acme.base_url}]}))
    with (
        fresh_database(backend, tmp_path) as url,
        saga_stack(url, tmp_path, EXTERNAL_PROVIDERS_CONFIG=str(config)) as stack,
    ):
        saga_id = stack.create_saga(
            {
                "amount": 1000,
                "currency": "EUR",
                "provider": "acme",
                "paymentMethod": "external",
                "shopTransactionId": f"order-{saga_id_suffix()}",
                "payRequestData": {"providerData": {"acmeOutcome": "OK"}},
            }
        )
        stack.send_event(saga_id, "scheduleRequested")
        saga = stack.wait_state(saga_id, "PAYMENT_EXECUTED")
        assert acme.received[-1][1] == "/pay"
        stack.send_event(saga_id, "refundRequested", {"refundRequestData": {"amount": 1000}})
        saga = stack.wait_state(saga_id, "TOTALLY_REFUNDED")
        assert acme.payment(saga["metadata"]["paymentId"])["refunded"] == 1000


def saga_id_suffix() -> str:
    return uuid.uuid4().hex[:10]


def test_expires_after_reaches_the_external_service_as_mias_integer(
    pgm_with_acme: tuple[PgmProcess, RecordingReceiver], acme: ExternalService, shop_id: str
) -> None:
    pgm, _ = pgm_with_acme
    terms = {"interval": "MONTH", "intervalCount": 1, "expiresAfter": 6}
    body = {"amount": 700, "currency": "EUR", "shopTransactionId": shop_id, "subscriptionInfo": terms}
    scheduled = pgm.post("/v3/acme/subscription/schedule", body)
    assert scheduled.status_code == 200, scheduled.text
    method, path, forwarded = acme.received[-1]
    assert (method, path) == ("POST", "/subscription/schedule")
    assert forwarded["subscriptionInfo"]["expiresAfter"] == 6
