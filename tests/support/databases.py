"""Fresh databases for tests: a SQLite file, and a throw-away PostgreSQL database when
PGM_TEST_DATABASE_URL points at a server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("PGM_TEST_DATABASE_URL")


def backends() -> list[str]:
    """The store backends every store test runs on."""
    return ["sqlite", "postgresql"] if POSTGRES_URL else ["sqlite"]


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """A new empty database on `backend`; yields its URL and drops it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'pgm-{uuid.uuid4().hex[:8]}.sqlite3'}"
        return
    assert POSTGRES_URL, "PGM_TEST_DATABASE_URL is not set"
    admin = make_url(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"pgm_test_{uuid.uuid4().hex[:12]}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False).replace("+psycopg", "", 1)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
