"""The saga inspector: server-rendered pages over the Flow Manager stand-in and the PGM's saga view."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pgm.devstack.inspector.diagram import layout

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
)
DEFAULT_REFRESH_SECONDS = 2.0
LIST_LIMIT = 50


def pretty(value: Any) -> str:
    """JSON indented for reading."""
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


def when(value: Any) -> str:
    """A timestamp for reading: epoch seconds (the PGM's) as ISO-8601 UTC, text as it is, nothing as empty."""
    if value is None or value == "":
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)


def failure_reason(saga: Any) -> str | None:
    """Why a saga failed, or None when it is not in a failed state (PAYMENT_FAILED, REFUND_FAILED...).

    The reason is what the PGM's failure event carried (merged into the metadata as `error`, or in the
    last event's payload); a failed saga without one still says so."""
    if not isinstance(saga, dict) or not str(saga.get("currentState") or "").endswith("FAILED"):
        return None
    metadata: Any = saga.get("metadata")
    history: Any = saga.get("history")
    events = history.get("events", []) if isinstance(history, dict) else []
    payload: Any = events[-1].get("payload") if events and isinstance(events[-1], dict) else None
    for source in (payload, metadata):
        if not isinstance(source, dict):
            continue
        for key in ("error", "reason", "resultDescription", "failureReason"):
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return "no reason given"


TEMPLATES.filters["pretty"] = pretty
TEMPLATES.filters["when"] = when
TEMPLATES.filters["failure_reason"] = failure_reason


@dataclass
class Fetched:
    """An upstream answer: its JSON, or what went wrong getting it."""

    data: Any = None
    error: str | None = None
    status: int | None = None


@dataclass
class SagaView:
    """Everything one saga page shows."""

    saga_id: str
    saga: Fetched
    machine: Fetched
    pgm: Fetched
    moves: list[tuple[str, str, str]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)


class Upstreams:
    """Reads the Flow Manager stand-in and the PGM; failures become messages on the page, not crashes."""

    def __init__(self, client: httpx.AsyncClient, flow_manager_url: str, pgm_url: str, token: str | None) -> None:
        self._client = client
        self.flow_manager_url = flow_manager_url.rstrip("/")
        self.pgm_url = pgm_url.rstrip("/")
        self._token = token

    async def _get(self, url: str, **kwargs: Any) -> Fetched:
        try:
            response = await self._client.get(url, **kwargs)
        except httpx.HTTPError as error:
            return Fetched(error=f"GET {url} failed: {error!r}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return Fetched(data=body, status=response.status_code)
        message = body.get("message") if isinstance(body, dict) else None
        return Fetched(
            data=body, status=response.status_code, error=f"GET {url} answered {response.status_code}: {message or ''}"
        )

    async def sagas(self, limit: int) -> Fetched:
        """The newest sagas, as the Flow Manager lists them."""
        return await self._get(f"{self.flow_manager_url}/sagas", params={"limit": limit})

    async def saga(self, saga_id: str) -> Fetched:
        """One saga: document, commands sent, events ignored."""
        return await self._get(f"{self.flow_manager_url}/sagas/{saga_id}")

    async def machine(self) -> Fetched:
        """The machine the Flow Manager runs."""
        return await self._get(f"{self.flow_manager_url}/machine-definition")

    async def pgm_saga(self, saga_id: str) -> Fetched:
        """What the PGM knows of the saga: commands received, events and their deliveries, payments."""
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        return await self._get(f"{self.pgm_url}/-/sagas/{saga_id}", headers=headers)


def _moves(saga: dict[str, Any]) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]]]:
    """The saga's moves (from, event, to) and a timeline pairing each event with the state it led to."""
    recorded = saga.get("history")
    history: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    states = [entry for entry in history.get("states", []) if isinstance(entry, dict)]
    events = [entry for entry in history.get("events", []) if isinstance(entry, dict)]
    moves: list[tuple[str, str, str]] = []
    timeline: list[dict[str, Any]] = []
    # The Flow Manager appends one state and one event per move; the first pair is the creation.
    for index, event in enumerate(events):
        state = states[index] if index < len(states) else {}
        previous = states[index - 1].get("state") if 0 < index <= len(states) else None
        timeline.append(
            {
                "index": index,
                "event": event.get("event"),
                "payload": event.get("payload"),
                "timestamp": event.get("timestamp") or state.get("timestamp"),
                "from": previous,
                "state": state.get("state"),
                "businessStateId": state.get("businessStateId"),
            }
        )
        if previous is not None and state.get("state") is not None:
            moves.append((str(previous), str(event.get("event")), str(state["state"])))
    return moves, timeline


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def create_inspector_app(
    flow_manager_url: str,
    pgm_url: str,
    pgm_api_token: str | None = None,
    *,
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The inspector, reading the Flow Manager at `flow_manager_url` and the PGM at `pgm_url`."""
    runtime: dict[str, Upstreams] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0, transport=transport) as client:
            runtime["upstreams"] = Upstreams(client, flow_manager_url, pgm_url, pgm_api_token)
            try:
                yield
            finally:
                runtime.clear()

    app = FastAPI(title="PGM saga inspector", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def render(template: str, status: int, **values: Any) -> HTMLResponse:
        upstreams = runtime["upstreams"]
        return HTMLResponse(
            TEMPLATES.get_template(template).render(
                flow_manager_url=upstreams.flow_manager_url,
                pgm_url=upstreams.pgm_url,
                refresh_seconds=refresh_seconds,
                **values,
            ),
            status_code=status,
        )

    def refresh_setting(request: Request) -> float:
        # `?refresh=0` stops the page following the saga, e.g. while reading a payload.
        raw = request.query_params.get("refresh")
        try:
            return max(float(raw), 0.0) if raw is not None else refresh_seconds
        except ValueError:
            return refresh_seconds

    @app.get("/-/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "OK"}

    @app.get("/", response_class=HTMLResponse)
    async def sagas(request: Request) -> Response:
        listing = await runtime["upstreams"].sagas(LIST_LIMIT)
        fingerprint = _fingerprint(listing.data, listing.error)
        if request.query_params.get("format") == "fingerprint":
            return PlainTextResponse(fingerprint)
        return render(
            "index.html",
            502 if listing.error else 200,
            listing=listing,
            fingerprint=fingerprint,
            refresh=refresh_setting(request),
        )

    @app.get("/sagas/{saga_id}", response_class=HTMLResponse)
    async def saga(saga_id: str, request: Request) -> Response:
        upstreams = runtime["upstreams"]
        view = SagaView(
            saga_id, await upstreams.saga(saga_id), await upstreams.machine(), await upstreams.pgm_saga(saga_id)
        )
        fingerprint = _fingerprint(view.saga.data, view.saga.error, view.pgm.data, view.pgm.error)
        if request.query_params.get("format") == "fingerprint":
            return PlainTextResponse(fingerprint)
        document = view.saga.data if isinstance(view.saga.data, dict) and view.saga.error is None else None
        diagram = None
        if document is not None:
            view.moves, view.timeline = _moves(document)
            if isinstance(view.machine.data, dict):
                diagram = layout(view.machine.data, current=document.get("currentState"), history=view.moves)
        status = 200 if document is not None else (404 if view.saga.status == 404 else 502)
        return render(
            "saga.html",
            status,
            view=view,
            saga=document,
            diagram=diagram,
            fingerprint=fingerprint,
            refresh=refresh_setting(request),
        )

    return app
