"""One PGM serving its sandbox to another (docs/sandbox.md#variables): the other calls it through
SANDBOX_BASE_URL, and its signed webhooks go where SANDBOX_WEBHOOK_URL says, as a real provider's go to
the URL its dashboard names."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.support.databases import fresh_database
from tests.support.notifications import wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.servers import recording_receiver


def test_the_sandbox_of_one_pgm_reports_to_the_pgm_it_serves(backend: str, tmp_path: Path) -> None:
    with (
        recording_receiver() as (receiver, receiver_url),
        fresh_database("sqlite", tmp_path) as bank_url,
        fresh_database(backend, tmp_path) as url,
    ):
        # Reconciliation a day away: only the sandbox's webhook can tell this PGM the payer paid.
        shop = PgmProcess(
            url,
            tmp_path / "shop.log",
            PAYMENT_CALLBACK_URL=f"{receiver_url}/payment-status",
            PGM_RECONCILE_AFTER_SECONDS="86400",
            PGM_PROVIDER_TIMEOUT_SECONDS="5",
        )
        bank = PgmProcess(bank_url, tmp_path / "bank.log", SANDBOX_WEBHOOK_URL=f"{shop.url}/v3/sandbox/callback")
        shop.env["SANDBOX_BASE_URL"] = f"{bank.url}/sandbox"
        bank.start()
        try:
            shop.start()
            reference = f"order-{uuid.uuid4().hex[:10]}"
            answer = shop.post(
                "/v3/sandbox/credit-cards/pay",
                {
                    "amount": 1300,
                    "currency": "EUR",
                    "shopTransactionId": reference,
                    "providerData": {"sandboxOutcome": "REDIRECT_TO_URL"},
                },
            ).json()
            assert answer["result"] == "REDIRECT_TO_URL", answer
            assert answer["redirectToUrl"].startswith(f"{bank.url}/sandbox/checkout/")
            assert httpx.post(answer["redirectToUrl"], data={"decision": "approve"}).status_code == 200
            accepted = wait_for_status(receiver, reference, "ACCEPTED")
            assert accepted["paymentId"] == answer["paymentId"]
        finally:
            shop.stop()
            bank.stop()
