"""The PGM as a real process on a free port, as production runs it: started, killed, restarted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

SANDBOX_SECRET = "whsec_test_sandbox_secret"

# Short, test-friendly schedules: nothing in the tests waits on wall-clock time it does not need.
FAST = {
    "LOG_LEVEL": "WARNING",
    "SANDBOX_WEBHOOK_SECRET": SANDBOX_SECRET,
    "PGM_PROVIDER_TIMEOUT_SECONDS": "1",
    "PGM_RECONCILE_AFTER_SECONDS": "1.5",
    "PGM_RECONCILE_POLL_SECONDS": "0.2",
    "PGM_RECONCILE_MAX_INTERVAL_SECONDS": "2",
    "PGM_OUTBOX_POLL_SECONDS": "0.05",
    "PGM_OUTBOX_BACKOFF_BASE_SECONDS": "0.05",
    "PGM_OUTBOX_BACKOFF_MAX_SECONDS": "0.4",
    "PGM_OUTBOX_MAX_ATTEMPTS": "3",
}


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgmProcess:
    """One PGM process; `url` is its base URL, `client` an HTTP client bound to it."""

    def __init__(self, database_url: str, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PGM_", "PAYMENT_", "FLOW_", "SAGA_"))},
            **FAST,
            "HTTP_PORT": str(self.port),
            "HTTP_HOST": "127.0.0.1",
            "PGM_PUBLIC_URL": self.url,
            "PGM_DATABASE_URL": database_url,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=15)

    def start(self, timeout: float = 30.0) -> PgmProcess:
        """Start and wait until /-/ready answers 200."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgm", "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the PGM exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.client.get("/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the PGM did not become ready in {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a crashed machine."""
        if self.process and self.process.poll() is None:
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
