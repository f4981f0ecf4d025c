"""Outgoing requests: credentials written in a URL (user:password@host) are sent as HTTP Basic."""

from __future__ import annotations

import asyncio
import base64

from pgm.outbound import http_client
from tests.support.servers import recording_receiver


def test_credentials_in_a_url_are_sent_as_basic_authorization() -> None:
    async def post(url: str) -> int:
        async with http_client(5.0) as client:
            return (await client.post(url, json={"status": "ACCEPTED"})).status_code

    with recording_receiver() as (receiver, base_url):
        status = asyncio.run(post(base_url.replace("://", "://notifier:s3cret@") + "/payment-status"))
        [request] = receiver.wait_for_requests(1, path="/payment-status")
    assert status == 200
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"notifier:s3cret").decode()
