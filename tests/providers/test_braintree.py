"""Braintree through /v3 over real HTTP: a real PGM process whose official Braintree SDK talks to the
stateful Braintree fake (tests/fakes/braintree.py), which also sends signed webhooks back."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from pgm.providers import braintree as braintree_provider
from pgm.providers.base import Operation, PayRequest, PayResultCode, RefundRequest
from tests.fakes.braintree import (
    PLAN_ID,
    PRIVATE_KEY,
    PUBLIC_KEY,
    QUARTERLY_PLAN_ID,
    Fake,
    running_braintree_fake,
    webhook_form,
)
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for

PAYPAL_NONCE = "fake-paypal-one-time-nonce"
BILLING_AGREEMENT_NONCE = "fake-paypal-billing-agreement-nonce"
CARD_NONCE = "fake-valid-nonce"
DECLINED_NONCE = "fake-processor-declined-visa-nonce"


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    """The Braintree fake shared by the module (each test uses its own order id)."""
    with running_braintree_fake() as running:
        yield running


@pytest.fixture(scope="module")
def pgm(
    backend: str, receiver: tuple[RecordingReceiver, str], fake: Fake, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgmProcess]:
    """A PGM with Braintree enabled against the fake; the fake's webhooks go to its callback."""
    with pgm_with_provider("braintree", fake, backend, tmp_path_factory.mktemp("pgm-bt"), receiver[1]) as process:
        yield process


def pay_body(shop_id: str, amount: int = 1000, **provider_data: Any) -> dict[str, Any]:
    """A /v3/braintree pay body."""
    return {"amount": amount, "currency": "EUR", "shopTransactionId": shop_id, "providerData": provider_data}


def pay(pgm: PgmProcess, shop_id: str, method: str = "pay-pal", amount: int = 1000, **data: Any) -> dict[str, Any]:
    """POST /v3/braintree/{method}/pay (a PayPal one-time nonce unless providerData says otherwise)."""
    if not {"nonce", "paymentToken", "vaulted"} & set(data):
        data["nonce"] = PAYPAL_NONCE
    response = pgm.post(f"/v3/braintree/{method}/pay", pay_body(shop_id, amount, **data))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def refund(pgm: PgmProcess, payment_id: str, amount: int) -> dict[str, Any]:
    """POST /v3/braintree/refund."""
    response = pgm.post("/v3/braintree/refund", {"amount": amount, "currency": "EUR", "paymentId": payment_id})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def refunds_notified(notifications: RecordingReceiver, shop_id: str) -> list[dict[str, Any]]:
    """REFUND notifications with status ACCEPTED for an order."""
    return [s for s in statuses_for(notifications, shop_id) if s["action"] == "REFUND" and s["status"] == "ACCEPTED"]


# ------------------------------------------------------------------------------------------ pay


