"""ASGI middleware: request ids and access logs with metrics, load shedding, the request body size limit,
and text that cannot be stored."""

from __future__ import annotations

import logging
import os
import re
import time
from http import HTTPStatus
from typing import Any

import orjson
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
        exchange = Exchange(scope, send)
        try:
            await self.app(scope, receive, exchange.send)
        finally:
            exchange.finish(self.metrics)


class Exchange:
    """One HTTP request's id, answer status and clock: the id is put in `scope["state"]`, the log context
    and the answer's X-Request-Id header (`send`), and `finish` counts the request and logs its access
    line. RequestContext's work, shared with the hot path's single layer (http/hot.py)."""

    __slots__ = ("_id_header", "_send", "request_id", "scope", "started", "status")

    def __init__(self, scope: Scope, send: Send) -> None:
        incoming = next((value for name, value in scope["headers"] if name == REQUEST_ID_HEADER), b"").decode("latin-1")
        # 128 random bits in hex, as uuid4().hex gave them, without building a UUID (a quarter of the cost).
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        self.scope = scope
        self.request_id = request_id
        # An answer never started (the app raised) is the server-error middleware's 500, outside.
        self.status = 500
        self._send = send
        self._id_header = (REQUEST_ID_HEADER, request_id.encode("latin-1"))
        structlog.contextvars.bind_contextvars(request_id=request_id)
        self.started = time.perf_counter()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", []), self._id_header]
        await self._send(message)

    def finish(self, metrics: Metrics) -> None:
        elapsed = time.perf_counter() - self.started
        scope = self.scope
        route = scope.get("route")
        metrics.observe_request(scope["method"], getattr(route, "path", None), self.status, elapsed)
        if not scope["path"].startswith("/-/") and log.isEnabledFor(logging.INFO):
            # The record is handed to the logger's handlers directly: `log.info` would first walk the
            # stack for the caller's file and line, which the access line never shows (docs/performance.md).
            extra = {
                "method": scope["method"],
                "path": scope["path"],
                "status": self.status,
                "durationMs": round(elapsed * 1000, 2),
            }
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "request", (), None, extra=extra))
        structlog.contextvars.unbind_contextvars("request_id")


