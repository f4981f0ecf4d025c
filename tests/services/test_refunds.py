"""Refunds through /v3 (docs/reliability.md): checked under the payment's lock against paid - refunded - pending,
before the provider is called."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.sandbox_requests import pay_body, refund
from tests.support.servers import RecordingReceiver, wait_for


def paid(pgm: PgmProcess, shop_id: str, amount: int = 1000) -> str:
    """A payment of `amount` accepted at once; returns its paymentId."""
    answer = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK", amount=amount)).json()
    assert answer["result"] == "OK"
    return str(answer["paymentId"])


def test_partial_refunds_up_to_the_paid_amount(pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str) -> None:
    payment_id = paid(pgm, shop_id)
    assert refund(pgm, payment_id, 300)["result"] == "OK"
    assert refund(pgm, payment_id, 700)["result"] == "OK"

    def refunded() -> list[dict[str, Any]]:
        return [
            s for s in statuses_for(notifications, shop_id) if s["action"] == "REFUND" and s["status"] == "ACCEPTED"
        ]

    wait_for(lambda: len(refunded()) == 2, what="two refund notifications")
    assert [s["metadata"]["totalRefundedAmount"] for s in refunded()] == [300, 1000]
    assert [s["metadata"]["refundAmount"] for s in refunded()] == [300, 700]
    books = pgm.sandbox_payments(shop_id)[0]
    assert [r["amount"] for r in books["refunds"]] == [300, 700]
    assert all(r["status"] == "ACCEPTED" for r in books["refunds"])


def test_refund_over_the_remaining_amount_is_refused_without_calling_the_provider(
    pgm: PgmProcess, shop_id: str
) -> None:
    payment_id = paid(pgm, shop_id)
    assert refund(pgm, payment_id, 600)["result"] == "OK"
    answer = refund(pgm, payment_id, 401)
    assert answer["result"] == "KO"
    assert "exceeds the refundable amount 400" in answer["resultDescription"]
    assert len(pgm.sandbox_payments(shop_id)[0]["refunds"]) == 1


def test_failed_refund_does_not_count_and_pending_does(pgm: PgmProcess, shop_id: str) -> None:
    payment_id = paid(pgm, shop_id)
    assert refund(pgm, payment_id, 1000, "KO")["result"] == "KO"
    pending = refund(pgm, payment_id, 800, "PENDING")
    assert pending["result"] == "PENDING"
    refused = refund(pgm, payment_id, 300)
    assert refused["result"] == "KO"
    assert "pending 800" in refused["resultDescription"]
    assert refund(pgm, payment_id, 200)["result"] == "OK"


def test_pending_refund_completed_on_its_page(pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str) -> None:
    payment_id = paid(pgm, shop_id)
    answer = refund(pgm, payment_id, 250, "PENDING")
    page_url = f"{pgm.url}/sandbox/refunds/{answer['refundId']}"
    page = pgm.get(page_url)
    assert page.status_code == 200
    assert "Pending refund" in page.text
    assert pgm.decide(page_url, "approve").status_code == 200
    status = wait_for_status(notifications, shop_id, "ACCEPTED", action="REFUND")
    assert status["metadata"]["refundAmount"] == 250
    assert status["metadata"]["totalRefundedAmount"] == 250


def test_declined_pending_refund_frees_the_amount(
    pgm: PgmProcess, notifications: RecordingReceiver, shop_id: str
) -> None:
    payment_id = paid(pgm, shop_id)
    answer = refund(pgm, payment_id, 1000, "PENDING")
    pgm.decide(f"{pgm.url}/sandbox/refunds/{answer['refundId']}", "decline")
    wait_for_status(notifications, shop_id, "FAILED", action="REFUND")
    assert refund(pgm, payment_id, 1000)["result"] == "OK"


def test_two_concurrent_refunds_exceeding_the_paid_amount_only_one_succeeds(pgm: PgmProcess, shop_id: str) -> None:
    payment_id = paid(pgm, shop_id)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: refund(pgm, payment_id, 600, sandboxDelayMs=0), range(2)))
    assert sorted(a["result"] for a in answers) == ["KO", "OK"]
    books = pgm.sandbox_payments(shop_id)[0]
    assert [r["amount"] for r in books["refunds"]] == [600]


def test_many_concurrent_refunds_never_exceed_the_paid_amount(pgm: PgmProcess, shop_id: str) -> None:
    payment_id = paid(pgm, shop_id)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: refund(pgm, payment_id, 300), range(8)))
    assert [a["result"] for a in answers].count("OK") == 3
    assert sum(r["amount"] for r in pgm.sandbox_payments(shop_id)[0]["refunds"]) == 900


def test_refund_of_an_unknown_or_unpaid_payment_is_refused(pgm: PgmProcess, shop_id: str) -> None:
    unknown = refund(pgm, "sbx_pay_doesnotexist", 100)
    assert unknown["result"] == "KO"
    assert "not known" in unknown["resultDescription"]
    pending = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "PENDING")).json()
    unpaid = refund(pgm, pending["paymentId"], 100)
    assert unpaid["result"] == "KO"
    assert "not been paid" in unpaid["resultDescription"]


def test_refund_in_another_currency_is_refused(pgm: PgmProcess, shop_id: str) -> None:
    payment_id = paid(pgm, shop_id)
    response = pgm.post("/v3/sandbox/refund", {"amount": 100, "currency": "USD", "paymentId": payment_id}).json()
    assert response["result"] == "KO"
    assert "currency" in response["resultDescription"]


def test_refund_with_the_same_idempotency_key_refunds_once(pgm: PgmProcess, shop_id: str) -> None:
    payment_id = paid(pgm, shop_id)
    headers = {"Idempotency-Key": f"refund-{shop_id}"}
    body = {"amount": 100, "currency": "EUR", "paymentId": payment_id}
    first = pgm.post("/v3/sandbox/refund", body, headers=headers).json()
    second = pgm.post("/v3/sandbox/refund", body, headers=headers).json()
    assert first["result"] == second["result"] == "OK"
    assert first["refundId"] == second["refundId"]
    assert len(pgm.sandbox_payments(shop_id)[0]["refunds"]) == 1
