"""The repositories' queries behind the payment service, callbacks, reconciliation and the saga inbox, on
SQLite and PostgreSQL: each answers from the rows it is meant to, and a broken unique constraint is the
same DuplicateKey on both drivers."""

from __future__ import annotations

import uuid

import pytest

from pgm.store.database import Database
from pgm.store.records import InboxCommand, Payment, ProviderCallback, ProviderEvent, Refund
from pgm.store.transaction import DuplicateKey

pytestmark = pytest.mark.anyio


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def a_payment(**changes: object) -> Payment:
    payment = Payment(
        id=unique("pay"),
        provider="sandbox",
        payment_method="credit-cards",
        kind="PAYMENT",
        status="ACCEPTED",
        amount=1000,
        currency="EUR",
        shop_transaction_id=unique("order"),
        idempotency_key=unique("key"),
        created_at=1000.0,
        updated_at=1000.0,
    )
    for name, value in changes.items():
        setattr(payment, name, value)
    return payment


def a_refund(payment: Payment, **changes: object) -> Refund:
    refund = Refund(
        id=unique("ref"),
        payment_id=payment.id,
        amount=100,
        status="ACCEPTED",
        idempotency_key=unique("refkey"),
        created_at=1000.0,
        updated_at=1000.0,
    )
    for name, value in changes.items():
        setattr(refund, name, value)
    return refund


async def test_payments_by_key_and_by_provider_id(database: Database) -> None:
    payment = a_payment(provider_payment_id=unique("sbx"))
    async with database.transaction() as tx:
        await tx.payments.add(payment)
    async with database.snapshot() as tx:
        by_key = await tx.payments.by_key(payment.idempotency_key)
        by_id = await tx.payments.by_provider_id("sandbox", payment.provider_payment_id or "")
        assert by_key is not None
        assert by_id is not None
        assert (by_key.id, by_id.id) == (payment.id, payment.id)
        assert await tx.payments.by_provider_id("stripe", payment.provider_payment_id or "") is None
        assert await tx.payments.by_key("no-such-key") is None


async def test_a_second_payment_under_the_same_key_is_a_duplicate_key_and_leaves_nothing(database: Database) -> None:
    first = a_payment()
    async with database.transaction() as tx:
        await tx.payments.add(first)
    second = a_payment(idempotency_key=first.idempotency_key)
    with pytest.raises(DuplicateKey):
        async with database.transaction() as tx:
            await tx.payments.add(second)
    async with database.snapshot() as tx:
        assert await tx.payments.get(second.id) is None
    # The connection is usable again after the rollback.
    async with database.transaction() as tx:
        await tx.payments.add(a_payment())


async def test_a_payment_whose_key_is_taken_is_not_inserted_and_the_transaction_goes_on(database: Database) -> None:
    first = a_payment()
    async with database.transaction() as tx:
        assert await tx.payments.add_unless_key_taken(first)
        first.status = "PENDING"  # tracked like an inserted payment: written back at commit
    second = a_payment(idempotency_key=first.idempotency_key)
    async with database.transaction() as tx:
        assert not await tx.payments.add_unless_key_taken(second)
        # No failed statement: the transaction reads on (PostgreSQL would refuse after a unique violation).
        found = await tx.payments.by_key(first.idempotency_key)
        assert found is not None
        assert (found.id, found.status) == (first.id, "PENDING")
    async with database.snapshot() as tx:
        assert await tx.payments.get(second.id) is None


async def test_a_payments_callback_finds_it_locked_by_provider_id(database: Database) -> None:
    payment = a_payment(provider_payment_id=unique("sbx"))
    async with database.transaction() as tx:
        await tx.payments.add(payment)
    async with database.transaction() as tx:
        locked = await tx.payments.lock_by_provider_id("sandbox", payment.provider_payment_id or "")
        assert locked is not None
        assert locked.id == payment.id
        locked.status = "FAILED"
        assert await tx.payments.lock_by_provider_id("stripe", payment.provider_payment_id or "") is None
    async with database.snapshot() as tx:
        stored = await tx.payments.get(payment.id)
        assert stored is not None
        assert stored.status == "FAILED"


