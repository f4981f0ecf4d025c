"""The `t=<unix seconds>,v1=<hex>` webhook signature: HMAC-SHA256 over "<t>.<raw body>".

Stripe signs its webhooks this way (`Stripe-Signature`), and so does the sandbox (`Sandbox-Signature`,
docs/sandbox.md). A signature older than the tolerance is refused, which stops replays of captured callbacks.
"""

from __future__ import annotations

import hashlib
import hmac


class SignatureError(Exception):
    """The signature header is missing, malformed, wrong or too old."""


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of "<timestamp>.<body>" with `secret`."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def header(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for a body sent at `timestamp`."""
    return f"t={timestamp},v1={compute(secret, timestamp, body)}"


def verify(header_value: str | None, body: bytes, secrets: list[str], now: float, tolerance_seconds: float) -> int:
    """Check a signature header against any of `secrets`; return its timestamp or raise SignatureError."""
    if not header_value:
        raise SignatureError("the signature header is missing")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header_value.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError as exc:
                raise SignatureError("the signature timestamp is not an integer") from exc
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("the signature header has no timestamp or no v1 signature")
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError("the signature is older than the allowed tolerance")
    for secret in secrets:
        expected = compute(secret, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return timestamp
    raise SignatureError("the signature does not match")
