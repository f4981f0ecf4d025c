"""A transaction on the driver itself (sqlite3 or asyncpg): the one object through which the store's
repositories run their SQL, and which writes back the records it loaded when they change.

Unit of work, kept small: a record read (`get`, `lock`, `select`) or inserted (`insert`) in a
transaction is remembered with a snapshot of its columns; before the next query and at commit, the
columns that changed since are written with one UPDATE per record. So a service changes a record as it
would any object (`payment.status = ...`) and never forgets to save it. Rows written once and never
changed again (ledger entries, outbox messages, saga events) are inserted untracked: tracking them would
cost as much as writing them.

On PostgreSQL every statement is a round trip, so what nobody waits for is sent with the next statement
that cannot see it: ledger entries and saga events (`insert_later`) and the changed columns of held records
go as data-modifying WITH parts of that statement (store/sql.py: with_writes), or as one statement before a
statement that names one of their tables, and before COMMIT at the latest.

Rule for callers: never await a provider or any other network call inside a write transaction.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pgm.store.records import Record, Table, from_row, snapshot
from pgm.store.repositories import (
    CallbackRepository,
    InboxRepository,
    OperationsRepository,
    OutboxRepository,
    PaymentRepository,
    SagaEventRepository,
    SandboxRepository,
    SettingRepository,
)
from pgm.store.sql import Sql, parameters_with_writes, with_writes

if TYPE_CHECKING:
    import asyncpg

R = TypeVar("R", bound=Record)
Row = Sequence[Any]
NO_PARAMETERS: Mapping[str, Any] = {}


class RowNotFound(LookupError):
    """A row a caller requires (e.g. the payment it is about to lock) is not in the store."""


class DuplicateKey(Exception):
    """A write broke a unique constraint (the same idempotency key, event id... written at the same moment
    by another transaction): the same error from either driver. The transaction must be rolled back."""


class Transaction:
    """One open transaction on one connection; repositories are its attributes (`tx.payments`, ...)."""

    def __init__(
        self,
        *,
        sqlite: sqlite3.Connection | None = None,
        postgres: asyncpg.Connection | None = None,
        writable: bool = True,
        single_statement: bool = False,
    ) -> None:
        self._sqlite = sqlite
        self._postgres = postgres
        self.is_sqlite = sqlite is not None
        self.writable = writable
        # Database.single_statement: no BEGIN was sent, so a second statement would not be atomic with the first.
        self._statements_left = 1 if single_statement else -1
        # PostgreSQL: writes nobody waits for (rows written once, the changed columns of held records), each
        # with the table it writes, sent as WITH parts of the transaction's next statement that cannot see
        # that table (or alone before one that can, and at commit): a round trip each saved.
        self._queueing = postgres is not None and not single_statement
        self._queued: list[tuple[Sql, Mapping[str, Any], str]] = []
        self._tracked: dict[tuple[type[Record], Any], tuple[Record, tuple[Any, ...]]] = {}
        self._after_commit: list[Callable[[], None]] = []
        # Set by the outbox repository: the database wakes the dispatcher after this transaction commits.
        self.wrote_outbox = False

    # -- repositories -------------------------------------------------------------------------------
    # A new one per use, not cached on the transaction: a cached repository (which refers to its transaction)
    # made a reference cycle of every transaction, left to the cyclic garbage collector instead of freed when
    # its block ends (3-5 % of the CPU, docs/performance.md); one costs a small object per use.

    @property
    def payments(self) -> PaymentRepository:
        return PaymentRepository(self)

    @property
    def outbox(self) -> OutboxRepository:
        return OutboxRepository(self)

    @property
    def inbox(self) -> InboxRepository:
        return InboxRepository(self)

    @property
    def callbacks(self) -> CallbackRepository:
        return CallbackRepository(self)

    @property
    def saga_events(self) -> SagaEventRepository:
        return SagaEventRepository(self)

    @property
    def settings(self) -> SettingRepository:
        return SettingRepository(self)

    @property
    def operations(self) -> OperationsRepository:
        return OperationsRepository(self)

    @property
    def sandbox(self) -> SandboxRepository:
        return SandboxRepository(self)

    # -- statements ---------------------------------------------------------------------------------

    async def execute(self, sql: Sql, parameters: Mapping[str, Any] = NO_PARAMETERS) -> int:
        """Run a statement; return how many rows it changed."""
        await self._write_changes()
        sql, parameters = await self._with_queued(sql, parameters)
        return await self._execute(sql, parameters)

    async def executemany(self, sql: Sql, parameters: Iterable[Mapping[str, Any]]) -> None:
        """Run one statement for each set of parameters (one round trip on PostgreSQL)."""
        await self.flush()
        if self._statements_left >= 0:
            # Without BEGIN each row would be its own transaction (sqlite3 runs them one by one).
            raise RuntimeError(f"executemany in a single-statement transaction: {sql.text[:80]}")
        if self._sqlite is not None:
            self._sqlite.executemany(sql.sqlite, [sql.sqlite_parameters(p) for p in parameters])
        else:
            assert self._postgres is not None
            await self._postgres.executemany(sql.postgres, [sql.postgres_arguments(p) for p in parameters])

    async def fetch(self, sql: Sql, parameters: Mapping[str, Any] = NO_PARAMETERS) -> list[Row]:
        """All rows of a query."""
        await self._write_changes()
        sql, parameters = await self._with_queued(sql, parameters)
        return await self._fetch(sql, parameters)

    async def fetchrow(self, sql: Sql, parameters: Mapping[str, Any] = NO_PARAMETERS) -> Row | None:
        """The first row of a query, None without one."""
        rows = await self.fetch(sql, parameters)
        return rows[0] if rows else None

    async def fetchval(self, sql: Sql, parameters: Mapping[str, Any] = NO_PARAMETERS) -> Any:
        """The first column of the first row, None without one."""
        row = await self.fetchrow(sql, parameters)
        return row[0] if row is not None else None

    async def _with_queued(self, sql: Sql, parameters: Mapping[str, Any]) -> tuple[Sql, Mapping[str, Any]]:
        """The statement to send for `sql`: with the queued writes as WITH parts of it when it cannot see
        what they change (it names none of their tables), else as it is, once they have been sent."""
        if not self._queued:
            return sql, parameters
        if sql.text.startswith("WITH") or any(table in sql.words for _, _, table in self._queued):
            await self._send_queued()
            return sql, parameters
        queued, self._queued = self._queued, []
        writes = tuple(write for write, _, _ in queued)
        return with_writes(writes, sql), parameters_with_writes([given for _, given, _ in queued], parameters)

    async def _queue(self, write: Sql, parameters: Mapping[str, Any], table: str) -> None:
        """Queue a write for the next statement; at most one per table: the parts of one statement run in
        no set order, so two rows of a table sent together could take their generated keys out of order."""
        if any(queued_table == table for _, _, queued_table in self._queued):
            await self._send_queued()
        self._queued.append((write, parameters, table))

    async def _send_queued(self) -> None:
        """Send the queued writes, as one statement."""
        if not self._queued:
            return
        *first, (last, given, _) = self._queued
        self._queued = []
        if first:
            await self._execute(
                with_writes(tuple(write for write, _, _ in first), last),
                parameters_with_writes([parameters for _, parameters, _ in first], given),
            )
        else:
            await self._execute(last, given)

    def _one_more_statement(self, sql: Sql) -> None:
        if self._statements_left == 0:
            raise RuntimeError(f"a second statement in a single-statement transaction: {sql.text[:80]}")
        self._statements_left -= 1

    async def _execute(self, sql: Sql, parameters: Mapping[str, Any]) -> int:
        self._one_more_statement(sql)
        if self._sqlite is not None:
            try:
                cursor = self._sqlite.execute(sql.sqlite, sql.sqlite_parameters(parameters))
            except sqlite3.IntegrityError as exc:
                if not _unique(exc):
                    raise
                raise DuplicateKey(str(exc)) from exc
            count = cursor.rowcount
            cursor.close()
            return count
        assert self._postgres is not None
        try:
            status = await self._postgres.execute(sql.postgres, *sql.postgres_arguments(parameters))
        except Exception as exc:
            if not _unique(exc):
                raise
            raise DuplicateKey(str(exc)) from exc
        # asyncpg answers with the command tag: "UPDATE 3", "INSERT 0 1", "DELETE 0".
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def _fetch(self, sql: Sql, parameters: Mapping[str, Any]) -> list[Row]:
        self._one_more_statement(sql)
        if self._sqlite is not None:
            try:
                cursor = self._sqlite.execute(sql.sqlite, sql.sqlite_parameters(parameters))
            except sqlite3.IntegrityError as exc:
                if not _unique(exc):
                    raise
                raise DuplicateKey(str(exc)) from exc
            rows = cursor.fetchall()
            cursor.close()
            return rows
        assert self._postgres is not None
        try:
            records: list[Row] = await self._postgres.fetch(sql.postgres, *sql.postgres_arguments(parameters))
        except Exception as exc:
            if not _unique(exc):
                raise
            raise DuplicateKey(str(exc)) from exc
        return records

    # -- records ------------------------------------------------------------------------------------

    async def insert(self, record: R, tracked: bool = True) -> R:
        """INSERT a record now (its generated key is set on it) and, when `tracked`, write later changes
        to it back like those of a loaded record."""
        mapping = record.TABLE
        values = snapshot(record)
        columns = dict(zip(mapping.columns, values, strict=True))
        if mapping.generated_key:
            del columns[mapping.key]
        statement, parameters = await self._with_queued(_insert_statement(record.TABLE), columns)
        if mapping.generated_key:
            key = (await self._fetch(statement, parameters))[0][0]
            setattr(record, mapping.key, key)
            if tracked:
                self.track(record)  # a snapshot with its key
        else:
            await self._execute(statement, parameters)
            if tracked:
                self._tracked[(type(record), getattr(record, mapping.key))] = (record, values)
        return record

    async def insert_unless_taken(self, record: Record, unique_column: str) -> bool:
        """INSERT a record (tracked) unless a row holds its `unique_column` value already (an idempotency
        key): False then, and nothing is written. One statement where a lookup then an insert took two. For a
        table whose key is the record's own, not generated."""
        mapping = record.TABLE
        if mapping.generated_key:
            raise ValueError(f"{mapping.name}: insert_unless_taken needs a key of the record's own")
        values = snapshot(record)
        parameters = dict(zip(mapping.columns, values, strict=True))
        if await self.execute(_insert_unless_taken_statement(mapping, unique_column), parameters) == 0:
            return False
        self._tracked[(type(record), getattr(record, mapping.key))] = (record, values)
        return True

    async def insert_later(self, record: Record) -> None:
        """INSERT a row written once and not read back by the caller (a ledger entry, a saga event): on
        PostgreSQL it goes with the transaction's next statement or its commit instead of a round trip of its
        own; on SQLite, where a statement costs no round trip, at once. Its generated key is not set, and a
        failure to write it fails the transaction at that later statement."""
        mapping = record.TABLE
        parameters = dict(zip(mapping.columns, snapshot(record), strict=True))
        if mapping.generated_key:
            del parameters[mapping.key]
        statement = _insert_statement(mapping, returning=False)
        if self._queueing:
            await self._queue(statement, parameters, mapping.name)
        else:
            await self._execute(statement, parameters)

    async def get(self, cls: type[R], key: Any) -> R | None:
        """A record by its key; the one this transaction already holds, if any."""
        held = self._tracked.get((cls, key))
        if held is not None:
            return held[0]  # type: ignore[return-value]
        row = await self.fetchrow(_by_key_statement(cls.TABLE), {"key": key})
        return self.load(cls, row) if row is not None else None

    async def lock(self, cls: type[R], key: Any) -> R:
        """A record locked for the rest of the transaction (SELECT ... FOR UPDATE on PostgreSQL; on SQLite
        the write transaction holds the database's write lock since BEGIN IMMEDIATE), read fresh from the
        store. Raises RowNotFound when there is no such row."""
        if self.is_sqlite:
            # BEGIN IMMEDIATE: nothing else wrote since this transaction began, so a held record is current.
            record = await self.get(cls, key)
        else:
            row = await self.fetchrow(_by_key_statement(cls.TABLE, lock=True), {"key": key})
            record = self.load(cls, row) if row is not None else None
        if record is None:
            raise RowNotFound(f"{cls.TABLE.name} {key} not found")
        return record

    async def fresh(self, cls: type[R], key: Any) -> R | None:
        """A record read again from the store (the one this transaction holds, refreshed): what committed
        since it was read, e.g. while the caller waited for a lock. On SQLite a write transaction holds the
        write lock since BEGIN IMMEDIATE, so what it holds is current and is not read again."""
        if self.is_sqlite and self.writable:
            return await self.get(cls, key)
        row = await self.fetchrow(_by_key_statement(cls.TABLE), {"key": key})
        return self.load(cls, row) if row is not None else None

    async def select(self, cls: type[R], sql: Sql, parameters: Mapping[str, Any] = NO_PARAMETERS) -> list[R]:
        """Records from a query that starts with the table's `TABLE.select` (tracked)."""
        return [self.load(cls, row) for row in await self.fetch(sql, parameters)]

    def load(self, cls: type[R], row: Row) -> R:
        """A tracked record from a row listing its columns in record order; a record this transaction
        already holds for the same key is refreshed instead, so there is one object per row."""
        fresh = from_row(cls, row)
        identity = (cls, getattr(fresh, cls.TABLE.key))
        held = self._tracked.get(identity)
        if held is not None:
            record = held[0]
            for column in cls.TABLE.columns:
                setattr(record, column, getattr(fresh, column))
            self._tracked[identity] = (record, snapshot(record))
            return record  # type: ignore[return-value]
        self._tracked[identity] = (fresh, snapshot(fresh))
        return fresh

    def track(self, record: Record) -> None:
        """Write later changes of `record` back at the next flush."""
        self._tracked[(type(record), getattr(record, record.TABLE.key))] = (record, snapshot(record))

    async def flush(self) -> None:
        """Write the changed columns of every tracked record and the writes queued for the next statement."""
        await self._write_changes()
        await self._send_queued()

    async def _write_changes(self) -> None:
        """Write (PostgreSQL: queue) the changed columns of every tracked record."""
        for identity, (record, before) in self._tracked.items():
            after = snapshot(record)
            if after == before:
                continue
            columns = record.TABLE.columns
            changed = tuple(column for column, old, new in zip(columns, before, after, strict=True) if old != new)
            parameters = {column: after[columns.index(column)] for column in changed}
            parameters["key"] = identity[1]
            update = _update_statement(record.TABLE, changed)
            if self._queueing:
                await self._queue(update, parameters, record.TABLE.name)
            else:
                await self._execute(update, parameters)
            self._tracked[identity] = (record, after)

    # -- commit hooks -------------------------------------------------------------------------------

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this transaction has committed (never if it rolls back)."""
        self._after_commit.append(callback)

    def committed(self) -> None:
        """Run the after-commit callbacks (called by the database)."""
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()


def _unique(error: Exception) -> bool:
    """Whether a driver's error is a broken unique constraint (raised again as DuplicateKey)."""
    if isinstance(error, sqlite3.IntegrityError):
        return "UNIQUE" in str(error)
    # asyncpg's UniqueViolationError, by its SQLSTATE: asyncpg is imported only where PostgreSQL is used.
    return getattr(error, "sqlstate", None) == "23505"


