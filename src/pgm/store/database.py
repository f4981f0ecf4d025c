"""Engines, transactions and the per-payment lock, for SQLite (embedded default) and PostgreSQL.

Write transactions on SQLite start with BEGIN IMMEDIATE: the database-wide write lock is taken up
front, so two writers never deadlock on a lock upgrade, and holding it is SQLite's equivalent of a row
lock. In one process an asyncio lock queues writers fairly instead of letting them spin on
busy_timeout. On PostgreSQL a payment is locked with SELECT ... FOR UPDATE.

Rule for callers: never await a provider or any other network call inside a write transaction.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Insert, Table, event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql.dml import ReturningInsert

from pgm.store import sqlite_inline
from pgm.store.models import Base, Payment, table_of

T = TypeVar("T", bound=Base)


def async_url(url: str) -> str:
    """The async driver for a configured URL (sqlite → aiosqlite; PostgreSQL keeps psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    return url


def sync_url(url: str) -> str:
    """The synchronous driver for the same database (used by Alembic)."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        return str(parsed.set(drivername="sqlite"))
    return url


def _sqlite_engine(url: str, begin: str) -> AsyncEngine:
    # Statements run inline on the loop thread instead of aiosqlite's worker thread: see sqlite_inline.
    database = make_url(url).database or ":memory:"
    engine = create_async_engine(async_url(url), async_creator=sqlite_inline.creator(database, 30))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Straight to sqlite3: BEGIN through exec_driver_sql costs a statement's worth of SQLAlchemy work.
        connection.connection.driver_connection.begin(begin)

    return engine


async def insert_row(session: AsyncSession, row: T) -> T:
    """INSERT a new object's attributes with one Core statement, without the ORM's unit of work, and
    return it (detached, its generated id set). For rows a transaction writes and does not change again:
    the unit of work costs about as much as the statement (docs/performance.md)."""
    table = table_of(type(row))
    values = {column.key: row.__dict__[column.key] for column in table.columns if column.key in row.__dict__}
    generated = [column for column in table.primary_key.columns if column.key not in values]
    if generated:
        (key,) = generated
        inserted = await session.execute(_insert_returning(table, key.key), values)
        setattr(row, key.key, inserted.scalar_one())
    else:
        await session.execute(_insert(table), values)
    return row


# One statement object per table, built once: building a statement and its cache key on every call
# costs more than running it (docs/performance.md).
@functools.cache
def _insert(table: Table) -> Insert:
    return insert(table)


@functools.cache
def _insert_returning(table: Table, key: str) -> ReturningInsert[tuple[Any]]:
    return insert(table).returning(table.c[key])


@dataclass(frozen=True)
class PoolSettings:
    """PostgreSQL connection pool of one process (docs/configuration.md#sizing-the-database-pool)."""

    size: int = 10
    max_overflow: int = 20
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0


class Database:
    """The store's engines and session factories."""

    def __init__(self, url: str, pool: PoolSettings | None = None) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self._write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
            self._read_engine = _sqlite_engine(url, "BEGIN")
        else:
            pool = pool or PoolSettings()
            self._write_engine = create_async_engine(
                async_url(url),
                pool_size=pool.size,
                max_overflow=pool.max_overflow,
                pool_timeout=pool.timeout_seconds,
                pool_pre_ping=True,
                # libpq counts whole seconds; 0 would mean wait forever.
                connect_args={"connect_timeout": max(1, round(pool.connect_timeout_seconds))},
            )
            self._read_engine = self._write_engine
        self._writes = async_sessionmaker(self._write_engine, expire_on_commit=False)
        self._reads = async_sessionmaker(self._read_engine, expire_on_commit=False)
        self._sqlite_writer = asyncio.Lock()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A read-write transaction, committed when the block ends without error."""
        if self.is_sqlite:
            async with self._sqlite_writer, self._writes.begin() as session:
                yield session
        else:
            async with self._writes.begin() as session:
                yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction (a consistent snapshot on both databases)."""
        async with self._reads.begin() as session:
            yield session

    async def lock_payment(self, session: AsyncSession, payment_id: str) -> Payment | None:
        """Lock one payment for the rest of the transaction and return it fresh from the store."""
        if self.is_sqlite:
            # The transaction holds SQLite's write lock since its BEGIN IMMEDIATE, and its session is new:
            # whatever the session loaded is current, so one it already holds is not read again.
            return await session.get(Payment, payment_id)
        statement = select(Payment).where(Payment.id == payment_id).execution_options(populate_existing=True)
        if not self.is_sqlite:
            statement = statement.with_for_update()
        return (await session.execute(statement)).scalar_one_or_none()

    async def ping(self) -> None:
        """Raise when the store cannot answer a trivial query."""
        async with self._read_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            await self._read_engine.dispose()
