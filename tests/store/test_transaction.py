"""The store's transactions on the drivers themselves, on SQLite and PostgreSQL: records written back
when they change, one object per row, locks, commit and rollback, the outbox's wake-up after commit,
and the connections they run on."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from dataclasses import replace

import pytest

from pgm.store.database import Database, PoolSettings
from pgm.store.records import LedgerEntry, OutboxMessage, Payment, SagaEvent
from pgm.store.sql import Sql
from pgm.store.transaction import RowNotFound

# Async tests on asyncio, through anyio's pytest plugin.
pytestmark = pytest.mark.anyio


def a_payment(**changes: object) -> Payment:
    payment = Payment(
        id=f"pay_{uuid.uuid4().hex[:12]}",
        provider="sandbox",
        payment_method="CREDIT_CARD",
        kind="PAYMENT",
        status="UNKNOWN",
        amount=1250,
        currency="EUR",
        shop_transaction_id=f"order-{uuid.uuid4().hex[:8]}",
        idempotency_key=uuid.uuid4().hex,
        created_at=1000.0,
        updated_at=1000.0,
        saga_context={"payRequestData": {"amount": 1250}},
    )
    for name, value in changes.items():
        setattr(payment, name, value)
    return payment


def an_outbox_message(key: str, now: float = 1000.0) -> OutboxMessage:
    return OutboxMessage(
        destination="flow-manager",
        ordering_key=key,
        payload={"event": "paymentExecuted", "amount": 5, "nested": {"ok": True}},
        status="PENDING",
        next_attempt_at=now,
        created_at=now,
    )


async def test_a_record_changed_in_a_transaction_is_written_back_column_by_column(database: Database) -> None:
    payment = a_payment()
    async with database.transaction() as tx:
        await tx.payments.add(payment)
        payment.status = "PENDING"
    async with database.transaction() as tx:
        stored = await tx.payments.lock(payment.id)
        assert (stored.status, stored.saga_context) == ("PENDING", {"payRequestData": {"amount": 1250}})
        # A JSON document changed in place is seen too.
        stored.saga_context["payRequestData"]["amount"] = 99
        stored.provider_payment_id = "sbx_1"
    async with database.snapshot() as tx:
        again = await tx.payments.get(payment.id)
    assert again is not None
    assert (again.provider_payment_id, again.saga_context["payRequestData"]["amount"]) == ("sbx_1", 99)


async def test_one_object_per_row_and_changes_flushed_before_a_query(database: Database) -> None:
    payment = a_payment(status="PENDING")
    async with database.transaction() as tx:
        await tx.payments.add(payment)
    async with database.transaction() as tx:
        first = await tx.payments.get(payment.id)
        assert first is not None
        first.status = "ACCEPTED"
        # A query in the same transaction sees the change (written before it runs) ...
        seen = await tx.fetchval(Sql("SELECT status FROM payments WHERE id = :id"), {"id": payment.id})
        assert seen == "ACCEPTED"
        # ... and loading the row again gives the same object.
        assert await tx.payments.lock(payment.id) is first
        assert await tx.payments.of_saga("no-such-saga") == []


async def test_a_transaction_that_raises_leaves_nothing_and_wakes_nobody(database: Database) -> None:
    woken: list[str] = []
    database.on_outbox_commit(lambda: woken.append("woken"))
    payment = a_payment()
    key = uuid.uuid4().hex

    async def fail_half_way() -> None:
        async with database.transaction() as tx:
            await tx.payments.add(payment)
            await tx.outbox.add(an_outbox_message(key))
            raise RuntimeError("the service failed half way")

    with pytest.raises(RuntimeError):
        await fail_half_way()
    async with database.snapshot() as tx:
        assert await tx.payments.get(payment.id) is None
        pending = await tx.fetchval(Sql("SELECT COUNT(*) FROM outbox WHERE ordering_key = :k"), {"k": key})
        assert pending == 0
    assert woken == []


async def test_a_commit_that_wrote_outbox_rows_wakes_the_dispatcher_once(database: Database) -> None:
    woken: list[str] = []
    database.on_outbox_commit(lambda: woken.append("woken"))
    async with database.transaction() as tx:
        await tx.payments.add(a_payment())
    assert woken == []
    async with database.transaction() as tx:
        await tx.outbox.add(an_outbox_message(uuid.uuid4().hex))
        await tx.outbox.add(an_outbox_message(uuid.uuid4().hex))
        assert woken == []  # not before the commit
    assert woken == ["woken"]


async def test_a_single_statement_transaction_commits_its_one_statement(database: Database) -> None:
    woken: list[str] = []
    database.on_outbox_commit(lambda: woken.append("woken"))
    key = uuid.uuid4().hex
    async with database.single_statement() as tx:
        message_id = await tx.outbox.add(an_outbox_message(key))
        assert woken == []  # not before it ran to the end of the block
    assert woken == ["woken"]
    async with database.snapshot() as tx:
        (stored,) = await tx.outbox.by_ids([message_id])
        assert stored.ordering_key == key


async def test_a_single_statement_transaction_refuses_a_second_statement(database: Database) -> None:
    payment = a_payment()
    key = uuid.uuid4().hex

    async def two_inserts() -> None:
        async with database.single_statement() as tx:
            await tx.outbox.add(an_outbox_message(key))
            await tx.payments.add(payment)

    async def an_insert_then_a_change() -> None:
        async with database.single_statement() as tx:
            added = await tx.payments.add(a_payment())
            added.status = "PENDING"  # a tracked change, written at the end of the block: a second statement

    async def a_batch() -> None:
        async with database.single_statement() as tx:
            await tx.outbox.delivered([(1, 200), (2, 200)], at=1002.0)

    with pytest.raises(RuntimeError, match="second statement"):
        await two_inserts()
    with pytest.raises(RuntimeError, match="second statement"):
        await an_insert_then_a_change()
    with pytest.raises(RuntimeError, match="executemany"):
        await a_batch()
    async with database.snapshot() as tx:
        assert await tx.payments.get(payment.id) is None  # never sent
        assert await tx.fetchval(Sql("SELECT COUNT(*) FROM outbox WHERE ordering_key = :k"), {"k": key}) == 1


async def test_outbox_heads_lease_and_delivery(database: Database) -> None:
    key = f"saga-{uuid.uuid4().hex}"
    destination = f"dest-{uuid.uuid4().hex[:12]}"
    async with database.transaction() as tx:
        first = await tx.outbox.add(replace(an_outbox_message(key), destination=destination))
        second = await tx.outbox.add(replace(an_outbox_message(key), destination=destination))
    assert second > first
    room = {destination: 10}
    async with database.transaction() as tx:
        heads = await tx.outbox.lease_heads(room, [], now=1000.0, until=1005.0, limit=1000)
        assert [m.id for m in heads] == [first]  # only the oldest of its key
        assert heads[0].payload == {"event": "paymentExecuted", "amount": 5, "nested": {"ok": True}}
        assert await tx.outbox.lease_heads(room, [], now=1001.0, until=1006.0, limit=1000) == []  # leased already
        await tx.outbox.delivered([(first, 200)], at=1002.0)
    async with database.transaction() as tx:
        heads = await tx.outbox.lease_heads(room, [], now=1003.0, until=1008.0, limit=1000)
        assert [m.id for m in heads] == [second]
        (row,) = await tx.outbox.by_ids([first])
        assert (row.status, row.attempts, row.last_status_code, row.lease_until) == ("DELIVERED", 1, 200, None)


async def test_outbox_heads_are_leased_in_one_statement_within_each_destinations_room(database: Database) -> None:
    """The dispatcher's claim: only the oldest pending message of a key, at most `room` of a destination,
    none this process is still delivering, none leased by anyone else; oldest first."""
    here, there = f"here-{uuid.uuid4().hex[:12]}", f"there-{uuid.uuid4().hex[:12]}"
    async with database.transaction() as tx:
        keys = [f"saga-{uuid.uuid4().hex}" for _ in range(4)]
        ids = {}
        for key in keys:
            for destination in (here, there):
                first = replace(an_outbox_message(key), destination=destination)
                ids[(key, destination)] = await tx.outbox.add(first)
                await tx.outbox.add(replace(an_outbox_message(key), destination=destination))  # not a head
    room = {here: 2, there: 0}
    async with database.transaction() as tx:
        running = [ids[(keys[0], here)]]  # still being delivered here although its lease ran out
        claimed = await tx.outbox.lease_heads(room, running, now=1000.0, until=1005.0, limit=100)
        assert [m.id for m in claimed] == [ids[(keys[1], here)], ids[(keys[2], here)]]
        assert all(m.lease_until == 1005.0 and m.ordering_key in keys for m in claimed)
    async with database.transaction() as tx:
        # Leased now: another claim before the lease runs out gets only the heads left.
        claimed = await tx.outbox.lease_heads({here: 5, there: 1}, [], now=1001.0, until=1006.0, limit=100)
        assert [m.id for m in claimed] == [ids[(keys[0], here)], ids[(keys[0], there)], ids[(keys[3], here)]]
        claimed = await tx.outbox.lease_heads({here: 5, there: 5}, [], now=1002.0, until=1007.0, limit=1)
        assert [m.id for m in claimed] == [ids[(keys[1], there)]]


async def test_write_once_rows_are_stored_with_their_documents_and_booleans(database: Database) -> None:
    payment = a_payment()
    operation = uuid.uuid4().hex
    async with database.transaction() as tx:
        await tx.payments.add(payment)
        entry = LedgerEntry(payment.id, "PAYMENT", "UNKNOWN", 1250, "REQUEST", 1000.0, reversal=True)
        await tx.payments.record(entry)
        for label in ("paymentExecuted", "paymentExecuted", "paymentFailed"):
            await tx.saga_events.add(SagaEvent("saga-1", label, {"body": [1, 2]}, 1000.0, operation_key=operation))
    async with database.snapshot() as tx:
        assert await tx.saga_events.count(operation, "paymentExecuted") == 2
        latest = await tx.saga_events.latest(operation)
        assert latest is not None
        assert (latest.label, latest.envelope) == ("paymentFailed", {"body": [1, 2]})
        (stored,) = await tx.operations.ledger(payment.id)
        assert (stored.status, stored.reversal) == ("UNKNOWN", True)


async def test_rows_written_once_go_with_the_next_statement_that_cannot_see_them_or_the_commit(
    database: Database,
) -> None:
    payment = a_payment()
    operation = uuid.uuid4().hex
    async with database.transaction() as tx:
        await tx.payments.add(payment)
        await tx.payments.record(LedgerEntry(payment.id, "PAYMENT", "UNKNOWN", 1250, "REQUEST", 1000.0))
        payment.status = "PENDING"
        # Names neither ledger_entries nor payments: on PostgreSQL the entry and the change go with it.
        assert await tx.saga_events.count(operation, "paymentExecuted") == 0
        await tx.payments.record(LedgerEntry(payment.id, "PAYMENT", "PENDING", 1250, "ANSWER", 1001.0))
        payment.status = "ACCEPTED"
        # Reads both tables: it runs after them and sees them.
        assert [entry.status for entry in await tx.operations.ledger(payment.id)] == ["UNKNOWN", "PENDING"]
        fresh = await tx.fetchval(Sql("SELECT status FROM payments WHERE id = :id"), {"id": payment.id})
        assert fresh == "ACCEPTED"
        await tx.saga_events.add(SagaEvent("saga-1", "paymentExecuted", {}, 1002.0, operation_key=operation))
        # Nothing after it: it is written at the commit.
    async with database.snapshot() as tx:
        assert await tx.saga_events.count(operation, "paymentExecuted") == 1
        assert [entry.status for entry in await tx.operations.ledger(payment.id)] == ["UNKNOWN", "PENDING"]

    async def queued_then_failed() -> None:
        async with database.transaction() as tx:
            await tx.payments.record(LedgerEntry(payment.id, "PAYMENT", "DECLINED", 1250, "ANSWER", 1003.0))
            await tx.saga_events.add(SagaEvent("saga-1", "paymentFailed", {}, 1003.0, operation_key=operation))
            assert await tx.outbox.message_id(0) is None  # one statement carrying them, on PostgreSQL
            raise RuntimeError("the service failed after it")

    with pytest.raises(RuntimeError):
        await queued_then_failed()
    async with database.snapshot() as tx:
        assert await tx.saga_events.count(operation, "paymentFailed") == 0
        assert len(await tx.operations.ledger(payment.id)) == 2


async def test_locking_a_payment_that_does_not_exist_raises(database: Database) -> None:
    async with database.transaction() as tx:
        with pytest.raises(RowNotFound):
            await tx.payments.lock("pay_missing")


async def test_a_payment_lock_holds_off_a_second_writer_until_commit(database: Database) -> None:
    payment = a_payment(status="PENDING")
    async with database.transaction() as tx:
        await tx.payments.add(payment)
    order: list[str] = []
    first_holds = asyncio.Event()

    async def first() -> None:
        async with database.transaction() as tx:
            locked = await tx.payments.lock(payment.id)
            first_holds.set()
            await asyncio.sleep(0)  # let the second writer try while the lock is held
            locked.status = "ACCEPTED"
            order.append("first commits")

    async def second() -> None:
        await first_holds.wait()
        async with database.transaction() as tx:
            locked = await tx.payments.lock(payment.id)
            order.append(f"second sees {locked.status}")

    await asyncio.gather(first(), second())
    assert order == ["first commits", "second sees ACCEPTED"]


async def test_snapshots_run_side_by_side_and_see_only_what_committed(database: Database) -> None:
    payment = a_payment()
    async with database.transaction() as tx:
        await tx.payments.add(payment)
        # Not committed yet: a snapshot opened meanwhile (its own connection) does not see it.
        async with database.snapshot() as reader, database.snapshot() as other:
            assert await reader.payments.get(payment.id) is None
            assert await other.payments.get(payment.id) is None
    async with database.snapshot() as reader:
        assert await reader.payments.get(payment.id) is not None


async def test_a_cancelled_transaction_rolls_back_and_the_next_one_runs(database: Database) -> None:
    payment = a_payment()
    inside = asyncio.Event()

    async def cancelled_half_way() -> None:
        async with database.transaction() as tx:
            await tx.payments.add(payment)
            inside.set()
            await asyncio.Event().wait()  # cancelled here, its write not committed

    task = asyncio.create_task(cancelled_half_way())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with database.transaction() as tx:
        assert await tx.payments.get(payment.id) is None
        await tx.payments.add(a_payment())


async def test_a_disposed_database_opens_its_connections_again_on_use(database: Database) -> None:
    async with database.snapshot() as tx:
        assert await tx.fetchval(Sql("SELECT 1")) == 1
    await database.dispose()
    await database.ping()


async def test_postgresql_keeps_its_pool_and_opens_the_overflow_beside_it_then_times_out(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer and its readers, no pool")
    database = Database(database_url, PoolSettings(size=1, max_overflow=1, timeout_seconds=0.3))
    pids: list[int] = []
    both_open = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with database.transaction() as tx:
            pids.append(int(await tx.fetchval(Sql("SELECT pg_backend_pid()"))))
            if len(pids) == 2:
                both_open.set()
            await release.wait()

    try:
        holders = [asyncio.create_task(hold()), asyncio.create_task(hold())]
        await both_open.wait()
        assert len(set(pids)) == 2  # the kept connection and one of overflow, at once
        with pytest.raises(TimeoutError):
            async with database.snapshot():
                pass  # a third waits for a free connection, then gives up
        release.set()
        await asyncio.gather(*holders)
        # The overflow connection was closed; the kept one serves again.
        async with database.snapshot() as tx:
            assert int(await tx.fetchval(Sql("SELECT pg_backend_pid()"))) in pids
        async with database.snapshot() as tx:
            again = int(await tx.fetchval(Sql("SELECT pg_backend_pid()")))
        async with database.snapshot() as tx:
            assert int(await tx.fetchval(Sql("SELECT pg_backend_pid()"))) == again
    finally:
        release.set()
        await database.dispose()


async def test_postgresql_reuses_an_overflow_connection_under_load_and_closes_it_once_idle(database_url: str) -> None:
    """Opening a connection costs the client more than a saga's transactions on it: under sustained load an
    overflow connection given back serves the next transaction that needs one, and is closed once idle."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer and its readers, no pool")
    database = Database(database_url, PoolSettings(size=1, max_overflow=1, overflow_idle_seconds=0.3))

    async def two_at_once() -> set[int]:
        pids: set[int] = set()
        both_open = asyncio.Event()

        async def hold() -> None:
            async with database.transaction() as tx:
                pids.add(int(await tx.fetchval(Sql("SELECT pg_backend_pid()"))))
                if len(pids) == 2:
                    both_open.set()
                await both_open.wait()

        await asyncio.gather(hold(), hold())
        return pids

    try:
        first = await two_at_once()
        assert await two_at_once() == first  # the kept connection and the same overflow one
        async with database.snapshot() as tx:
            kept = int(await tx.fetchval(Sql("SELECT pg_backend_pid()")))
        (overflow,) = first - {kept}
        async with asyncio.timeout(5):
            while True:  # closed 0.3 s after it was given back
                async with database.snapshot() as tx:
                    alive = await tx.fetchval(
                        Sql("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": overflow}
                    )
                if alive == 0:
                    break
                await asyncio.sleep(0.05)
    finally:
        await database.dispose()