def test_paypal_payment_is_a_sale_submitted_for_settlement_and_accepted_at_once(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    before = len(fake.requests)
    answer = pay(pgm, shop_id, deviceData='{"correlation_id":"abc"}')
    assert answer["result"] == "OK", answer
    [sale] = fake.payments(shop_id)
    assert (answer["paymentId"], sale["status"], sale["amount"]) == (sale["id"], "submitted_for_settlement", 1000)
    assert (sale["instrument"], sale["deviceData"]) == ("paypal_account", '{"correlation_id":"abc"}')
    accepted = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert (accepted["paymentId"], accepted["providerName"]) == (sale["id"], "braintree")
    # The SDK authenticated with the keys and sent its API version on every call.
    calls = fake.requests[before:]
    assert calls
    assert all(h["authorization"].startswith("Basic ") and h["x-apiversion"] for _, _, h, _ in calls)


def test_card_payment_declined_by_the_processor_is_a_ko_with_the_reason(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pay(pgm, shop_id, "credit-cards", nonce=DECLINED_NONCE)
    assert answer["result"] == "KO"
    assert "declined (2000: Do Not Honor)" in answer["resultDescription"]
    assert fake.payments(shop_id)[0]["status"] == "processor_declined"
    assert wait_for_status(notifications, shop_id, "FAILED")["paymentId"] == answer["paymentId"]


def test_three_d_secure_is_required_when_asked_and_a_failed_authentication_is_refused(
    pgm: PgmProcess, fake: Fake, shop_id: str
) -> None:
    failed = pay(
        pgm,
        shop_id,
        "credit-cards",
        nonce="fake-three-d-secure-visa-failed-authentication-nonce",
        threeDSecureRequired=True,
    )
    assert failed["result"] == "KO"
    assert "3-D Secure authentication did not succeed" in failed["resultDescription"]
    authenticated = pay(
        pgm,
        f"{shop_id}-2",
        "credit-cards",
        nonce="fake-three-d-secure-visa-full-authentication-nonce",
        threeDSecureRequired=True,
    )
    assert authenticated["result"] == "OK"


def test_a_payer_who_abandons_paypal_leaves_no_nonce_and_nothing_is_charged(
    pgm: PgmProcess, fake: Fake, shop_id: str
) -> None:
    # The PayPal flow runs in Braintree's client SDK; a payer who closes it leaves the client no nonce.
    response = pgm.post("/v3/braintree/pay-pal/pay", pay_body(shop_id))
    assert response.status_code == 400
    assert response.json()["field"] == "providerData.nonce"
    stale = pay(pgm, shop_id, nonce="a-nonce-braintree-never-issued")
    assert stale["result"] == "KO"
    assert "Unknown payment_method_nonce" in stale["resultDescription"]
    assert fake.payments(shop_id) == []


def test_vaulted_customer_pays_with_the_default_method_or_a_token(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:12]}"
    unknown = pgm.get("/v3/braintree/utility/customer/token", params={"customer_id": customer}).json()
    assert unknown["vaulted"] is False
    assert unknown["client_token"]
    created = pgm.post(
        "/v3/braintree/utility/customer/create", {"customer_id": customer, "nonce": BILLING_AGREEMENT_NONCE}
    )
    assert created.status_code == 200, created.text
    assert created.json()["customerId"] == customer
    token = created.json()["paymentToken"]
    assert fake.customer_methods(customer) == [(token, "paypal")]
    assert pgm.get("/v3/braintree/utility/customer/token", params={"customer_id": customer}).json()["vaulted"] is True
    again = pgm.post(
        "/v3/braintree/utility/customer/create", {"customer_id": customer, "nonce": BILLING_AGREEMENT_NONCE}
    )
    assert again.status_code == 422
    assert "already been taken" in again.json()["message"]

    assert pay(pgm, shop_id, vaulted=True, customerId=customer)["result"] == "OK"
    assert pay(pgm, f"{shop_id}-t", paymentToken=token)["result"] == "OK"
    assert fake.payments(shop_id)[0]["customerId"] == customer
    stored = pay(pgm, f"{shop_id}-v", "credit-cards", nonce=CARD_NONCE, customerId=customer, storeInVault=True)
    assert stored["result"] == "OK"
    assert len(fake.customer_methods(customer)) == 2
    # A first-time payer: the sale creates the customer with the given id and vaults the method on it.
    newcomer = f"cust-{uuid.uuid4().hex[:12]}"
    first = pay(pgm, f"{shop_id}-n", nonce=BILLING_AGREEMENT_NONCE, customerId=newcomer, storeInVault=True)
    assert first["result"] == "OK", first
    assert [kind for _, kind in fake.customer_methods(newcomer)] == ["paypal"]
    assert pay(pgm, f"{shop_id}-n2", vaulted=True, customerId=newcomer)["result"] == "OK"


def test_provider_data_is_checked_before_braintree_is_called(pgm: PgmProcess, fake: Fake, shop_id: str) -> None:
    cases = [
        ({"nonce": PAYPAL_NONCE, "paymentToken": "tok1"}, "providerData.nonce"),
        ({"vaulted": True}, "providerData.customerId"),
        ({"vaulted": "yes", "customerId": "c1"}, "providerData.vaulted"),
        ({"nonce": PAYPAL_NONCE, "customerId": "not/an id"}, "providerData.customerId"),
        ({"nonce": 42}, "providerData.nonce"),
    ]
    for data, field in cases:
        response = pgm.post("/v3/braintree/pay-pal/pay", pay_body(shop_id, **data))
        assert (response.status_code, response.json().get("field")) == (400, field), (data, response.text)
    assert fake.payments(shop_id) == []


def test_what_braintree_cannot_do_answers_501_naming_it(pgm: PgmProcess, shop_id: str) -> None:
    link = pgm.post("/v3/braintree/pay-by-link", {**pay_body(shop_id), "paymentMethod": "pay-pal"})
    assert link.status_code == 501
    assert "braintree does not support pay-by-link" in link.json()["message"]
    body = {**pay_body(shop_id, nonce=PAYPAL_NONCE), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}}
    started = pgm.post("/v3/braintree/pay-pal/subscription/start", body)
    assert (started.status_code, "braintree does not support subscription/start" in started.json()["message"]) == (
        501,
        True,
    )
    assert pgm.post("/v3/braintree/satispay/pay", pay_body(shop_id, nonce=PAYPAL_NONCE)).status_code == 501
    weekly = {**body, "subscriptionInfo": {"interval": "DAY", "intervalCount": 7}}
    refused = pgm.post("/v3/braintree/pay-pal/subscription/schedule", weekly)
    assert (refused.status_code, refused.json()["field"]) == (400, "subscriptionInfo.interval")


