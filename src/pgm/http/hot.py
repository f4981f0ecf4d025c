"""The hot path: the requests every saga makes, and /v3's pay, served as plain ASGI in front of FastAPI's
routing.

A saga costs three requests in the PGM's process (docs/architecture.md#how-a-hot-request-is-served): the
saga command (`POST /saga/{route}`), the sandbox's provider API (`POST /sandbox/api/v1/payments`, called
by the PGM's own sandbox adapter) and the sandbox's signed webhook (`POST /v3/sandbox/callback`); /v3's
`POST /v3/{provider}/{paymentMethod}/pay` makes the same calls around its own. Through FastAPI each of
them paid for its exception-telemetry, exit-stack and routing layers (matching over every route),
dependency solving and its serialisation wrapper, about half of the server stack's CPU per saga
(docs/performance.md). Here an exact (method, path) table, or for /v3's pay a match that accepts only the
paths FastAPI gives to that route, sends them straight to the SAME endpoint functions FastAPI calls, with
the same arguments, so every behaviour has one place:

* the body is decoded as FastAPI does it (its content-type rule, `json.loads`), the route's dependencies
  run next (the bearer token, the provider's adapter), then the headers and the body are validated by the
  route's own FastAPI fields, their errors merged in FastAPI's order;
* exceptions go to the app's own exception handlers (http/errors.py) through Starlette's
  ExceptionMiddleware, and what none handles goes on to the server-error handler outside, as before;
* `scope["route"]` is the FastAPI route, so the request metrics name the same route template.

It is the app's middleware too (`Edge`): a hot request gets the work of RequestContext, AdmissionLimit,
BodySizeLimit and RejectUnstorableText in one pass, by the same shared parts (http/middleware.py), so their
guarantees hold on the hot path unchanged. Every other request (other methods, a trailing slash, a mount's
root path) goes through those four, nested, then FastAPI, and the routes stay declared there: the OpenAPI
document does not change.
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
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from pgm.http.middleware import (
    AdmissionLimit,
    BodySizeLimit,
    CheckedBody,
    Exchange,
    RejectUnstorableText,
    RequestContext,
    answer_too_large,
    answer_unstorable,
    declared_too_large,
    is_synchronous_api,
    unstorable_in_url,
)
from pgm.observability.metrics import Metrics

# The endpoint's arguments, from the request and the values resolved for it: `body` (the validated body),
# each header parameter by its name (validated as FastAPI validates it), and what `Prepare` returned.
Arguments = Callable[[Request, dict[str, Any]], dict[str, Any]]
# The route's dependencies, run in FastAPI's order after the body is decoded and before it is validated:
# they raise to refuse, and return the values they resolve (the provider's adapter of a /v3 route).
Prepare = Callable[[Request], Awaitable[dict[str, Any]]]
# For a route served on a family of paths: the path parameters of a path it serves, None for the others.
PathMatch = Callable[[str], dict[str, str] | None]

_MISSING = object()
_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


@dataclass(frozen=True)
class HotRoute:
    """One (method, path) served without FastAPI's routing: the route FastAPI declares, how its
    endpoint's arguments are made, and the route's dependencies. `match` serves a family of paths instead
    of `path` alone: it must accept only paths FastAPI's routing gives to this route."""

    method: str
    path: str
    route: APIRoute
    arguments: Arguments
    argument_names: frozenset[str]
    prepare: Prepare | None = None
    path_params: Mapping[str, str] = field(default_factory=dict)
    match: PathMatch | None = None

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


