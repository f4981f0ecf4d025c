"""Delivering the sandbox's webhooks: the sandbox writes them to the outbox (books.py) and this sender
signs each one as it goes out, as a provider does (docs/sandbox.md)."""

from __future__ import annotations

from collections.abc import Callable

from pgm import jsontext
from pgm.clock import Clock
from pgm.crypto import timestamped_hmac
from pgm.outbound import HttpClient, Response
from pgm.outbox.dispatcher import Sender
from pgm.store.records import OutboxMessage


def webhook_sender(client: HttpClient, target: str, secret: Callable[[], str], clock: Clock) -> Sender:
    """A sender that POSTs each webhook to `target` with its `Sandbox-Signature`."""

    async def send(message: OutboxMessage) -> Response:
        # Signed at send time, as a provider does: a retried webhook carries a fresh timestamp.
        body = jsontext.dumps(message.payload)
        signature = timestamped_hmac.header(secret(), int(clock.now()), body)
        return await client.post(
            target, content=body, headers={"Content-Type": "application/json", "Sandbox-Signature": signature}
        )

    return send
