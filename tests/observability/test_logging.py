"""Logs are JSON lines; what HTTP_LOG_LEVEL=basic writes about outgoing requests never carries credentials."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from pgm.observability import logging as pgm_logging

TOUCHED = ("", "httpx", "httpcore", "uvicorn", "uvicorn.error", "uvicorn.access", "aiosqlite", "alembic", "stripe")


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
    url = httpx.URL("https://notifier:s3cret@notify.example/payment-status")
    # The line httpx writes for every request it sends.
    logging.getLogger("httpx").info('HTTP Request: %s %s "%s %d %s"', "POST", url, "HTTP/1.1", 200, "OK")
    [line] = [json.loads(text) for text in capsys.readouterr().out.splitlines() if '"httpx"' in text]
    assert line["event"] == 'HTTP Request: POST https://[redacted]@notify.example/payment-status "HTTP/1.1 200 OK"'
    assert line["level"] == "info"


def test_without_http_log_level_outgoing_requests_are_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    pgm_logging.configure("INFO")
    logging.getLogger("httpx").info("HTTP Request: GET https://provider.example/ 200")
    assert "provider.example" not in capsys.readouterr().out
