"""`pgm dev`: the PGM, the Flow Manager and CRUD stand-ins and the saga inspector in one process, wired."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from starlette.types import ASGIApp

from pgm.config import ConfigurationError, Settings, load_settings
from pgm.devstack.crud import create_crud_app
from pgm.devstack.flow_manager import (
    PACKAGED_CONFIG_PATH,
    FlowManagerConfigError,
    create_flow_manager_app,
    load_config,
    point_channels_at,
)
from pgm.devstack.inspector import create_inspector_app
from pgm.http.server import protocol_with_header_timeout

logger = logging.getLogger("pgm.devstack.dev")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PGM_PORT = 3000
DEFAULT_FLOW_MANAGER_PORT = 3100
DEFAULT_CRUD_PORT = 3200
DEFAULT_INSPECTOR_PORT = 3300
SAGA_COLLECTION = "fm-transactions"
# The environment variables that move the stand-ins; the PGM keeps its own HTTP_PORT.
PORT_VARIABLES = {
    "flow_manager": "PGM_DEV_FLOW_MANAGER_PORT",
    "crud": "PGM_DEV_CRUD_PORT",
    "inspector": "PGM_DEV_INSPECTOR_PORT",
}
# Wiring variables `pgm dev` owns: values from the shell would point the PGM away from its own stand-ins.
WIRED_VARIABLES = ("FLOW_MANAGER_URL", "SAGA_CRUD_URL")
# Where a running `pgm dev` leaves its URLs, in its working directory, for `pgm demo` to find it on
# whatever ports it was given.
STATE_FILE = ".pgm-dev.json"
_STARTUP_TIMEOUT = 60.0
_SHUTDOWN_TIMEOUT = 15.0


class StackError(RuntimeError):
    """The stack cannot start: a port is taken, the configuration is invalid, a part failed to start."""


@dataclass(frozen=True)
class StackOptions:
    """Where each part listens and where the stand-ins keep their data; port 0 picks a free port."""

    host: str = DEFAULT_HOST
    pgm_port: int = DEFAULT_PGM_PORT
    flow_manager_port: int = DEFAULT_FLOW_MANAGER_PORT
    crud_port: int = DEFAULT_CRUD_PORT
    inspector_port: int = DEFAULT_INSPECTOR_PORT
    crud_database: str = "crud.sqlite3"
    flow_manager_config: str = str(PACKAGED_CONFIG_PATH)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StackUrls:
    """Where each part of a running stack answers."""

    pgm: str
    flow_manager: str
    crud: str
    inspector: str

    @property
    def saga_crud(self) -> str:
        """The CRUD collection the Flow Manager writes sagas to and the PGM reads them from."""
        return f"{self.crud}/{SAGA_COLLECTION}/"


@dataclass
class _Part:
    name: str
    socket: socket.socket
    server: uvicorn.Server | None = None


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the stack, which stops all its servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install nothing: the stack's own handlers stop every server."""
        yield


def _bind(host: str, port: int, name: str, variable: str) -> socket.socket:
    # Binding before anything starts gives each part's real port (0 = any free one) to the others' wiring.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StackError(f"cannot listen on {host}:{port} for the {name} ({error.strerror}); set {variable}") from None
    sock.listen(2048)
    return sock


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    # A wildcard address is not somewhere to send a browser; loopback reaches it.
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)  # noqa: S104
    return f"http://{shown}:{port}"


def with_bearer_token(config: dict[str, Any], token: str) -> dict[str, Any]:
    """A copy of `config` whose REST channels send `Authorization: Bearer <token>`, as the PGM then requires."""
    rewritten = copy.deepcopy(config)
    for channel in rewritten.get("communicationProtocols", []):
        if channel.get("type") == "rest":
            headers = channel["configurations"].setdefault("headers", {})
            headers["Authorization"] = f"Bearer {token}"
    return rewritten


