"""Alembic, driven from code: the service applies its migrations when it starts."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from pgm.store.database import Database
from pgm.store.sql import Sql

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_SQLITE_HAS_VERSION = Sql("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
_POSTGRES_HAS_VERSION = Sql(
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() "
    "AND table_name = 'alembic_version'"
)
_VERSION = Sql("SELECT version_num FROM alembic_version")


def sync_url(url: str) -> str:
    """The synchronous SQLAlchemy driver for a configured database (Alembic's and the operator's
    commands': the standard library's sqlite3, psycopg 3 on PostgreSQL)."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    if parsed.drivername in ("postgresql", "postgresql+asyncpg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration pointing at our migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    """Bring the database to the newest schema (safe to run from several replicas at once on PostgreSQL)."""
    command.upgrade(alembic_config(database_url), "head")


@functools.cache
def _revisions() -> tuple[str | None, frozenset[str]]:
    # The migrations this release ships: read once, not at every readiness probe.
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head(), frozenset(revision.revision for revision in script.walk_revisions())


def schema_state(current: str | None) -> str:
    """How the database's schema revision stands for this release: `OK` at our newest migration;
    `ahead` at one we do not ship, applied by a newer release during a rolling update (its migrations keep
    the previous release working, docs/deploying.md), so this replica keeps serving; `pending` behind."""
    head, known = _revisions()
    if current == head:
        return "OK"
    if current is not None and current not in known:
        return "ahead"
    return "pending"


async def current_revision(database: Database) -> str | None:
    """The revision recorded in the database, None before the first migration (one pooled connection)."""
    async with database.snapshot() as tx:
        if not await tx.fetchval(_SQLITE_HAS_VERSION if tx.is_sqlite else _POSTGRES_HAS_VERSION):
            return None
        revision = await tx.fetchval(_VERSION)
    return str(revision) if revision is not None else None


def is_up_to_date(database_url: str) -> bool:
    """Whether the database's schema revision is the newest one we ship."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision() == head
    finally:
        engine.dispose()


class ConnectionFailed(Exception):
    """The database did not answer; the message is the driver's reason, on one line."""


def check_connection(database_url: str, connect_timeout_seconds: float) -> None:
    """Connect once with the driver the migrations use and ask a trivial query (`pgm serve` does, before it
    migrates); raises ConnectionFailed when that fails."""
    url = make_url(sync_url(database_url))
    sqlite = url.get_backend_name() == "sqlite"
    connect_args: dict[str, object] = {} if sqlite else {"connect_timeout": max(1, round(connect_timeout_seconds))}
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        raise ConnectionFailed(" ".join(str(getattr(exc, "orig", None) or exc).split())) from exc
    finally:
        engine.dispose()