# -------------------------------------------------------------------------------------- refunds


def test_total_refund_before_settlement_voids_the_sale(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    partial = refund(pgm, payment_id, 400)
    assert partial["result"] == "KO"
    assert "can only be voided as a whole" in partial["resultDescription"]
    total = refund(pgm, payment_id, 1000)
    assert total["result"] == "OK", total
    assert total["refundId"] == f"void-{payment_id}"
    assert fake.payments(shop_id)[0]["status"] == "voided"
    wait_for(lambda: len(refunds_notified(notifications, shop_id)) == 1, what="the void's refund notification")
    assert refund(pgm, payment_id, 1)["result"] == "KO"


def test_partial_then_total_refund_after_settlement_and_over_refund_refused(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id, "credit-cards", nonce=CARD_NONCE)["paymentId"]
    fake.settle(payment_id)
    first = refund(pgm, payment_id, 300)
    assert first["result"] == "OK", first
    assert refund(pgm, payment_id, 700)["result"] == "OK"
    over = refund(pgm, payment_id, 1)
    assert over["result"] == "KO"
    assert "exceeds the refundable amount" in over["resultDescription"]
    wait_for(lambda: len(refunds_notified(notifications, shop_id)) == 2, what="two refund notifications")
    assert [s["metadata"]["totalRefundedAmount"] for s in refunds_notified(notifications, shop_id)] == [300, 1000]
    credits = fake.payments(shop_id)[0]["refunds"]
    assert [c["amount"] for c in credits] == [300, 700]
    # Each refund carries our idempotency key as its order id: a lost answer is found by it.
    assert all(c["orderId"].startswith("pgm-") for c in credits)


def another_pgm(fake: Fake) -> braintree_provider.BraintreeAdapter:
    """An adapter of its own on the same Braintree account: the old PGM, or a stale replica."""
    return braintree_provider.BraintreeAdapter(
        environment=braintree_provider.environment_from(fake.env()),
        merchant_id=fake.merchant_id,
        merchant_account_id=fake.merchant_account_id,
        public_key=PUBLIC_KEY,
        private_key=PRIVATE_KEY,
        timeout_seconds=5,
    )


def test_braintree_refuses_a_refund_above_what_it_holds(fake: Fake, shop_id: str) -> None:
    # The PGM never asks (it checks first), so ask Braintree through the adapter as a stale replica would.
    adapter = another_pgm(fake)
    request = PayRequest(1000, "EUR", shop_id, "pay-pal", "pgm-key", provider_data={"nonce": PAYPAL_NONCE})

    async def run() -> str:
        sale = await adapter.pay(request)
        assert sale.payment_id
        fake.settle(sale.payment_id)
        return (await adapter.refund(RefundRequest(sale.payment_id, 1001, "EUR", "pgm-refund"))).description

    assert asyncio.run(run()) == "Braintree refused the refund: Refund amount is too large."


def test_a_payment_made_before_the_switch_is_adopted_with_what_braintree_already_refunded(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    old_pgm = another_pgm(fake)
    request = PayRequest(1000, "EUR", shop_id, "pay-pal", "old-pgm-key", provider_data={"nonce": PAYPAL_NONCE})

    async def paid_and_refunded_by_the_old_pgm() -> str:
        sale = await old_pgm.pay(request)
        assert sale.payment_id
        fake.settle(sale.payment_id)
        await old_pgm.refund(RefundRequest(sale.payment_id, 300, "EUR", "old-pgm-refund"))
        return sale.payment_id

    payment_id = asyncio.run(paid_and_refunded_by_the_old_pgm())
    over = refund(pgm, payment_id, 701)
    assert over["result"] == "KO"
    assert "refundable amount 700 (paid 1000, refunded 300" in over["resultDescription"]
    assert refund(pgm, payment_id, 700)["result"] == "OK"
    status = pgm.get("/v3/braintree/status", params={"paymentId": payment_id}).json()
    assert (status["status"], status["shopTransactionId"], status["paymentMethod"]) == ("ACCEPTED", shop_id, "pay-pal")
    assert [c["amount"] for c in fake.payments(shop_id)[0]["refunds"]] == [300, 700]


# -------------------------------------------------------------------------------- subscriptions


def test_monthly_subscription_is_scheduled_updated_checked_and_expired(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:12]}"
    pgm.post("/v3/braintree/utility/customer/create", {"customer_id": customer, "nonce": BILLING_AGREEMENT_NONCE})
    body = {
        **pay_body(shop_id, 990, planId=PLAN_ID, nonce=BILLING_AGREEMENT_NONCE, customerId=customer),
        "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1, "expiresAfter": 3},
    }
    answer = pgm.post("/v3/braintree/pay-pal/subscription/schedule", body).json()
    assert answer["result"] == "OK", answer
    token = answer["subscriptionToken"]
    held = fake.subscription(token)
    assert (held.plan_id, str(held.price), held.number_of_billing_cycles, held.status) == (PLAN_ID, "9.90", 3, "Active")
    assert held.transaction_ids == [answer["paymentId"]]
    wait_for_status(notifications, shop_id, "ACCEPTED")

    update = {**pay_body(shop_id, 1490), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}}
    updated = pgm.post(f"/v3/braintree/subscription/update/{token}", update)
    assert updated.status_code == 200, updated.text
    assert str(fake.subscription(token).price) == "14.90"
    status = pgm.get(f"/v3/braintree/subscription/status/{token}").json()
    assert (status["status"], status["metadata"]["price"], status["metadata"]["currentBillingCycle"]) == (
        "ACTIVE",
        1490,
        1,
    )
    assert fake.renew(token) == "Active"
    expired = pgm.client.delete(f"/v3/braintree/subscription/expire/{token}", params={"shopTransactionId": shop_id})
    assert expired.status_code == 200, expired.text
    assert fake.subscription(token).status == "Canceled"
    assert pgm.get(f"/v3/braintree/subscription/status/{token}").json()["status"] == "CANCELED"
    # Expiring an ended subscription again is harmless.
    assert pgm.client.post(f"/v3/braintree/subscription/expire/{token}").status_code == 200
    assert pgm.get("/v3/braintree/subscription/status/unknown-token").status_code == 404


