"""Requests to Adyen through /v3, with Adyen's unencrypted test card fields."""

from __future__ import annotations

from typing import Any

from tests.fakes.adyen import AUTHORISED_CARD
from tests.support.pgm_process import PgmProcess


def card(number: str = AUTHORISED_CARD) -> dict[str, str]:
    """Adyen's unencrypted test form of the four client-side-encrypted card fields."""
    return {
        "encryptedCardNumber": number,
        "encryptedExpiryMonth": "test_03",
        "encryptedExpiryYear": "test_2030",
        "encryptedSecurityCode": "test_737",
    }


def pay_body(shop_id: str, amount: int = 1000, **extra: Any) -> dict[str, Any]:
    """A /pay body."""
    return {"amount": amount, "currency": "EUR", "shopTransactionId": shop_id, **extra}


def pay(pgm: PgmProcess, shop_id: str, number: str = AUTHORISED_CARD, amount: int = 1000) -> dict[str, Any]:
    """POST /v3/adyen/credit-cards/pay with a test card."""
    response = pgm.post("/v3/adyen/credit-cards/pay", pay_body(shop_id, amount, providerData=card(number)))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def refund(pgm: PgmProcess, payment_id: str, amount: int, **extra: Any) -> dict[str, Any]:
    """POST /v3/adyen/refund."""
    response = pgm.post("/v3/adyen/refund", {"amount": amount, "currency": "EUR", "paymentId": payment_id, **extra})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer
