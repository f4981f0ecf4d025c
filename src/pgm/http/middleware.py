"""ASGI middleware: request ids and access logs with metrics, and the request body size limit."""

from __future__ import annotations

import json
import logging
import time
import uuid
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgm.observability.metrics import Metrics

log = logging.getLogger("pgm.access")
REQUEST_ID_HEADER = b"x-request-id"


class RequestContext:
    """Gives each request an id (kept from X-Request-Id when sane), logs it as one JSON line, counts it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = {"status": 500}
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode("latin-1"))]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_name = getattr(route, "path", "unmatched")
            self.metrics.http_requests.labels(scope["method"], route_name, str(status_holder["status"])).inc()
            self.metrics.http_latency.labels(scope["method"], route_name).observe(elapsed)
            if not scope["path"].startswith("/-/"):
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status_holder["status"],
                        "durationMs": round(elapsed * 1000, 2),
                    },
                )
            structlog.contextvars.unbind_contextvars("request_id")


class BodySizeLimit:
    """Answers 413 (in the error shape) to bodies over the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises its own HTTPException from body parsing: the 413 handler answers.
                    raise HTTPException(413, f"the request body exceeds {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        state: dict[str, Any] = scope.get("state", {})
        body = {
            "statusCode": 413,
            "error": HTTPStatus(413).phrase,
            "code": "payload_too_large",
            "message": f"the request body exceeds {self.max_bytes} bytes",
            "requestId": state.get("request_id"),
        }
        payload = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
