"""The ceilings: what the server stack alone allows for each shape of work the PGM is measured on.

One bare ASGI app on the same uvicorn settings as `pgm serve` (uvloop, httptools with the PGM's header
deadline, log_config=None) and the same outbound client (`pgm.outbound.http_client`), doing the HTTP
work of the PGM's scenarios with no validation, no store and no business logic. The load generator
picks the shape by path:

* `POST /pair` — one request in, one out: answered 202, one event posted to the Flow Manager stand-in.
  The ceiling of `/v3` pay, which is one exchange for its caller (the one-pair ceiling).
* `POST /saga/pay` — the saga-shaped ceiling, provider in-process: the command is answered 202; a
  provider call goes out to this same process (`/sandbox/api/v1/payments`, answered 200, which then sends
  a signed webhook to `/v3/sandbox/callback`, verified and answered 200); on the provider's answer the
  event goes to the Flow Manager. 3 requests in (command, provider call, webhook), 3 out.
* `POST /remote/saga/pay` — the same with the provider in another process (`PROVIDER_URL`, a second
  instance of this app acting as the provider): 2 in (command, webhook), 2 out (provider call, event).

The provider's part (`/sandbox/api/v1/payments`) speaks the sandbox's API as the PGM's sandbox adapter
uses it (Bearer key, the payment's JSON, a `payment.updated` webhook signed with `Sandbox-Signature`), so
the same process is the provider stand-in of the PGM's remote-sandbox mode. Where its webhooks go is set
with `POST /-/webhook-targets` (a JSON list of URLs, used round-robin), as a provider's dashboard would
be configured; by default, this process's own callback route.

Run: HTTP_PORT=... FLOW_MANAGER_URL=http://... [PROVIDER_URL=http://...] python -m bench.ceiling
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Coroutine
from typing import Any

import uvicorn

from pgm.crypto import timestamped_hmac
from pgm.http.server import protocol_with_header_timeout
from pgm.outbound import http_client

Scope = dict[str, Any]

PORT = int(os.environ.get("HTTP_PORT", "0"))
SELF_URL = f"http://127.0.0.1:{PORT}"
EVENT_URL = os.environ.get("FLOW_MANAGER_URL", "http://127.0.0.1:9").rstrip("/") + "/event"
PROVIDER_API = "/sandbox/api/v1/payments"
CALLBACK_PATH = "/v3/sandbox/callback"
LOCAL_PROVIDER = SELF_URL + PROVIDER_API
REMOTE_PROVIDER = os.environ.get("PROVIDER_URL", SELF_URL).rstrip("/") + PROVIDER_API
API_KEY = os.environ.get("SANDBOX_API_KEY", "sk_sandbox_local")
SECRET = os.environ.get("SANDBOX_WEBHOOK_SECRET", "whsec_bench_sandbox_secret")
SIGNATURE_TOLERANCE_SECONDS = 300

ids = itertools.count(1)
state: dict[str, Any] = {"webhook_targets": itertools.cycle([SELF_URL + CALLBACK_PATH])}
tasks: set[asyncio.Task[None]] = set()


def spawn(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` after the answer, keeping a reference so it is not collected mid-flight."""
    task = asyncio.create_task(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def post(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One outgoing POST with the PGM's own client (whatever `http_client` returns: only `post` with
    `content` and `headers`, the answer's `content` and `aclose` are used); the answer's body."""
    client = state["client"]
    response = await client.post(url, content=body, headers={"Content-Type": "application/json", **headers})
    content: bytes = response.content
    return content


async def post_event(key: str, payment_id: str) -> None:
    """Report the command's outcome, as the PGM's outbox does."""
    value = {"messageLabel": "paymentExecuted", "messagePayload": {"paymentId": payment_id}}
    await post(EVENT_URL, json.dumps({"key": key, "value": value}).encode(), {"X-Pgm-Message-Id": str(next(ids))})


async def run_saga(key: str, payload: dict[str, Any], provider_url: str) -> None:
    """The provider call (as the sandbox adapter makes it), then the event on its answer."""
    order = {
        "kind": "payment",
        "amount": payload.get("amount"),
        "currency": payload.get("currency"),
        "reference": payload.get("shopTransactionId", key),
        "outcome": "OK",
        "delayMs": 0,
    }
    answer = await post(
        provider_url,
        json.dumps(order).encode(),
        {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": f"saga:{key}:pay:0"},
    )
    await post_event(key, str(json.loads(answer)["id"]))


async def send_webhook(payment: dict[str, Any]) -> None:
    """The provider's signed `payment.updated` webhook."""
    now = int(time.time())
    event = {"id": f"evt_{payment['id']}", "type": "payment.updated", "createdAt": now, "data": payment}
    body = json.dumps(event, separators=(",", ":")).encode()
    target: str = next(state["webhook_targets"])
    await post(target, body, {"Sandbox-Signature": timestamped_hmac.header(SECRET, now, body)})


async def respond(send: Any, status: int, document: Any) -> None:
    """A JSON answer with its length."""
    answer = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def lifespan(receive: Any, send: Any) -> None:
    """Open the client at start-up, close it at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            state["client"] = http_client(10.0)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await state["client"].aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """ASGI: the routes of the module's docstring; GET anything → 200 (readiness)."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if scope["method"] != "POST":
        await respond(send, 200, {"ok": True})
    elif path == "/pair":
        key = str(json.loads(body)["key"])
        await respond(send, 202, {"accepted": True, "sagaId": key})
        spawn(post_event(key, f"p{key}"))
    elif path in ("/saga/pay", "/remote/saga/pay"):
        command = json.loads(body)
        key = str(command["key"])
        await respond(send, 202, {"accepted": True, "sagaId": key})
        provider = LOCAL_PROVIDER if path == "/saga/pay" else REMOTE_PROVIDER
        spawn(run_saga(key, command["value"]["messagePayload"], provider))
    elif path == PROVIDER_API:
        headers = dict(scope["headers"])
        if headers.get(b"authorization") != f"Bearer {API_KEY}".encode():
            await respond(send, 401, {"error": {"message": "invalid API key"}})
            return
        order = json.loads(body)
        payment = {
            "id": f"sbx_pay_{next(ids)}",
            "kind": order.get("kind", "payment"),
            "amount": order["amount"],
            "currency": order["currency"],
            "reference": order["reference"],
            "status": "ACCEPTED",
            "declineReason": None,
            "token": None,
            "checkoutUrl": None,
            "checkoutUrlMobile": None,
        }
        await respond(send, 200, payment)
        spawn(send_webhook(payment))
    elif path == CALLBACK_PATH:
        headers = dict(scope["headers"])
        try:
            signature = headers.get(b"sandbox-signature", b"").decode()
            timestamped_hmac.verify(signature, body, [SECRET], time.time(), SIGNATURE_TOLERANCE_SECONDS)
        except timestamped_hmac.SignatureError as exc:
            await respond(send, 401, {"error": {"message": str(exc)}})
            return
        json.loads(body)
        await respond(send, 200, {"received": True})
    elif path == "/-/webhook-targets":
        targets = [str(url) for url in json.loads(body)]
        state["webhook_targets"] = itertools.cycle(targets or [SELF_URL + CALLBACK_PATH])
        await respond(send, 200, {"webhookTargets": targets})
    else:
        await respond(send, 404, {"error": {"message": f"no route {path}"}})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host=os.environ.get("HTTP_HOST", "127.0.0.1"),
        port=PORT,
        log_config=None,
        http=protocol_with_header_timeout(10.0),  # as `pgm serve` (src/pgm/cli.py)
    )
