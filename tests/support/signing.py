"""Callbacks signed as the sandbox signs them, for tests that play the provider."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx

from pgm.crypto import timestamped_hmac
from tests.support.pgm_process import SANDBOX_SECRET, PgmProcess


def sandbox_event(event_type: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    """A sandbox webhook body."""
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": event_type,
        "createdAt": int(time.time()),
        "data": data,
    }
    return json.dumps(event).encode()


def send_callback(
    pgm: PgmProcess, body: bytes, secret: str | None = SANDBOX_SECRET, timestamp: int | None = None
) -> httpx.Response:
    """POST a callback to /v3/sandbox/callback, signed with `secret` (unsigned when None)."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Sandbox-Signature"] = timestamped_hmac.header(secret, timestamp or int(time.time()), body)
    return pgm.client.post("/v3/sandbox/callback", content=body, headers=headers)
