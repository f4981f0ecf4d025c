"""The store's connections and transactions, for SQLite (embedded default) and PostgreSQL, on the drivers
themselves: `sqlite3` and `asyncpg` connections kept in plain lists (no asyncpg Pool: see
Database._postgres_connection). No SQLAlchemy on the request path: its models and Alembic only
describe and migrate the schema (store/models.py, store/migrator.py).

Write transactions on SQLite start with BEGIN IMMEDIATE: the database-wide write lock is taken up
front, so two writers never deadlock on a lock upgrade, and holding it is SQLite's equivalent of a row
lock. In one process an asyncio lock queues writers fairly instead of letting them spin on
busy_timeout. On PostgreSQL a payment is locked with SELECT ... FOR UPDATE.

SQLite's statements run inline on the event loop's thread: on a local file they answer in microseconds,
while a worker thread per connection (aiosqlite) cost a loop turn per call, and a write transaction held
the write lock (and the writer lock) across every one of those turns, so writers queued behind one
another far longer than SQLite needs (docs/performance.md). The one thing that can block the loop is
another *process* holding SQLite's write lock (busy_timeout); a single PGM process per SQLite file is the
supported set-up (several processes share PostgreSQL). asyncpg prepares each statement once per
connection and keeps it (its statement cache).

Group commit on SQLite. Since no statement suspends inside a write transaction, the writer lock is
never contended, and each transaction used to pay its own BEGIN IMMEDIATE and COMMIT, the COMMIT writing
the same table and index pages to the WAL again and again. Now the logical write transactions
(`transaction()`, `single_statement()`) of one loop turn share one physical transaction, a batch:

* the first opens it with BEGIN IMMEDIATE; each later one runs in a SAVEPOINT of its own, released when
  its block ends without error, rolled back alone when it fails (the first, alone in the batch then, rolls
  back the physical transaction instead);
* the one that opened the batch yields the loop once, so the tasks ready in that turn join it, then runs
  the COMMIT (or, when a logical transaction is running at that moment, that one commits at its end, for
  a COMMIT must not cut it in two); a batch that holds SQLITE_GROUP_COMMIT_MAX commits at once;
* the block of every member returns only once the COMMIT has run, and raises its error if it failed: a
  failed COMMIT (or SQLite rolling the physical transaction back by itself, a full disk say) fails every
  member of the batch. After-commit callbacks and outbox hooks run after it. A caller cancelled while it
  waits for the COMMIT leaves its writes in the batch: they commit with it, as writes whose COMMIT
  returned just before a cancellation would have;
* other connections (snapshots, other processes) see a batch only once it is committed; a member sees
  the writes of the members before it, in the order the writer lock gave them, as it would have had each
  committed alone;
* a single statement with no batch to join runs without BEGIN (sqlite3 commits it by itself: cheaper
  than a batch of one); one that joins a batch and whose block fails after it ran keeps its statement, as
  it does alone and on PostgreSQL.

`group_commits` counts the COMMITs by batch size. PostgreSQL commits each transaction by itself on its
own connection: nothing is grouped there.

Rule for callers: never await a provider or any other network call inside a write transaction (on SQLite
it would also hold back the COMMIT of every transaction of its batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from pgm.store.sql import Sql
from pgm.store.transaction import Transaction

if TYPE_CHECKING:
    import asyncpg

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
# Reader connections kept open between snapshots (more are opened while more snapshots run at once).
SQLITE_IDLE_READERS = 4
# Prepared statements each sqlite3 connection keeps (its default is 128): the ≈ 75 written in the
# repositories, plus an INSERT and a SELECT by key per table and an UPDATE per set of columns a flush
# writes; one prepared again per use would cost its parse each time.
SQLITE_CACHED_STATEMENTS = 512
# The same on each asyncpg connection (its default is 100): the store's statements, plus those a PostgreSQL
# transaction sends with its queued writes as WITH parts (Transaction._with_queued), one per combination
# met; a statement evicted is prepared again, a round trip.
POSTGRES_CACHED_STATEMENTS = 1024
# Logical write transactions one SQLite COMMIT holds at most (group commit): a batch this full commits at
# once instead of at the end of the loop turn, so a burst does not hold its first callers back for long.
SQLITE_GROUP_COMMIT_MAX = 32
_PING = Sql("SELECT 1")


class _Batch:
    """SQLite's open physical write transaction and the logical transactions that joined it."""

    __slots__ = ("connection", "due", "members", "waiting")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.members = 0  # logical transactions that ended without error in it
        self.waiting: list[asyncio.Future[None]] = []  # one per member, resolved by the COMMIT
        self.due = False  # its loop turn has run: the logical transaction running now commits it at its end


