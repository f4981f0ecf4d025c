"""What provider callbacks cost the store (docs/reliability.md): forged ones nothing, oversized ones a
413 before they are read, processed ones nothing once their retention has passed."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.support.pgm_process import PgmProcess
from tests.support.servers import wait_for
from tests.support.signing import sandbox_event, send_callback
from tests.support.store import count_rows

FORGED_CALLBACKS = 30


def padded_event(payment_id: str, size: int) -> bytes:
    """A well-formed sandbox event padded to about `size` bytes."""
    event = json.loads(sandbox_event("payment.updated", {"id": payment_id, "status": "FAILED"}))
    event["padding"] = "x" * size
    return json.dumps(event).encode()


def stored_callbacks(pgm: PgmProcess) -> int:
    return count_rows(pgm.env["PGM_DATABASE_URL"], "provider_callbacks")


def test_forged_callbacks_are_refused_without_being_stored(start_pgm: Callable[..., PgmProcess]) -> None:
    pgm = start_pgm(PGM_MAX_CALLBACK_BYTES="262144")
    body = padded_event("sbx_pay_forged", 200_000)
    for _ in range(FORGED_CALLBACKS):
        assert send_callback(pgm, body, secret="whsec_forged").status_code == 401
    assert send_callback(pgm, body, secret=None).status_code == 401
    assert stored_callbacks(pgm) == 0
    # A genuine one is kept: the count above is not empty because nothing is ever stored.
    assert send_callback(pgm, sandbox_event("payment.updated", {"id": "sbx_pay_real", "status": "FAILED"})).is_success
    assert stored_callbacks(pgm) == 1


def test_a_callback_over_its_size_limit_is_refused_with_413_in_the_error_shape(
    start_pgm: Callable[..., PgmProcess],
) -> None:
    pgm = start_pgm(PGM_MAX_CALLBACK_BYTES="65536")
    response = send_callback(pgm, padded_event("sbx_pay_big", 100_000))
    assert response.status_code == 413
    error = response.json()
    assert (error["statusCode"], error["code"]) == (413, "payload_too_large")
    assert "65536" in error["message"]
    # Streamed without a Content-Length, the limit holds too.
    chunks = (b"x" * 8192 for _ in range(16))
    streamed = pgm.client.post("/v3/sandbox/callback", content=chunks, headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert streamed.json()["code"] == "payload_too_large"
    assert stored_callbacks(pgm) == 0
    # The rest of the API keeps the general limit.
    assert pgm.post("/v3/sandbox/credit-cards/pay", {"padding": "x" * 100_000}).status_code == 400


def test_processed_callbacks_are_pruned_after_the_retention_and_waiting_ones_are_kept(
    start_pgm: Callable[..., PgmProcess],
) -> None:
    pgm = start_pgm(PGM_CALLBACK_RETENTION_SECONDS="1")
    answer = pgm.post(
        "/v3/sandbox/credit-cards/pay",
        {
            "amount": 500,
            "currency": "EUR",
            "shopTransactionId": "order-prune",
            "providerData": {"sandboxOutcome": "OK"},
        },
    ).json()
    assert answer["result"] == "OK"
    # One for a payment the PGM has never seen: it waits (DEFERRED), so its raw callback stays.
    waiting = sandbox_event("payment.updated", {"id": "sbx_pay_not_known", "status": "ACCEPTED"})
    assert send_callback(pgm, waiting).is_success
    applied = sandbox_event("payment.updated", {"id": answer["paymentId"], "status": "ACCEPTED"})
    assert send_callback(pgm, applied).is_success
    assert stored_callbacks(pgm) >= 2
    wait_for(lambda: stored_callbacks(pgm) == 1, timeout=15, interval=0.2, what="processed callbacks pruned")
    url = pgm.env["PGM_DATABASE_URL"]
    assert count_rows(url, "provider_events", "status = 'DEFERRED'") == 1
    assert count_rows(url, "provider_events", "status = 'PROCESSED'") == 0
    # Pruning forgets nothing the PGM needs: the payment and its outcome are intact.
    status = pgm.get("/v3/sandbox/status", params={"paymentId": answer["paymentId"]}).json()
    assert status["status"] == "ACCEPTED"
