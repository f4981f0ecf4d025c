"""Requests to Stripe through /v3, and a payment the payer completed on Checkout."""

from __future__ import annotations

from typing import Any

from tests.fakes.stripe import StripeFake
from tests.support.notifications import wait_for_status
from tests.support.pay_requests import pay_request
from tests.support.pgm_process import PgmProcess
from tests.support.servers import RecordingReceiver

SESSIONS = "/v1/checkout/sessions"


def pay_body(shop_id: str, amount: int = 1000, **extra: Any) -> dict[str, Any]:
    """A /v3/stripe pay body."""
    return pay_request(shop_id, amount, **extra)


def pay(pgm: PgmProcess, shop_id: str, method: str = "credit-cards", **extra: Any) -> dict[str, Any]:
    """POST /v3/stripe/{method}/pay and return the answer."""
    response = pgm.post(f"/v3/stripe/{method}/pay", pay_body(shop_id, **extra))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def paid(
    pgm: PgmProcess, fake: StripeFake, notifications: RecordingReceiver, shop_id: str, method: str = "credit-cards"
) -> str:
    """A payment the payer completed on Checkout and the PGM knows as ACCEPTED; returns its paymentId."""
    payment_id = str(pay(pgm, shop_id, method)["paymentId"])
    fake.approve(payment_id)
    wait_for_status(notifications, shop_id, "ACCEPTED")
    return payment_id
