"""The zygote of tests/support/preloaded.py: imports the PGM's modules once, then forks one process per command.

Run as `python -m tests.support.zygote SOCKET MODULE...`. It stays single-threaded (fork and threads do not
mix) and exits when the test worker that started it is gone. For each launcher that connects it forks a
"keeper" that forks the command and reports the command's pid, then its wait status, to the launcher.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import threading
import traceback
from typing import Any


def _receive(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request: a length-prefixed JSON document, and the launcher's stdin, stdout and stderr."""
    data, fds, _flags, _address = socket.recv_fds(connection, 1 << 20, 3)
    (length,) = struct.unpack("!I", data[:4])
    data = data[4:]
    while len(data) < length:
        chunk = connection.recv(length - len(data))
        if not chunk:
            raise ConnectionError("the launcher went away")
        data += chunk
    return json.loads(data), fds


def _die_with(launcher: int) -> None:
    """SIGKILL this process when the launcher dies (killed, as a test kills a PGM to simulate a crash)."""
    try:
        descriptor = os.pidfd_open(launcher)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return

    def watch() -> None:
        selector = selectors.DefaultSelector()
        selector.register(descriptor, selectors.EVENT_READ)
        selector.select()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _run_command(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become `python -m <module> <args>` as the launcher was asked, and exit."""
    for target, descriptor in enumerate(fds):
        os.dup2(descriptor, target)
        os.close(descriptor)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _die_with(request["launcher"])
    module, *arguments = request["argv"]
    # As `python -m`: the working directory first on the path, the module's arguments in sys.argv.
    sys.path[0] = os.getcwd()
    sys.argv = [module, *arguments]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None:
            code = 0
        elif isinstance(exit_.code, int):
            code = exit_.code
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        # As the interpreter does: the traceback, then exit code 1.
        traceback.print_exc()
        code = 1
    # As the interpreter's own exit: wait for non-daemon threads, run atexit, flush.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    _flush()
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _serve_one(connection: socket.socket, inherited: list[int]) -> None:
    """In the keeper: fork the command, tell the launcher its pid, then how it ended."""
    for descriptor in inherited:
        os.close(descriptor)
    try:
        request, fds = _receive(connection)
    except (OSError, ValueError, ConnectionError):
        os._exit(1)
    pid = os.fork()
    if pid == 0:
        connection.close()
        _run_command(request, fds)
    for descriptor in fds:
        os.close(descriptor)
    with contextlib.suppress(OSError):
        connection.sendall(f"{pid}\n".encode())
    _pid, status = os.waitpid(pid, 0)
    with contextlib.suppress(OSError):
        connection.sendall(f"{status}\n".encode())
    os._exit(0)


def main(socket_path: str, modules: list[str]) -> None:
    parent = os.getppid()
    for name in modules:
        # A module that fails here is imported again by the command, which then fails as it would alone.
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    worker = os.pidfd_open(parent)
    selector.register(worker, selectors.EVENT_READ)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        # Keepers are reaped here, not by the kernel (SIGCHLD ignored): their CPU time, which includes their
        # commands', then counts in the test run's own (`time`, rusage).
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG) != (0, 0):
                pass
        for key, _events in selector.select(timeout=0.5):
            if key.fileobj == worker:
                os._exit(0)
            connection, _address = listener.accept()
            _flush()
            if os.fork() == 0:
                selector.close()
                _serve_one(connection, [listener.fileno(), worker])
            connection.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
