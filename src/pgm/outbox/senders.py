"""The common way to deliver an outbox message: its payload as JSON, with its X-Pgm-Message-Id. Each
producer of messages builds the sender for its own destination from this (or signs its own)."""

from __future__ import annotations

from pgm.outbound import HttpClient, Response
from pgm.outbox.dispatcher import Sender
from pgm.outbox.writer import message_id_header
from pgm.store.records import OutboxMessage


def post_json(client: HttpClient, url: str) -> Sender:
    """A sender that POSTs each message's payload to `url`."""

    async def send(message: OutboxMessage) -> Response:
        return await client.post(url, json=message.payload, headers=message_id_header(message))

    return send
