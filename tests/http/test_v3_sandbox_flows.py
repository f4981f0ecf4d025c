"""Every sandbox outcome of every pay-like operation, over real HTTP, through to the final
PaymentStatus at PAYMENT_CALLBACK_URL (docs/api.md, docs/sandbox.md)."""

from __future__ import annotations

import pytest

from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.sandbox_requests import pay_body
from tests.support.servers import RecordingReceiver

FINAL = {"OK": "ACCEPTED", "KO": "FAILED"}


@pytest.mark.parametrize(("outcome", "final"), [("OK", "ACCEPTED"), ("KO", "FAILED")])
def test_pay_with_immediate_outcome_notifies_final_status(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str, outcome: str, final: str
) -> None:
    answer = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, outcome)).json()
    assert answer["result"] == outcome
    assert answer["paymentId"].startswith("sbx_pay_")
    status = wait_for_status(notifications, shop_id, final)
    assert status == {
        "status": final,
        "paymentId": answer["paymentId"],
        "shopTransactionId": shop_id,
        "providerName": "sandbox",
        "paymentMethod": "credit-cards",
        "action": "PAYMENT",
    }
    if outcome == "KO":
        assert "declined" in answer["resultDescription"].lower()


@pytest.mark.parametrize(("outcome", "decision", "final"), [
    ("REDIRECT_TO_URL", "approve", "ACCEPTED"),
    ("REDIRECT_TO_URL", "decline", "FAILED"),
    ("PENDING", "approve", "ACCEPTED"),
    ("PENDING", "decline", "FAILED"),
])  # fmt: skip
def test_pay_completed_on_the_hosted_page(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str, outcome: str, decision: str, final: str
) -> None:
    answer = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, outcome)).json()
    assert answer["result"] == outcome
    page = pgm.get(answer["redirectToUrl"])
    assert page.status_code == 200
    assert "12.99 EUR" in page.text
    assert shop_id in page.text
    assert 'value="approve"' in page.text
    assert answer["redirectToUrlMobile"].startswith(answer["redirectToUrl"])
    assert pgm.sandbox_payments(shop_id)[0]["status"] == "PENDING"

    result_page = pgm.decide(answer["redirectToUrl"], decision)
    assert result_page.status_code == 200
    assert ("approved" if decision == "approve" else "declined") in result_page.text
    status = wait_for_status(notifications, shop_id, final)
    assert status["paymentId"] == answer["paymentId"]
    assert pgm.get("/v3/sandbox/status", params={"paymentId": answer["paymentId"]}).json()["status"] == final
    assert pgm.sandbox_payments(shop_id)[0]["status"] == final


def test_default_outcome_is_a_redirect(pgm: PgmProcess, shop_id: str) -> None:
    answer = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id)).json()
    assert answer["result"] == "REDIRECT_TO_URL"
    assert answer["redirectToUrl"] == f"{pgm.url}/sandbox/checkout/{answer['paymentId']}"


def test_deciding_twice_on_the_hosted_page_changes_nothing(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id)).json()
    assert pgm.decide(answer["redirectToUrl"], "approve").status_code == 200
    assert pgm.decide(answer["redirectToUrl"], "decline").status_code == 409
    wait_for_status(notifications, shop_id, "ACCEPTED")
    assert pgm.sandbox_payments(shop_id)[0]["status"] == "ACCEPTED"
    assert not [s for s in statuses_for(notifications, shop_id) if s["status"] == "FAILED"]


def test_provider_error_is_reconciled_to_failed_without_a_payment(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "ERROR")).json()
    assert answer["result"] == "PENDING"
    assert answer["paymentId"] is None
    assert "HTTP 500" in answer["resultDescription"]
    status = wait_for_status(notifications, shop_id, "FAILED")
    assert status["paymentId"] is None
    assert pgm.sandbox_payments(shop_id) == []


def test_provider_timeout_is_settled_by_asking_the_provider_and_charges_once(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    answer = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "TIMEOUT")).json()
    # The answer was lost, the payment went through: a lookup by our idempotency key finds it.
    assert answer["result"] == "OK"
    payments = pgm.sandbox_payments(shop_id)
    assert len(payments) == 1
    assert answer["paymentId"] == payments[0]["paymentId"]
    wait_for_status(notifications, shop_id, "ACCEPTED")