class AdmissionLimit:
    """Sheds load on the synchronous API: past `max_in_flight` /v3 requests at once, answers 503 at once
    (Retry-After: 1) instead of queueing.

    Queueing is how an overloaded service collapses: every waiting request holds a connection and memory,
    the provider client's pool queue grows (with httpcore, scanned on each request: quadratic CPU, measured
    in docs/performance.md), answers come after the caller gave up, and the work done for them is wasted. A
    503 is cheap, and a client retries it safely with its Idempotency-Key. Provider callbacks are never
    shed (a refused callback is only delivered again, later), nor are health, metrics and the sandbox's
    own provider API (it stands for a remote provider); saga commands are queued in the inbox by design.

    The hot path (http/hot.py) counts its /v3 requests in the same `in_flight`, through `admit`/`leave`."""

    def __init__(self, app: ASGIApp, max_in_flight: int, metrics: Metrics) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_synchronous_api(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not await self.admit(scope, send):
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def admit(self, scope: Scope, send: Send) -> bool:
        """Count one more synchronous request in flight, or answer it 503 (False) when the limit is reached.
        Whoever is admitted calls `leave` when done."""
        if self.in_flight >= self.max_in_flight:
            self.metrics.requests_shed.inc()
            message = f"the service is running {self.max_in_flight} requests already; retry in a moment"
            await _answer_error(scope, send, 503, "overloaded", message, [(b"retry-after", b"1")])
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


def is_callback(path: str) -> bool:
    """A provider callback: /v3/{provider}/callback and what is under it."""
    parts = path.split("/", 4)
    return len(parts) > 3 and parts[1] == "v3" and parts[3] == "callback"


def is_synchronous_api(path: str) -> bool:
    """A /v3 operation (its provider call runs in the request), not a provider callback."""
    parts = path.split("/", 4)  # "", "v3", provider, operation-or-method, rest
    return len(parts) > 3 and parts[1] == "v3" and parts[3] != "callback"


class BodySizeLimit:
    """Answers 413 (in the error shape) to bodies over the limit, declared or streamed. Provider callbacks
    have their own, smaller limit: anyone can post to them, and a notification is a few kilobytes."""

    def __init__(self, app: ASGIApp, max_bytes: int, callback_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.callback_max_bytes = callback_max_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if declared_too_large(dict(scope["headers"]), limit):
            await answer_too_large(scope, send, limit)
            return
        await self.app(scope, CheckedBody(receive, limit, None).receive, send)

    def limit_for(self, path: str) -> int:
        return self.callback_max_bytes if is_callback(path) else self.max_bytes


def declared_too_large(headers: dict[bytes, bytes], limit: int) -> bool:
    """Whether the request's Content-Length announces a body over `limit` bytes."""
    declared = headers.get(b"content-length")
    return declared is not None and declared.isdigit() and int(declared) > limit


async def answer_too_large(scope: Scope, send: Send, limit: int) -> None:
    await _answer_error(scope, send, 413, "payload_too_large", _too_large_message(limit))


def _too_large_message(limit: int) -> str:
    return f"the request body exceeds {limit} bytes"


class CheckedBody:
    """A request's `receive`, checking the body as it arrives: past `limit` bytes (None: no limit), 413;
    once complete, text no store can keep (None: not checked), 400. Both are raised as FastAPI's
    HTTPException: FastAPI re-raises it from body parsing, and the app's handler answers in the error shape.
    The body size limit's and the unstorable text's check (and the hot path's both at once)."""

    __slots__ = ("_chunks", "_content_type", "_limit", "_receive", "_received")

    def __init__(self, receive: Receive, limit: int | None, content_type: bytes | None) -> None:
        self._receive = receive
        self._limit = limit
        self._content_type = content_type
        self._received = 0
        self._chunks: list[bytes] = []

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            chunk: bytes = message.get("body", b"")
            if self._limit is not None:
                self._received += len(chunk)
                if self._received > self._limit:
                    raise HTTPException(413, _too_large_message(self._limit))
            if self._content_type is not None:
                chunks = self._chunks
                chunks.append(chunk)
                # The whole body is scanned once it is in (an escape can straddle two chunks).
                if not message.get("more_body", False):
                    body = chunk if len(chunks) == 1 else b"".join(chunks)
                    if contains_unstorable_text(body, self._content_type):
                        raise HTTPException(400, UNSTORABLE_MESSAGE)
        return message


# An escape that is not itself escaped: an even run of backslashes (maybe none) before the `\u`.
_UNESCAPED = rb"(?<!\\)(?:\\\\)*\\u"
# A valid surrogate pair is consumed first, so that only a NUL or a lone surrogate is named `bad`.
_JSON_UNSTORABLE_ESCAPE = re.compile(
    _UNESCAPED
    + rb"(?:[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(?P<bad>0000|[dD][89a-fA-F][0-9a-fA-F]{2}))"
)
_FORM_TYPE = b"application/x-www-form-urlencoded"
UNSTORABLE_MESSAGE = "the request contains a NUL character or a lone UTF-16 surrogate, which no field accepts"


def contains_unstorable_text(body: bytes, content_type: bytes = b"") -> bool:
    """Whether a request body carries text no store can keep: NUL (PostgreSQL refuses it in text and
    JSON) or a lone surrogate (not encodable as UTF-8), raw, as a JSON escape, or percent-encoded in a form."""
    if b"\x00" in body:
        return True
    if content_type.split(b";")[0].strip().lower() == _FORM_TYPE and b"%00" in body:
        return True
    # Every escape the pattern looks for starts with `\u`: a body without one (most bodies) skips the scan,
    # whose look-behind at every byte cost ≈ 30 µs for a saga command's 370 bytes (docs/performance.md).
    if b"\\u" not in body:
        return False
    return any(match.group("bad") for match in _JSON_UNSTORABLE_ESCAPE.finditer(body))


def unstorable_in_url(scope: Scope) -> bool:
    """Whether the request's path or query carries a NUL or a lone surrogate."""
    path: str = scope["path"]
    query: bytes = scope.get("query_string", b"")
    return "\x00" in path or _has_surrogate(path) or b"%00" in query or b"\x00" in query


async def answer_unstorable(scope: Scope, send: Send) -> None:
    await _answer_error(scope, send, 400, "invalid_request", UNSTORABLE_MESSAGE)


class RejectUnstorableText:
    """Answers 400 (in the error shape) to a path, query or body with a NUL or a lone surrogate.

    Such text is valid JSON but no field has a use for it, and the store cannot keep it (PostgreSQL
    refuses NUL in text; a lone surrogate cannot be encoded): refused at the edge, before anything is
    written, instead of failing half-way in a transaction."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if unstorable_in_url(scope):
            await answer_unstorable(scope, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        await self.app(scope, CheckedBody(receive, None, content_type).receive, send)


def _has_surrogate(text: str) -> bool:
    # An ASCII path (every saga's) has none: the per-character scan is skipped (docs/performance.md).
    return not text.isascii() and any(0xD800 <= ord(char) <= 0xDFFF for char in text)


async def _answer_error(
    scope: Scope, send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer in the error shape from middleware, before the app and its exception handlers."""
    state: dict[str, Any] = scope.get("state", {})
    body = {
        "statusCode": status,
        "error": HTTPStatus(status).phrase,
        "code": code,
        "message": message,
        "requestId": state.get("request_id"),
    }
    payload = orjson.dumps({k: v for k, v in body.items() if v is not None})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
