"""HTTP edge of the Flow Manager stand-in: create sagas, accept events, expose sagas and the machine."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pgm.devstack.flow_manager.commands import CommandSender
from pgm.devstack.flow_manager.config import config_warnings, validate_config
from pgm.devstack.flow_manager.machine import Machine, SagaDocument, iso_now
from pgm.devstack.flow_manager.persistence import (
    CrudSagaRepository,
    InMemorySagaRepository,
    SagaRepository,
    SagaStoreError,
)

logger = logging.getLogger("pgm.devstack.flow_manager")

_SHUTDOWN_DRAIN_SECONDS = 5.0


class _Strict(BaseModel):
    # The real Flow Manager validates with `additionalProperties: false`: extra keys are refused.
    model_config = ConfigDict(extra="forbid", strict=True)


class SagaCreation(_Strict):
    """Body of `POST /saga`."""

    associatedEntityId: str  # noqa: N815 - wire spelling
    metadata: dict[str, Any] = Field(default_factory=dict)


class EventValue(_Strict):
    """The `value` of an event envelope."""

    messageLabel: str = Field(min_length=1)  # noqa: N815 - wire spelling
    messagePayload: dict[str, Any]  # noqa: N815 - wire spelling


class EventEnvelope(_Strict):
    """Body of `POST /event`: exactly `key` and `value{messageLabel, messagePayload}`."""

    key: str = Field(min_length=1)
    value: EventValue


def _error(status: int, error: str, message: str) -> JSONResponse:
    # Fastify's error shape: the real Flow Manager runs on it.
    return JSONResponse({"statusCode": status, "error": error, "message": message}, status_code=status)


def _validation_message(error: ValidationError) -> str:
    parts = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"]) or "body"
        parts.append(f"{where}: {detail['msg']}")
    return "; ".join(parts)


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock for `key` for the duration of the block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class FlowManager:
    """The running service: machine, saga store, command sender, and a per-saga lock."""

    def __init__(self, machine: Machine, repository: SagaRepository, sender: CommandSender, id_prefix: str) -> None:
        self.machine = machine
        self.repository = repository
        self.sender = sender
        self._id_prefix = id_prefix
        self._locks = _KeyedLocks()
        self._ignored: dict[str, list[dict[str, Any]]] = {}

    async def create_saga(self, creation: SagaCreation) -> SagaDocument:
        """Create a saga in the initial state, store it, and queue the initial state's command."""
        saga_id = f"{self._id_prefix}{uuid.uuid4().hex}"
        async with self._locks.hold(saga_id):
            saga = await self.repository.save(
                self.machine.new_saga(saga_id, creation.associatedEntityId, creation.metadata)
            )
            self._send_entry_command(saga)
        logger.info("saga %s created in %s", saga_id, saga["currentState"])
        return saga

    async def handle_event(self, envelope: EventEnvelope) -> tuple[SagaDocument | None, bool]:
        """Apply an event under the saga's lock: (saga after it, whether accepted); saga None when unknown."""
        saga_id, label = envelope.key, envelope.value.messageLabel
        async with self._locks.hold(saga_id):
            saga = await self.repository.get(saga_id)
            if saga is None:
                logger.error("event %s for unknown saga %s", label, saga_id)
                return None, False
            moved = self.machine.apply_event(saga, label, envelope.value.messagePayload)
            if moved is None:
                logger.error(
                    "event %s unexpected in state %s of saga %s: ignored", label, saga["currentState"], saga_id
                )
                self._ignored.setdefault(saga_id, []).append(
                    {
                        "event": label,
                        "payload": envelope.value.messagePayload,
                        "state": saga["currentState"],
                        "receivedAt": iso_now(),
                    }
                )
                return saga, False
            stored = await self.repository.save(moved)
            # Queued while the lock is held, so commands leave in the order their events were accepted.
            self._send_entry_command(stored)
        logger.info("saga %s: %s moved %s -> %s", saga_id, label, saga["currentState"], stored["currentState"])
        return stored, True

    def _send_entry_command(self, saga: SagaDocument) -> None:
        command = self.machine.command_for(saga)
        if command is not None:
            self.sender.enqueue(command)

    def inspect(self, saga: SagaDocument) -> dict[str, Any]:
        """The saga document plus what the stand-in remembers about it: commands sent, events ignored."""
        saga_id = str(saga["sagaId"])
        return {**saga, "commands": self.sender.records(saga_id), "ignoredEvents": list(self._ignored.get(saga_id, []))}


