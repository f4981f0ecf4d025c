"""FastAPI dependencies: the service's parts, the API token, and the provider that serves an operation."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request

from pgm.http.errors import ApiError
from pgm.providers.base import Operation, ProviderAdapter
from pgm.services import policy
from pgm.wiring import Service

# The dependencies are `async def` although they never await: FastAPI runs a plain `def` dependency in
# its thread pool, a thread hop (and two loop wake-ups) per dependency per request, measured at several
# percent of the CPU of a saga command (docs/performance.md).


async def service(request: Request) -> Service:
    """The running service's parts."""
    parts: Service = request.app.state.service
    return parts


Parts = Annotated[Service, Depends(service)]


async def require_token(request: Request, parts: Parts) -> None:
    """When PGM_API_TOKEN is set, the caller must send it as a bearer token (compared in constant time)."""
    expected = parts.settings.api_token
    if not expected:
        return
    supplied = request.headers.get("authorization", "")
    scheme, _, token = supplied.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "a valid bearer token is required (PGM_API_TOKEN)")


# Declared as a parameter (not only read from the path) so that the OpenAPI document lists `{provider}`
# on every operation: schema-driven clients and fuzzers cannot call a path with an undeclared parameter.
ProviderName = Annotated[
    str, Path(description="An enabled provider (`ENABLED_PROVIDERS`) or an external provider", examples=["sandbox"])
]


def provider_for(operation: Operation) -> Callable[[Request, Service, str], Awaitable[ProviderAdapter]]:
    """A dependency resolving `{provider}` and checking it offers the operation and the `{paymentMethod}` in
    the path (services/policy.py: 404 or 501 naming them otherwise), before the body is validated."""

    async def resolve(request: Request, parts: Parts, provider: ProviderName) -> ProviderAdapter:
        return policy.provider_for(parts.registry, provider, operation, request.path_params.get("paymentMethod"))

    return resolve
