"""Every outgoing HTTP client of the PGM: httpx's API over aiohttp's connections.

httpx's own transport (httpcore on anyio) costs about 1 ms of CPU per request on this machine; the same
httpx client over aiohttp's connection pool costs about 0.3 ms (docs/performance.md). A saga makes three
outgoing requests, so this is a tenth of its CPU. Adapters, the outbox and their tests keep httpx's
requests, responses, auth flows and exceptions: only the transport underneath changes.
"""

from __future__ import annotations

import httpx
from httpx_aiohttp import HttpxAiohttpClient


async def _credentials_out_of_the_url(request: httpx.Request) -> None:
    """A URL with `user:password@` (a PAYMENT_CALLBACK_URL, a SAGA_CRUD_URL...) already became httpx's
    `Authorization: Basic` header; aiohttp refuses a request that has both, so the URL loses them."""
    if request.url.userinfo:
        request.url = request.url.copy_with(username=None, password=None)


def http_client(timeout_seconds: float, base_url: str = "", headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """A client whose every call is bounded by `timeout_seconds` (connect, read, write and pool wait)."""
    return HttpxAiohttpClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_seconds),
        headers=headers or {},
        follow_redirects=False,
        event_hooks={"request": [_credentials_out_of_the_url]},
    )
