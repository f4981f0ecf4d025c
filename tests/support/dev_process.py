"""`pgm dev` as a real process on free ports, for the local-stack and browser tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import preloaded
from tests.support.pgm_process import FAST
from tests.support.servers import wait_for

BANNER_LINE = re.compile(r"^\s{2}(PGM API|Flow Manager|CRUD|Inspector)\s+(http://\S+)", re.M)


@dataclass
class DevProcess:
    """A running `pgm dev`: its process, log and the URLs its banner printed."""

    process: subprocess.Popen[bytes]
    log_path: Path
    urls: dict[str, str]

    @property
    def pgm(self) -> str:
        """The PGM's base URL."""
        return self.urls["PGM API"]

    @property
    def flow_manager(self) -> str:
        """The Flow Manager stand-in's base URL."""
        return self.urls["Flow Manager"]

    @property
    def crud(self) -> str:
        """The CRUD stand-in's base URL."""
        return self.urls["CRUD"]

    @property
    def inspector(self) -> str:
        """The saga inspector's base URL."""
        return self.urls["Inspector"]

    def log(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace")

    def create_saga(self, metadata: dict[str, Any]) -> str:
        """POST /saga on the Flow Manager."""
        response = httpx.post(f"{self.flow_manager}/saga", json={"associatedEntityId": "order", "metadata": metadata})
        response.raise_for_status()
        return str(response.json()["sagaId"])

    def send_event(self, saga_id: str, label: str, payload: dict[str, Any] | None = None) -> None:
        """POST /event on the Flow Manager."""
        body = {"key": saga_id, "value": {"messageLabel": label, "messagePayload": payload or {}}}
        httpx.post(f"{self.flow_manager}/event", json=body).raise_for_status()

    def saga(self, saga_id: str) -> dict[str, Any]:
        """The saga as the Flow Manager stand-in has it."""
        response = httpx.get(f"{self.flow_manager}/sagas/{saga_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_state(self, saga_id: str, state: str, timeout: float = 15) -> dict[str, Any]:
        """Block until the saga is in `state`."""
        wait_for(lambda: self.saga(saga_id)["currentState"] == state, timeout=timeout, interval=0.05, what=state)
        return self.saga(saga_id)

    def interrupt(self, timeout: float = 20) -> int:
        """Ctrl-C: SIGINT, then the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)


def sandbox_metadata(outcome: str = "OK", amount: int = 1000) -> dict[str, Any]:
    """Saga metadata for a sandbox payment with the given outcome."""
    return {
        "amount": amount,
        "currency": "EUR",
        "provider": "sandbox",
        "paymentMethod": "credit-cards",
        "shopTransactionId": f"order-{os.urandom(5).hex()}",
        "type": "DIRECT",
        "payRequestData": {"successRedirect": "https://shop.example/ok", "providerData": {"sandboxOutcome": outcome}},
    }


@contextmanager
def pgm_dev(directory: Path, *args: str, **env: str) -> Iterator[DevProcess]:
    """Run `pgm dev` in `directory` on free ports until the block ends (SIGKILL if still running then)."""
    log_path = directory / "pgm-dev.log"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PGM_", "PAYMENT_", "FLOW_", "SAGA_", "HTTP_"))},
        **FAST,
        "LOG_LEVEL": "INFO",
        **env,
    }
    arguments = ["dev", "--pgm-port", "0", "--flow-manager-port", "0", "--crud-port", "0", "--inspector-port", "0"]
    with log_path.open("wb") as log:
        # `python -m pgm dev ...`, forked from a process that imported the PGM already (tests/support/preloaded.py).
        process = preloaded.popen(
            "pgm", [*arguments, *args], cwd=directory, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    try:

        def banner_printed() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"pgm dev exited with {process.returncode}:\n{log_path.read_text()}")
            return len(BANNER_LINE.findall(log_path.read_text(errors="replace"))) == 4

        wait_for(banner_printed, timeout=60, interval=0.05, what="the pgm dev banner")
        urls = dict(BANNER_LINE.findall(log_path.read_text(errors="replace")))
        yield DevProcess(process, log_path, urls)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
