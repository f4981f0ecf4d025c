"""SQLite's group commit (store/database.py): the logical write transactions of one loop turn share one
BEGIN IMMEDIATE and one COMMIT, each in a SAVEPOINT of its own, and none of their callers goes on before
that COMMIT. On PostgreSQL every transaction commits by itself: the same blocks must give the same rows."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter

import pytest

from pgm.store import database as database_module
from pgm.store.database import Database
from pgm.store.records import LedgerEntry, Payment
from pgm.store.sql import Sql
from tests.store.test_transaction import a_payment, an_outbox_message

pytestmark = pytest.mark.anyio


class Refused(Exception):
    """A logical transaction's own failure, raised from its block."""


async def stored(database: Database, *payments: Payment) -> list[bool]:
    """Whether each payment is in the store, as another connection reads it."""
    async with database.snapshot() as tx:
        return [await tx.payments.get(payment.id) is not None for payment in payments]


async def add(database: Database, payment: Payment, fail: bool = False) -> None:
    async with database.transaction() as tx:
        await tx.payments.add(payment)
        if fail:
            raise Refused(payment.id)


def sqlite_only(database: Database) -> None:
    if not database.is_sqlite:
        pytest.skip("PostgreSQL commits each transaction by itself: no group commit")


async def test_a_failed_logical_transaction_is_rolled_back_alone(database: Database) -> None:
    first, failing, last = a_payment(), a_payment(), a_payment()
    outcomes = await asyncio.gather(
        add(database, first), add(database, failing, fail=True), add(database, last), return_exceptions=True
    )
    assert [type(outcome) for outcome in outcomes] == [type(None), Refused, type(None)]
    assert await stored(database, first, failing, last) == [True, False, True]
    if database.is_sqlite:
        assert database.group_commits == Counter({2: 1})  # the two that succeeded, in one COMMIT


async def test_the_first_of_a_batch_failing_leaves_the_others_to_commit(database: Database) -> None:
    failing, second, third = a_payment(), a_payment(), a_payment()
    outcomes = await asyncio.gather(
        add(database, failing, fail=True), add(database, second), add(database, third), return_exceptions=True
    )
    assert [type(outcome) for outcome in outcomes] == [Refused, type(None), type(None)]
    assert await stored(database, failing, second, third) == [False, True, True]
    if database.is_sqlite:
        assert database.group_commits == Counter({2: 1})


async def test_a_failed_commit_fails_every_logical_transaction_of_its_batch(database: Database) -> None:
    sqlite_only(database)
    innocent, guilty = a_payment(), a_payment()

    async def break_a_deferred_constraint() -> None:
        async with database.transaction() as tx:
            await tx.payments.add(guilty)
            # Checked at COMMIT only: a ledger entry of a payment that does not exist.
            await tx.execute(Sql("PRAGMA defer_foreign_keys = ON"))
            orphan = LedgerEntry(
                payment_id="pay_nowhere", operation="PAYMENT", status="ACCEPTED", amount=1, source="t", created_at=1
            )
            await tx.payments.record(orphan)

    outcomes = await asyncio.gather(add(database, innocent), break_a_deferred_constraint(), return_exceptions=True)
    assert all(isinstance(outcome, sqlite3.IntegrityError) for outcome in outcomes), outcomes
    assert await stored(database, innocent, guilty) == [False, False]
    # The writer goes on: the next transaction commits.
    after = a_payment()
    await add(database, after)
    assert await stored(database, after) == [True]


async def test_a_caller_goes_on_only_once_its_writes_are_committed(database: Database) -> None:
    payments = [a_payment() for _ in range(3)]
    seen_at_return: list[bool] = []

    async def add_then_look(payment: Payment) -> None:
        await add(database, payment)
        seen_at_return.append(*await stored(database, payment))  # from a connection of its own

    await asyncio.gather(*(add_then_look(payment) for payment in payments))
    assert seen_at_return == [True, True, True]


