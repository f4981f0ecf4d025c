"""PaymentStatus notifications through the durable outbox (docs/reliability.md): a receiver that is down or
failing delays them, never loses them; order holds per payment (the dispatcher in-process); dead letters can
be re-sent through the operator's API, and two replicas share one outbox (PGM processes)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from pgm.clock import SystemClock
from pgm.domain.statuses import Status
from pgm.providers.base import CallbackRequest, RefundRequest
from tests.fakes.external import CALLBACK_TOKEN, ExternalService, running_external_service
from tests.support.in_process import delivering, external_providers, payment_awaiting_the_payer, services
from tests.support.notifications import STATUS_PATH
from tests.support.pgm_process import PgmProcess, free_port
from tests.support.sandbox_requests import pay_body
from tests.support.servers import RecordingReceiver, run_server_in_thread, wait_for


def test_receiver_refusing_then_failing_gets_every_notification_in_order(tmp_path: Path, backend: str) -> None:
    shop_id = "order-outbox"
    port = free_port()

    async def scenario(acme: ExternalService) -> None:
        env = {
            "EXTERNAL_PROVIDERS_CONFIG": external_providers(tmp_path, acme=acme.base_url),
            # Nothing listens on the port yet: connection refused while the payment moves on.
            "PAYMENT_CALLBACK_URL": f"http://127.0.0.1:{port}{STATUS_PATH}",
        }
        # The wall clock: the retries' back-off (50 to 400 ms here) is what the test goes through.
        async with services(backend, tmp_path, SystemClock(), **env) as service, delivering(service):
            adapter = service.registry.get("acme")
            assert adapter is not None
            payment_id = await payment_awaiting_the_payer(service, shop_id)
            at_acme = (await service.payments.reload(payment_id)).provider_payment_id or ""
            paid = {"payment": at_acme, "token": CALLBACK_TOKEN, "event": "paid"}
            await service.callbacks.receive(adapter, CallbackRequest("GET", "/v3/acme/callback", paid, {}, b"", 0.0))
            for amount in (400, 899):
                request = RefundRequest(at_acme, amount, "EUR", idempotency_key=f"refund-{amount}")
                assert (await service.payments.refund(adapter, request)).status is Status.ACCEPTED

            receiver = RecordingReceiver()
            receiver.respond(503, times=5)
            with run_server_in_thread(receiver.app, port=port):
                await asyncio.to_thread(receiver.wait_for_requests, 9, timeout=20)
            delivered = [r.json for r in receiver.requests if r.status == 200]
            assert [(d["action"], d["status"]) for d in delivered] == [
                ("PAYMENT", "PENDING"),
                ("PAYMENT", "ACCEPTED"),
                ("REFUND", "ACCEPTED"),
                ("REFUND", "ACCEPTED"),
            ]
            assert [d["metadata"]["totalRefundedAmount"] for d in delivered[2:]] == [400, 1299]
            assert [r.status for r in receiver.requests[:5]] == [503] * 5
            # Every message went out once it succeeded: a retried message is the same message.
            ids = Counter(r.headers["x-pgm-message-id"] for r in receiver.requests if r.status == 200)
            assert set(ids.values()) == {1}

    with running_external_service() as acme:
        asyncio.run(scenario(acme))


def test_permanent_refusal_becomes_a_dead_letter_that_can_be_resent(
    start_pgm: Callable[..., PgmProcess], shop_id: str
) -> None:
    receiver = RecordingReceiver()
    receiver.respond(400, {"error": "bad"})
    with run_server_in_thread(receiver.app) as (url, _):
        pgm = start_pgm(PAYMENT_CALLBACK_URL=f"{url}{STATUS_PATH}", PGM_API_TOKEN="ops-token")
        pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK"), headers={"Authorization": "Bearer ops-token"})
        auth = {"Authorization": "Bearer ops-token"}

        def dead() -> list[dict[str, object]]:
            answer = pgm.get("/-/outbox", params={"status": "DEAD"}, headers=auth)
            assert answer.status_code == 200
            return list(answer.json())

        wait_for(lambda: len(dead()) == 1, timeout=15, what="a dead letter")
        letter = dead()[0]
        assert letter["attempts"] == 3
        assert letter["lastStatusCode"] == 400
        assert 'pgm_outbox_messages{destination="payment-callback",status="DEAD"} 1.0' in pgm.get("/-/metrics").text
        assert pgm.post(f"/-/outbox/{letter['id']}/resend", None).status_code == 401

        receiver.respond(200)
        assert pgm.post(f"/-/outbox/{letter['id']}/resend", None, headers=auth).json()["status"] == "PENDING"
        wait_for(lambda: any(r.status == 200 for r in receiver.requests), what="the re-sent notification")
        assert dead() == []
        assert pgm.post(f"/-/outbox/{letter['id']}/resend", None, headers=auth).status_code == 404


def test_two_replicas_share_the_outbox_without_double_delivery(start_pgm: Callable[..., PgmProcess]) -> None:
    receiver = RecordingReceiver()
    receiver.respond(200, delay=0.02)
    with run_server_in_thread(receiver.app) as (url, _):
        env = {"PAYMENT_CALLBACK_URL": f"{url}{STATUS_PATH}"}
        first = start_pgm(**env)
        second = start_pgm(**env)
        references = [f"replica-{index}" for index in range(20)]
        for index, reference in enumerate(references):
            replica = first if index % 2 else second
            replica.post("/v3/sandbox/credit-cards/pay", pay_body(reference, "OK"))
        wait_for(
            lambda: len([r for r in receiver.requests if r.status == 200]) >= 20, timeout=20, what="20 notifications"
        )
        ids = Counter(r.headers["x-pgm-message-id"] for r in receiver.requests)
        assert max(ids.values()) == 1
        assert sorted(r.json["shopTransactionId"] for r in receiver.requests) == sorted(references)
