"""Real HTTP servers in background threads for tests, and a receiver that records what it is sent."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

_STARTUP_TIMEOUT = 10.0

# The `start_flow_manager` fixture: starts a Flow Manager stand-in on a configuration, returns its base URL.
StartFlowManager = Callable[..., str]


# A budget is how long a test may wait before it fails, not how long it waits: a passing test returns as
# soon as the condition holds. Fifteen seconds outlast a loaded CI machine (four workers on two cores).
WAIT_BUDGET_SECONDS = 15.0
# Polls start fast and slow down to this: a long wait should not spend the CPU its servers need.
_MAX_POLL_INTERVAL = 0.1


def wait_for(
    condition: Callable[[], bool], *, timeout: float = WAIT_BUDGET_SECONDS, interval: float = 0.01, what: str = ""
) -> None:
    """Poll `condition` until it holds; raise TimeoutError naming `what` when the deadline passes.

    The interval grows by half after each miss, up to a tenth of a second (or `interval` if longer)."""
    deadline = time.monotonic() + timeout
    ceiling = max(interval, _MAX_POLL_INTERVAL)
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or 'the condition'}")
        time.sleep(interval)
        interval = min(interval * 1.5, ceiling)


@contextmanager
def run_server_in_thread(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[tuple[str, Callable[[], None]]]:
    """Serve an ASGI app with uvicorn in a thread, on `port` or a free one; yields (base_url, stop)."""
    # Binding the socket here tells us the port before uvicorn starts, with no race for a "free" port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="auto", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        server.should_exit = True
        thread.join(timeout=_STARTUP_TIMEOUT)
        sock.close()

    try:
        wait_for(
            lambda: server.started or not thread.is_alive(), timeout=_STARTUP_TIMEOUT, what=f"uvicorn on port {port}"
        )
        if not server.started:
            raise RuntimeError(f"the server on port {port} stopped during start-up")
        yield f"http://{host}:{port}", stop
    finally:
        stop()


@dataclass(frozen=True)
class RecordedRequest:
    """One request the receiver got, and the status it answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int
    received_at: float

    @property
    def json(self) -> Any:
        """The body decoded as JSON (None when it is empty or not JSON)."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass
class _Rule:
    status: int
    body: Any
    remaining: int | None
    path: str | None = None
    delay: float = 0.0
    hold: threading.Event | None = None


class RecordingReceiver:
    """An HTTP server app that records every request in order and answers with scripted statuses.

    Answers 200 `{}` by default. `respond(503, times=3)` makes the next three requests fail;
    `respond(503)` keeps failing until `respond(200)`; `path=` limits a rule to one path and
    `delay=` answers late, `hold=` (a threading.Event) answers only once the event is set: a receiver
    that hangs for as long as a test wants. `wait_for_requests` blocks until requests arrive, without
    sleeping.
    """

    def __init__(self, default_status: int = 200, default_body: Any = None) -> None:
        self._condition = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._rules: list[_Rule] = []
        self._initial_default = _Rule(default_status, {} if default_body is None else default_body, None)
        self._default = self._initial_default
        self.app: ASGIApp = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._handle,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                )
            ]
        )

    def respond(
        self,
        status: int,
        body: Any = None,
        *,
        times: int | None = None,
        path: str | None = None,
        delay: float = 0.0,
        hold: threading.Event | None = None,
    ) -> None:
        """Script the answer: `times=None` lasts until replaced, `path=None` covers every path."""
        rule = _Rule(status, {} if body is None else body, times, path, delay, hold)
        with self._condition:
            if times is None:
                # A standing rule replaces earlier standing rules for the same scope.
                self._rules = [r for r in self._rules if not (r.remaining is None and r.path == path)]
                if path is None:
                    self._default = rule
                    return
            self._rules.append(rule)

    def reset(self) -> None:
        """Forget recorded requests and scripted answers."""
        with self._condition:
            self._requests.clear()
            self._rules.clear()
            self._default = self._initial_default

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._condition:
            return list(self._requests)

    def bodies(self, path: str | None = None) -> list[Any]:
        """The JSON bodies received so far (to `path` only, if given), in arrival order."""
        return [r.json for r in self.requests if path is None or r.path == path]

    def wait_for_requests(
        self, count: int, *, path: str | None = None, timeout: float = WAIT_BUDGET_SECONDS
    ) -> list[RecordedRequest]:
        """Block until at least `count` requests (to `path`, if given) arrived; return them in order."""
        deadline = time.monotonic() + timeout

        def selected() -> list[RecordedRequest]:
            return [r for r in self._requests if path is None or r.path == path]

        with self._condition:
            while len(selected()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [f"{r.method} {r.path}" for r in self._requests]
                    raise TimeoutError(
                        f"expected {count} requests to {path or 'any path'} within {timeout}s; got {got}"
                    )
                self._condition.wait(remaining)
            return selected()

    def _pick(self, path: str) -> _Rule:
        applicable = [rule for rule in self._rules if rule.path is None or rule.path == path]
        # Counted rules are short scripted episodes, so they win over standing ones.
        for rule in applicable:
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
                return rule
        return applicable[0] if applicable else self._default

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        with self._condition:
            rule = self._pick(path)
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=path,
                    query=request.url.query,
                    headers=dict(request.headers),
                    body=body,
                    status=rule.status,
                    received_at=time.time(),
                )
            )
            self._condition.notify_all()
        if rule.delay:
            # A slow participant, recorded on arrival and answered late.
            await asyncio.sleep(rule.delay)
        if rule.hold is not None:
            # A hanging participant: waits in a worker thread so the server keeps answering other requests.
            await asyncio.to_thread(rule.hold.wait)
        return JSONResponse(rule.body, status_code=rule.status)


@contextmanager
def recording_receiver(default_status: int = 200, port: int = 0) -> Iterator[tuple[RecordingReceiver, str]]:
    """Run a RecordingReceiver on `port` or a free one; yields (receiver, base_url)."""
    receiver = RecordingReceiver(default_status)
    with run_server_in_thread(receiver.app, port=port) as (base_url, _):
        yield receiver, base_url