async def test_refund_lookups(database: Database) -> None:
    payment = a_payment()
    base = f"saga:{uuid.uuid4().hex}_x:refund:0"
    named = a_refund(payment, provider_refund_id=unique("re"), idempotency_key=f"{base}:1", created_at=1000.0)
    later = a_refund(payment, idempotency_key=f"{base}:2", status="FAILED", created_at=1001.0)
    # `_` is a LIKE wildcard: a newer key that differs only there is not a match.
    lookalike = a_refund(payment, idempotency_key=f"{base.replace('_x', 'Yx')}:9", created_at=1002.0)
    async with database.transaction() as tx:
        await tx.payments.add(payment)
        for refund in (named, later, lookalike):
            await tx.payments.add_refund(refund)
    async with database.snapshot() as tx:
        found = await tx.payments.refund_of_provider("sandbox", named.provider_refund_id or "")
        assert found is not None
        assert (found[0].id, found[1].id) == (payment.id, named.id)
        assert await tx.payments.refund_of_provider("adyen", named.provider_refund_id or "") is None
        assert (await tx.payments.refund_named(payment.id, named.provider_refund_id or "")) is not None
        by_key = await tx.payments.refund_by_key(later.idempotency_key)
        assert by_key is not None
        assert by_key.id == later.id
        latest = await tx.payments.latest_refund_with_key_prefix(f"{base}:")
        assert latest is not None
        assert latest.id == later.id
        assert not await tx.payments.has_unanswered_refund(payment.id)
        assert [r.id for r in await tx.payments.refunds_of(payment.id)] == [named.id, later.id, lookalike.id]
    waiting = a_refund(payment, status="UNKNOWN")
    async with database.transaction() as tx:
        await tx.payments.add_refund(waiting)
        assert await tx.payments.has_unanswered_refund(payment.id)


async def test_a_refund_read_fresh_sees_what_another_transaction_committed(database: Database) -> None:
    payment = a_payment()
    refund = a_refund(payment, status="PENDING")
    async with database.transaction() as tx:
        await tx.payments.add(payment)
        await tx.payments.add_refund(refund)
    async with database.snapshot() as reader:
        held = await reader.payments.refund(refund.id)
        assert held is not None
        assert held.status == "PENDING"
    async with database.transaction() as tx:
        changed = await tx.payments.refund(refund.id)
        assert changed is not None
        changed.status = "ACCEPTED"
    async with database.transaction() as tx:
        await tx.payments.lock(payment.id)
        fresh = await tx.payments.fresh_refund(refund.id)
        assert fresh is not None
        assert fresh.status == "ACCEPTED"


async def test_the_saga_payment_refunds_are_of_is_the_paid_one(database: Database) -> None:
    saga = uuid.uuid4().hex
    paid = a_payment(saga_id=saga, status="ACCEPTED", created_at=1000.0)
    retried = a_payment(saga_id=saga, status="FAILED", created_at=2000.0)
    async with database.transaction() as tx:
        await tx.payments.add(paid)
        await tx.payments.add(retried)
    async with database.snapshot() as tx:
        chosen = await tx.payments.settled_of_saga(saga)
        assert chosen is not None
        assert chosen.id == paid.id
        assert await tx.payments.settled_of_saga("no-such-saga") is None


async def test_a_payment_waiting_for_its_answer_blocks_adoption_for_its_reference(database: Database) -> None:
    waiting = a_payment(status="UNKNOWN")
    async with database.transaction() as tx:
        await tx.payments.add(waiting)
        assert await tx.payments.awaiting_answer("sandbox", waiting.shop_transaction_id)
        assert not await tx.payments.awaiting_answer("stripe", waiting.shop_transaction_id)
        waiting.provider_payment_id = unique("sbx")
        assert not await tx.payments.awaiting_answer("sandbox", waiting.shop_transaction_id)


async def test_due_checks_and_their_compare_and_set_claim(database: Database) -> None:
    now = 5_000_000.0 + uuid.uuid4().int % 1000
    due = a_payment(status="PENDING", next_check_at=now - 1)
    later = a_payment(status="PENDING", next_check_at=now + 60)
    watched = a_payment(status="ACCEPTED", next_check_at=now - 2)
    refund = a_refund(due, status="UNKNOWN", next_check_at=now - 3)
    async with database.transaction() as tx:
        for payment in (due, later, watched):
            await tx.payments.add(payment)
        await tx.payments.add_refund(refund)
    async with database.transaction() as tx:
        assert (due.id, now - 1) in await tx.payments.due_payments(now, 1000)
        assert later.id not in {row_id for row_id, _ in await tx.payments.due_payments(now, 1000)}
        assert (watched.id, now - 2) in await tx.payments.due_watched(now, 1000)
        assert (refund.id, now - 3) in await tx.payments.due_refunds(now, 1000)
        assert await tx.payments.move_check(False, due.id, now - 1, now + 5)
        assert not await tx.payments.move_check(False, due.id, now - 1, now + 6)  # claimed already
        assert await tx.payments.move_check(True, refund.id, now - 3, now + 5)
    async with database.snapshot() as tx:
        stored = await tx.payments.get(due.id)
        assert stored is not None
        assert stored.next_check_at == now + 5


