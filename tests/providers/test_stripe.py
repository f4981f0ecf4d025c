"""Stripe through /v3, end to end over real HTTP: a real PGM process, the stateful Stripe fake
(tests/fakes/stripe.py) sending signed webhooks, and a receiver for PaymentStatus notifications."""

from __future__ import annotations

import calendar
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.stripe import API_VERSION, StripeFake, running_stripe_fake
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for
from tests.support.stripe_requests import SESSIONS, paid, pay, pay_body

REFUNDS = "/v1/refunds"


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeFake]:
    """The Stripe fake shared by the module's PGM."""
    with running_stripe_fake() as running:
        yield running


@pytest.fixture(scope="module")
def stripe_pgm(
    backend: str,
    receiver: tuple[RecordingReceiver, str],
    fake: StripeFake,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgmProcess]:
    """A PGM with Stripe enabled against the fake, whose webhooks the fake sends to it."""
    with pgm_with_provider("stripe", fake, backend, tmp_path_factory.mktemp("pgm-stripe"), receiver[1]) as process:
        yield process


def refund(pgm: PgmProcess, payment_id: str, amount: int) -> dict[str, Any]:
    """POST /v3/stripe/refund and return the answer."""
    response = pgm.post("/v3/stripe/refund", {"amount": amount, "currency": "EUR", "paymentId": payment_id})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def payment_statuses(notifications: RecordingReceiver, shop_id: str) -> list[str]:
    """The PAYMENT statuses notified for a merchant reference, in order."""
    return [s["status"] for s in statuses_for(notifications, shop_id) if s["action"] == "PAYMENT"]


# ------------------------------------------------------------------------------------------ pay


