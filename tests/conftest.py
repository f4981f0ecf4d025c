"""Fixtures shared by all tests.

Every test that touches the store runs once per backend: SQLite always, PostgreSQL when
PGM_TEST_DATABASE_URL is set. Flow tests share one PGM per module (each test uses its own merchant
references); tests that need their own configuration start their own PGM on a fresh database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.databases import backends, fresh_database
from tests.support.pgm_process import PgmProcess
from tests.support.servers import RecordingReceiver, recording_receiver


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadscope` (pyproject.toml) by module and database, slowest first (tests/support/scheduling.py)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from tests.support.scheduling import ModuleAndDatabaseScheduling

    return ModuleAndDatabaseScheduling(config, log)


@pytest.fixture(scope="module", params=backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The store backend of this run of the module."""
    return str(request.param)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[RecordingReceiver, str]]:
    """A local HTTP server that records what it receives (PAYMENT_CALLBACK_URL, Flow Manager...)."""
    with recording_receiver() as pair:
        yield pair


@pytest.fixture
def notifications(receiver: tuple[RecordingReceiver, str]) -> RecordingReceiver:
    """The receiver at PAYMENT_CALLBACK_URL: the PaymentStatus notifications the module's PGM sent."""
    return receiver[0]


@pytest.fixture(scope="module")
def pgm(
    backend: str, receiver: tuple[RecordingReceiver, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgmProcess]:
    """A PGM on the sandbox, shared by the module, whose PaymentStatus notifications go to `receiver`."""
    directory = tmp_path_factory.mktemp("pgm")
    with fresh_database(backend, directory) as url:
        process = PgmProcess(url, directory / "pgm.log", PAYMENT_CALLBACK_URL=f"{receiver[1]}/payment-status")
        process.start()
        yield process
        process.stop()


@pytest.fixture
def start_pgm(backend: str, tmp_path: Path) -> Iterator[Callable[..., PgmProcess]]:
    """Start PGM processes on a fresh database of the test's own; all are stopped at the end.

    Calling it again with `same_database=True` starts another process on the same database."""
    started: list[PgmProcess] = []
    with fresh_database(backend, tmp_path) as url:

        def start(**env: str) -> PgmProcess:
            process = PgmProcess(url, tmp_path / f"pgm-{len(started)}.log", **env)
            started.append(process)
            return process.start()

        yield start
        for process in started:
            process.stop()


@pytest.fixture
def shop_id() -> str:
    """A merchant reference no other test uses."""
    return f"order-{uuid.uuid4().hex[:10]}"
