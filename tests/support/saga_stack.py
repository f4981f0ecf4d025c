"""The whole saga flow on loopback: the CRUD stand-in, a PGM process and the Flow Manager stand-in
running the repository's own configuration, wired together as in production."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgm.devstack.crud import create_crud_app
from pgm.devstack.flow_manager import create_flow_manager_app, pgm_saga_config
from tests.support.databases import fresh_database
from tests.support.pgm_process import SHORT_PROVIDER_TIMEOUT, PgmProcess, free_port
from tests.support.sandbox_requests import metadata
from tests.support.servers import run_server_in_thread, wait_for

COLLECTION = "fm-transactions"


class SagaStack:
    """Drive sagas the way a merchant application does: create them and send business events."""

    def __init__(self, pgm: PgmProcess, flow_manager_url: str, crud_url: str) -> None:
        self.pgm = pgm
        # Idle connections dropped well before uvicorn's keep-alive time-out (5 s), as PgmProcess's client.
        limits = httpx.Limits(keepalive_expiry=1.0)
        self.flow_manager = httpx.Client(base_url=flow_manager_url, timeout=10, limits=limits)
        self.crud = httpx.Client(base_url=crud_url, timeout=10, limits=limits)

    def create_saga(self, metadata: dict[str, Any]) -> str:
        """POST /saga; the saga starts in PAYMENT_CREATED."""
        response = self.flow_manager.post("/saga", json={"associatedEntityId": uuid.uuid4().hex, "metadata": metadata})
        response.raise_for_status()
        return str(response.json()["sagaId"])

    def send_event(self, saga_id: str, label: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /event to the Flow Manager, as the merchant application or a messaging service would."""
        body = {"key": saga_id, "value": {"messageLabel": label, "messagePayload": payload or {}}}
        response = self.flow_manager.post("/event", json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def saga(self, saga_id: str) -> dict[str, Any]:
        """The saga as the Flow Manager has it (document, commands sent, ignored events)."""
        response = self.flow_manager.get(f"/sagas/{saga_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_state(self, saga_id: str, state: str, timeout: float = 15) -> dict[str, Any]:
        """Block until the saga reaches `state`; return the saga."""
        seen: list[str] = []

        def reached() -> bool:
            seen.append(self.saga(saga_id)["currentState"])
            return seen[-1] == state

        try:
            wait_for(reached, timeout=timeout, interval=0.05, what=f"saga {saga_id} in {state}")
        except TimeoutError as exc:
            raise AssertionError(f"saga stayed in {seen[-1] if seen else '?'}, expected {state}") from exc
        return self.saga(saga_id)

    def stored_saga(self, saga_id: str) -> dict[str, Any]:
        """The saga document as the CRUD stores it (what the PGM reads)."""
        response = self.crud.get(f"/{COLLECTION}/", params={"sagaId": saga_id})
        response.raise_for_status()
        documents: list[dict[str, Any]] = response.json()
        assert len(documents) == 1
        return documents[0]

    def put_saga(self, saga_id: str, state: str, metadata: dict[str, Any]) -> None:
        """Write a saga document straight into the CRUD (a saga the Flow Manager already moved along)."""
        document = {
            "sagaId": saga_id,
            "currentState": state,
            "latestEvent": "scheduleRequested",
            "associatedEntityId": saga_id,
            "businessStateId": 0,
            "businessStateDescription": "created",
            "isFinal": False,
            "metadata": metadata,
            "history": {"states": [], "events": []},
        }
        response = self.crud.post(f"/{COLLECTION}/upsert-one", params={"sagaId": saga_id}, json={"$set": document})
        response.raise_for_status()


@contextmanager
def saga_stack(
    database_url: str,
    directory: Path,
    deep_merge: bool = True,
    machine: Callable[[str], dict[str, Any]] = pgm_saga_config,
    **pgm_env: str,
) -> Iterator[SagaStack]:
    """Start the CRUD stand-in, the PGM and the Flow Manager stand-in; stop them afterwards. `machine`
    builds the Flow Manager configuration from the PGM's URL (the shipped one by default)."""
    with ExitStack() as stack:
        crud_url, _ = stack.enter_context(run_server_in_thread(create_crud_app(str(directory / "crud.sqlite3"))))
        flow_manager_port = free_port()
        pgm = PgmProcess(
            database_url,
            directory / f"pgm-{uuid.uuid4().hex[:6]}.log",
            FLOW_MANAGER_URL=f"http://127.0.0.1:{flow_manager_port}",
            SAGA_CRUD_URL=f"{crud_url}/{COLLECTION}/",
            PGM_INBOX_LEASE_SECONDS="5",
            **pgm_env,
        )
        pgm.start()
        stack.callback(pgm.stop)
        config = copy.deepcopy(machine(pgm.url))
        config.setdefault("settings", {})["deepMergeMetadata"] = {"enabled": deep_merge}
        flow_manager = create_flow_manager_app(config, crud_base_url=crud_url)
        flow_manager_url, _ = stack.enter_context(run_server_in_thread(flow_manager, port=flow_manager_port))
        yield SagaStack(pgm, flow_manager_url, crud_url)


class FlowManagerRouter:
    """What a shared PGM knows as its Flow Manager: it hands each event to the Flow Manager stand-in that
    runs the event's saga (several machines and merge settings, one PGM), over HTTP as the PGM would."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.current = ""
        self.app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["GET", "POST", "PUT", "PATCH"])])

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        # An event names its saga in `key`; the PGM's inspection reads /sagas/{sagaId}.
        path = request.url.path
        saga_id: Any = path.split("/")[2] if path.startswith("/sagas/") else None
        if saga_id is None and body:
            try:
                saga_id = json.loads(body).get("key")
            except (ValueError, AttributeError):
                saga_id = None
        target = self.owners.get(saga_id, self.current) if isinstance(saga_id, str) else self.current
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.request(
                    request.method, f"{target}{path}", params=request.url.query, content=body, headers=headers
                )
        except httpx.HTTPError as exc:
            # The saga's stand-in has stopped (its tests are over): the PGM retries, as with any receiver down.
            return Response(f"no Flow Manager for this saga: {exc!r}", 502)
        return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))


class RoutedSagaStack(SagaStack):
    """A saga stack on a shared PGM: the sagas it creates are routed to its own Flow Manager stand-in."""

    def __init__(self, pgm: PgmProcess, flow_manager_url: str, crud_url: str, router: FlowManagerRouter) -> None:
        super().__init__(pgm, flow_manager_url, crud_url)
        self.router = router
        self.flow_manager_url = flow_manager_url

    def create_saga(self, metadata: dict[str, Any]) -> str:
        saga_id = super().create_saga(metadata)
        self.router.owners[saga_id] = self.flow_manager_url
        return saga_id

    def put_saga(self, saga_id: str, state: str, metadata: dict[str, Any]) -> None:
        self.router.owners[saga_id] = self.flow_manager_url
        super().put_saga(saga_id, state, metadata)


class SharedSagaPgm:
    """One CRUD stand-in and one PGM, for Flow Manager stand-ins running different machines or merge
    settings one after another (`stack_for`): a PGM start is the costly part of a stack."""

    def __init__(self, pgm: PgmProcess, crud_url: str, router: FlowManagerRouter) -> None:
        self.pgm, self.crud_url, self.router = pgm, crud_url, router

    @contextmanager
    def stack_for(
        self, machine: Callable[[str], dict[str, Any]] = pgm_saga_config, deep_merge: bool = True
    ) -> Iterator[SagaStack]:
        """A Flow Manager stand-in running `machine` against the shared PGM; new sagas go to it."""
        config = copy.deepcopy(machine(self.pgm.url))
        config.setdefault("settings", {})["deepMergeMetadata"] = {"enabled": deep_merge}
        flow_manager = create_flow_manager_app(config, crud_base_url=self.crud_url)
        with run_server_in_thread(flow_manager) as (flow_manager_url, _):
            self.router.current = flow_manager_url
            yield RoutedSagaStack(self.pgm, flow_manager_url, self.crud_url, self.router)


@contextmanager
def shared_saga_pgm(database_url: str, directory: Path, **pgm_env: str) -> Iterator[SharedSagaPgm]:
    """The CRUD stand-in, a Flow Manager router and a PGM wired to them, as `saga_stack` wires one."""
    router = FlowManagerRouter()
    with ExitStack() as stack:
        crud_url, _ = stack.enter_context(run_server_in_thread(create_crud_app(str(directory / "crud.sqlite3"))))
        router_url, _ = stack.enter_context(run_server_in_thread(router.app))
        pgm = PgmProcess(
            database_url,
            directory / f"pgm-{uuid.uuid4().hex[:6]}.log",
            FLOW_MANAGER_URL=router_url,
            SAGA_CRUD_URL=f"{crud_url}/{COLLECTION}/",
            PGM_INBOX_LEASE_SECONDS="5",
            **pgm_env,
        )
        pgm.start()
        stack.callback(pgm.stop)
        yield SharedSagaPgm(pgm, crud_url, router)


def paid_saga(stack: SagaStack, amount: int = 1000) -> tuple[str, dict[str, Any]]:
    """A saga whose payment was executed at once."""
    saga_id = stack.create_saga(metadata("OK", amount=amount))
    stack.send_event(saga_id, "scheduleRequested")
    return saga_id, stack.wait_state(saga_id, "PAYMENT_EXECUTED")


@contextmanager
def provider_saga_stack(
    provider: str,
    fake: Any,
    backend: str,
    directory: Path,
    machine: Callable[[str], dict[str, Any]] = pgm_saga_config,
    **pgm_env: str,
) -> Iterator[SagaStack]:
    """A saga stack on a fresh database whose PGM has `provider` enabled against its `fake`, and the fake's
    callbacks going to that PGM (as tests/support/provider_pgm.py does for a PGM alone)."""
    # A short provider time-out, as tests/support/provider_pgm.py: these modules lose answers on purpose.
    env = {"ENABLED_PROVIDERS": f"sandbox,{provider}", **SHORT_PROVIDER_TIMEOUT, **fake.env(), **pgm_env}
    with fresh_database(backend, directory) as url, saga_stack(url, directory, machine=machine, **env) as stack:
        fake.webhook_url = f"{stack.pgm.url}/v3/{provider}/callback"
        yield stack
