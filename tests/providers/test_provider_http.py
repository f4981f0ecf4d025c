"""How the shared provider client reports a lost answer, against real sockets on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from pgm.providers.base import OutcomeUnknown
from pgm.providers.http import provider_client, send

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


def test_a_provider_that_drops_the_connection_is_not_reported_as_a_time_out() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()  # the request arrived; the answer never will

    lost = asyncio.run(_outcome_of_a_call(hang_up, timeout_seconds=5))

    assert "dropped the connection" in str(lost)
    assert "did not answer in time" not in str(lost)
