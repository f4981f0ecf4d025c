"""SQLite for SQLAlchemy's async engine without a thread per connection.

aiosqlite runs every call (cursor, execute, fetchall, close, commit) on a worker thread and wakes the
event loop for each answer: four loop turns per statement. A write transaction holds the database-wide
write lock (and our asyncio writer lock) across all those turns, and on a busy loop each turn waits for
every other ready task, so writers queue behind one another far longer than SQLite needs (measured:
sagas/s bound by the lock convoy while the CPU was half idle; see docs/performance.md).

SQLite on a local file answers in microseconds, so here the same sqlite3 calls run inline on the loop
thread, behind the aiosqlite interface that SQLAlchemy's aiosqlite dialect drives; awaiting them never
suspends. Transactions, BEGIN IMMEDIATE, WAL and the writer lock are unchanged. The one thing that can
now block the loop is another *process* holding SQLite's write lock (busy_timeout); a single PGM
process per SQLite file is the supported set-up (several processes share PostgreSQL).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any


class _Cursor:
    """The slice of aiosqlite.Cursor that SQLAlchemy uses, done inline."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Any = ()) -> _Cursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> _Cursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _Immediate:
    """Stands in for aiosqlite's work queue: SQLAlchemy's isolation_level setter posts a call to it."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection:
    """The slice of aiosqlite.Connection that SQLAlchemy's aiosqlite dialect uses, done inline."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._connection: sqlite3.Connection | None = connection
        self._tx = _Immediate()

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The sqlite3 connection itself, for the store's own statements (store/transaction.py)."""
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _Cursor:
        return _Cursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Any = ()) -> _Cursor:
        return _Cursor(self._conn.execute(sql, parameters))

    def begin(self, statement: str) -> None:
        """Open a transaction (BEGIN or BEGIN IMMEDIATE) on the loop thread."""
        self._conn.execute(statement)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def creator(database: str, timeout: float) -> Callable[[], Any]:
    """An `async_creator` for create_async_engine: connections to `database`, used on the loop thread."""

    async def connect() -> InlineConnection:
        # check_same_thread=False: the pool may close a connection from another thread at shutdown.
        return InlineConnection(sqlite3.connect(database, timeout=timeout, check_same_thread=False))

    return connect
