"""The PGM as a real process on a free port, as production runs it: started, killed, restarted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import preloaded

SANDBOX_SECRET = "whsec_test_sandbox_secret"

# How long the PGM waits for a provider's answer. The sandbox is the PGM's own process reached over HTTP:
# on a loaded machine (four test workers on two cores) one second was sometimes not enough, and an OK the
# test expected became a lost answer. Reconciliation may look a payment up only once its call has ended.
GENEROUS_PROVIDER_TIMEOUT = {"PGM_PROVIDER_TIMEOUT_SECONDS": "3", "PGM_RECONCILE_AFTER_SECONDS": "3.5"}
# For a PGM whose tests lose answers on purpose (a provider fake's `delay_next(2.5)`): the fake runs in the
# test's own process, not behind the PGM's load, and a short time-out keeps those tests short.
SHORT_PROVIDER_TIMEOUT = {"PGM_PROVIDER_TIMEOUT_SECONDS": "1", "PGM_RECONCILE_AFTER_SECONDS": "1.5"}

# Short, test-friendly schedules: nothing in the tests waits on wall-clock time it does not need.
FAST = {
    "LOG_LEVEL": "WARNING",
    "SANDBOX_WEBHOOK_SECRET": SANDBOX_SECRET,
    **GENEROUS_PROVIDER_TIMEOUT,
    "PGM_RECONCILE_POLL_SECONDS": "0.2",
    "PGM_RECONCILE_MAX_INTERVAL_SECONDS": "2",
    "PGM_OUTBOX_POLL_SECONDS": "0.05",
    "PGM_OUTBOX_BACKOFF_BASE_SECONDS": "0.05",
    "PGM_OUTBOX_BACKOFF_MAX_SECONDS": "0.4",
    "PGM_OUTBOX_MAX_ATTEMPTS": "3",
}


_PORT_ATTEMPTS = 3


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds the socket listening on `port` (Linux's /proc; assumed elsewhere)."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not all(table.exists() for table in tables):
        return True
    listening = {
        f"socket:[{fields[9]}]"
        for table in tables
        for fields in (line.split() for line in table.read_text().splitlines()[1:])
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
    }
    try:
        descriptors = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return not listening.isdisjoint(descriptors)


class PgmProcess:
    """One PGM process; `url` is its base URL, `client` an HTTP client bound to it."""

    def __init__(self, database_url: str, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PGM_", "PAYMENT_", "FLOW_", "SAGA_"))},
            **FAST,
            "HTTP_HOST": "127.0.0.1",
            "PGM_DATABASE_URL": database_url,
        }
        self._env_overrides = env
        self.process: preloaded.PreloadedProcess | None = None
        # Once started, the PGM keeps its port across restarts: clients and callbacks were given its URL.
        self._started = False
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env.update({"HTTP_PORT": str(port), "PGM_PUBLIC_URL": self.url, **self._env_overrides})
        # Idle connections are dropped after 1 s, well before the server's keep-alive time-out (5 s): a request
        # on a connection the server is closing at that moment fails with "Server disconnected".
        self.client = httpx.Client(base_url=self.url, timeout=15, limits=httpx.Limits(keepalive_expiry=1.0))

    def start(self, timeout: float = 30.0) -> PgmProcess:
        """Start and wait until this process, and no other, answers 200 on /-/ready.

        The port is free when picked but bound only later by the child: another test's process may take
        it first. A 200 then comes from that process, so readiness also needs the listener to be our
        child's; on a first start our child that lost the port is started again on another one."""
        for _ in range(_PORT_ATTEMPTS):
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            log = self.log_path.open("ab")
            # A fork of a process that imported the PGM's modules already (tests/support/preloaded.py).
            self.process = preloaded.popen(
                "pgm",
                ["serve"],
                pid_file=self.log_path.with_suffix(".pid"),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_ready(self.process, timeout):
                self._started = True
                return self
            lost_the_port = "HTTP_PORT: cannot listen" in self.log_path.read_text(errors="replace")[log_start:]
            if self._started or not lost_the_port:
                raise RuntimeError(f"the PGM exited with {self.process.returncode}:\n{self.log_tail()}")
            self._use_port(free_port())
        raise RuntimeError(f"the PGM lost its port {_PORT_ATTEMPTS} times:\n{self.log_tail()}")

    def _wait_ready(self, process: preloaded.PreloadedProcess, timeout: float) -> bool:
        """True once `process` answers ready on its port; False when it exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                ready = self.client.get("/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            server = process.server_pid
            if ready and server is not None and _listens_on(server, self.port):
                return True
            # A child process gives no event to wait on before it answers: poll its port.
            time.sleep(0.05)
        # Not left running: a process that was never ready is no fixture's to stop, and it would load the machine.
        self.kill()
        raise TimeoutError(f"the PGM did not become ready in {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a crashed machine."""
        if self.process and self.process.poll() is None:
            # The server first, then wait for the launcher, which exits as the server did (killed): once it
            # has, the port is free again for a restart.
            server = self.process.server_pid
            if server is not None and server != self.process.pid:
                try:
                    os.kill(server, signal.SIGKILL)
                    self.process.wait(10)
                    return
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """Graceful stop."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        """POST JSON to the PGM."""
        return self.client.post(path, json=body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET from the PGM."""
        return self.client.get(path, **kwargs)

    def sandbox_payments(self, shop_transaction_id: str) -> list[dict[str, Any]]:
        """The sandbox's own books for a merchant reference (docs/sandbox.md introspection)."""
        response = self.get("/sandbox/payments", params={"shopTransactionId": shop_transaction_id})
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def decide(self, page_url: str, decision: str) -> httpx.Response:
        """Submit the hosted page's form as a browser does."""
        return self.client.post(page_url, data={"decision": decision})
