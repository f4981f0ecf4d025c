"""`python -m pgm ...` for tests, without paying the imports on every start.

A PGM process spends nearly all of its start-up (1.5-2 s of CPU, measured on the CI machine) importing
FastAPI, SQLAlchemy, pydantic, uvicorn and the providers' modules, and the suite starts several hundred
of them: on two cores that was most of the run. Here one process per test worker imports those modules
once (the "zygote") and forks a ready interpreter for each command. What runs in the fork is the command
itself, unchanged: `runpy` runs `pgm` as `__main__` with the caller's arguments, environment, working
directory and standard streams, and nothing of it was configured before (the PGM reads its environment
when it starts, not at import).

The caller still gets a `subprocess.Popen`: its process is a small launcher (a bare `python -I -S`, a few
milliseconds) that hands its arguments, environment and standard streams to the zygote over a Unix
socket, forwards the signals it is sent to the forked server, and exits as the server did (code, or
death by the same signal). Killing the launcher with SIGKILL kills the server too (it watches the
launcher's pid), so a crash stays a crash; `server_pid` names the process that holds the port.

Where the zygote cannot run (not Linux, or it failed to start), `popen` falls back to an ordinary
`python -m ...` process: slower, same behaviour.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

# The modules `pgm serve`, `pgm dev` and the operator commands import before they do anything: importing
# them reads no configuration (the PGM reads its environment when a command runs, src/pgm/cli.py).
PRELOADED_MODULES = (
    "pgm.cli",
    "pgm.startup",
    "pgm.wiring",
    "pgm.http.app",
    "pgm.http.server",
    "pgm.observability.logging",
    "pgm.providers.registry",
    "pgm.operator_cli",
    "pgm.devstack.cli",
    "pgm.devstack.demo",
    "pgm.devstack.dev",
    "uvicorn",
    "uvloop",
    "httptools",
)

# The launcher: stdlib only, run with -I -S so it starts in milliseconds. argv: socket, pid file, module, args.
_LAUNCHER = r"""
import json, os, signal, socket, struct, sys
path, pid_file, *command = sys.argv[1:]
try:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(path)
except OSError:
    os.execv(sys.executable, [sys.executable, "-m", *command])
request = json.dumps({"argv": command, "env": dict(os.environ), "cwd": os.getcwd(), "launcher": os.getpid()})
payload = request.encode()
socket.send_fds(connection, [struct.pack("!I", len(payload)) + payload], [0, 1, 2])
stream = connection.makefile("rb")
server = int(stream.readline())
with open(pid_file, "w") as written:
    written.write(str(server))
def forward(signum, _frame):
    try:
        os.kill(server, signum)
    except ProcessLookupError:
        pass
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(signum, forward)
line = stream.readline()
status = int(line) if line.strip() else 9
if os.WIFSIGNALED(status):
    if os.WTERMSIG(status) not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.waitstatus_to_exitcode(status))
"""

_lock = threading.Lock()
_zygote: _Zygote | None = None
_unavailable = False


class _Zygote:
    """The per-worker process that imported PRELOADED_MODULES and forks the commands."""

    def __init__(self, directory: Path) -> None:
        self.socket_path = directory / "zygote.sock"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.zygote", str(self.socket_path), *PRELOADED_MODULES],
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        # One line once it listens: the imports are done.
        if self.process.stdout.readline().strip() != b"ready":
            self.process.kill()
            raise RuntimeError("the test zygote did not start")
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        # Its socket and the launchers' pid files.
        shutil.rmtree(self.socket_path.parent, ignore_errors=True)


def _the_zygote() -> _Zygote | None:
    global _zygote, _unavailable
    with _lock:
        if _zygote is None and not _unavailable:
            if sys.platform != "linux" or not hasattr(os, "pidfd_open"):
                _unavailable = True
            else:
                import tempfile

                try:
                    _zygote = _Zygote(Path(tempfile.mkdtemp(prefix="pgm-zygote-")))
                except (OSError, RuntimeError):
                    _unavailable = True
        if _zygote is not None and _zygote.process.poll() is not None:
            _zygote = None
            _unavailable = True
        return _zygote


class PreloadedProcess(subprocess.Popen[bytes]):
    """A `python -m <module> <args>` process; `server_pid` is the pid that runs the command."""

    pid_file: Path | None = None

    @property
    def server_pid(self) -> int | None:
        """The process running the command (the launcher's own pid when there is no zygote); None until known."""
        if self.pid_file is None:
            return self.pid
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None


def popen(module: str, arguments: list[str], *, pid_file: Path | None = None, **kwargs: Any) -> PreloadedProcess:
    """Start `python -m module *arguments` as subprocess.Popen would, from the zygote when there is one.

    `pid_file` is where the launcher writes the server's pid (by default a new file of the zygote's)."""
    zygote = _the_zygote()
    if zygote is None:
        return PreloadedProcess([sys.executable, "-m", module, *arguments], **kwargs)
    if pid_file is None:
        pid_file = zygote.socket_path.parent / f"{uuid.uuid4().hex}.pid"
    pid_file.unlink(missing_ok=True)
    process = PreloadedProcess(
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(zygote.socket_path), str(pid_file), module, *arguments],
        **kwargs,
    )
    process.pid_file = pid_file
    return process


def run(module: str, arguments: list[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run([sys.executable, "-m", module, *arguments], ...)`, from the zygote when there is one."""
    if kwargs.pop("capture_output", False):
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with popen(module, arguments, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
