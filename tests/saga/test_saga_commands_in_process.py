"""Saga commands run in the test's process (tests/support/in_process.py): the inbox and `SagaCommands` as
`pgm serve` composes them, the provider (an external provider service's fake), the Flow Manager and the
CRUD reached through in-process transports (`Wiring.transports`): no port, no thread, no sleep. What a
command does with the provider and which event the Flow Manager gets are proved here; the HTTP route in
front of the inbox and the Flow Manager's machine are proved by tests/saga's stack tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgm.domain.saga import Route
from pgm.outbound import ASGITransport
from pgm.wiring import Service
from tests.fakes.external import ExternalService
from tests.support.in_process import ManualClock, delivering, external_providers, services
from tests.support.servers import RecordingReceiver

FLOW_MANAGER = "http://flow-manager.test"
CRUD = "http://crud.test"
ACME = "http://acme.test"


@dataclass
class SagaParts:
    """The composed service and what it talks to."""

    service: Service
    acme: ExternalService
    flow_manager: RecordingReceiver
    crud: RecordingReceiver

    async def command(self, route: Route, saga_id: str, label: str, payload: dict[str, Any]) -> None:
        """A command as the saga route hands it to the inbox after its 202."""
        inbox = self.service.saga_inbox
        assert inbox is not None
        await inbox.accept(route, saga_id, label, payload)

    async def events(self, count: int) -> list[dict[str, Any]]:
        """The first `count` events the Flow Manager received, once they arrived (waited on, not polled)."""
        received = await asyncio.to_thread(self.flow_manager.wait_for_requests, count, path="/event")
        return [json.loads(request.body) for request in received]

    def pay_calls(self) -> list[dict[str, Any]]:
        """The pay requests the provider received."""
        return [body or {} for method, path, body in self.acme.received if method == "POST" and path.endswith("/pay")]


@asynccontextmanager
async def saga_parts(backend: str, directory: Path) -> AsyncIterator[SagaParts]:
    """The service with its saga inbox worker and outbox dispatcher running in this event loop."""
    acme, flow_manager, crud = ExternalService(), RecordingReceiver(), RecordingReceiver(default_body=[])
    acme.base_url = ACME
    routes = {
        ACME: ASGITransport(acme.app),
        FLOW_MANAGER: ASGITransport(flow_manager.app),
        CRUD: ASGITransport(crud.app),
    }
    env = {
        "FLOW_MANAGER_URL": FLOW_MANAGER,
        "SAGA_CRUD_URL": f"{CRUD}/fm-transactions/",
        "EXTERNAL_PROVIDERS_CONFIG": external_providers(directory, acme=ACME),
    }
    async with services(backend, directory, ManualClock(), routes, **env) as service, delivering(service):
        assert service.saga_inbox is not None
        worker = asyncio.create_task(service.saga_inbox.run())
        await asyncio.sleep(0)  # one turn of the loop: the worker is running, commands run as accepted
        try:
            yield SagaParts(service, acme, flow_manager, crud)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


def metadata(outcome: str, amount: int = 1000, provider: str = "acme") -> dict[str, Any]:
    """A saga's payment data, as the Flow Manager's command carries it."""
    return {
        "amount": amount,
        "currency": "EUR",
        "provider": provider,
        "paymentMethod": "credit-cards",
        "shopTransactionId": f"order-{uuid.uuid4().hex[:10]}",
        "payRequestData": {"providerData": {"acmeOutcome": outcome}},
    }


def test_a_pay_command_pays_once_and_sends_payment_executed(backend: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with saga_parts(backend, tmp_path) as parts:
            saga_id, payload = uuid.uuid4().hex, metadata("OK")
            await parts.command(Route.PAY, saga_id, "scheduleRequested", payload)
            [event] = await parts.events(1)
            assert event["key"] == saga_id
            assert event["value"]["messageLabel"] == "paymentExecuted"
            payment_id = event["value"]["messagePayload"]["paymentId"]
            assert parts.acme.payment(payment_id)["status"] == "ACCEPTED"

            # The same command delivered again is the same operation: no second call to the provider.
            await parts.command(Route.PAY, saga_id, "scheduleRequested", payload)
            events = await parts.events(2)
            assert events[1]["value"]["messageLabel"] == "paymentExecuted"
            assert len(parts.pay_calls()) == 1

    asyncio.run(scenario())


def test_a_refund_command_refunds_at_the_provider_and_sends_the_refund_events(backend: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with saga_parts(backend, tmp_path) as parts:
            saga_id = uuid.uuid4().hex
            paid = metadata("OK")
            await parts.command(Route.PAY, saga_id, "scheduleRequested", paid)
            [executed] = await parts.events(1)
            payment_id = executed["value"]["messagePayload"]["paymentId"]
            after_payment = {**paid, **executed["value"]["messagePayload"]}

            refund = {**after_payment, "refundRequestData": {"amount": 400}}
            await parts.command(Route.REFUND, saga_id, "refundRequested", refund)
            partial = (await parts.events(2))[1]
            assert partial["value"]["messageLabel"] == "partialRefundExecuted"
            assert parts.acme.payment(payment_id)["refunded"] == 400

            rest = {**after_payment, **partial["value"]["messagePayload"], "refundRequestData": {"amount": 600}}
            await parts.command(Route.REFUND, saga_id, "refundRequested", rest)
            total = (await parts.events(3))[2]
            assert total["value"]["messageLabel"] == "totalRefundExecuted"
            assert parts.acme.payment(payment_id)["refunded"] == 1000

    asyncio.run(scenario())


def test_a_command_for_a_provider_not_enabled_is_refused_with_a_failure_event(backend: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with saga_parts(backend, tmp_path) as parts:
            saga_id = uuid.uuid4().hex
            await parts.command(Route.PAY, saga_id, "scheduleRequested", metadata("OK", provider="nowhere"))
            [event] = await parts.events(1)
            assert event["key"] == saga_id
            assert event["value"]["messageLabel"] == "paymentFailed"
            assert "nowhere" in json.dumps(event["value"]["messagePayload"])
            assert parts.pay_calls() == []

    asyncio.run(scenario())