def test_a_subscription_ends_by_itself_after_expires_after_payments(pgm: PgmProcess, fake: Fake, shop_id: str) -> None:
    token = fake.add_customer(f"cust-{uuid.uuid4().hex[:12]}")
    body = {
        **pay_body(shop_id, 500, planId=PLAN_ID, paymentToken=token),
        "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1, "expiresAfter": 2},
    }
    subscription = pgm.post("/v3/braintree/pay-pal/subscription/schedule", body).json()["subscriptionToken"]
    assert fake.renew(subscription) == "Expired"
    assert pgm.get(f"/v3/braintree/subscription/status/{subscription}").json()["status"] == "EXPIRED"


def test_a_subscription_needs_a_plan_and_a_vaulted_method(pgm: PgmProcess, fake: Fake, shop_id: str) -> None:
    info = {"interval": "MONTH", "intervalCount": 1}
    without_plan = pgm.post(
        "/v3/braintree/pay-pal/subscription/schedule",
        {**pay_body(shop_id, paymentToken="tok1"), "subscriptionInfo": info},
    )
    assert (without_plan.status_code, without_plan.json()["field"]) == (400, "providerData.planId")
    unknown_plan = pgm.post(
        "/v3/braintree/pay-pal/subscription/schedule",
        {
            **pay_body(shop_id, planId="no-such-plan", paymentToken=fake.add_customer(f"c{shop_id[-8:]}")),
            "subscriptionInfo": info,
        },
    ).json()
    assert unknown_plan["result"] == "KO"
    assert "Braintree has no plan 'no-such-plan'" in unknown_plan["resultDescription"]
    quarterly = pgm.post(
        "/v3/braintree/pay-pal/subscription/schedule",
        {
            **pay_body(f"{shop_id}-q", planId=QUARTERLY_PLAN_ID, paymentToken=fake.add_customer(f"q{shop_id[-8:]}")),
            "subscriptionInfo": info,
        },
    ).json()
    assert quarterly["result"] == "KO"
    assert "bills every 3 month(s), not every 1" in quarterly["resultDescription"]
    assert fake.payments(f"{shop_id}-q") == []


