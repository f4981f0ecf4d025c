"""The processes under test (PGM, transport ceiling), their CPU and memory, and throw-away databases."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import counting

SANDBOX_SECRET = "whsec_bench_sandbox_secret"
SANDBOX_CALLBACK_PATH = "/v3/sandbox/callback"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """Sample a process with py-spy into collapsed stacks (`PGM_BENCH_PROFILE_RATE` samples per second,
    default 100), without pausing it at each sample (`--nonblocking`: the profile must not slow what it
    measures)."""
    rate = os.environ.get("PGM_BENCH_PROFILE_RATE", "100")
    installed = Path(sys.executable).with_name("py-spy")  # the virtualenv's, when PATH does not have it
    program = str(installed) if installed.exists() else "py-spy"
    argv = [program, "record", "--pid", str(pid), "--rate", rate, "--nonblocking", "--format", "raw"]
    return subprocess.Popen([*argv, "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(profiler: subprocess.Popen[bytes]) -> None:
    """Stop sampling; py-spy writes its file on SIGINT."""
    if profiler.poll() is None:
        profiler.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(20)


@contextlib.contextmanager
def profiled(services: list[Service], directory: Path, name: str) -> Iterator[list[Path]]:
    """py-spy on every process of `services` for the duration of the block: the files it wrote."""
    outputs = [directory / f"{name}-{i}.folded" for i in range(len(services))]
    profilers = [py_spy(service.pid, output) for service, output in zip(services, outputs, strict=True)]
    time.sleep(0.5)  # py-spy attaches before the load starts
    try:
        yield outputs
    finally:
        for profiler in profilers:
            stop_py_spy(profiler)


@dataclass
class Service:
    """One server process (a PGM or the ceiling app) on a free port."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    # Where a counted PGM writes its statement counts (bench/counting.py), None when it is not counted.
    counts_path: Path | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id (the service must be running)."""
        assert self.process is not None
        return self.process.pid

    def start(self, ready_path: str, timeout: float = 60.0) -> Service:
        """Start it and wait until `ready_path` answers 200."""
        self.launch()
        return self.wait_ready(ready_path, timeout)

    def launch(self) -> None:
        """Start the process, without waiting for it."""
        env = {**self.env, "HTTP_PORT": str(self.port), "HTTP_HOST": "127.0.0.1", "PGM_PUBLIC_URL": self.url}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, ready_path: str, timeout: float = 60.0) -> Service:
        """Wait until `ready_path` answers 200 (the process must have been launched)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.argv} exited with {self.process.returncode}; see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(ready_path).status_code == 200:
                        self._profile()
                        return self
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.argv} was not ready in {timeout}s; see {self.log_path}")

    def _profile(self) -> None:
        """With PGM_BENCH_PROFILE=<dir>, sample the process with py-spy (collapsed stacks, for flame graphs)."""
        directory = os.environ.get("PGM_BENCH_PROFILE")
        if directory:
            self.profiler = py_spy(self.pid, Path(directory) / f"{self.log_path.stem}.folded")

    def stop(self) -> None:
        """Graceful stop, SIGKILL if it hangs."""
        if self.profiler is not None:
            stop_py_spy(self.profiler)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def cpu(self) -> float:
        """CPU seconds used so far."""
        return cpu_seconds(self.pid)

    def peak_mb(self) -> float:
        """Peak resident memory so far."""
        return peak_rss_mb(self.pid)


def pgm(database_url: str, log_path: Path, log_level: str, **env: str) -> Service:
    """A PGM process configured by environment, as production runs it (`python -m pgm serve`)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PGM_", "PAYMENT_", "FLOW_", "SAGA_"))}
    environment = {
        **base,
        "LOG_LEVEL": log_level,
        "PGM_DATABASE_URL": database_url,
        "SANDBOX_WEBHOOK_SECRET": SANDBOX_SECRET,
        **env,
    }
    counts_directory = os.environ.get("PGM_BENCH_COUNTS")
    if not counts_directory:
        return Service([sys.executable, "-m", "pgm", "serve"], environment, log_path)
    # --count-statements: the same PGM with counted drivers (bench/counting.py).
    counts_path = Path(counts_directory) / f"{log_path.stem}-{uuid.uuid4().hex[:8]}.counts.json"
    environment[counting.COUNTS_FILE] = str(counts_path)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    return Service([sys.executable, "-m", "bench.counting", "serve"], environment, log_path, counts_path=counts_path)


def ceiling(log_path: Path, flow_manager_url: str, provider_url: str | None = None) -> Service:
    """The ceilings' app (bench/ceiling.py) on the same uvicorn stack; with `provider_url`, the provider
    of its remote saga shape. The same app, alone, is the provider stand-in of the remote modes."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "FLOW_MANAGER_URL": flow_manager_url,
        "PYTHONPATH": root,
        "SANDBOX_WEBHOOK_SECRET": SANDBOX_SECRET,
    }
    if provider_url is not None:
        env["PROVIDER_URL"] = provider_url
    return Service([sys.executable, "-m", "bench.ceiling"], env, log_path)


def send_webhooks_to(provider: Service, urls: list[str]) -> None:
    """Configure the provider stand-in: its signed webhooks go to these callback URLs, round-robin."""
    response = httpx.post(f"{provider.url}/-/webhook-targets", json=urls, timeout=5)
    response.raise_for_status()


@contextlib.contextmanager
def database(backend: str, directory: Path, admin_url: str) -> Iterator[str]:
    """A fresh database for one run: a SQLite file, or a throw-away PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'pgm-{uuid.uuid4().hex[:8]}.sqlite3'}"
        return
    import psycopg

    name = f"pgm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_available(admin_url: str) -> bool:
    """Whether the PostgreSQL server for the runs answers."""
    try:
        import psycopg

        with psycopg.connect(admin_url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
        return True
    except Exception:
        return False
