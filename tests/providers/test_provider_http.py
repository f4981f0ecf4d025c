"""How the shared provider client reports a lost answer, against real sockets on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

import pytest

from pgm.outbound import ASGITransport
from pgm.providers.base import OutcomeUnknown, PayRequest, PayResultCode, ProviderRejected
from pgm.providers.http import path_segment, provider_client, send
from pgm.providers.scalapay import ScalapayAdapter, ScalapayConfig
from tests.fakes.scalapay import ScalapayFake

PAYER = {"consumer": {"givenNames": "Ada", "surname": "Lovelace"}}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _outcome_of_a_call(handler: Handler, timeout_seconds: float) -> OutcomeUnknown:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = provider_client(f"http://127.0.0.1:{port}", timeout_seconds)
    try:
        with pytest.raises(OutcomeUnknown) as lost:
            await send(client, "POST", "/payments", json={"amount": 100})
        return lost.value
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


def test_a_provider_that_never_answers_did_not_answer_in_time() -> None:
    answered = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await answered.wait()  # never set: the client gives up first
        writer.close()

    lost = asyncio.run(_outcome_of_a_call(silent, timeout_seconds=0.2))

    assert "did not answer in time" in str(lost)


def test_a_provider_that_drops_the_connection_is_not_reported_as_a_time_out(caplog: pytest.LogCaptureFixture) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()  # the request arrived; the answer never will

    with caplog.at_level(logging.WARNING, logger="pgm.providers.http"):
        lost = asyncio.run(_outcome_of_a_call(hang_up, timeout_seconds=5))

    assert "dropped the connection" in str(lost)
    assert "did not answer in time" not in str(lost)
    # The operator's log says what the transport saw, and where.
    (record,) = [record for record in caplog.records if record.getMessage() == "provider answer lost"]
    assert record.__dict__["path"] == "/payments"
    assert record.__dict__["error"] == "ServerDisconnectedError: Server disconnected"


@pytest.mark.parametrize(
    "identifier", ["a/b", "a?b=1", "a#b", "a%2Fb", "a%2E%2E", "a b", "a\nb", "x/../../admin", "...", "sbx_pay_0123"]
)
def test_an_identifier_reaches_the_provider_as_one_path_segment(identifier: str) -> None:
    # Every adapter builds provider paths with path_segment: whatever a client sent, the provider sees
    # one segment that decodes to it, on the path we meant (httpx normalises `..` and splits on `?`/`#`).
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readline())
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def call() -> None:
        server = await asyncio.start_server(record, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = provider_client(f"http://127.0.0.1:{port}/api", 5)
        try:
            await send(client, "GET", f"/payments/{path_segment(identifier)}/refunds")
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(call())
    method, target, _ = received[0].decode("ascii").split(" ")
    assert method == "GET"
    assert target.count("/") == 4, target
    _, api, payments, segment, refunds = target.split("/")
    assert (api, payments, refunds) == ("api", "payments", "refunds")
    assert unquote(segment) == identifier


@pytest.mark.parametrize("identifier", [".", ".."])
def test_a_dot_segment_is_no_identifier(identifier: str) -> None:
    # The transport would normalise even `%2E%2E` away and call the parent path: refused, as "not found".
    with pytest.raises(ProviderRejected):
        path_segment(identifier)


def test_an_adapter_runs_in_process_against_its_provider_fake() -> None:
    # The transport seam: the Scalapay adapter talks to the Scalapay fake's ASGI application directly (no
    # port, no thread); a 5xx and a lost answer are classified as over the network.
    fake = ScalapayFake()
    fake.base_url = "http://scalapay.test"
    config = ScalapayConfig(fake.base_url, fake.api_key, "https://shop.example/ok", "https://shop.example/ko", 0.5)

    async def run() -> None:
        adapter = ScalapayAdapter(config, transport=ASGITransport(fake.app))
        try:
            result = await adapter.pay(PayRequest(30_000, "EUR", "o-1", "scalapay", "k-1", provider_data=PAYER))
            assert result.result is PayResultCode.REDIRECT_TO_URL
            assert result.payment_id is not None
            assert [order["token"] for order in fake.payments("o-1")] == [result.payment_id]
            fake.fail_next(503, method="GET")
            with pytest.raises(OutcomeUnknown, match="HTTP 503"):
                await adapter.payment_status(result.payment_id)
            fake.delay_next(5, method="GET")
            with pytest.raises(OutcomeUnknown, match="did not answer in time"):
                await adapter.payment_status(result.payment_id)
        finally:
            await adapter.aclose()

    asyncio.run(run())