async def test_postgresql_replaces_a_kept_connection_the_server_closed_or_left_inside_a_transaction(
    database_url: str,
) -> None:
    """The kept connections are checked on reuse: one the server closed is replaced by a new one on next
    use (no failed transaction), and one given back inside a transaction is closed, not reused."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer and its readers, no pool")
    import asyncpg

    database = Database(database_url, PoolSettings(size=1, max_overflow=0))
    pid_sql = Sql("SELECT pg_backend_pid()")
    try:
        async with database.snapshot() as tx:
            first = int(await tx.fetchval(pid_sql))
        async with database.snapshot() as tx:
            assert int(await tx.fetchval(pid_sql)) == first  # kept between transactions
        other = await asyncpg.connect(database_url)
        try:
            assert await other.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await other.close()
        await asyncio.sleep(0.2)  # the client sees its socket closed
        async with database.transaction() as tx:
            second = int(await tx.fetchval(pid_sql))
        assert second != first
        async with database.snapshot() as tx:
            await tx.execute(Sql("BEGIN"))  # as if a ROLLBACK had failed
        async with database.snapshot() as tx:
            third = int(await tx.fetchval(pid_sql))
        assert third != second
    finally:
        await database.dispose()


async def test_a_sqlite_writer_left_inside_a_transaction_is_replaced(database: Database) -> None:
    if not database.is_sqlite:
        pytest.skip("PostgreSQL closes a kept connection given back inside a transaction (tested above)")
    async with database.transaction() as tx:
        await tx.payments.add(a_payment())
    stuck = database._writer()
    stuck.execute("BEGIN")  # as if a ROLLBACK had failed: every BEGIN IMMEDIATE on it would fail
    payment = a_payment()
    async with database.transaction() as tx:
        await tx.payments.add(payment)
    assert database._writer() is not stuck
    async with database.snapshot() as tx:
        assert await tx.payments.get(payment.id) is not None


async def test_settings_keep_the_first_value_written(database: Database) -> None:
    key = f"setting-{uuid.uuid4().hex[:8]}"
    async with database.transaction() as tx:
        assert await tx.settings.get(key) is None
        await tx.settings.add_if_absent(key, "first")
    async with database.transaction() as tx:
        await tx.settings.add_if_absent(key, "second")
        assert await tx.settings.get(key) == "first"


def test_statements_are_translated_once_for_both_drivers() -> None:
    statement = Sql(
        "SELECT id FROM outbox WHERE id = ANY(:ids) AND status = :status AND lease_until < :now OR :now > 0"
    )
    assert statement.postgres == (
        "SELECT id FROM outbox WHERE id = ANY($1) AND status = $2 AND lease_until < $3 OR $3 > 0"
    )
    assert statement.names == ("ids", "status", "now")
    assert "json_each(:ids)" in statement.sqlite
    assert statement.sqlite_parameters({"ids": [1, 2], "status": "PENDING", "now": 1.0})["ids"] == "[1, 2]".replace(
        " ", ""
    )


async def test_a_json_document_with_an_integer_beyond_64_bits_is_stored_and_read_back(database: Database) -> None:
    # A saga's metadata is the client's: JSON sets no limit on integers, and orjson refuses past 64 bits.
    huge = -(2**63) - 1
    payment = a_payment(saga_context={"payRequestData": {"reference": huge, "list": [2**70]}})
    async with database.transaction() as tx:
        await tx.payments.add(payment)
    async with database.transaction() as tx:
        stored = await tx.payments.lock(payment.id)
        assert stored.saga_context == {"payRequestData": {"reference": huge, "list": [2**70]}}


async def test_a_transaction_is_freed_when_its_block_ends_without_the_cyclic_collector(database: Database) -> None:
    payment = a_payment()
    gc.disable()  # only reference counting frees it now: a reference cycle would keep it
    try:
        async with database.transaction() as tx:
            await tx.payments.add(payment)
            await tx.outbox.add(an_outbox_message(payment.id))
        freed = weakref.ref(tx)
        del tx
        async with database.snapshot() as tx:
            assert await tx.payments.get(payment.id) is not None
        read = weakref.ref(tx)
        del tx
        assert (freed(), read()) == (None, None)
    finally:
        gc.enable()
