"""Requests to the sandbox provider, through /v3 and through sagas."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.pay_requests import pay_request
from tests.support.pgm_process import PgmProcess


def pay_body(shop_id: str, outcome: str | None = None, **extra: Any) -> dict[str, Any]:
    """A valid pay request for the sandbox."""
    return pay_request(
        shop_id, **{"amount": 1299, "providerData": {"sandboxOutcome": outcome} if outcome else {}, **extra}
    )


def refund(pgm: PgmProcess, payment_id: str, amount: int, outcome: str | None = None, **extra: Any) -> dict[str, Any]:
    """POST /v3/sandbox/refund and return the answer."""
    body: dict[str, Any] = {"amount": amount, "currency": "EUR", "paymentId": payment_id, **extra}
    if outcome:
        body["providerData"] = {"sandboxOutcome": outcome}
    response = pgm.post("/v3/sandbox/refund", body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def metadata(outcome: str | None = None, amount: int = 1000, **extra: Any) -> dict[str, Any]:
    """Saga metadata for a sandbox payment."""
    provider_data = {"sandboxOutcome": outcome} if outcome else {}
    data: dict[str, Any] = {
        "amount": amount,
        "currency": "EUR",
        "provider": "sandbox",
        "paymentMethod": "credit-cards",
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "type": "DIRECT",
        "payRequestData": {
            "successRedirect": "https://shop.example/ok",
            "failureRedirect": "https://shop.example/ko",
            "providerData": provider_data,
        },
    }
    data.update(extra)
    return data
