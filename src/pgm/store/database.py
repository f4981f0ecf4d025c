"""Engines, transactions and the per-payment lock, for SQLite (embedded default) and PostgreSQL.

Write transactions on SQLite start with BEGIN IMMEDIATE: the database-wide write lock is taken up
front, so two writers never deadlock on a lock upgrade, and holding it is SQLite's equivalent of a row
lock. In one process an asyncio lock queues writers fairly instead of letting them spin on
busy_timeout. On PostgreSQL a payment is locked with SELECT ... FOR UPDATE.

Two ways in, on the same connections: `transaction()` / `snapshot()` yield a store Transaction whose
repositories run SQL on the driver itself (sqlite3, asyncpg); `write()` / `read()` yield the SQLAlchemy
session that modules not yet moved onto the repositories still use (a Transaction can lend one, and
`transaction_of(session)` gives the Transaction of a session, so both share one database transaction).

Rule for callers: never await a provider or any other network call inside a write transaction.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Insert, Table, event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.dml import ReturningInsert

from pgm.store import sqlite_inline
from pgm.store.models import Base, Payment, table_of
from pgm.store.sql import dump_json, load_json
from pgm.store.transaction import SESSION_KEY, RowNotFound, Transaction

T = TypeVar("T", bound=Base)


def async_url(url: str) -> str:
    """The async driver for a configured URL (sqlite → aiosqlite's interface, run inline; PostgreSQL →
    asyncpg, whose connections the store's transactions use directly)."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    return url


def sync_url(url: str) -> str:
    """The synchronous driver for the same database (used by Alembic: psycopg 3 on PostgreSQL)."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    if parsed.drivername == "postgresql+asyncpg":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
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
        driver = connection.connection.driver_connection
        if not driver.sqlite.in_transaction:
            driver.begin(begin)

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
                connect_args={"timeout": pool.connect_timeout_seconds},
                # JSON columns: the same codec for the ORM and the store's own statements (store/sql.py).
                json_serializer=dump_json,
                json_deserializer=load_json,
            )
            self._read_engine = self._write_engine
        self._writes = async_sessionmaker(self._write_engine, expire_on_commit=False)
        self._reads = async_sessionmaker(self._read_engine, expire_on_commit=False)
        self._sqlite_writer = asyncio.Lock()
        self._outbox_hooks: list[Callable[[], None]] = []

    def on_outbox_commit(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every commit that wrote outbox rows (the dispatcher's wake-up: whoever wires
        the dispatcher registers it, so no writer has to remember to wake it)."""
        self._outbox_hooks.append(hook)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A read-write store transaction, committed when the block ends without error."""
        if self.is_sqlite:
            async with self._sqlite_writer, self._open(self._write_engine, writable=True) as tx:
                yield tx
        else:
            async with self._open(self._write_engine, writable=True) as tx:
                yield tx

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Transaction]:
        """A read-only store transaction (a consistent snapshot on both databases)."""
        async with self._open(self._read_engine, writable=False) as tx:
            yield tx

    @asynccontextmanager
    async def _open(self, engine: AsyncEngine, writable: bool) -> AsyncIterator[Transaction]:
        async with engine.connect() as connection:
            await connection.begin()
            tx = await _transaction_on(connection, writable)
            try:
                yield tx
                await tx.flush()
            except BaseException:
                await connection.rollback()
                raise
            finally:
                if tx._session is not None:
                    await tx._session.close()
            await connection.commit()
        tx.committed()
        self._committed(tx)

    def _committed(self, tx: Transaction) -> None:
        if tx.wrote_outbox:
            for hook in self._outbox_hooks:
                hook()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A read-write transaction as a SQLAlchemy session, committed when the block ends without error
        (for modules not yet moved onto `transaction()`)."""
        if self.is_sqlite:
            async with self._sqlite_writer, self._writes.begin() as session:
                yield session
                await _flush_bridged(session)
        else:
            async with self._writes.begin() as session:
                yield session
                await _flush_bridged(session)
        bridged = session.info.get(SESSION_KEY)
        if isinstance(bridged, Transaction):
            bridged.committed()
            self._committed(bridged)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction (a consistent snapshot on both databases)."""
        async with self._reads.begin() as session:
            yield session

    async def lock_payment(self, session: AsyncSession, payment_id: str) -> Payment:
        """Lock one payment for the rest of the transaction and return it fresh from the store; raises
        RowNotFound when there is none (callers lock a payment they know)."""
        if self.is_sqlite:
            # The transaction holds SQLite's write lock since its BEGIN IMMEDIATE, and its session is new:
            # whatever the session loaded is current, so one it already holds is not read again.
            payment = await session.get(Payment, payment_id)
        else:
            statement = (
                select(Payment)
                .where(Payment.id == payment_id)
                .execution_options(populate_existing=True)
                .with_for_update()
            )
            payment = (await session.execute(statement)).scalar_one_or_none()
        if payment is None:
            raise RowNotFound(f"payment {payment_id} not found")
        return payment

    async def ping(self) -> None:
        """Raise when the store cannot answer a trivial query."""
        async with self._read_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            await self._read_engine.dispose()


async def transaction_of(session: AsyncSession) -> Transaction:
    """The store transaction running on a SQLAlchemy session's connection (made on first use), so that a
    module on the repositories can be called by one still on the session, in one database transaction."""
    bridged = session.info.get(SESSION_KEY)
    if isinstance(bridged, Transaction):
        return bridged
    tx = await _transaction_on(await session.connection(), writable=True)
    tx.attach_session(session)
    return tx


async def as_transaction(tx: Transaction | AsyncSession) -> Transaction:
    """A store transaction, from a caller on the store layer or one still on a session (transitional)."""
    return tx if isinstance(tx, Transaction) else await transaction_of(tx)


async def _flush_bridged(session: AsyncSession) -> None:
    bridged = session.info.get(SESSION_KEY)
    if isinstance(bridged, Transaction):
        await bridged.flush()


async def _transaction_on(connection: AsyncConnection, writable: bool) -> Transaction:
    """A store transaction on the driver connection under a SQLAlchemy connection that has begun."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if isinstance(driver, sqlite_inline.InlineConnection):
        return Transaction(sqlite=driver.sqlite, sa_connection=connection, writable=writable)
    # SQLAlchemy's asyncpg adapter opens its transaction at its first statement: open it now, so the
    # store's statements run inside it rather than in autocommit.
    adapter: Any = raw.dbapi_connection
    if adapter._transaction is None:
        await adapter._start_transaction()
    return Transaction(postgres=driver, sa_connection=connection, writable=writable)