def test_same_idempotency_key_pays_once(pgm: PgmProcess, shop_id: str) -> None:
    headers = {"Idempotency-Key": f"key-{shop_id}"}
    first = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK"), headers=headers).json()
    second = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK"), headers=headers).json()
    assert first == second
    assert len(pgm.sandbox_payments(shop_id)) == 1
    reused = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK", amount=5), headers=headers)
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_conflict"
    # Any difference is a conflict, not only the amount: the payment method, providerData, redirect URLs.
    for path, body in (
        ("/v3/sandbox/pay-pal/pay", pay_body(shop_id, "OK")),
        ("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "KO")),
        ("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK", successRedirectUrl="https://elsewhere.example/")),
    ):
        reused = pgm.post(path, body, headers=headers)
        assert reused.status_code == 409, (path, body, reused.text)
        assert reused.json()["code"] == "idempotency_conflict"
    assert len(pgm.sandbox_payments(shop_id)) == 1


def test_same_idempotency_key_for_a_different_refund_is_a_conflict(pgm: PgmProcess, shop_id: str) -> None:
    paid = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK")).json()
    headers = {"Idempotency-Key": f"refund-{shop_id}"}
    refund = {"amount": 300, "currency": "EUR", "paymentId": paid["paymentId"]}
    first = pgm.post("/v3/sandbox/refund", refund, headers=headers).json()
    assert pgm.post("/v3/sandbox/refund", refund, headers=headers).json() == first
    reused = pgm.post("/v3/sandbox/refund", {**refund, "amount": 301}, headers=headers)
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_conflict"


@pytest.mark.parametrize("outcome", ["OK", "KO", "REDIRECT_TO_URL"])
def test_subscription_schedule_outcomes(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str, outcome: str
) -> None:
    body = pay_body(shop_id, outcome, subscriptionInfo={"interval": "MONTH", "intervalCount": 1})
    answer = pgm.post("/v3/sandbox/credit-cards/subscription/schedule", body).json()
    assert answer["result"] == outcome
    token = answer["subscriptionToken"]
    assert token.startswith("sbx_sub_")
    if outcome == "REDIRECT_TO_URL":
        pgm.decide(answer["redirectToUrl"], "approve")
    final = FINAL.get(outcome, "ACCEPTED")
    status = wait_for_status(notifications, shop_id, final)
    assert status["metadata"]["subscriptionToken"] == token
    subscription = pgm.get(f"/v3/sandbox/subscription/status/{token}").json()
    assert subscription["status"] == ("ACTIVE" if final == "ACCEPTED" else "CANCELED")
    assert subscription["providerName"] == "sandbox"
    if final == "ACCEPTED":
        assert pgm.client.delete(f"/v3/sandbox/subscription/expire/{token}").json()["result"] == "OK"
        assert pgm.get(f"/v3/sandbox/subscription/status/{token}").json()["status"] == "EXPIRED"


def test_subscription_update_changes_the_terms(pgm: PgmProcess, shop_id: str) -> None:
    body = pay_body(shop_id, "OK", subscriptionInfo={"interval": "MONTH", "intervalCount": 1})
    token = pgm.post("/v3/sandbox/credit-cards/subscription/schedule", body).json()["subscriptionToken"]
    update = pay_body(shop_id, subscriptionInfo={"interval": "YEAR", "intervalCount": 1})
    answer = pgm.post(f"/v3/sandbox/subscription/update/{token}", update).json()
    assert answer == {"result": "OK", "resultDescription": "subscription is ACTIVE", "subscriptionToken": token}
    status = pgm.get(f"/v3/sandbox/subscription/status/{token}").json()
    assert status["metadata"]["interval"] == "YEAR"
    # Older clients expire with POST.
    assert pgm.post(f"/v3/sandbox/subscription/expire/{token}", None).json()["result"] == "OK"


@pytest.mark.parametrize("outcome", ["OK", "KO", "PENDING"])
def test_subscription_start_then_pay_with_the_stored_token(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str, outcome: str
) -> None:
    start = pgm.post(
        "/v3/sandbox/credit-cards/subscription/start",
        pay_body(shop_id, outcome, subscriptionInfo={"interval": "MONTH", "intervalCount": 1}),
    ).json()
    assert start["result"] == outcome
    token = start["subscriptionToken"]
    if outcome == "PENDING":
        pgm.decide(start["redirectToUrl"], "approve")
    wait_for_status(notifications, shop_id, FINAL.get(outcome, "ACCEPTED"))

    next_id = f"{shop_id}-2"
    again = pgm.post(
        "/v3/sandbox/credit-cards/subscription/pay", pay_body(next_id, "OK", subscriptionInfo={"token": token})
    ).json()
    if outcome == "KO":
        assert again["result"] == "KO"
        assert "not active" in again["resultDescription"]
        wait_for_status(notifications, next_id, "FAILED")
    else:
        assert again["result"] == "OK"
        wait_for_status(notifications, next_id, "ACCEPTED")