HOME_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Flow Manager stand-in</title>
<style>body { font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
li { margin: .35rem 0; } .muted { color: #656d76; }</style></head>
<body>
<h1>Flow Manager stand-in</h1>
<p class="muted">A local Flow Manager for development: it runs the saga machine and sends the PGM its commands.</p>
<ul id="links">
<li><a href="/sagas">/sagas</a>
  <span class="muted">the newest sagas (JSON); <code>/sagas/{sagaId}</code> for one</span></li>
<li><a href="/machine-definition">/machine-definition</a> <span class="muted">the machine it runs</span></li>
<li><a href="/openapi.json">/openapi.json</a>
  <span class="muted">its API: <code>POST /saga</code>, <code>POST /event</code></span></li>
<li><a href="/-/healthz">/-/healthz</a></li>
</ul>
</body></html>
"""


def create_flow_manager_app(
    config: dict[str, Any],
    crud_base_url: str | None = None,
    *,
    saga_id_prefix: str = "",
    command_timeout: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """A FastAPI app that runs sagas as a Flow Manager configured with `config` (a decoded saga.json)."""
    parsed = validate_config(config)
    for warning in config_warnings(parsed):
        logger.warning("configuration loaded with a difference: %s", warning)
    machine = Machine(parsed)
    persistency = parsed.persistencyManagement
    collection = persistency.configurations.get("collectionName")
    crud_target: tuple[str, str] | None = None
    if persistency.type == "crud" and crud_base_url is not None and isinstance(collection, str):
        crud_target = (crud_base_url, collection)
    else:
        logger.warning("sagas are kept in memory (persistency %r, CRUD URL %r)", persistency.type, crud_base_url)
    runtime: dict[str, FlowManager] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=command_timeout, transport=transport) as client:
            repository: SagaRepository
            if crud_target is not None:
                repository = CrudSagaRepository(client, *crud_target)
            else:
                repository = InMemorySagaRepository()
            sender = CommandSender(client)
            runtime["service"] = FlowManager(machine, repository, sender, saga_id_prefix)
            try:
                yield
            finally:
                await sender.drain(_SHUTDOWN_DRAIN_SECONDS)
                runtime.clear()

    def service() -> FlowManager:
        return runtime["service"]

    app = FastAPI(title="Flow Manager stand-in", lifespan=lifespan)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        # Opening the stand-in's address in a browser shows where to go instead of a 404.
        return HTMLResponse(HOME_PAGE)

    @app.get("/-/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "OK"}

    @app.get("/-/ready", response_model=None)
    async def ready() -> dict[str, str] | JSONResponse:
        if "service" not in runtime or not await service().repository.ready():
            return JSONResponse({"status": "KO", "reason": "saga store unavailable"}, status_code=503)
        return {"status": "OK"}

    @app.get("/machine-definition")
    async def machine_definition() -> dict[str, Any]:
        definition: dict[str, Any] = config["machineDefinition"]
        return definition

    @app.post("/saga", response_model=None)
    async def create_saga(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            creation = SagaCreation.model_validate_json(await request.body())
        except ValidationError as error:
            return _error(400, "Bad Request", _validation_message(error))
        try:
            saga = await service().create_saga(creation)
        except SagaStoreError as error:
            return _error(503, "Service Unavailable", str(error))
        return {"sagaId": saga["sagaId"]}

    @app.post("/event", response_model=None)
    async def receive_event(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            envelope = EventEnvelope.model_validate_json(await request.body())
        except ValidationError as error:
            return _error(400, "Bad Request", _validation_message(error))
        try:
            saga, accepted = await service().handle_event(envelope)
        except SagaStoreError as error:
            return _error(503, "Service Unavailable", str(error))
        if saga is None:
            return _error(404, "Not Found", f"saga {envelope.key!r} not found")
        if not accepted and machine.throw_on_unexpected_events:
            return _error(
                400,
                "Bad Request",
                f"event {envelope.value.messageLabel!r} is not expected in state {saga['currentState']!r}",
            )
        return {"sagaId": envelope.key, "accepted": accepted, "currentState": saga["currentState"]}

    @app.get("/sagas", response_model=None)
    async def list_sagas(limit: int = 25) -> list[dict[str, Any]] | JSONResponse:
        if not 1 <= limit <= 200:
            return _error(400, "Bad Request", "limit must be between 1 and 200")
        try:
            sagas = await service().repository.recent(limit)
        except SagaStoreError as error:
            return _error(503, "Service Unavailable", str(error))
        return [service().inspect(saga) for saga in sagas]

    @app.get("/sagas/{saga_id}", response_model=None)
    async def get_saga(saga_id: str) -> dict[str, Any] | JSONResponse:
        try:
            saga = await service().repository.get(saga_id)
        except SagaStoreError as error:
            return _error(503, "Service Unavailable", str(error))
        if saga is None:
            return _error(404, "Not Found", f"saga {saga_id!r} not found")
        return service().inspect(saga)

    return app