class Edge:
    """The app's middleware as one ASGI layer: a hot request gets the work of RequestContext, AdmissionLimit,
    BodySizeLimit and RejectUnstorableText done in one pass, in their order, by their own shared parts
    (http/middleware.py), then its endpoint; every other request goes through those four middlewares, then
    FastAPI. Installed as the app's only middleware (inside Starlette's server-error middleware)."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Iterable[HotRoute],
        exception_handlers: Mapping[Any, Any],
        metrics: Metrics,
        max_in_flight: int,
        max_bytes: int,
        callback_max_bytes: int | None = None,
    ) -> None:
        self.metrics = metrics
        # The chain, outermost first as it was installed: its admission limit and body size limit are the
        # hot pass's too (one count of /v3 requests in flight, one rule for each limit).
        self.body_size = BodySizeLimit(RejectUnstorableText(app), max_bytes, callback_max_bytes)
        self.admission = AdmissionLimit(self.body_size, max_in_flight, metrics)
        self.chain: ASGIApp = RequestContext(self.admission, metrics)
        self.routes: dict[tuple[str, str], _Served] = {}
        self.families: dict[str, list[_Served]] = {}
        # The handlers FastAPI's ExceptionMiddleware gets (Starlette's rule): 500 and Exception are the
        # server-error middleware's, outside, and reached by re-raising.
        handlers = {key: value for key, value in exception_handlers.items() if key not in (500, Exception)}
        for hot in routes:
            hot.check()
            served = _Served(hot)
            if hot.match is None:
                self.routes[(hot.method, hot.path)] = served
            else:
                self.families.setdefault(hot.method, []).append(served)
            served.app = ExceptionMiddleware(served.serve, handlers=handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            served = self.routes.get((method, path))
            if served is not None:
                await self._serve(served, dict(served.hot.path_params), scope, receive, send)
                return
            for served in self.families.get(method, ()):
                assert served.hot.match is not None
                path_params = served.hot.match(path)
                if path_params is not None:
                    await self._serve(served, path_params, scope, receive, send)
                    return
        await self.chain(scope, receive, send)

    async def _serve(
        self, served: _Served, path_params: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The four middlewares' work on a hot request, in the chain's order, then the endpoint."""
        exchange = Exchange(scope, send)  # RequestContext: the request id, then the metric and access line
        try:
            path = scope["path"]
            shed = is_synchronous_api(path)  # AdmissionLimit: /v3's pay, never a callback
            if shed and not await self.admission.admit(scope, exchange.send):
                return
            try:
                headers = dict(scope["headers"])
                limit = self.body_size.limit_for(path)
                if declared_too_large(headers, limit):  # BodySizeLimit, declared
                    await answer_too_large(scope, exchange.send, limit)
                    return
                if unstorable_in_url(scope):  # RejectUnstorableText, path and query
                    await answer_unstorable(scope, exchange.send)
                    return
                # Both limits on the body as it streams in, raised into the endpoint's exception handlers.
                checked = CheckedBody(receive, limit, headers.get(b"content-type", b""))
                await served(scope, checked.receive, exchange.send, path_params)
            finally:
                if shed:
                    self.admission.leave()
        finally:
            exchange.finish(self.metrics)


class _Served:
    """A hot route with the body validation FastAPI would run for it."""

    def __init__(self, hot: HotRoute) -> None:
        self.hot = hot
        self.app: ASGIApp = self.serve
        route = hot.route
        # FastAPI's own fields of the route: the body and the answer are validated and serialised by the
        # very code FastAPI runs for them, not by a copy of it.
        self.body_field = route.body_field
        self.header_fields = route.dependant.header_params
        self.response_field = route.response_field
        self.status_code = route.status_code or 200
        # A serialised answer is sent as the two ASGI messages Starlette's Response sends, with its headers
        # in its order (content-length, then content-type), without building the Response object. Statuses
        # Starlette sends without a content-length (1xx, 204, 304) keep going through the Response.
        self.raw_answer = self.status_code >= 200 and self.status_code not in (204, 304)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path_params: dict[str, str]) -> None:
        route = self.hot.route
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = path_params
        await self.app(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        body = await read_json_body(request) if self.body_field is not None else None
        values = await self.hot.prepare(request) if self.hot.prepare is not None else {}
        # FastAPI's order of validation errors: the headers' (with FastAPI's own code), then the body's.
        header_values, errors = request_params_to_args(self.header_fields, request.headers)
        values.update(header_values)
        if self.body_field is not None:
            values["body"], body_errors = _validated(self.body_field, body)
            errors += body_errors
        if errors:
            raise RequestValidationError(errors, body=None if body is _MISSING else body)
        result = await self.hot.route.endpoint(**self.hot.arguments(request, values))
        if isinstance(result, Response):
            await result(scope, receive, send)
            return
        content = self._serialize(result)
        if not self.raw_answer:
            await Response(content, status_code=self.status_code, media_type="application/json")(scope, receive, send)
            return
        headers = [(b"content-length", str(len(content)).encode("latin-1")), _JSON_CONTENT_TYPE]
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": content})

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


def _validated(body_field: ModelField, body: Any) -> tuple[Any, list[Any]]:
    """The body validated by the route's body field as FastAPI does (a missing body, errors under `body`)."""
    if body is _MISSING:
        # Every hot route's body is required (an optional one would take FastAPI's default here).
        return None, [get_missing_field_error(loc=("body",))]
    return body_field.validate(body, {}, loc=("body",))


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
