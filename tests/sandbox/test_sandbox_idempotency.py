"""The sandbox's API is idempotent as a provider's is (docs/sandbox.md): a payment asked for again with the
same Idempotency-Key is the payment created the first time (its token too), never a second payment."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support.pgm_process import PgmProcess

SANDBOX_KEY = "Bearer sk_sandbox_local"  # the key of the sandbox on loopback (docs/sandbox.md)


def _post(pgm: PgmProcess, key: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(
        f"{pgm.url}/sandbox/api/v1/payments",
        json=body,
        headers={"Authorization": SANDBOX_KEY, "Idempotency-Key": key},
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


@pytest.mark.parametrize(("kind", "outcome"), [("payment", "OK"), ("subscription_schedule", "REDIRECT_TO_URL")])
def test_the_same_idempotency_key_gives_the_first_payment_back(pgm: PgmProcess, kind: str, outcome: str) -> None:
    key = f"key-{uuid.uuid4().hex}"
    reference = f"order-{uuid.uuid4().hex[:10]}"
    body = {"amount": 1200, "currency": "EUR", "reference": reference, "outcome": outcome, "kind": kind}
    if kind == "subscription_schedule":
        body |= {"interval": "MONTH", "intervalCount": 1}
    first = _post(pgm, key, body)
    again = _post(pgm, key, {**body, "amount": 9999})
    assert (again["id"], again["amount"], again["token"]) == (first["id"], 1200, first["token"])
    found = httpx.get(
        f"{pgm.url}/sandbox/api/v1/payments", params={"idempotencyKey": key}, headers={"Authorization": SANDBOX_KEY}
    )
    assert [payment["id"] for payment in found.json()["data"]] == [first["id"]]
    if kind == "subscription_schedule":
        assert first["token"] is not None
        token = httpx.get(f"{pgm.url}/sandbox/api/v1/tokens/{first['token']}", headers={"Authorization": SANDBOX_KEY})
        assert token.status_code == 200, token.text