async def test_provider_events_seen_deferred_due_and_pruned(database: Database) -> None:
    provider = unique("prov")
    subject = unique("sbx")
    async with database.transaction() as tx:
        old = await tx.callbacks.add(ProviderCallback(provider, "POST", "/cb", b"{}", "ACCEPTED", 100.0))
        kept = await tx.callbacks.add(ProviderCallback(provider, "POST", "/cb", b"{}", "ACCEPTED", 100.0))
        recent = await tx.callbacks.add(ProviderCallback(provider, "POST", "/cb", b"{}", "ACCEPTED", 9000.0))
        done = ProviderEvent(provider, "evt-1", old.id, {"n": 1}, "PROCESSED", 100.0, subject_id=subject)
        waiting = ProviderEvent(provider, "evt-2", kept.id, {"n": 2}, "DEFERRED", 100.0, subject_id=subject)
        waiting.next_attempt_at = 150.0
        await tx.callbacks.add_event(done)
        await tx.callbacks.add_event(waiting)
    with pytest.raises(DuplicateKey):
        async with database.transaction() as tx:
            await tx.callbacks.add_event(ProviderEvent(provider, "evt-1", recent.id, {}, "DEFERRED", 9000.0))
    async with database.transaction() as tx:
        assert await tx.callbacks.seen(provider, "evt-1")
        assert not await tx.callbacks.seen(provider, "evt-3")
        assert await tx.callbacks.deferred_of(provider, subject) == [waiting.id]
        assert (provider, waiting.id) in await tx.callbacks.due_deferred(200.0, 1000)
        assert (provider, waiting.id) not in await tx.callbacks.due_deferred(120.0, 1000)
        assert await tx.callbacks.prune(cutoff=200.0, limit=100000) >= 1
    async with database.snapshot() as tx:
        assert await tx.callbacks.get(old.id) is None  # pruned with its event
        assert await tx.callbacks.event(done.id) is None
        assert await tx.callbacks.get(kept.id) is not None  # its notification still waits
        assert await tx.callbacks.get(recent.id) is not None  # too recent


async def test_inbox_claim_renew_and_close(database: Database) -> None:
    now = 1000.0
    command = InboxCommand(unique("delivery"), unique("saga"), "pay", "payRequested", {"a": 1}, "PENDING", now, now)
    async with database.transaction() as tx:
        await tx.inbox.add(command, tracked=False)
        assert (command.id, None) in await tx.inbox.runnable(now, 1000)
        assert await tx.inbox.claim(command.id, None, now + 30)
        assert not await tx.inbox.claim(command.id, None, now + 30)  # leased already
        assert command.id not in {row_id for row_id, _ in await tx.inbox.runnable(now, 1000)}
        assert (command.id, now + 30) in await tx.inbox.runnable(now + 31, 1000)  # its lease ran out
        assert await tx.inbox.renew(command.id, now + 30, now + 60)
        assert not await tx.inbox.renew(command.id, now + 30, now + 90)  # not the lease it holds
        await tx.inbox.done(command.id, "saga:op:1", "ACCEPTED: paid", now + 2)
        assert not await tx.inbox.renew(command.id, now + 60, now + 90)  # done: nothing to renew
    async with database.snapshot() as tx:
        stored = await tx.inbox.get(command.id)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.operation_key, stored.result) == (
            "DONE",
            1,
            "saga:op:1",
            "ACCEPTED: paid",
        )


async def test_the_operators_listings_filter_by_what_is_given(database: Database) -> None:
    provider = unique("prov")
    saga = unique("saga")
    paid = a_payment(provider=provider, saga_id=saga, created_at=1000.0)
    waiting = a_payment(provider=provider, status="PENDING", created_at=2000.0)
    async with database.transaction() as tx:
        await tx.payments.add(paid)
        await tx.payments.add(waiting)
    async with database.snapshot() as tx:
        operations = tx.operations
        assert await operations.has_schema()
        assert [p.id for p in await operations.payments(None, provider, None, 10)] == [waiting.id, paid.id]
        assert [p.id for p in await operations.payments("ACCEPTED", provider, None, 10)] == [paid.id]
        assert [p.id for p in await operations.payments(None, None, saga, 10)] == [paid.id]
        assert [p.id for p in await operations.payments(None, provider, None, 1)] == [waiting.id]
        assert [p.id for p in await operations.payments_named(saga)] == [paid.id]
        assert [p.id for p in await operations.payments_named(waiting.shop_transaction_id)] == [waiting.id]


async def test_the_operator_makes_every_check_due_now(database: Database) -> None:
    waiting = a_payment(status="UNKNOWN", next_check_at=9e9)
    watched = a_payment(status="ACCEPTED", next_check_at=9e9)
    done = a_payment(status="ACCEPTED")
    refund = a_refund(done, status="PENDING", next_check_at=9e9)
    async with database.transaction() as tx:
        for payment in (waiting, watched, done):
            await tx.payments.add(payment)
        await tx.payments.add_refund(refund)
    async with database.transaction() as tx:
        targets = {(is_refund, row_id) for is_refund, row_id, _, _ in await tx.operations.check_targets()}
        assert {(False, waiting.id), (False, watched.id), (True, refund.id)} <= targets
        assert (False, done.id) not in targets
        await tx.operations.make_checks_due(123.0)
    async with database.snapshot() as tx:
        for payment in (waiting, watched):
            stored = await tx.payments.get(payment.id)
            assert stored is not None
            assert stored.next_check_at == 123.0
        stored_refund = await tx.payments.refund(refund.id)
        assert stored_refund is not None
        assert stored_refund.next_check_at == 123.0