def test_card_payment_redirects_to_checkout_and_is_accepted_when_the_payer_pays(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(stripe_pgm, shop_id, providerData={"productName": "Blue shoes", "buyerEmail": "ada@example.com"})
    assert answer["result"] == "REDIRECT_TO_URL"
    assert answer["paymentId"].startswith("cs_test_")
    assert httpx.get(answer["redirectToUrl"]).status_code == 200
    [session] = fake.payments(shop_id)
    assert (session["amount_total"], session["currency"], session["payment_method_types"]) == (1000, "eur", ["card"])
    assert session["customer_email"] == "ada@example.com"
    assert session["success_url"] == "https://shop.example/ok"
    fake.approve(answer["paymentId"])
    accepted = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert accepted["paymentId"] == answer["paymentId"]
    assert accepted["providerName"] == "stripe"
    assert payment_statuses(notifications, shop_id) == ["PENDING", "ACCEPTED"]


def test_every_post_to_stripe_carries_an_idempotency_key_and_the_pinned_version(
    stripe_pgm: PgmProcess, fake: StripeFake, shop_id: str
) -> None:
    before = len(fake.requests)
    pay(stripe_pgm, shop_id)
    posts = [headers for method, _, headers in fake.requests[before:] if method == "POST"]
    assert posts
    assert all(h["idempotency-key"].startswith("pgm-") and h["stripe-version"] == API_VERSION for h in posts)
    assert all(h["authorization"] == f"Bearer {fake.secret_key}" for h in posts)


def test_paypal_payment_abandoned_on_checkout_is_failed(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(stripe_pgm, shop_id, "pay-pal")
    assert fake.payments(shop_id)[0]["payment_method_types"] == ["paypal"]
    fake.decline(answer["paymentId"])
    failed = wait_for_status(notifications, shop_id, "FAILED")
    assert failed["paymentId"] == answer["paymentId"]


def test_the_same_pay_request_twice_creates_one_checkout_session(
    stripe_pgm: PgmProcess, fake: StripeFake, shop_id: str
) -> None:
    headers = {"Idempotency-Key": f"client-{uuid.uuid4().hex}"}
    first = stripe_pgm.post("/v3/stripe/credit-cards/pay", pay_body(shop_id), headers=headers).json()
    second = stripe_pgm.post("/v3/stripe/credit-cards/pay", pay_body(shop_id), headers=headers).json()
    assert first["paymentId"] == second["paymentId"]
    assert len(fake.payments(shop_id)) == 1


def test_unsupported_operation_method_or_interval_is_refused(stripe_pgm: PgmProcess, shop_id: str) -> None:
    subscription = {"interval": "MONTH", "intervalCount": 1}
    started = stripe_pgm.post(
        "/v3/stripe/credit-cards/subscription/start", {**pay_body(shop_id), "subscriptionInfo": subscription}
    )
    assert started.status_code == 501
    assert "stripe does not support subscription/start" in started.json()["message"]
    assert stripe_pgm.post("/v3/stripe/satispay/pay", pay_body(shop_id)).status_code == 501
    weekly = {**pay_body(shop_id), "subscriptionInfo": {"interval": "WEEK", "intervalCount": 1}}
    refused = stripe_pgm.post("/v3/stripe/credit-cards/subscription/schedule", weekly)
    assert refused.status_code == 400
    assert refused.json()["field"] == "subscriptionInfo.interval"


def test_pay_without_a_success_url_is_refused_before_calling_stripe(
    stripe_pgm: PgmProcess, fake: StripeFake, shop_id: str
) -> None:
    body = pay_body(shop_id)
    del body["successRedirectUrl"]
    response = stripe_pgm.post("/v3/stripe/credit-cards/pay", body)
    assert response.status_code == 400
    assert response.json()["field"] == "successRedirectUrl"
    assert fake.payments(shop_id) == []


# -------------------------------------------------------------------------------------- refunds


def test_partial_then_total_refund(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(stripe_pgm, fake, notifications, shop_id)
    first = refund(stripe_pgm, payment_id, 300)
    assert first["result"] == "OK"
    assert first["refundId"].startswith("re_")
    assert refund(stripe_pgm, payment_id, 700)["result"] == "OK"
    over = refund(stripe_pgm, payment_id, 1)
    assert over["result"] == "KO"

    def refunded() -> list[dict[str, Any]]:
        return [
            s for s in statuses_for(notifications, shop_id) if s["action"] == "REFUND" and s["status"] == "ACCEPTED"
        ]

    wait_for(lambda: len(refunded()) == 2, what="two refund notifications")
    assert [s["metadata"]["totalRefundedAmount"] for s in refunded()] == [300, 1000]
    refunds = fake.payments(shop_id)[0]["refunds"]
    assert [(r["amount"], r["status"]) for r in refunds] == [(300, "succeeded"), (700, "succeeded")]
    assert all(r["metadata"]["pgmPaymentId"] == payment_id for r in refunds)


def test_paypal_refunds_stay_pending_until_stripe_reports_them(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(stripe_pgm, fake, notifications, shop_id, "pay-pal")
    succeeding = refund(stripe_pgm, payment_id, 400)
    failing = refund(stripe_pgm, payment_id, 600)
    assert (succeeding["result"], failing["result"]) == ("PENDING", "PENDING")
    fake.complete_refund(failing["refundId"], ok=False)
    wait_for_status(notifications, shop_id, "FAILED", action="REFUND")
    fake.complete_refund(succeeding["refundId"], ok=True)
    done = wait_for_status(notifications, shop_id, "ACCEPTED", action="REFUND")
    assert done["metadata"] == {"refundId": succeeding["refundId"], "refundAmount": 400, "totalRefundedAmount": 400}
    # The failed refund frees its amount again.
    assert refund(stripe_pgm, payment_id, 600)["result"] == "PENDING"


def test_stripe_refuses_a_refund_above_what_is_left(
    fake: StripeFake, stripe_pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(stripe_pgm, fake, notifications, shop_id)
    intent = fake.payments(shop_id)[0]["payment_intent"]
    answer = stripe_api(fake, "POST", REFUNDS, data={"payment_intent": intent, "amount": "1001"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "amount_too_large"
    assert payment_id


# -------------------------------------------------------------------------------- subscriptions


def test_monthly_subscription_is_scheduled_checked_and_expired(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    body = {**pay_body(shop_id, amount=990), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 3}}
    answer = stripe_pgm.post("/v3/stripe/credit-cards/subscription/schedule", body).json()
    assert answer["result"] == "REDIRECT_TO_URL"
    assert fake.payments(shop_id)[0]["mode"] == "subscription"
    fake.approve(answer["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")
    checked = stripe_pgm.get("/v3/stripe/check", params={"paymentId": answer["paymentId"]}).json()
    token = checked["metadata"]["subscriptionToken"]
    assert token.startswith("sub_")
    assert fake.subscription(token)["items"]["data"][0]["price"]["recurring"] == {
        "interval": "month",
        "interval_count": 3,
    }
    assert fake.subscription(token)["metadata"] == {"shopTransactionId": shop_id}
    status = stripe_pgm.get(f"/v3/stripe/subscription/status/{token}").json()
    assert (status["status"], status["subscriptionToken"], status["providerName"]) == ("ACTIVE", token, "stripe")
    stranger = stripe_pgm.client.delete(
        f"/v3/stripe/subscription/expire/{token}", params={"shopTransactionId": "other"}
    )
    assert stranger.status_code == 404
    expired = stripe_pgm.client.delete(f"/v3/stripe/subscription/expire/{token}", params={"shopTransactionId": shop_id})
    assert expired.status_code == 200, expired.text
    assert stripe_pgm.get(f"/v3/stripe/subscription/status/{token}").json()["status"] == "CANCELED"
    # Expiring again (the older POST form) is harmless.
    assert stripe_pgm.post(f"/v3/stripe/subscription/expire/{token}", None).status_code == 200


def test_a_subscription_with_expires_after_bills_that_many_periods_then_ends(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    body = {**pay_body(shop_id, amount=990), "subscriptionInfo": {"interval": "MONTH", "expiresAfter": 3}}
    answer = stripe_pgm.post("/v3/stripe/credit-cards/subscription/schedule", body)
    assert answer.status_code == 200, answer.text
    fake.approve(answer.json()["paymentId"])
    wait_for_status(notifications, shop_id, "ACCEPTED")
    [session] = fake.payments(shop_id)
    token = session["subscription"]
    subscription = fake.subscription(token)
    # The webhook that completed the session gave the subscription its end: the anchor plus three months.
    anchor = datetime.fromtimestamp(subscription["billing_cycle_anchor"], UTC)
    months = anchor.month - 1 + 3
    year, month = anchor.year + months // 12, months % 12 + 1
    end = anchor.replace(year=year, month=month, day=min(anchor.day, calendar.monthrange(year, month)[1]))
    assert subscription["cancel_at"] == int(end.timestamp())
    assert fake.renew(token) == "active"
    assert fake.renew(token) == "active"
    assert fake.renew(token) == "canceled"
    assert len(fake.invoices(token)) == 3
    assert stripe_pgm.get(f"/v3/stripe/subscription/status/{token}").json()["status"] == "CANCELED"


@pytest.mark.parametrize("expires_after", ["3", 0, -1, 2.5, True, 1001])
def test_expires_after_must_be_a_number_of_payments(
    stripe_pgm: PgmProcess, shop_id: str, expires_after: object
) -> None:
    body = {**pay_body(shop_id), "subscriptionInfo": {"interval": "MONTH", "expiresAfter": expires_after}}
    answer = stripe_pgm.post("/v3/stripe/credit-cards/subscription/schedule", body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "subscriptionInfo.expiresAfter"


def test_subscription_status_of_an_unknown_token_is_not_found(stripe_pgm: PgmProcess) -> None:
    assert stripe_pgm.get("/v3/stripe/subscription/status/sub_missing").status_code == 404


# ---------------------------------------------------------------------------------- pay by link


def test_pay_by_link_is_accepted_when_the_payer_pays_and_can_be_refunded(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    response = stripe_pgm.post(
        "/v3/stripe/pay-by-link", {**pay_body(shop_id, amount=2500), "paymentMethod": "credit-cards"}
    )
    answer = response.json()
    assert (answer["resultCode"], answer["paymentId"][:6]) == ("OK", "plink_")
    assert httpx.get(answer["link"]).status_code == 200
    [link] = fake.payment_links(shop_id)
    assert link["restrictions"]["completed_sessions"]["limit"] == 1
    fake.approve(answer["paymentId"])
    accepted = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert accepted["paymentId"] == answer["paymentId"]
    assert refund(stripe_pgm, answer["paymentId"], 2500)["result"] == "OK"
    assert [r["amount"] for r in fake.payments(shop_id)[0]["refunds"]] == [2500]


def test_a_deactivated_unpaid_link_is_failed_on_check(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = stripe_pgm.post("/v3/stripe/pay-by-link", pay_body(shop_id)).json()
    assert stripe_pgm.get("/v3/stripe/status", params={"paymentId": answer["paymentId"]}).json()["status"] == "PENDING"
    fake.decline(answer["paymentId"])
    assert stripe_pgm.get("/v3/stripe/check", params={"paymentId": answer["paymentId"]}).json()["status"] == "FAILED"
    wait_for_status(notifications, shop_id, "FAILED")


# ------------------------------------------------------------------------------- status / check


def test_status_asks_stripe_and_check_also_notifies(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(stripe_pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "PENDING")
    with fake.holding_webhooks():
        fake.approve(payment_id)
        status = stripe_pgm.get("/v3/stripe/status", params={"paymentId": payment_id}).json()
        assert (status["status"], status["shopTransactionId"]) == ("ACCEPTED", shop_id)
        assert status["paymentMethod"] == "credit-cards"
        stripe_pgm.get("/v3/stripe/check", params={"paymentId": payment_id})
        wait_for(lambda: payment_statuses(notifications, shop_id).count("ACCEPTED") == 2, what="status change + check")
    assert stripe_pgm.get("/v3/stripe/status", params={"paymentId": "pi_not_a_session"}).status_code == 404
    assert stripe_pgm.get("/v3/stripe/status", params={"paymentId": "cs_test_missing"}).status_code == 404


# ------------------------------------------------------------------------------------ callbacks


def test_forged_or_stale_webhooks_are_refused_and_change_nothing(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(stripe_pgm, shop_id)["paymentId"]
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": "checkout.session.completed",
            "data": {"object": {"id": payment_id, "status": "complete", "payment_status": "paid"}},
        }
    ).encode()
    forged = fake.post_webhook(body, fake.sign(body, secret="whsec_someone_else"))
    stale = fake.post_webhook(body, fake.sign(body, timestamp=int(time.time()) - 301))
    unsigned = fake.post_webhook(body, None)
    assert (forged.status_code, stale.status_code, unsigned.status_code) == (401, 401, 401)
    assert "older than" in stale.json()["message"]
    assert "whsec" not in forged.text
    status = stripe_pgm.get("/v3/stripe/status", params={"paymentId": payment_id}).json()
    assert status["status"] == "PENDING"
    assert "ACCEPTED" not in payment_statuses(notifications, shop_id)


def test_the_same_webhook_twice_gives_one_notification(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(stripe_pgm, fake, notifications, shop_id)
    [completed] = [
        e for e in fake.events if e["type"] == "checkout.session.completed" and e["data"]["object"]["id"] == payment_id
    ]
    assert fake.redeliver(completed["id"]).status_code == 200
    assert fake.redeliver(completed["id"]).status_code == 200
    stripe_pgm.get("/v3/stripe/status", params={"paymentId": payment_id})
    assert payment_statuses(notifications, shop_id) == ["PENDING", "ACCEPTED"]


def test_out_of_order_webhooks_settle_to_the_right_state(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(stripe_pgm, shop_id, "pay-pal")["paymentId"]
    with fake.holding_webhooks() as held:
        fake.approve(payment_id)
        # The PGM learns the payment from a check while Stripe's webhook is still on its way.
        assert stripe_pgm.get("/v3/stripe/check", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"
        refund_id = refund(stripe_pgm, payment_id, 1000)["refundId"]
        fake.complete_refund(refund_id, ok=True)
        held.reverse()
    assert [e["type"] for e in fake.events[-2:]] == ["checkout.session.completed", "charge.refund.updated"]
    wait_for_status(notifications, shop_id, "ACCEPTED", action="REFUND")
    stripe_pgm.get("/v3/stripe/status", params={"paymentId": payment_id})
    assert payment_statuses(notifications, shop_id).count("ACCEPTED") == 2  # the status change and the /check
    assert all(d.status == 200 for d in fake.deliveries[-2:])


def test_a_webhook_before_the_pgm_knows_the_payment_is_kept_and_applied_later(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    # The session is created but its answer is lost, and so is the first search for it.
    fake.fail_next(500, after_processing=True, method="POST", path=SESSIONS)
    fake.fail_next(503, method="GET", path=SESSIONS)
    answer = pay(stripe_pgm, shop_id)
    assert (answer["result"], answer["paymentId"]) == ("PENDING", None)
    [session] = fake.payments(shop_id)
    fake.approve(session["id"])
    assert fake.deliveries[-1].status == 200
    accepted = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert accepted["paymentId"] == session["id"]
    assert len(fake.payments(shop_id)) == 1


# ---------------------------------------------------------------------------------------- faults


def test_stripe_5xx_before_creating_anything_leaves_the_payment_unknown_then_failed(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.fail_next(500, method="POST", path=SESSIONS)
    answer = pay(stripe_pgm, shop_id)
    assert answer["result"] == "PENDING"
    assert "will be confirmed with the provider" in answer["resultDescription"]
    failed = wait_for_status(notifications, shop_id, "FAILED")
    assert failed["paymentId"] is None
    assert fake.payments(shop_id) == []


@pytest.mark.parametrize("fault", ["5xx after processing", "time-out", "malformed answer"])
def test_a_lost_pay_answer_is_found_by_its_idempotency_key_and_never_charged_twice(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str, fault: str
) -> None:
    if fault == "5xx after processing":
        fake.fail_next(502, after_processing=True, method="POST", path=SESSIONS)
    elif fault == "time-out":
        fake.delay_next(2.5, method="POST", path=SESSIONS)
    else:
        fake.malformed_next(method="POST", path=SESSIONS)
    answer = pay(stripe_pgm, shop_id)
    [session] = fake.payments(shop_id)
    # Found by a lookup: the session still open, the payer is sent to its page as the lost answer would have.
    assert (answer["result"], answer["paymentId"]) == ("REDIRECT_TO_URL", session["id"])
    assert answer["redirectToUrl"] == session["url"]
    fake.approve(session["id"])
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert len(fake.payments(shop_id)) == 1


def test_a_lost_refund_answer_is_found_and_not_refunded_twice(
    stripe_pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(stripe_pgm, fake, notifications, shop_id)
    fake.delay_next(2.5, method="POST", path=REFUNDS)
    answer = refund(stripe_pgm, payment_id, 400)
    assert answer["result"] == "OK"
    assert [r["amount"] for r in fake.payments(shop_id)[0]["refunds"]] == [400]


def test_a_stripe_refusal_is_a_ko_and_reveals_no_secret(
    start_pgm: Callable[..., PgmProcess], fake: StripeFake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="stripe", **{**fake.env(), "STRIPE_PRIVATE_KEY": "sk_test_wrong_key_1234"})
    answer = pay(pgm, shop_id)
    assert answer["result"] == "KO"
    assert "STRIPE_PRIVATE_KEY" in answer["resultDescription"]
    assert "sk_test_wrong" not in answer["resultDescription"]
    assert "sk_test_wrong" not in Path(pgm.log_path).read_text()


@pytest.mark.parametrize("missing", ["STRIPE_PRIVATE_KEY"])
def test_start_up_is_refused_without_a_required_variable(
    start_pgm: Callable[..., PgmProcess], fake: StripeFake, missing: str
) -> None:
    env = {key: value for key, value in fake.env().items() if key != missing}
    with pytest.raises(RuntimeError) as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,stripe", **env)
    assert "exited with 2" in str(refused.value)
    assert missing in str(refused.value)


# ------------------------------------------------------------------------------------ the fake


def stripe_api(fake: StripeFake, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Call the fake directly, as the SDK would (secret key, pinned version, a fresh idempotency key)."""
    headers = {"Stripe-Version": API_VERSION, "Idempotency-Key": uuid.uuid4().hex, **kwargs.pop("headers", {})}
    auth = kwargs.pop("auth", None)
    if auth is None:
        headers.setdefault("Authorization", f"Bearer {fake.secret_key}")
    return httpx.request(method, f"{fake.base_url}{path}", headers=headers, auth=auth, **kwargs)


def test_fake_enforces_stripe_authentication(fake: StripeFake) -> None:
    missing = httpx.get(f"{fake.base_url}{SESSIONS}")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    wrong = stripe_api(fake, "GET", SESSIONS, headers={"Authorization": "Bearer sk_test_wrong_but_long_1234"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"].endswith("1234")
    assert "wrong_but_long" not in wrong.json()["error"]["message"]
    basic = stripe_api(fake, "GET", SESSIONS, auth=(fake.secret_key, ""))
    assert basic.status_code == 200


def test_fake_validates_request_shapes_and_replays_idempotent_requests(fake: StripeFake) -> None:
    form = {
        "mode": "payment",
        "success_url": "https://shop.example/ok",
        "line_items[0][price_data][currency]": "eur",
        "line_items[0][price_data][unit_amount]": "1000",
        "line_items[0][price_data][product_data][name]": "Thing",
        "line_items[0][quantity]": "1",
    }
    as_json = stripe_api(fake, "POST", SESSIONS, json=form)
    assert as_json.status_code == 400
    decimal = stripe_api(fake, "POST", SESSIONS, data={**form, "line_items[0][price_data][unit_amount]": "10.00"})
    assert decimal.json()["error"]["param"] == "unit_amount"
    no_key = httpx.post(
        f"{fake.base_url}{SESSIONS}",
        data=form,
        headers={"Authorization": f"Bearer {fake.secret_key}", "Stripe-Version": API_VERSION},
    )
    assert no_key.status_code == 400
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = stripe_api(fake, "POST", SESSIONS, data=form, headers=key)
    again = stripe_api(fake, "POST", SESSIONS, data=form, headers=key)
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = stripe_api(
        fake, "POST", SESSIONS, data={**form, "line_items[0][price_data][unit_amount]": "999"}, headers=key
    )
    assert (other.status_code, other.json()["error"]["type"]) == (400, "idempotency_error")


# -------------------------------------------------------------------------------- real sandbox


@pytest.mark.real_sandbox
@pytest.mark.skipif(
    not os.environ.get("STRIPE_TEST_SECRET_KEY", "").startswith("sk_test_"),
    reason="set STRIPE_TEST_SECRET_KEY (a test-mode key) to run against Stripe's real test mode",
)
def test_real_stripe_test_mode_creates_and_reports_a_checkout_session(
    start_pgm: Callable[..., PgmProcess], shop_id: str
) -> None:
    pgm = start_pgm(
        ENABLED_PROVIDERS="stripe",
        STRIPE_PRIVATE_KEY=os.environ["STRIPE_TEST_SECRET_KEY"],
        STRIPE_WEBHOOK_SECRET=os.environ.get("STRIPE_TEST_WEBHOOK_SECRET", "whsec_unused_here"),
        PGM_PROVIDER_TIMEOUT_SECONDS="20",
    )
    answer = pay(pgm, shop_id)
    assert answer["result"] == "REDIRECT_TO_URL"
    assert answer["redirectToUrl"].startswith("https://checkout.stripe.com/")
    status = pgm.get("/v3/stripe/status", params={"paymentId": answer["paymentId"]}).json()
    assert (status["status"], status["shopTransactionId"]) == ("PENDING", shop_id)