@functools.cache
def _insert_statement(mapping: Table, returning: bool = True) -> Sql:
    columns = [c for c in mapping.columns if not (mapping.generated_key and c == mapping.key)]
    key = f" RETURNING {mapping.key}" if mapping.generated_key and returning else ""
    placeholders = ", ".join(f":{c}" for c in columns)
    return Sql(f"INSERT INTO {mapping.name} ({', '.join(columns)}) VALUES ({placeholders}){key}")


@functools.cache
def _insert_unless_taken_statement(mapping: Table, unique_column: str) -> Sql:
    placeholders = ", ".join(f":{c}" for c in mapping.columns)
    return Sql(
        f"INSERT INTO {mapping.name} ({', '.join(mapping.columns)}) VALUES ({placeholders}) "
        f"ON CONFLICT ({unique_column}) DO NOTHING"
    )


@functools.cache
def _by_key_statement(mapping: Table, lock: bool = False) -> Sql:
    return Sql(f"{mapping.select} WHERE {mapping.key} = :key" + (" FOR UPDATE" if lock else ""))


@functools.cache
def _update_statement(mapping: Table, columns: tuple[str, ...]) -> Sql:
    assignments = ", ".join(f"{c} = :{c}" for c in columns)
    return Sql(f"UPDATE {mapping.name} SET {assignments} WHERE {mapping.key} = :key")
