"""Logs are JSON lines; what HTTP_LOG_LEVEL=basic writes about outgoing requests never carries credentials."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog
from yarl import URL

from pgm.http.middleware import RequestContext
from pgm.observability import logging as pgm_logging
from pgm.observability.metrics import Metrics
from pgm.outbound import REQUEST_LOG

TOUCHED = (
    "",
    "pgm.access",
    "pgm.outbound",
    "httpx",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "httpcore",
    "alembic",
    "stripe",
)


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """configure() sets process-wide logging up; put it back so the tests after these see pytest's own."""
    saved = {
        name: (logger.handlers[:], logger.level, logger.filters[:], logger.propagate)
        for name in TOUCHED
        for logger in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, filters, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.filters[:] = handlers, filters
        logger.setLevel(level)
        logger.propagate = propagate


def test_outgoing_request_lines_drop_credentials_in_urls(capsys: pytest.CaptureFixture[str]) -> None:
    pgm_logging.configure("INFO", "basic")
    url = URL("https://notifier:s3cret@notify.example/payment-status")
    # The line the outgoing client writes for every request it sends.
    REQUEST_LOG.info('HTTP Request: %s %s "HTTP/1.1 %d %s"', "POST", url, 200, "OK")
    [line] = [json.loads(text) for text in capsys.readouterr().out.splitlines() if '"pgm.outbound"' in text]
    assert line["event"] == 'HTTP Request: POST https://[redacted]@notify.example/payment-status "HTTP/1.1 200 OK"'
    assert line["level"] == "info"


def test_without_http_log_level_outgoing_requests_are_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    pgm_logging.configure("INFO")
    REQUEST_LOG.info("HTTP Request: GET https://provider.example/ 200")
    assert "provider.example" not in capsys.readouterr().out


def test_the_access_line_is_json_with_the_keys_of_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    pgm_logging.configure("INFO")
    structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        logging.getLogger("pgm.access").info(
            "request", extra={"method": "POST", "path": "/saga/pay", "status": 202, "durationMs": 1.5}
        )
        logging.getLogger("pgm.other").info("something else")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    access, other = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert {
        k: access[k] for k in ("event", "request_id", "method", "path", "status", "durationMs", "level", "logger")
    } == {
        "event": "request",
        "request_id": "req-1",
        "method": "POST",
        "path": "/saga/pay",
        "status": 202,
        "durationMs": 1.5,
        "level": "info",
        "logger": "pgm.access",
    }
    # The same timestamp format as every other line: ISO 8601 in UTC.
    for line in (access, other):
        assert line["timestamp"].endswith("Z")
        assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0)
    assert other["event"] == "something else"


def test_the_request_middleware_writes_one_access_line_per_request(capsys: pytest.CaptureFixture[str]) -> None:
    pgm_logging.configure("INFO")
    sent: list[dict[str, Any]] = []

    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def serve(path: str, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        await RequestContext(app, Metrics())(scope, receive, send)

    asyncio.run(serve("/saga/pay", []))
    asyncio.run(serve("/saga/refund", [(b"x-request-id", b"from-the-client")]))
    asyncio.run(serve("/-/health", []))
    lines = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    echoed = [dict(message["headers"])[b"x-request-id"].decode() for message in sent if "headers" in message]
    assert [(line["path"], line["status"], line["request_id"]) for line in lines] == [
        ("/saga/pay", 202, echoed[0]),
        ("/saga/refund", 202, "from-the-client"),
    ]
    assert re.fullmatch("[0-9a-f]{32}", echoed[0])
    assert all(line["logger"] == "pgm.access" and line["durationMs"] >= 0 for line in lines)