# ------------------------------------------------------------------------------ status and webhooks


def test_status_asks_braintree_and_check_also_notifies(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "ACCEPTED")
    status = pgm.get("/v3/braintree/status", params={"paymentId": payment_id}).json()
    assert (status["status"], status["shopTransactionId"], status["providerName"]) == ("ACCEPTED", shop_id, "braintree")
    count = len(statuses_for(notifications, shop_id))
    assert pgm.get("/v3/braintree/check", params={"paymentId": payment_id}).status_code == 200
    wait_for(lambda: len(statuses_for(notifications, shop_id)) == count + 1, what="the /check notification")
    assert pgm.get("/v3/braintree/status", params={"paymentId": "nope"}).status_code == 404


def test_a_settlement_declined_webhook_fails_the_payment_once_braintree_confirms_it(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "ACCEPTED")
    fake.decline_settlement(payment_id)
    failed = wait_for_status(notifications, shop_id, "FAILED")
    assert failed["paymentId"] == payment_id
    assert fake.deliveries[-1][1] == 200


def test_forged_webhooks_are_refused_and_change_nothing(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "ACCEPTED")
    declined = {"transaction": {**fake.transaction(payment_id), "status": "settlement_declined"}}
    forged = webhook_form("transaction_settlement_declined", declined, private_key="not-braintrees-key")
    assert fake.send_form(forged).status_code == 401
    genuine = webhook_form("transaction_settlement_declined", declined)
    tampered = {**genuine, "bt_payload": webhook_form("transaction_settled", declined)["bt_payload"]}
    assert fake.send_form(tampered).status_code == 401
    assert fake.send_form({"bt_payload": genuine["bt_payload"]}).status_code == 401
    other_key = {**genuine, "bt_signature": "someone-else|" + genuine["bt_signature"].split("|")[1]}
    assert fake.send_form(other_key).status_code == 401
    # Nothing changed, and a lookup still says accepted.
    assert [s["status"] for s in statuses_for(notifications, shop_id) if s["action"] == "PAYMENT"] == ["ACCEPTED"]
    assert pgm.get("/v3/braintree/status", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"


def test_a_genuine_reversal_braintree_does_not_confirm_and_duplicates_change_nothing(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    wait_for_status(notifications, shop_id, "ACCEPTED")
    # Signed, but Braintree's own record says the sale is fine: the PGM believes the lookup.
    declined = {"transaction": {**fake.transaction(payment_id), "status": "settlement_declined"}}
    stale = webhook_form("transaction_settlement_declined", declined)
    assert fake.send_form(stale).status_code == 200
    settled_form = webhook_form("transaction_settled", {"transaction": fake.transaction(payment_id)})
    for _ in range(3):
        assert fake.send_form(settled_form).status_code == 200
    assert fake.send_form(stale).status_code == 200
    assert [s["status"] for s in statuses_for(notifications, shop_id) if s["action"] == "PAYMENT"] == ["ACCEPTED"]


def test_subscription_webhooks_are_acknowledged(pgm: PgmProcess, fake: Fake, shop_id: str) -> None:
    token = fake.add_customer(f"cust-{uuid.uuid4().hex[:12]}")
    body = {**pay_body(shop_id, 500, planId=PLAN_ID, paymentToken=token), "subscriptionInfo": {"interval": "MONTH"}}
    subscription = pgm.post("/v3/braintree/pay-pal/subscription/schedule", body).json()["subscriptionToken"]
    before = len(fake.deliveries)
    fake.renew(subscription)
    wait_for(lambda: len(fake.deliveries) > before, what="the renewal webhook")
    assert [status for _, status in fake.deliveries[before:]] == [200]


# ---------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("fault", ["5xx after processing", "time-out"])
def test_a_lost_pay_answer_is_found_by_its_order_id_and_never_charged_twice(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str, fault: str
) -> None:
    if fault == "time-out":
        fake.delay_next(2.5)
    else:
        fake.lose_next()
    answer = pay(pgm, shop_id)
    [sale] = fake.payments(shop_id)
    assert answer["paymentId"] in (sale["id"], None)
    accepted = wait_for_status(notifications, shop_id, "ACCEPTED")
    assert accepted["paymentId"] == sale["id"]
    assert len(fake.payments(shop_id)) == 1


def test_braintree_down_before_charging_leaves_the_payment_unknown_then_failed(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    fake.fail_next(503)
    answer = pay(pgm, shop_id)
    assert answer["result"] == "PENDING"
    failed = wait_for_status(notifications, shop_id, "FAILED")
    assert failed["paymentId"] is None
    assert fake.payments(shop_id) == []


def test_a_lost_refund_answer_is_found_by_its_order_id_and_not_refunded_twice(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    fake.settle(payment_id)
    fake.delay_next(0)  # the refund first looks the sale up: that answer arrives
    fake.lose_next()  # the refund itself is made, its answer lost
    answer = refund(pgm, payment_id, 400)
    assert answer["result"] in ("OK", "PENDING")
    wait_for(lambda: len(refunds_notified(notifications, shop_id)) == 1, what="the refund, found again")
    assert [r["amount"] for r in fake.payments(shop_id)[0]["refunds"]] == [400]


def test_a_lost_void_answer_is_found_as_the_voided_sale(
    pgm: PgmProcess, fake: Fake, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    fake.delay_next(0)  # the refund first looks the sale up: that answer arrives
    fake.lose_next()  # the void is made, its answer lost
    answer = refund(pgm, payment_id, 1000)
    assert answer["result"] in ("OK", "PENDING")
    wait_for(lambda: len(refunds_notified(notifications, shop_id)) == 1, what="the void, found again")
    assert fake.payments(shop_id)[0]["status"] == "voided"
    assert refunds_notified(notifications, shop_id)[0]["metadata"]["totalRefundedAmount"] == 1000


def test_wrong_keys_are_refused_by_braintree_and_reveal_no_secret(
    start_pgm: Callable[..., PgmProcess], fake: Fake, shop_id: str
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="braintree", **{**fake.env(), "BRAINTREE_PRIVATE_KEY": "wrong-private-key-42"})
    answer = pay(pgm, shop_id)
    assert answer["result"] == "KO"
    assert "BRAINTREE_PRIVATE_KEY" in answer["resultDescription"]
    assert "wrong-private-key-42" not in answer["resultDescription"]
    assert "wrong-private-key-42" not in Path(pgm.log_path).read_text()
    assert fake.payments(shop_id) == []


@pytest.mark.parametrize("missing", braintree_provider.REQUIRED_VARIABLES)
def test_start_up_is_refused_naming_a_missing_variable(
    start_pgm: Callable[..., PgmProcess], fake: Fake, missing: str
) -> None:
    env = {key: value for key, value in fake.env().items() if key != missing}
    with pytest.raises(RuntimeError) as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox,braintree", **env)
    assert "exited with 2" in str(refused.value)
    assert missing in str(refused.value)


def test_utilities_answer_404_when_braintree_is_not_enabled(start_pgm: Callable[..., PgmProcess]) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="sandbox")
    assert pgm.get("/v3/braintree/utility/customer/token").status_code == 404


def test_submit_for_settlement_utility(pgm: PgmProcess, fake: Fake, shop_id: str) -> None:
    payment_id = pay(pgm, shop_id)["paymentId"]
    # Sales made by the PGM are submitted already: Braintree refuses a second submission.
    again = pgm.client.post("/v3/braintree/utility/payment/submit", params={"transaction_id": payment_id})
    assert again.status_code == 422
    assert "Cannot submit for settlement unless status is authorized" in again.json()["message"]
    assert pgm.client.post("/v3/braintree/utility/payment/submit", params={"transaction_id": "a/b"}).status_code == 400


def test_the_utilities_are_in_the_published_api_document(pgm: PgmProcess) -> None:
    document = pgm.get("/documentation/openapi.json").json()
    assert {"/v3/braintree/utility/customer/token", "/v3/braintree/utility/customer/create"} <= set(document["paths"])
    assert "post" in document["paths"]["/v3/braintree/utility/payment/submit"]
    OpenAPIV31SpecValidator(document).validate()
    assert PRIVATE_KEY not in pgm.get("/documentation/openapi.json").text


# -------------------------------------------------------------------------------- real sandbox

REAL = {name: os.environ.get(f"{name}_REAL", "") for name in braintree_provider.REQUIRED_VARIABLES}


@pytest.mark.real_sandbox
@pytest.mark.skipif(
    not all(REAL.values()),
    reason="set BRAINTREE_MERCHANT_ID_REAL, BRAINTREE_MERCHANT_ACCOUNT_ID_REAL, BRAINTREE_PUBLIC_KEY_REAL and "
    "BRAINTREE_PRIVATE_KEY_REAL (a sandbox account) to run against Braintree's real sandbox",
)
def test_real_braintree_sandbox_pays_settles_and_refunds(shop_id: str) -> None:
    from pgm.config import Settings

    adapter = braintree_provider.build(
        Settings(provider_env={**REAL, "BRAINTREE_IS_SANDBOX": "true"}, provider_timeout_seconds=30)
    )
    request = PayRequest(1000, "EUR", shop_id, "pay-pal", f"pgm-real-{shop_id}", provider_data={"nonce": PAYPAL_NONCE})
    adapter.check(Operation.PAY, request)

    async def run() -> None:
        paid = await adapter.pay(request)
        assert paid.result is PayResultCode.OK
        assert paid.payment_id
        found = await adapter.find_payment(request.idempotency_key, shop_id)
        assert found is not None
        assert found.payment_id == paid.payment_id
        voided = await adapter.refund(RefundRequest(paid.payment_id, 1000, "EUR", f"pgm-real-refund-{shop_id}"))
        assert voided.refund_id == f"void-{paid.payment_id}"

    asyncio.run(run())
