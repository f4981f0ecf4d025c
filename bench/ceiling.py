"""The transport ceiling: what the server stack alone allows.

The same uvicorn settings as `pgm serve` (uvloop + httptools, log_config=None), the same outbound client
(`pgm.outbound.http_client`: httpx over aiohttp; JSON body, X-Pgm-Message-Id), the same command envelope
in and event envelope out, but no validation, no store, no provider: the command is answered 202 and the
event is posted at once.

Run: FLOW_MANAGER_URL=http://... HTTP_PORT=... python -m bench.ceiling
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any

import httpx
import uvicorn

from pgm.outbound import http_client

Scope = dict[str, Any]

EVENT_URL = os.environ.get("FLOW_MANAGER_URL", "http://127.0.0.1:9").rstrip("/") + "/event"
ids = itertools.count(1)
state: dict[str, Any] = {}
tasks: set[asyncio.Task[None]] = set()


async def post_event(key: str) -> None:
    """Report the command's outcome, as the PGM's outbox does."""
    client: httpx.AsyncClient = state["client"]
    event = {"key": key, "value": {"messageLabel": "paymentExecuted", "messagePayload": {"paymentId": f"p{key}"}}}
    await client.post(EVENT_URL, json=event, headers={"X-Pgm-Message-Id": str(next(ids))})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """ASGI: lifespan opens the client; POST anything → 202 and one event; GET → 200 (readiness)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                state["client"] = http_client(10.0)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await state["client"].aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    key = None
    if scope["method"] == "POST":
        key = str(json.loads(body)["key"])
    answer = json.dumps({"accepted": True, "sagaId": key}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 202 if key else 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})
    if key is not None:
        task = asyncio.create_task(post_event(key))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    uvicorn.run(app, host=os.environ.get("HTTP_HOST", "127.0.0.1"), port=int(os.environ["HTTP_PORT"]), log_config=None)