class DevStack:
    """The local stack: bind every port, build the wired apps, serve them on one event loop, stop them together."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self._parts: dict[str, _Part] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.urls: StackUrls | None = None
        self.settings: Settings | None = None

    def bind(self) -> StackUrls:
        """Take every port (closing those already taken if one fails); return the parts' URLs."""
        options = self.options
        wanted = [
            ("pgm", "PGM", options.pgm_port, "HTTP_PORT or --pgm-port"),
            ("flow_manager", "Flow Manager", options.flow_manager_port, "--flow-manager-port"),
            ("crud", "CRUD", options.crud_port, "--crud-port"),
            ("inspector", "inspector", options.inspector_port, "--inspector-port"),
        ]
        try:
            for key, name, port, how in wanted:
                variable = how if key == "pgm" else f"{PORT_VARIABLES[key]} or {how}"
                self._parts[key] = _Part(name, _bind(options.host, port, name, variable))
        except StackError:
            self.close_sockets()
            raise
        self.urls = StackUrls(
            pgm=_url(options.host, self._parts["pgm"].socket),
            flow_manager=_url(options.host, self._parts["flow_manager"].socket),
            crud=_url(options.host, self._parts["crud"].socket),
            inspector=_url(options.host, self._parts["inspector"].socket),
        )
        return self.urls

    def close_sockets(self) -> None:
        """Release every bound port (after a failed start; uvicorn closes them on a normal stop)."""
        for part in self._parts.values():
            part.socket.close()

    def pgm_environment(self) -> dict[str, str]:
        """The PGM's environment: the user's, the wiring to the stand-ins, and defaults for the rest."""
        assert self.urls is not None, "bind() first"
        env = dict(self.options.env)
        env.update(
            HTTP_PORT=str(self._parts["pgm"].socket.getsockname()[1]),
            FLOW_MANAGER_URL=self.urls.flow_manager,
            SAGA_CRUD_URL=self.urls.saga_crud,
        )
        # The hosted sandbox pages are linked with this URL: it must be one a local browser can open.
        env.setdefault("PGM_PUBLIC_URL", self.urls.pgm)
        return env

    def build_apps(self) -> dict[str, ASGIApp]:
        """The four wired apps; raises StackError when the PGM or Flow Manager configuration is invalid."""
        assert self.urls is not None, "bind() first"
        urls = self.urls
        try:
            settings = load_settings(self.pgm_environment())
            from pgm.providers import registry as providers

            providers.check_values(settings)
        except ConfigurationError as error:
            raise StackError(f"PGM configuration error: {error}") from None
        try:
            config = point_channels_at(load_config(self.options.flow_manager_config), urls.pgm)
            if settings.api_token:
                config = with_bearer_token(config, settings.api_token)
            flow_manager = create_flow_manager_app(config, urls.crud)
        except (FlowManagerConfigError, ValueError) as error:
            raise StackError(str(error)) from None
        self.settings = settings
        # Imported here: the PGM app pulls in every provider, which the stand-ins' own commands do not need.
        from pgm.http.app import create_app
        from pgm.wiring import Wiring

        return {
            "pgm": create_app(Wiring(settings)),
            "flow_manager": flow_manager,
            "crud": create_crud_app(self.options.crud_database),
            "inspector": create_inspector_app(urls.flow_manager, urls.pgm, settings.api_token),
        }

    def request_stop(self) -> None:
        """Ask the running stack to stop; safe from any thread, and a second call forces the exit."""
        loop, stop = self._loop, self._stop
        if loop is None or stop is None:
            return
        loop.call_soon_threadsafe(self._on_stop_request, stop)

    def _on_stop_request(self, stop: asyncio.Event) -> None:
        if stop.is_set():
            # A second Ctrl-C: do not wait for open connections or queued commands any longer.
            for part in self._parts.values():
                if part.server is not None:
                    part.server.force_exit = True
        stop.set()

    async def run(self, on_started: Callable[[StackUrls], None] | None = None, *, handle_signals: bool = True) -> None:
        """Serve until asked to stop (SIGINT/SIGTERM when `handle_signals`); raise StackError if a part fails."""
        try:
            apps = self.build_apps()
        except StackError:
            self.close_sockets()
            raise
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(signum, self._on_stop_request, self._stop)
        tasks: dict[str, asyncio.Task[None]] = {}
        assert self.settings is not None, "build_apps() first"
        header_timeout = self.settings.header_timeout_seconds
        try:
            for key, app in apps.items():
                config = uvicorn.Config(
                    app,
                    log_config=None,
                    access_log=False,
                    lifespan="on",
                    timeout_graceful_shutdown=5,
                    # As `pgm serve`: `--host` may expose the stack, so a client trickling its headers is cut off.
                    http=protocol_with_header_timeout(header_timeout),
                )
                server = _QuietServer(config)
                part = self._parts[key]
                part.server = server
                tasks[key] = asyncio.create_task(self._serve(part), name=f"dev-{key}")
            await self._wait_started(tasks)
            assert self.urls is not None
            if on_started is not None:
                on_started(self.urls)
            stopper = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            failed = [key for key, task in tasks.items() if task in done]
            await self._shutdown(tasks)
            if failed and not self._stop.is_set():
                names = ", ".join(self._parts[key].name for key in failed)
                raise StackError(f"stopped because the {names} stopped unexpectedly")
        finally:
            if handle_signals:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    self._loop.remove_signal_handler(signum)
            for task in tasks.values():
                task.cancel()
            self.close_sockets()

    async def _serve(self, part: _Part) -> None:
        assert part.server is not None
        try:
            await part.server.serve(sockets=[part.socket])
        except SystemExit:
            # uvicorn exits the process when an app fails to start; here that must stop the stack instead.
            logger.error("the %s failed to start", part.name)

    async def _wait_started(self, tasks: dict[str, asyncio.Task[None]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STARTUP_TIMEOUT
        while not all(part.server is not None and part.server.started for part in self._parts.values()):
            ended = [self._parts[key].name for key, task in tasks.items() if task.done()]
            if ended or (self._stop is not None and self._stop.is_set()):
                await self._shutdown(tasks)
                if ended:
                    raise StackError(f"the {', '.join(ended)} failed to start (see the log above)")
                raise StackError("stopped during start-up")
            if loop.time() > deadline:
                await self._shutdown(tasks)
                raise StackError(f"the stack did not start within {_STARTUP_TIMEOUT:.0f}s")
            # uvicorn exposes `started` as a flag only, so start-up is watched by polling it.
            await asyncio.sleep(0.05)

    async def _shutdown(self, tasks: dict[str, asyncio.Task[None]]) -> None:
        # The Flow Manager goes first, so the commands it still owes reach a running PGM; the CRUD goes
        # last, because both the Flow Manager and the PGM read sagas from it while they finish.
        for group in (("inspector", "flow_manager"), ("pgm",), ("crud",)):
            for key in group:
                server = self._parts[key].server
                if server is not None:
                    server.should_exit = True
            running = [tasks[key] for key in group if key in tasks]
            if running:
                _, pending = await asyncio.wait(running, timeout=_SHUTDOWN_TIMEOUT)
                for key in group:
                    server = self._parts[key].server
                    if server is not None and tasks.get(key) in pending:
                        server.force_exit = True


@contextlib.contextmanager
def running_stack(options: StackOptions) -> Iterator[DevStack]:
    """Run a stack on an event loop in a background thread (no signal handling); stop it on exit."""
    stack = DevStack(options)
    stack.bind()
    started = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(stack.run(lambda _: started.set(), handle_signals=False))
        except BaseException as error:  # reported to the caller's thread below
            failure.append(error)
        finally:
            started.set()

    thread = threading.Thread(target=main, name="pgm-dev-stack", daemon=True)
    thread.start()
    started.wait()
    if failure:
        thread.join()
        raise StackError(f"the local stack failed to start: {failure[0]}") from failure[0]
    try:
        yield stack
    finally:
        stack.request_stop()
        thread.join(timeout=_SHUTDOWN_TIMEOUT * 3)


def write_state(directory: Path, urls: StackUrls) -> Path:
    """Record where this process's stack answers, for `pgm demo` started in the same directory."""
    path = directory / STATE_FILE
    document = {
        "pid": os.getpid(),
        **{part: getattr(urls, part) for part in ("pgm", "flow_manager", "crud", "inspector")},
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def remove_state(directory: Path) -> None:
    """Forget the stack's URLs, if this process wrote them."""
    path = directory / STATE_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def running_stack_urls(directory: Path) -> StackUrls | None:
    """The URLs of the `pgm dev` running from `directory`, or None (no file, or its process is gone)."""
    try:
        document = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        os.kill(int(document["pid"]), 0)  # signal 0: only asks whether the process exists
        return StackUrls(
            pgm=str(document["pgm"]),
            flow_manager=str(document["flow_manager"]),
            crud=str(document["crud"]),
            inspector=str(document["inspector"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def banner(urls: StackUrls, settings: Settings, options: StackOptions, ignored: list[str]) -> str:
    """What `pgm dev` prints once every part answers: where everything is."""
    token = "required (PGM_API_TOKEN is set)" if settings.api_token else "not required (PGM_API_TOKEN unset)"
    lines = [
        "",
        "PGM local stack is running",
        "",
        f"  PGM API          {urls.pgm}",
        f"  API docs         {urls.pgm}/documentation",
        f"  Sandbox          {urls.pgm}/sandbox/  (its payments; a pending one's link is its hosted page)",
        f"  Flow Manager     {urls.flow_manager}  (stand-in; POST /saga, POST /event, GET /sagas)",
        f"  CRUD             {urls.crud}  (stand-in; sagas in {urls.saga_crud})",
        f"  Inspector        {urls.inspector}",
        "",
        f"  PGM database     {settings.database_url}",
        f"  CRUD database    {Path(options.crud_database).resolve()}",
        f"  Saga machine     {options.flow_manager_config}",
        f"  API token        {token}",
    ]
    lines.extend(f"  note: {name} from the environment is ignored; pgm dev wires its own stand-ins" for name in ignored)
    lines.extend(f"  note: {warning}" for warning in settings.warnings)
    lines += ["", "  Try it: pgm demo    Stop: Ctrl-C", ""]
    return "\n".join(lines)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise StackError(f"{name} must be a port number, got {raw!r}") from None


def options_from(args: argparse.Namespace, env: Mapping[str, str]) -> StackOptions:
    """Stack options from the command line, falling back to the environment, then the defaults."""

    def pick(flag: int | None, variable: str, default: int) -> int:
        return flag if flag is not None else _port(env, variable, default)

    return StackOptions(
        host=args.host or env.get("HTTP_HOST") or DEFAULT_HOST,
        pgm_port=pick(args.pgm_port, "HTTP_PORT", DEFAULT_PGM_PORT),
        flow_manager_port=pick(args.flow_manager_port, PORT_VARIABLES["flow_manager"], DEFAULT_FLOW_MANAGER_PORT),
        crud_port=pick(args.crud_port, PORT_VARIABLES["crud"], DEFAULT_CRUD_PORT),
        inspector_port=pick(args.inspector_port, PORT_VARIABLES["inspector"], DEFAULT_INSPECTOR_PORT),
        crud_database=args.crud_database,
        flow_manager_config=args.flow_manager_config,
        env=env,
    )


def run_dev(args: argparse.Namespace, *, env: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """`pgm dev`: run the stack in the foreground until Ctrl-C; exit status 2 when it cannot start."""
    environment = dict(os.environ if env is None else env)
    stream = out or sys.stdout
    try:
        options = options_from(args, environment)
        stack = DevStack(options)
        stack.bind()
    except StackError as error:
        sys.stderr.write(f"pgm dev: {error}\n")
        return 2
    ignored = [name for name in WIRED_VARIABLES if environment.get(name)]
    from pgm.observability import logging as pgm_logging

    level = (environment.get("LOG_LEVEL") or "INFO").upper()
    # Short plain lines: a person reads them in a terminal, under the banner.
    pgm_logging.configure(level, console=True)
    if level == "INFO":
        # Four servers would each log their start-up and shutdown steps; the banner says it more clearly.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

    directory = Path.cwd()

    def started(urls: StackUrls) -> None:
        assert stack.settings is not None
        with contextlib.suppress(OSError):  # a read-only directory costs `pgm demo` its discovery only
            write_state(directory, urls)
        stream.write(banner(urls, stack.settings, options, ignored) + "\n")
        stream.flush()

    try:
        asyncio.run(stack.run(started))
    except StackError as error:
        stack.close_sockets()
        sys.stderr.write(f"pgm dev: {error}\n")
        return 2
    finally:
        remove_state(directory)
    stream.write("pgm dev: stopped\n")
    stream.flush()
    return 0


def add_dev_arguments(parser: argparse.ArgumentParser) -> None:
    """The `pgm dev` options; every port also has an environment variable, flags win."""
    parser.add_argument("--host", default=None, help="address every part listens on (HTTP_HOST; default 127.0.0.1)")
    parser.add_argument("--pgm-port", type=int, default=None, help="PGM port (HTTP_PORT; default 3000; 0 = any free)")
    parser.add_argument(
        "--flow-manager-port",
        type=int,
        default=None,
        help="Flow Manager port (PGM_DEV_FLOW_MANAGER_PORT; default 3100)",
    )
    parser.add_argument("--crud-port", type=int, default=None, help="CRUD port (PGM_DEV_CRUD_PORT; default 3200)")
    parser.add_argument(
        "--inspector-port", type=int, default=None, help="saga inspector port (PGM_DEV_INSPECTOR_PORT; default 3300)"
    )
    parser.add_argument("--crud-database", default="crud.sqlite3", help="CRUD SQLite file (default: %(default)s)")
    parser.add_argument(
        "--flow-manager-config",
        default=str(PACKAGED_CONFIG_PATH),
        help="Flow Manager saga.json; its channels are pointed at the PGM (default: the packaged one)",
    )