@pytest.mark.parametrize("outcome", ["KO", "PENDING", "REDIRECT_TO_URL"])
def test_subscription_pay_outcomes(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str, outcome: str
) -> None:
    start = pgm.post(
        "/v3/sandbox/credit-cards/subscription/start",
        pay_body(shop_id, "OK", subscriptionInfo={"interval": "MONTH"}),
    ).json()
    next_id = f"{shop_id}-2"
    answer = pgm.post(
        "/v3/sandbox/credit-cards/subscription/pay",
        pay_body(next_id, outcome, subscriptionInfo={"token": start["subscriptionToken"]}),
    ).json()
    assert answer["result"] == outcome
    if outcome != "KO":
        pgm.decide(answer["redirectToUrl"], "approve")
    wait_for_status(notifications, next_id, FINAL.get(outcome, "ACCEPTED"))


@pytest.mark.parametrize(("outcome", "decision", "final"), [
    ("OK", None, "ACCEPTED"),
    ("KO", None, "FAILED"),
    ("REDIRECT_TO_URL", "approve", "ACCEPTED"),
    ("REDIRECT_TO_URL", "decline", "FAILED"),
    ("PENDING", "approve", "ACCEPTED"),
])  # fmt: skip
def test_authorization_token_outcomes(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str, outcome: str, decision: str | None, final: str
) -> None:
    answer = pgm.post("/v3/sandbox/utility/credit-cards/subscription/token", pay_body(shop_id, outcome)).json()
    assert answer["result"] == outcome
    token = answer["token"]
    assert token.startswith("sbx_auth_")
    if decision:
        page = pgm.get(answer["redirectToUrl"])
        assert "Authorize future payments" in page.text
        pgm.decide(answer["redirectToUrl"], decision)
    status = wait_for_status(notifications, shop_id, final)
    assert status["paymentId"] == token
    if final == "ACCEPTED":
        paid = pgm.post(
            "/v3/sandbox/credit-cards/subscription/pay",
            pay_body(f"{shop_id}-1", "OK", subscriptionInfo={"token": token}),
        ).json()
        assert paid["result"] == "OK"


@pytest.mark.parametrize(
    ("outcome", "final"), [("OK", "ACCEPTED"), ("REDIRECT_TO_URL", "ACCEPTED"), ("PENDING", "FAILED")]
)
def test_pay_by_link_outcomes(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str, outcome: str, final: str
) -> None:
    answer = pgm.post("/v3/sandbox/pay-by-link", pay_body(shop_id, outcome)).json()
    assert answer["resultCode"] == "OK"
    assert answer["link"] == f"{pgm.url}/sandbox/checkout/{answer['paymentId']}"
    if outcome != "OK":
        page = pgm.get(answer["link"])
        assert "Payment link" in page.text
        pgm.decide(answer["link"], "approve" if final == "ACCEPTED" else "decline")
    wait_for_status(notifications, shop_id, final)


def test_pay_by_link_refused(pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str) -> None:
    answer = pgm.post("/v3/sandbox/pay-by-link", pay_body(shop_id, "KO")).json()
    assert answer["resultCode"] == "KO"
    assert answer["link"] is None
    wait_for_status(notifications, shop_id, "FAILED")


@pytest.mark.parametrize(
    "path",
    [
        "/v3/sandbox/credit-cards/subscription/schedule",
        "/v3/sandbox/utility/credit-cards/subscription/token",
        "/v3/sandbox/pay-by-link",
    ],
)
def test_provider_error_and_timeout_on_other_operations_never_crash(pgm: PgmProcess, shop_id: str, path: str) -> None:
    for outcome in ("ERROR", "TIMEOUT"):
        reference = f"{shop_id}-{outcome}"
        body = pay_body(reference, outcome, subscriptionInfo={"interval": "MONTH"})
        response = pgm.post(path, body)
        assert response.status_code == 200, response.text
        assert len(pgm.sandbox_payments(reference)) <= 1
