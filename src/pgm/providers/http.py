"""The one way adapters talk HTTP: a client per provider with time-outs (pgm.outbound), and its faults classified."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from pgm.outbound import Auth, HttpClient, NoAnswer, Response, TimedOut, Transport
from pgm.providers.base import OutcomeUnknown, ProviderRejected

log = logging.getLogger(__name__)


def provider_client(
    base_url: str,
    timeout_seconds: float,
    headers: dict[str, str] | None = None,
    *,
    auth: Auth | None = None,
    transport: Transport | None = None,
) -> HttpClient:
    """An HTTP client for one provider: every call is bounded by the provider time-out."""
    return HttpClient(timeout_seconds, base_url, headers, auth=auth, transport=transport)


def path_segment(identifier: str) -> str:
    """An identifier encoded completely as one path segment of a provider URL: `/`, `?`, `#`, `%`, spaces
    and control characters are percent-encoded. An identifier comes from a client and must never change
    which URL we call. `.` and `..` cannot be sent as a segment at all (the transport normalises even
    `%2E%2E` away, climbing the path): no provider has such an id, so the answer is the provider's
    "not found" (the edge refuses them before, docs/api.md)."""
    if identifier in (".", ".."):
        raise ProviderRejected(f"{identifier!r} is not an identifier the provider can hold")
    return quote(identifier, safe="")


async def send(client: HttpClient, method: str, url: str, **kwargs: Any) -> Response:
    """Send a request; a lost answer raises OutcomeUnknown, never a generic network error."""
    try:
        return await client.request(method, url, **kwargs)
    except NoAnswer as exc:
        # The operator's log gets the transport's own words (a reset, a refused connection, a DNS failure):
        # the outcome's description, which clients see, names only the kind of fault.
        cause = exc.__cause__ or exc
        log.warning(
            "provider answer lost",
            extra={"method": method, "path": url.split("?", 1)[0], "error": f"{type(cause).__name__}: {cause}"},
        )
        raise lost_answer(exc) from exc


def lost_answer(exc: NoAnswer) -> OutcomeUnknown:
    """Say what went wrong, naming the transport's own exception: a time-out is told apart from a
    provider that could not be reached or dropped the connection (both leave the outcome unknown)."""
    cause = exc.__cause__ or exc
    if isinstance(exc, TimedOut):
        return OutcomeUnknown(f"the provider did not answer in time ({type(cause).__name__})")
    return OutcomeUnknown(f"the provider could not be reached or dropped the connection ({type(cause).__name__})")


def json_body(response: Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; 5xx and malformed answers leave the outcome unknown, 4xx is a refusal."""
    if response.status_code >= 500:
        raise OutcomeUnknown(f"the provider answered HTTP {response.status_code}")
    if response.status_code >= 400:
        raise ProviderRejected(_error_text(response))
    try:
        body = response.json()
    except ValueError as exc:
        raise OutcomeUnknown(f"the provider answered HTTP {response.status_code} with a body that is not JSON") from exc
    if not isinstance(body, dict):
        raise OutcomeUnknown("the provider answered with JSON that is not an object")
    return body


def _error_text(response: Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"the provider refused the request (HTTP {response.status_code})"
    message = body.get("message") or body.get("error") if isinstance(body, dict) else None
    if isinstance(message, dict):
        message = message.get("message")
    suffix = f": {message}" if isinstance(message, str) and message else ""
    return f"the provider refused the request (HTTP {response.status_code}){suffix}"