async def test_readers_never_see_a_batch_before_its_commit(database: Database) -> None:
    sqlite_only(database)
    earlier, later = a_payment(), a_payment()
    seen_inside: list[list[bool]] = []

    async def add_and_look() -> None:
        async with database.transaction() as tx:
            await tx.payments.add(later)
            # `earlier`'s block has ended, but its batch (this one) has not committed yet.
            seen_inside.append(await stored(database, earlier, later))
            assert await tx.payments.get(earlier.id) is not None  # the batch's own connection sees it

    await asyncio.gather(add(database, earlier), add_and_look())
    assert seen_inside == [[False, False]]
    assert await stored(database, earlier, later) == [True, True]
    assert database.group_commits == Counter({2: 1})


async def test_single_statements_join_the_batch(database: Database) -> None:
    payment, key, refused_key = a_payment(), f"saga-{a_payment().id}", f"saga-{a_payment().id}"

    async def one_statement() -> None:
        async with database.single_statement() as tx:
            await tx.outbox.add(an_outbox_message(key))

    async def two_statements() -> None:
        async with database.single_statement() as tx:
            await tx.outbox.add(an_outbox_message(refused_key))
            await tx.outbox.add(an_outbox_message(refused_key))

    outcomes = await asyncio.gather(add(database, payment), one_statement(), two_statements(), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [type(None), type(None), RuntimeError]
    count = Sql("SELECT COUNT(*) FROM outbox WHERE ordering_key = :k")
    async with database.snapshot() as tx:
        assert await tx.fetchval(count, {"k": key}) == 1
        # The refused block's first statement stands, as it does alone (test_transaction.py), in a batch too.
        assert await tx.fetchval(count, {"k": refused_key}) == 1
    assert await stored(database, payment) == [True]
    if database.is_sqlite:
        assert database.group_commits == Counter({2: 1})


async def test_a_batch_is_bounded(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite_only(database)
    monkeypatch.setattr(database_module, "SQLITE_GROUP_COMMIT_MAX", 4)
    payments = [a_payment() for _ in range(10)]
    await asyncio.gather(*(add(database, payment) for payment in payments))
    assert await stored(database, *payments) == [True] * 10
    assert database.group_commits == Counter({4: 2, 2: 1})


async def test_outbox_hooks_run_after_the_commit(database: Database) -> None:
    key = f"saga-{a_payment().id}"
    seen_by_hook: list[int] = []
    count = Sql("SELECT COUNT(*) FROM outbox WHERE ordering_key = :k")

    def hook() -> None:
        # A hook cannot await: it reads with a connection of its own, as the dispatcher it wakes would.
        if database.is_sqlite:
            reader = sqlite3.connect(database_module.sqlite_path(database.url))
            (written,) = reader.execute("SELECT COUNT(*) FROM outbox WHERE ordering_key = ?", (key,)).fetchone()
            seen_by_hook.append(written)
            reader.close()
        else:
            seen_by_hook.append(1)

    database.on_outbox_commit(hook)

    async def write() -> None:
        async with database.transaction() as tx:
            await tx.outbox.add(an_outbox_message(key))

    await asyncio.gather(write(), write())
    assert seen_by_hook == ([2, 2] if database.is_sqlite else [1, 1])
    async with database.snapshot() as tx:
        assert await tx.fetchval(count, {"k": key}) == 2


async def test_a_caller_cancelled_while_waiting_for_the_commit_leaves_the_batch_whole(database: Database) -> None:
    sqlite_only(database)
    cancelled, other = a_payment(), a_payment()
    task = asyncio.create_task(add(database, cancelled))
    await asyncio.sleep(0)  # its block has run and it waits for the COMMIT, scheduled for the next turn
    task.cancel()
    await add(database, other)
    with pytest.raises(asyncio.CancelledError):
        await task
    # Its writes were in the batch when it was cancelled: committed with it, like writes whose COMMIT
    # returned just before a cancellation.
    assert await stored(database, cancelled, other) == [True, True]
