"""The old PGM's environment, unchanged: Stripe with STRIPE_PRIVATE_KEY and STRIPE_BASE_URL and no
STRIPE_WEBHOOK_SECRET, Mia's LOG_LEVEL and HTTP_LOG_LEVEL values, and variables that mean nothing here.
The PGM starts, says what it reads differently, and a Stripe webhook is trusted only through the event
Stripe's API returns for the id it names, so a forged body changes nothing. Over real HTTP: a real PGM
process and the Stripe fake."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.stripe import StripeFake, running_stripe_fake
from tests.support.databases import fresh_database
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.servers import RecordingReceiver


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeFake]:
    with running_stripe_fake() as running:
        yield running


@pytest.fixture(scope="module")
def stripe_pgm(
    backend: str, receiver: tuple[RecordingReceiver, str], fake: StripeFake, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgmProcess]:
    """A PGM configured as Mia's PGM was: no webhook secret."""
    directory = tmp_path_factory.mktemp("pgm-stripe-no-secret")
    mia_environment = {key: value for key, value in fake.env().items() if key != "STRIPE_WEBHOOK_SECRET"}
    mia_environment.update(
        LOG_LEVEL="info",
        HTTP_LOG_LEVEL="body",
        SUBSCRIPTION_HANDLER_URL="http://subscription-handler",
        ADAPTIVE_CHECKOUT_CRUD_URL="http://crud-service/adaptive-checkout",
        UNICREDIT_API_KEY="unicredit-key-never-used",
        UNICREDIT_MERCHANT_ID="unicredit-merchant-never-used",
    )
    with fresh_database(backend, directory) as url:
        process = PgmProcess(
            url,
            directory / "pgm.log",
            ENABLED_PROVIDERS="stripe",
            PAYMENT_CALLBACK_URL=f"{receiver[1]}/payment-status",
            **mia_environment,
        )
        process.start()
        fake.webhook_url = f"{process.url}/v3/stripe/callback"
        yield process
        process.stop()


def pay(pgm: PgmProcess, shop_id: str) -> str:
    body = {
        "amount": 1500,
        "currency": "EUR",
        "shopTransactionId": shop_id,
        "successRedirectUrl": "https://shop.example/ok",
    }
    answer = pgm.post("/v3/stripe/credit-cards/pay", body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["paymentId"])


def forged(payment_id: str, event_id: str) -> bytes:
    """A body claiming that `payment_id` was paid, under `event_id`."""
    session = {"id": payment_id, "object": "checkout.session", "status": "complete", "payment_status": "paid"}
    event: dict[str, Any] = {"id": event_id, "object": "event", "type": "checkout.session.completed"}
    event["data"] = {"object": session}
    return json.dumps(event).encode()


def test_stripe_starts_without_the_webhook_secret_and_says_how_webhooks_are_trusted(stripe_pgm: PgmProcess) -> None:
    assert stripe_pgm.get("/-/ready").status_code == 200
    assert "STRIPE_WEBHOOK_SECRET is not set" in stripe_pgm.log_tail(200)


def test_the_old_pgms_variables_are_accepted_and_what_means_nothing_here_is_named(stripe_pgm: PgmProcess) -> None:
    warnings = [
        json.loads(line)["event"]
        for line in stripe_pgm.log_path.read_text().splitlines()
        if line.startswith("{") and json.loads(line).get("logger") == "pgm.configuration"
    ]
    assert any(
        w.startswith("SUBSCRIPTION_HANDLER_URL is ignored: this PGM calls no Subscription Handler") for w in warnings
    )
    assert any(w.startswith("ADAPTIVE_CHECKOUT_CRUD_URL is ignored") for w in warnings)
    assert any(
        w.startswith("UNICREDIT_API_KEY, UNICREDIT_MERCHANT_ID are ignored: provider unicredit is not shipped")
        for w in warnings
    )
    assert any(w.startswith("HTTP_LOG_LEVEL=body logs outgoing requests as `basic` does") for w in warnings)


def test_http_log_level_logs_each_request_to_the_provider_and_never_its_secrets(
    stripe_pgm: PgmProcess, fake: StripeFake, shop_id: str
) -> None:
    pay(stripe_pgm, shop_id)
    log = stripe_pgm.log_path.read_text()
    requests = [
        json.loads(line)["event"]
        for line in log.splitlines()
        if line.startswith("{") and json.loads(line).get("logger") == "pgm.outbound"
    ]
    assert any(f"POST {fake.base_url}/v1/checkout/sessions" in line and "200 OK" in line for line in requests)
    assert fake.secret_key not in log
    assert shop_id not in "".join(requests)


def test_a_webhook_is_applied_through_the_event_fetched_from_stripe(
    stripe_pgm: PgmProcess, fake: StripeFake, receiver: tuple[RecordingReceiver, str], shop_id: str
) -> None:
    payment_id = pay(stripe_pgm, shop_id)
    fake.approve(payment_id)
    accepted = wait_for_status(receiver[0], shop_id, "ACCEPTED")
    assert accepted["paymentId"] == payment_id
    [completed] = [
        e for e in fake.events if e["type"] == "checkout.session.completed" and e["data"]["object"]["id"] == payment_id
    ]
    assert ("GET", f"/v1/events/{completed['id']}") in [(method, path) for method, path, _ in fake.requests]


def test_forged_webhooks_change_nothing(
    stripe_pgm: PgmProcess, fake: StripeFake, receiver: tuple[RecordingReceiver, str], shop_id: str
) -> None:
    payment_id = pay(stripe_pgm, shop_id)
    # An event id Stripe never issued.
    unknown = fake.post_webhook(forged(payment_id, f"evt_{uuid.uuid4().hex}"), None)
    assert unknown.status_code == 401
    assert "does not know the event" in unknown.json()["message"]
    # A real event id (another payment's expiry) under a body that says this payment was paid: the event
    # Stripe returns for that id is about the other payment, so this one is untouched.
    other_shop = f"{shop_id}-other"
    other_payment = pay(stripe_pgm, other_shop)
    with fake.holding_webhooks():
        fake.decline(other_payment)
    [expiry] = [e for e in fake.events if e["data"]["object"]["id"] == other_payment]
    replayed = fake.post_webhook(forged(payment_id, expiry["id"]), None)
    assert replayed.status_code == 200
    wait_for_status(receiver[0], other_shop, "FAILED")
    # Not an event at all, and an id that is not an event id.
    assert fake.post_webhook(b"not json", None).status_code == 401
    assert fake.post_webhook(forged(payment_id, "../v1/refunds"), None).status_code == 401

    status = stripe_pgm.get("/v3/stripe/status", params={"paymentId": payment_id}).json()
    assert status["status"] == "PENDING"
    assert [s["status"] for s in statuses_for(receiver[0], shop_id)] == ["PENDING"]
