"""The hot path: the requests every saga makes, served as plain ASGI in front of FastAPI's routing.

A saga costs three requests in the PGM's process (docs/architecture.md#how-a-hot-request-is-served): the
saga command (`POST /saga/{route}`), the sandbox's provider API (`POST /sandbox/api/v1/payments`, called
by the PGM's own sandbox adapter) and the sandbox's signed webhook (`POST /v3/sandbox/callback`). Through
FastAPI each of them paid for its exception-telemetry, exit-stack and routing layers (matching over every
route), dependency solving and response validation, measured at about a third of the server stack's CPU
(docs/performance.md). Here an exact (method, path) table sends them straight to the SAME endpoint
functions FastAPI calls, with the same arguments, so every behaviour has one place:

* the body is decoded and validated as FastAPI does it (its content-type rule, `json.loads`, the endpoint's
  own model, the `body` location in errors), and in the same order relative to the route's guard (the
  bearer token of /saga: after a JSON syntax error, before a validation error);
* exceptions go to the app's own exception handlers (http/errors.py) through Starlette's
  ExceptionMiddleware, and what none handles goes on to the server-error handler outside, as before;
* `scope["route"]` is the FastAPI route, so the request metrics name the same route template.

It sits inside the app's middleware (RequestContext, AdmissionLimit, BodySizeLimit,
RejectUnstorableText), so their guarantees hold on the hot path unchanged. Everything not in the table
(other methods, a trailing slash, a mount's root path) goes to FastAPI, and the routes stay declared there:
the OpenAPI document does not change.
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi._compat import ModelField, get_missing_field_error
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

# The endpoint's arguments, from the request and its validated body (None for a route without one).
Arguments = Callable[[Request, Any], dict[str, Any]]
# A check FastAPI runs as a dependency of the route, before the body is validated (it raises to refuse).
Guard = Callable[[Request], Awaitable[None]]

_MISSING = object()


@dataclass(frozen=True)
class HotRoute:
    """One (method, path) served without FastAPI's routing: the route FastAPI declares, how its
    endpoint's arguments are made, and the route's guard."""

    method: str
    path: str
    route: APIRoute
    arguments: Arguments
    argument_names: frozenset[str]
    guard: Guard | None = None
    path_params: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse, at startup, a table entry whose arguments are not exactly its endpoint's parameters: the
        hot path would otherwise call the endpoint wrongly on the first request."""
        expected = frozenset(inspect.signature(self.route.endpoint).parameters)
        if expected != self.argument_names:
            raise ValueError(
                f"hot route {self.method} {self.path}: arguments {sorted(self.argument_names)} "
                f"are not the endpoint's {sorted(expected)}"
            )
        body = self.route.body_field
        if body is not None and not body.field_info.is_required():
            raise ValueError(f"hot route {self.method} {self.path}: an optional body is not served here")


def find_route(router: APIRouter, method: str, template: str) -> APIRoute:
    """The route a router declares for (method, path template): the object FastAPI's routing puts in
    `scope["route"]` (the router is included in the app without a prefix of its own)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == template and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {template}")


class HotPath:
    """ASGI middleware serving the hot routes' exact (method, path) table itself, everything else through
    FastAPI. Installed as the innermost middleware (`app.add_middleware` first), inside the app's own."""

    def __init__(self, app: ASGIApp, routes: Iterable[HotRoute], exception_handlers: Mapping[Any, Any]) -> None:
        self.app = app
        self.routes: dict[tuple[str, str], _Served] = {}
        # The handlers FastAPI's ExceptionMiddleware gets (Starlette's rule): 500 and Exception are the
        # server-error middleware's, outside, and reached by re-raising.
        handlers = {key: value for key, value in exception_handlers.items() if key not in (500, Exception)}
        for hot in routes:
            hot.check()
            served = _Served(hot)
            self.routes[(hot.method, hot.path)] = served
            served.app = ExceptionMiddleware(served.serve, handlers=handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            served = self.routes.get((scope["method"], scope["path"]))
            if served is not None:
                scope["route"] = served.hot.route
                scope["endpoint"] = served.hot.route.endpoint
                scope["path_params"] = dict(served.hot.path_params)
                await served.app(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Served:
    """A hot route with the body validation FastAPI would run for it."""

    def __init__(self, hot: HotRoute) -> None:
        self.hot = hot
        self.app: ASGIApp = self.serve
        route = hot.route
        # FastAPI's own fields of the route: the body and the answer are validated and serialised by the
        # very code FastAPI runs for them, not by a copy of it.
        self.body_field = route.body_field
        self.response_field = route.response_field
        self.status_code = route.status_code or 200

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        body = await read_json_body(request) if self.body_field is not None else None
        if self.hot.guard is not None:
            await self.hot.guard(request)
        if self.body_field is not None:
            body = _validated(self.body_field, body)
        result = await self.hot.route.endpoint(**self.hot.arguments(request, body))
        if isinstance(result, Response):
            response = result
        else:
            response = Response(self._serialize(result), status_code=self.status_code, media_type="application/json")
        await response(scope, receive, send)

    def _serialize(self, result: Any) -> bytes:
        """The answer as FastAPI serialises a response model (its `dump_json` path), with the route's options."""
        route, field = self.hot.route, self.response_field
        if field is None:
            raise TypeError(f"hot route {route.path} returned {type(result).__name__} and declares no response model")
        value, errors = field.validate(result, {}, loc=("response",))
        if errors:
            raise ResponseValidationError(errors=errors, body=result)
        return field.serialize_json(
            value,
            include=route.response_model_include,
            exclude=route.response_model_exclude,
            by_alias=route.response_model_by_alias,
            exclude_unset=route.response_model_exclude_unset,
            exclude_defaults=route.response_model_exclude_defaults,
            exclude_none=route.response_model_exclude_none,
        )


async def read_json_body(request: Request) -> Any:
    """The request body as FastAPI reads a JSON body parameter: decoded only when the content type is JSON
    (none is not: FastAPI's strict content type), otherwise the raw bytes (which then fail validation), and
    `_MISSING` when empty. A JSON syntax error is the same validation error, other failures its 400."""
    try:
        raw = await request.body()
        if not raw:
            return _MISSING
        content_type = request.headers.get("content-type")
        if content_type and _is_json_content_type(content_type):
            return json.loads(raw)
        return raw
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", error.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": error.msg},
                }
            ],
            body=error.doc,
        ) from error
    except HTTPException:
        # The body checks of the middleware (413, 400) answer as they do through FastAPI.
        raise
    except Exception as error:
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from error


def _validated(body_field: ModelField, body: Any) -> Any:
    """The body validated by the route's body field as FastAPI does (a missing body, errors under `body`)."""
    if body is _MISSING:
        # Every hot route's body is required (an optional one would take FastAPI's default here).
        raise RequestValidationError([get_missing_field_error(loc=("body",))])
    value, errors = body_field.validate(body, {}, loc=("body",))
    if errors:
        raise RequestValidationError(errors, body=body)
    return value


# A content type seen before, to whether it is JSON: the decision is the email module's (as FastAPI's),
# made once per distinct header value. Bounded, as the header is the client's.
_JSON_CONTENT_TYPES: dict[str, bool] = {}
_CONTENT_TYPES_REMEMBERED = 64


def _is_json_content_type(value: str) -> bool:
    known = _JSON_CONTENT_TYPES.get(value)
    if known is not None:
        return known
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    is_json = message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))
    if len(_JSON_CONTENT_TYPES) < _CONTENT_TYPES_REMEMBERED:
        _JSON_CONTENT_TYPES[value] = is_json
    return is_json
