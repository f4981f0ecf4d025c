"""Operations endpoints: probes, Prometheus metrics, the outbox's dead letters, and the API docs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from pgm.http.dependencies import Parts, require_token
from pgm.http.errors import ApiError
from pgm.observability import store_gauges
from pgm.store.migrator import current_revision, schema_state

# Row ids are 64-bit signed integers in both databases: anything larger cannot name a row.
MAX_ROW_ID = 2**63 - 1


class Probe(BaseModel):
    """A probe's answer."""

    status: Literal["OK", "KO"]
    checks: dict[str, str] | None = None


class OutboxEntry(BaseModel):
    """One outbox message as operators see it."""

    id: int
    destination: str
    orderingKey: str  # noqa: N815
    status: str
    attempts: int
    lastStatusCode: int | None  # noqa: N815
    lastError: str | None  # noqa: N815
    createdAt: float  # noqa: N815
    payload: dict[str, Any]


def build_router() -> APIRouter:
    """Probes, metrics and outbox administration."""
    router = APIRouter(tags=["operations"])

    @router.get("/-/healthz", summary="The process is alive")
    async def healthz() -> Probe:
        return Probe(status="OK")

    @router.get(
        "/-/ready", summary="Store reachable and migrated, configuration valid", responses={503: {"model": Probe}}
    )
    async def ready(parts: Parts) -> Response:
        checks: dict[str, str] = {}
        try:
            await parts.database.ping()
            checks["store"] = "OK"
            checks["migrations"] = schema_state(await current_revision(parts.database))
        except Exception as exc:  # any failure means not ready; the reason is the exception's type only
            checks["store"] = f"unreachable ({type(exc).__name__})"
        checks["providers"] = ",".join(parts.registry.names) or "none"
        healthy = checks.get("store") == "OK" and checks.get("migrations") in ("OK", "ahead")
        body = Probe(status="OK" if healthy else "KO", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)

    @router.get("/-/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(parts: Parts) -> Response:
        await parts.dispatcher.refresh_backlog_metrics()
        await store_gauges.refresh(parts.database, parts.metrics, parts.clock.now())
        return Response(generate_latest(parts.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/-/outbox", dependencies=[Depends(require_token)], summary="Outbox messages (dead letters by default)")
    async def outbox(
        parts: Parts,
        status: Annotated[Literal["PENDING", "DELIVERED", "DEAD"], Query()] = "DEAD",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[OutboxEntry]:
        async with parts.database.snapshot() as tx:
            rows = await tx.outbox.with_status(status, limit)
        return [
            OutboxEntry(
                id=row.id,
                destination=row.destination,
                orderingKey=row.ordering_key,
                status=row.status,
                attempts=row.attempts,
                lastStatusCode=row.last_status_code,
                lastError=row.last_error,
                createdAt=row.created_at,
                payload=row.payload,
            )
            for row in rows
        ]

    @router.post(
        "/-/outbox/{message_id}/resend", dependencies=[Depends(require_token)], summary="Re-send a dead letter"
    )
    async def resend(message_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], parts: Parts) -> dict[str, Any]:
        if not await parts.dispatcher.resend(message_id):
            raise ApiError(404, "not_found", f"no dead letter {message_id}")
        return {"id": message_id, "status": "PENDING"}

    return router


def build_docs_router(static_path: str) -> APIRouter:
    """Swagger UI 5 served from the bundled assets (swagger-ui-bundle-v2): nothing is fetched from the
    internet, and it reads the OpenAPI 3.1 document FastAPI publishes (Swagger UI 4 cannot)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/documentation", response_class=HTMLResponse)
    async def documentation(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/documentation/openapi.json",
            title="Payment Gateway Manager",
            swagger_js_url=f"{static_path}/swagger-ui-bundle.js",
            swagger_css_url=f"{static_path}/swagger-ui.css",
            swagger_favicon_url=f"{static_path}/favicon-32x32.png",
        )

    return router
