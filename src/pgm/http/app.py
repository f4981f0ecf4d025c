"""The FastAPI application: routers and middleware around the parts of a running service, which it
receives (composed in src/pgm/wiring.py) rather than builds."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from pgm import __version__
from pgm.http import errors
from pgm.http.hot import Edge, HotRoute
from pgm.http.routes import home, inspection, ops, v3
from pgm.http.routes import saga as saga_routes
from pgm.http.routes import sandbox as sandbox_routes
from pgm.wiring import Wiring

DESCRIPTION = """Payment providers behind one API, and a participant in Flow Manager payment sagas.

Amounts are integers in minor units. Every error answers with one JSON shape: `statusCode`, `error`,
`code`, `message`, and `field` when one field is at fault. Send `Idempotency-Key` to repeat a request
safely. When `PGM_API_TOKEN` is set, send `Authorization: Bearer <token>` (callbacks excepted)."""
DOCS_STATIC = "/documentation/static"


def create_app(wiring: Wiring, hot_path: bool = True) -> FastAPI:
    """The web app of a service: routes and middleware for its settings, and, for the app's lifetime, the
    running parts the wiring builds (handed to the routes through `app.state`).

    `hot_path=False` serves every request through FastAPI's routing: the tests compare both answers."""
    settings, metrics = wiring.settings, wiring.metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with wiring.running() as parts:
            app.state.service = parts
            app.state.sandbox = parts.sandbox
            yield

    app = FastAPI(
        title="Payment Gateway Manager",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/documentation/openapi.json",
        # The service's observability is its own (request metrics and access lines, RequestContext): with
        # FastAPI's native OpenTelemetry on, every request paid for a check of the global providers that the
        # service never configures (docs/performance.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    errors.install(app)
    app.include_router(home.build_router())
    app.include_router(ops.build_router())
    app.include_router(ops.build_docs_router(DOCS_STATIC))
    app.mount(DOCS_STATIC, StaticFiles(directory=swagger_ui_path), name="documentation-static")
    if "braintree" in settings.enabled_providers:
        # Imported only when enabled, as the registry imports a provider's module (its SDK).
        from pgm.http.routes import braintree as braintree_routes

        app.include_router(braintree_routes.build_router())
    if "axerve" in settings.enabled_providers:
        from pgm.http.routes import axerve as axerve_routes

        app.include_router(axerve_routes.build_router())
    # The saga commands and the sandbox's provider API come before /v3's parametric routes: routing tries
    # each route in order, and these are the hot path of a saga (the paths never overlap).
    hot: list[HotRoute] = []
    if settings.saga_enabled:
        saga_router = saga_routes.build_router()
        app.include_router(saga_router)
        app.include_router(inspection.build_router())
        hot += saga_routes.hot_routes(saga_router)
    if "sandbox" in settings.enabled_providers:
        sandbox_router = sandbox_routes.build_router()
        app.include_router(sandbox_router)
        hot += sandbox_routes.hot_routes(sandbox_router)
    v3_router = v3.build_router()
    app.include_router(v3_router)
    # The requests of every saga: its command, the sandbox's provider API, the provider's callback.
    hot += v3.hot_callback_routes(v3_router, settings.enabled_providers)
    # And /v3's pay, the synchronous API's busiest operation (its admission limit is the middleware's).
    hot.append(v3.hot_pay_route(v3_router))
    # The app's middleware, as one layer: the hot routes' requests get its work (request id, access line
    # and metrics, admission limit, body size limits, unstorable text) in one pass, then their endpoint;
    # every other request goes through the middleware chain, then FastAPI (http/hot.py).
    app.add_middleware(
        Edge,
        routes=hot if hot_path else [],
        exception_handlers=app.exception_handlers,
        metrics=metrics,
        max_in_flight=settings.max_in_flight,
        max_bytes=settings.max_body_bytes,
        callback_max_bytes=settings.callback_max_bytes,
    )
    return app