@dataclass(frozen=True)
class PoolSettings:
    """PostgreSQL connection pool of one process (docs/configuration.md#sizing-the-database-pool)."""

    size: int = 10
    max_overflow: int = 20
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    # An overflow connection given back waits this long for the next transaction that needs one before it
    # is closed: under sustained load it is reused instead of opened and closed per transaction (a
    # connection costs the client ~1-2 ms of CPU to open, which doubled a saga's CPU at saturation).
    overflow_idle_seconds: float = 1.0


def is_sqlite_url(url: str) -> bool:
    """Whether a configured URL names a SQLite database."""
    return url.split(":", 1)[0].split("+", 1)[0] == "sqlite"


def sqlite_path(url: str) -> str:
    """The file of a `sqlite:///relative` or `sqlite:////absolute` URL (`:memory:` without one)."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    path = unquote(rest.split("?", 1)[0])
    path = path[1:] if path.startswith("/") else path
    return path or ":memory:"


def shown_url(url: str) -> str:
    """A database URL as messages show it: its password hidden, no driver named."""
    scheme, _, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if at and ":" in credentials:
        credentials = credentials.split(":", 1)[0] + ":***"
    return f"{scheme.split('+', 1)[0]}://{credentials}{at}{location}"


def postgres_dsn(url: str) -> str:
    """The configured PostgreSQL URL as asyncpg takes it (`postgresql://`, whatever driver it names)."""
    return "postgresql://" + url.split("://", 1)[1]


class Database:
    """The store's connections: a sqlite3 writer and readers, or PostgreSQL connections kept and overflow."""

    def __init__(self, url: str, pool: PoolSettings | None = None) -> None:
        self.url = url
        self.is_sqlite = is_sqlite_url(url)
        self.pool_settings = pool or PoolSettings()
        self._sqlite_path = sqlite_path(url) if self.is_sqlite else ""
        if self.is_sqlite and self._sqlite_path != ":memory:":
            Path(self._sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        self._sqlite_writer_connection: sqlite3.Connection | None = None
        self._sqlite_readers: list[sqlite3.Connection] = []
        self._sqlite_writer = asyncio.Lock()
        # SQLite: the physical write transaction the logical ones join (group commit), while one is open.
        self._batch: _Batch | None = None
        # SQLite: how many COMMITs ran for each batch size (logical transactions per COMMIT).
        self.group_commits: Counter[int] = Counter()
        # Connections in use, kept ones and overflow together (PGM_DATABASE_POOL_SIZE + MAX_OVERFLOW).
        self._connection_slots = asyncio.Semaphore(self.pool_settings.size + self.pool_settings.max_overflow)
        self._kept_in_use = 0
        # Kept connections given back, open until shutdown (or until the server closes one); at most `size`
        # exist, since one is opened only while fewer than `size` kept ones are in use and none is idle.
        self._idle_kept: list[asyncpg.Connection] = []
        self._kept_in_use_now: set[asyncpg.Connection] = set()
        # Overflow connections given back and not needed since, each with the timer that closes it.
        self._idle_overflow: list[tuple[asyncpg.Connection, asyncio.TimerHandle]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._outbox_hooks: list[Callable[[], None]] = []

    def on_outbox_commit(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every commit that wrote outbox rows (the dispatcher's wake-up: whoever wires
        the dispatcher registers it, so no writer has to remember to wake it)."""
        self._outbox_hooks.append(hook)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A read-write store transaction, committed when the block ends without error: the block's end
        returns once its writes are durable (on SQLite, once the group commit that holds them has run)."""
        if self.is_sqlite:
            async with self._sqlite_grouped(single_statement=False) as tx:
                yield tx
        else:
            async with self._postgres(writable=True) as tx:
                yield tx

    @asynccontextmanager
    async def single_statement(self) -> AsyncIterator[Transaction]:
        """A write transaction of one statement (an inbox row stored or closed). On PostgreSQL a statement is
        atomic by itself, so it runs without BEGIN and COMMIT around it (two round trips fewer); on SQLite it
        joins the group commit like any write transaction. A second statement in the block, a tracked
        record's change included, raises instead of running outside the first one's atomicity."""
        if self.is_sqlite:
            if self._batch is None and not self._sqlite_writer.locked():
                # No batch to join: the statement commits by itself (sqlite3 sends no BEGIN around it),
                # durable when it returns, cheaper than a BEGIN IMMEDIATE and a COMMIT of its own.
                async with self._sqlite_writer:
                    tx = Transaction(sqlite=self._writer(), single_statement=True)
                    yield tx
                    await tx.flush()
                self._committed(tx)
            else:
                async with self._sqlite_grouped(single_statement=True) as tx:
                    yield tx
        else:
            async with self._postgres_connection() as connection:
                tx = Transaction(postgres=connection, single_statement=True)
                yield tx
                await tx.flush()
            self._committed(tx)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Transaction]:
        """A read-only store transaction. On SQLite it reads one consistent snapshot; on PostgreSQL it is
        READ COMMITTED, so each statement sees what was committed before it began: what must be read
        together consistently is read in one statement, or under a lock in `transaction()`. So on
        PostgreSQL its statements run without BEGIN and COMMIT around them (each is its own transaction,
        which READ COMMITTED gives a statement anyway): two round trips fewer per snapshot. A snapshot is
        for reading: what a caller changes in the records it read is not written atomically there."""
        if not self.is_sqlite:
            async with self._postgres_connection() as connection:
                tx = Transaction(postgres=connection, writable=False)
                yield tx
                await tx.flush()
            self._committed(tx)
            return
        connection = self._sqlite_readers.pop() if self._sqlite_readers else self._connect()
        try:
            async with self._sqlite_reader(connection) as tx:
                yield tx
        finally:
            # One whose transaction could not even be rolled back is not used again.
            if connection.in_transaction or len(self._sqlite_readers) >= SQLITE_IDLE_READERS:
                connection.close()
            else:
                self._sqlite_readers.append(connection)

    @asynccontextmanager
    async def _sqlite_reader(self, connection: sqlite3.Connection) -> AsyncIterator[Transaction]:
        connection.execute("BEGIN")
        tx = Transaction(sqlite=connection, writable=False)
        try:
            yield tx
            await tx.flush()
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        self._committed(tx)

    @asynccontextmanager
    async def _sqlite_grouped(self, single_statement: bool) -> AsyncIterator[Transaction]:
        """One logical write transaction in the open group commit (module docstring): the first of a batch
        runs BEGIN IMMEDIATE and schedules the COMMIT; the others run in a SAVEPOINT of their own. The block
        ends once the batch's COMMIT has run, and raises if it failed."""
        async with self._sqlite_writer:
            batch = self._batch
            opened = batch is None
            if batch is None:
                connection = self._writer()
                connection.execute("BEGIN IMMEDIATE")
                batch = self._batch = _Batch(connection)
            else:
                batch.connection.execute("SAVEPOINT logical")
            tx = Transaction(sqlite=batch.connection, single_statement=single_statement)
            try:
                yield tx
                await tx.flush()
            except BaseException as error:
                self._undo(batch, opened, single_statement, error)
                raise
            if not opened:
                batch.connection.execute("RELEASE logical")
            batch.members += 1
            durable = asyncio.get_running_loop().create_future()
            batch.waiting.append(durable)
            if batch.due or batch.members >= SQLITE_GROUP_COMMIT_MAX:
                self._commit(batch)
        if opened and batch is self._batch:
            # The loop turn goes on: the transactions of the tasks ready in it join the batch. Then the one
            # that opened it commits it (or, if one is running at that moment, that one does at its end).
            try:
                await asyncio.sleep(0)
            finally:
                self._commit_due(batch)
        if not durable.done():
            await durable
        durable.result()  # raises the COMMIT's error
        self._committed(tx)

    def _undo(self, batch: _Batch, opened: bool, single_statement: bool, error: BaseException) -> None:
        """End one failed logical transaction, and only it. A transaction is rolled back: to its SAVEPOINT, or
        the whole physical transaction when it opened the batch (nothing else is in it yet). A single
        statement that ran stands, as it does when it runs by itself (and on PostgreSQL): SQLite undid it
        if it is what failed. When SQLite rolled back the physical transaction by itself (a full disk, an
        I/O error) or the rollback fails, the batch's earlier members are lost: they fail with it."""
        connection = batch.connection
        try:
            if not connection.in_transaction:
                if not opened:
                    raise sqlite3.OperationalError("SQLite rolled back the group commit's transaction") from error
                self._batch = None
            elif single_statement and opened:
                self._commit(batch)  # nothing else is in it: the statement commits now, as it would alone
            elif single_statement:
                connection.execute("RELEASE logical")
            elif opened:
                self._batch = None
                connection.execute("ROLLBACK")
            else:
                connection.execute("ROLLBACK TO logical")
                connection.execute("RELEASE logical")
        except Exception as failure:
            self._fail(batch, failure)
            return
        if batch.due:
            self._commit(batch)

    def _commit_due(self, batch: _Batch) -> None:
        """The loop turn in which the batch opened has run: commit it now, or when the logical transaction
        running at this moment ends (it holds the writer lock, and COMMIT would cut it in two)."""
        if batch is not self._batch:
            return
        if self._sqlite_writer.locked():
            batch.due = True
        else:
            self._commit(batch)

    def _commit(self, batch: _Batch) -> None:
        """COMMIT the batch and tell its members; a failed COMMIT fails every one of them."""
        if batch is not self._batch:
            return
        self._batch = None
        try:
            batch.connection.execute("COMMIT")
        except Exception as error:
            self._fail(batch, error, current=False)
            return
        self.group_commits[batch.members] += 1
        for durable in batch.waiting:
            if not durable.done():
                durable.set_result(None)

    def _fail(self, batch: _Batch, error: Exception, current: bool = True) -> None:
        """End a batch whose writes are lost: roll back what is left of it, fail its members."""
        if current and batch is self._batch:
            self._batch = None
        connection = batch.connection
        if connection.in_transaction:
            # If it fails, _writer() opens a new connection instead of this one, still in its transaction.
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        for durable in batch.waiting:
            if not durable.done():
                durable.set_exception(error)

    @asynccontextmanager
    async def _postgres(self, writable: bool) -> AsyncIterator[Transaction]:
        async with self._postgres_connection() as connection, connection.transaction():
            tx = Transaction(postgres=connection, writable=writable)
            yield tx
            await tx.flush()
        self._committed(tx)

    @asynccontextmanager
    async def _postgres_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A kept connection while one is free, else an overflow connection (one given back less than
        `overflow_idle_seconds` ago, else a new one); waits up to PGM_DATABASE_POOL_TIMEOUT_SECONDS when
        all of them are in use (docs/configuration.md). Open connections never exceed size + max_overflow:
        a new overflow connection is opened only when no idle one is left.

        The kept connections are a plain list, not an asyncpg Pool: the Pool's acquire and release (its
        queue, holder, proxy, inactivity timer and reset steps) cost ≈ 22 µs of client CPU per transaction,
        about 8 times a saga (docs/performance.md). What it did that matters is kept: a connection is opened
        on first need and kept open; one the server closed is dropped and a new one opened on next use; one
        given back still in a transaction (its ROLLBACK failed) is closed, never reused."""
        settings = self.pool_settings
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 a slot acquired just as wait_for times out can be
            # lost (never released) and a cancellation swallowed; the semaphore hands a cancelled wake-up on.
            async with asyncio.timeout(settings.timeout_seconds):
                await self._connection_slots.acquire()
        except TimeoutError:
            raise TimeoutError(
                f"no free database connection within {settings.timeout_seconds:g} s "
                f"({settings.size + settings.max_overflow} in use)"
            ) from None
        try:
            if self._kept_in_use < settings.size:
                self._kept_in_use += 1
                try:
                    connection = self._idle_kept_connection() or await self._open_connection()
                    self._kept_in_use_now.add(connection)
                    try:
                        yield connection
                    finally:
                        self._give_back_kept(connection)
                finally:
                    self._kept_in_use -= 1
            else:
                overflow = self._idle_overflow_connection() or await self._open_connection()
                try:
                    yield overflow
                except BaseException:
                    await overflow.close()  # in whatever state the failure left it: not reused
                    raise
                self._keep_idle_overflow(overflow)
        finally:
            self._connection_slots.release()

    async def _open_connection(self) -> asyncpg.Connection:
        import asyncpg

        return await asyncpg.connect(
            postgres_dsn(self.url),
            timeout=self.pool_settings.connect_timeout_seconds,
            statement_cache_size=POSTGRES_CACHED_STATEMENTS,
        )

    def _idle_kept_connection(self) -> asyncpg.Connection | None:
        """The kept connection given back last (the one most likely still warm), if any is still open."""
        while self._idle_kept:
            connection = self._idle_kept.pop()
            if not connection.is_closed():
                return connection
        return None

    def _give_back_kept(self, connection: asyncpg.Connection) -> None:
        # A transaction block rolls back on failure; a connection still in a transaction here is one whose
        # ROLLBACK itself failed or was cancelled, so its state is unknown. A query cancelled outside a
        # transaction leaves it reusable: asyncpg makes the next query wait for the cancellation first.
        if connection.is_closed():
            self._kept_in_use_now.discard(connection)
        elif connection.is_in_transaction():
            self._kept_in_use_now.discard(connection)
            connection.terminate()
        elif connection in self._kept_in_use_now:
            self._kept_in_use_now.remove(connection)
            self._idle_kept.append(connection)
        else:  # the Database was disposed of while it was in use
            self._close_later(connection)

    def _idle_overflow_connection(self) -> asyncpg.Connection | None:
        """The overflow connection given back last, still open, if any."""
        while self._idle_overflow:
            connection, closer = self._idle_overflow.pop()
            closer.cancel()
            if not connection.is_closed():
                return connection
        return None

    def _keep_idle_overflow(self, connection: asyncpg.Connection) -> None:
        if connection.is_closed() or connection.is_in_transaction():
            self._close_later(connection)
            return
        closer = asyncio.get_running_loop().call_later(
            self.pool_settings.overflow_idle_seconds, self._close_idle_overflow, connection
        )
        self._idle_overflow.append((connection, closer))

    def _close_idle_overflow(self, connection: asyncpg.Connection) -> None:
        self._idle_overflow = [(c, closer) for c, closer in self._idle_overflow if c is not connection]
        self._close_later(connection)

    def _close_later(self, connection: asyncpg.Connection) -> None:
        task = asyncio.get_running_loop().create_task(connection.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _committed(self, tx: Transaction) -> None:
        tx.committed()
        if tx.wrote_outbox:
            for hook in self._outbox_hooks:
                hook()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level None: BEGIN and COMMIT are ours to emit (none around Database.single_statement's
        # statement: sqlite3 commits it by itself). check_same_thread=False: a connection may be closed from
        # another thread at shutdown.
        connection = sqlite3.connect(
            self._sqlite_path,
            timeout=SQLITE_BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=SQLITE_CACHED_STATEMENTS,
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        return connection

    def _writer(self) -> sqlite3.Connection:
        writer = self._sqlite_writer_connection
        if writer is not None and writer.in_transaction and self._batch is None:
            # A transaction whose ROLLBACK failed (the disk, say): a new connection, not one stuck in it.
            writer.close()
            writer = None
        if writer is None:
            writer = self._sqlite_writer_connection = self._connect()
        return writer

    async def ping(self) -> None:
        """Raise when the store cannot answer a trivial query."""
        async with self.snapshot() as tx:
            await tx.fetchval(_PING)

    async def dispose(self) -> None:
        """Close every connection."""
        idle, self._idle_overflow = self._idle_overflow, []
        for connection, closer in idle:
            closer.cancel()
            await connection.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        kept, self._idle_kept = self._idle_kept, []
        for connection in kept:
            await connection.close()
        # One still in use is closed when it is given back (_give_back_kept), not kept past shutdown.
        self._kept_in_use_now = set()
        if self._batch is not None and not self._sqlite_writer.locked():
            self._commit(self._batch)  # its members are waiting for it
        readers, self._sqlite_readers = self._sqlite_readers, []
        for connection in readers:
            connection.close()
        if self._sqlite_writer_connection is not None:
            writer, self._sqlite_writer_connection = self._sqlite_writer_connection, None
            writer.close()
