"""The sandbox is a development provider (docs/sandbox.md): in production (a PGM_PUBLIC_URL beyond this
machine, or PGM_ENVIRONMENT=production) it runs only when enabled deliberately with a key of its own; its
listing then needs that key, and the documented default key opens nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.pgm_process import PgmProcess

OWN_KEY = "sk_sandbox_9f2c41d07be84a1c"
PUBLIC = "https://pgm.example.com"
DOCUMENTED_KEY = "sk_sandbox_local"


def paid_order(pgm: PgmProcess, shop_id: str) -> str:
    body = {
        "amount": 700,
        "currency": "EUR",
        "shopTransactionId": shop_id,
        "providerData": {"sandboxOutcome": "OK"},
    }
    answer = pgm.post("/v3/sandbox/credit-cards/pay", body).json()
    assert answer["result"] == "OK"
    return str(answer["paymentId"])


@pytest.mark.parametrize("production", [{"PGM_PUBLIC_URL": PUBLIC}, {"PGM_ENVIRONMENT": "production"}])
def test_a_deliberately_enabled_sandbox_in_production_answers_only_its_own_key(
    start_pgm: Callable[..., PgmProcess], production: dict[str, str]
) -> None:
    pgm = start_pgm(ENABLED_PROVIDERS="sandbox", SANDBOX_API_KEY=OWN_KEY, **production)
    payment_id = paid_order(pgm, "order-prod-1")
    # A guessed merchant reference lists nothing without the key, in the error shape.
    listing = pgm.get("/sandbox/payments", params={"shopTransactionId": "order-prod-1"})
    assert listing.status_code == 401
    assert (listing.json()["statusCode"], listing.json()["code"]) == (401, "unauthorized")
    # Nor does the browser page of the sandbox's payments (the dev stack's link), which cannot send a key.
    page = pgm.get("/sandbox/")
    assert page.status_code == 200
    assert "order-prod-1" not in page.text
    assert payment_id not in page.text
    with_key = pgm.get(
        "/sandbox/payments",
        params={"shopTransactionId": "order-prod-1"},
        headers={"Authorization": f"Bearer {OWN_KEY}"},
    )
    assert with_key.status_code == 200
    assert [p["paymentId"] for p in with_key.json()] == [payment_id]
    # The documented key refunds nothing behind the PGM's back.
    for key in (DOCUMENTED_KEY, "wrong"):
        refund = pgm.client.post(
            f"/sandbox/api/v1/payments/{payment_id}/refunds",
            json={"amount": 700},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert refund.status_code == 401
    assert pgm.get("/v3/sandbox/status", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"


@pytest.mark.parametrize(
    "key_env",
    [{}, {"SANDBOX_API_KEY": DOCUMENTED_KEY}, {"SANDBOX_API_KEY": "short"}],
    ids=["no key", "documented key", "short key"],
)
def test_production_refuses_to_start_a_sandbox_without_a_key_of_its_own(
    start_pgm: Callable[..., PgmProcess], key_env: dict[str, str]
) -> None:
    with pytest.raises(RuntimeError, match="SANDBOX_API_KEY") as refused:
        start_pgm(ENABLED_PROVIDERS="sandbox", PGM_PUBLIC_URL=PUBLIC, **key_env)
    assert "exited with 2" in str(refused.value)


def test_production_without_enabled_providers_does_not_serve_the_sandbox(
    start_pgm: Callable[..., PgmProcess],
) -> None:
    pgm = start_pgm(PGM_PUBLIC_URL=PUBLIC)  # ENABLED_PROVIDERS unset: its default
    assert pgm.get("/sandbox/payments", params={"shopTransactionId": "order-1"}).status_code == 404
    assert pgm.get("/v3/sandbox/status", params={"paymentId": "sbx_pay_1"}).status_code == 404
    assert pgm.get("/-/ready").json()["checks"]["providers"] == "none"


def test_on_loopback_the_sandbox_stays_open_as_documented(start_pgm: Callable[..., PgmProcess]) -> None:
    pgm = start_pgm()
    payment_id = paid_order(pgm, "order-dev-1")
    assert [p["paymentId"] for p in pgm.sandbox_payments("order-dev-1")] == [payment_id]
    found = pgm.get(f"/sandbox/api/v1/payments/{payment_id}", headers={"Authorization": f"Bearer {DOCUMENTED_KEY}"})
    assert found.status_code == 200
