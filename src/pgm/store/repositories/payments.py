"""Payments, their refunds and their ledger: one aggregate, locked through its payment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import LedgerEntry, Payment, Refund
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

_P = Payment.TABLE.select
_R = Refund.TABLE.select
_PAYMENT_BY_KEY = Sql(f"{_P} WHERE idempotency_key = :key")
# A new payment unless its idempotency key is taken: the unique key decides, with no read before and no
# failed statement (which would abort a PostgreSQL transaction) when it is.
_PAYMENT_BY_PROVIDER_ID = Sql(f"{_P} WHERE provider = :provider AND provider_payment_id = :payment_id")
_LOCK_BY_PROVIDER_ID = Sql(f"{_PAYMENT_BY_PROVIDER_ID.text} FOR UPDATE")
_REFUND_BY_KEY = Sql(f"{_R} WHERE idempotency_key = :key")
_REFUND_NAMED = Sql(f"{_R} WHERE payment_id = :payment_id AND provider_refund_id = :refund_id")
_REFUND_OF_PROVIDER = Sql("""
    SELECT r.id FROM refunds r JOIN payments p ON p.id = r.payment_id
    WHERE p.provider = :provider AND r.provider_refund_id = :refund_id LIMIT 1
""")
_UNANSWERED_REFUND = Sql("""
    SELECT id FROM refunds
    WHERE payment_id = :payment_id AND provider_refund_id IS NULL AND status IN ('UNKNOWN', 'PENDING') LIMIT 1
""")
_AWAITING_ANSWER = Sql("""
    SELECT id FROM payments
    WHERE provider = :provider AND shop_transaction_id = :reference AND provider_payment_id IS NULL
      AND status = 'UNKNOWN' LIMIT 1
""")
_LATEST_REFUND_LIKE = Sql(f"{_R} WHERE idempotency_key LIKE :pattern ESCAPE '\\' ORDER BY created_at DESC LIMIT 1")
# A saga may hold a failed attempt beside the payment that went through: the paid one first, then the newest.
_SETTLED_OF_SAGA = Sql(f"""
    {_P} WHERE saga_id = :saga_id
    ORDER BY CASE WHEN status = 'ACCEPTED' THEN 0 ELSE 1 END, created_at DESC LIMIT 1
""")
_DUE_PAYMENTS = Sql("""
    SELECT id, next_check_at FROM payments
    WHERE status IN ('PENDING', 'UNKNOWN') AND next_check_at <= :now ORDER BY next_check_at LIMIT :limit
""")
_DUE_REFUNDS = Sql("""
    SELECT id, next_check_at FROM refunds
    WHERE status IN ('PENDING', 'UNKNOWN') AND next_check_at <= :now ORDER BY next_check_at LIMIT :limit
""")
_DUE_WATCHED = Sql("""
    SELECT id, next_check_at FROM payments
    WHERE status = 'ACCEPTED' AND next_check_at <= :now ORDER BY next_check_at LIMIT :limit
""")
_MOVE_PAYMENT_CHECK = Sql("UPDATE payments SET next_check_at = :until WHERE id = :id AND next_check_at = :expected")
_MOVE_REFUND_CHECK = Sql("UPDATE refunds SET next_check_at = :until WHERE id = :id AND next_check_at = :expected")
_REFUNDS_OF = Sql(f"{Refund.TABLE.select} WHERE payment_id = :payment_id ORDER BY created_at, id")
_REFUNDS_OF_MANY = Sql(f"{Refund.TABLE.select} WHERE payment_id = ANY(:ids) ORDER BY created_at, id")
_OF_SAGA = Sql(f"{Payment.TABLE.select} WHERE saga_id = :saga_id ORDER BY created_at")
_UNSETTLED_BY_PROVIDER = Sql(
    "SELECT provider, COUNT(*) FROM payments WHERE status IN ('PENDING', 'UNKNOWN') GROUP BY provider"
)
_UNSETTLED_REFUNDS_BY_PROVIDER = Sql("""
    SELECT p.provider, COUNT(*) FROM refunds r JOIN payments p ON r.payment_id = p.id
    WHERE r.status IN ('PENDING', 'UNKNOWN') GROUP BY p.provider
""")


class PaymentRepository:
    """Payments, refunds and ledger entries of one transaction (payments and refunds are tracked)."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def get(self, payment_id: str) -> Payment | None:
        return await self.tx.get(Payment, payment_id)

    async def lock(self, payment_id: str) -> Payment:
        """The payment, locked for the rest of the transaction and read fresh; raises RowNotFound."""
        return await self.tx.lock(Payment, payment_id)

    async def add(self, payment: Payment) -> Payment:
        """Insert a payment (tracked); DuplicateKey when its idempotency key or provider id is taken."""
        return await self.tx.insert(payment)

    async def add_unless_key_taken(self, payment: Payment) -> bool:
        """Insert a payment (tracked) unless a payment holds its idempotency key already: False then, and
        nothing is written. One statement where a lookup then an insert took two."""
        return await self.tx.insert_unless_taken(payment, "idempotency_key")

    async def by_key(self, idempotency_key: str) -> Payment | None:
        """The payment created under an idempotency key."""
        found = await self.tx.select(Payment, _PAYMENT_BY_KEY, {"key": idempotency_key})
        return found[0] if found else None

    async def lock_by_provider_id(self, provider: str, provider_payment_id: str) -> Payment | None:
        """Our record of a provider's payment, locked for the rest of the transaction and read fresh (as
        `lock` does), found and locked in one statement; None when there is none."""
        if self.tx.is_sqlite:
            # BEGIN IMMEDIATE holds the database's write lock: what this reads is current (see Transaction.lock).
            return await self.by_provider_id(provider, provider_payment_id)
        parameters = {"provider": provider, "payment_id": provider_payment_id}
        found = await self.tx.select(Payment, _LOCK_BY_PROVIDER_ID, parameters)
        return found[0] if found else None

    async def by_provider_id(self, provider: str, provider_payment_id: str) -> Payment | None:
        """Our record of a provider's payment."""
        parameters = {"provider": provider, "payment_id": provider_payment_id}
        found = await self.tx.select(Payment, _PAYMENT_BY_PROVIDER_ID, parameters)
        return found[0] if found else None

    async def awaiting_answer(self, provider: str, shop_transaction_id: str) -> bool:
        """Whether a payment for this merchant reference still waits for its provider's answer (UNKNOWN,
        no provider id yet)."""
        parameters = {"provider": provider, "reference": shop_transaction_id}
        return await self.tx.fetchrow(_AWAITING_ANSWER, parameters) is not None

    async def settled_of_saga(self, saga_id: str) -> Payment | None:
        """The saga's payment that refunds are of: the paid one, else the newest attempt."""
        found = await self.tx.select(Payment, _SETTLED_OF_SAGA, {"saga_id": saga_id})
        return found[0] if found else None

    async def refund(self, refund_id: str) -> Refund | None:
        return await self.tx.get(Refund, refund_id)

    async def fresh_refund(self, refund_id: str) -> Refund | None:
        """A refund read again (what committed while the caller waited for its payment's lock)."""
        return await self.tx.fresh(Refund, refund_id)

    async def add_refund(self, refund: Refund) -> Refund:
        """Insert a refund (tracked); DuplicateKey when its idempotency key is taken."""
        return await self.tx.insert(refund)

    async def refund_by_key(self, idempotency_key: str) -> Refund | None:
        """The refund created under an idempotency key."""
        found = await self.tx.select(Refund, _REFUND_BY_KEY, {"key": idempotency_key})
        return found[0] if found else None

    async def refund_named(self, payment_id: str, provider_refund_id: str) -> Refund | None:
        """A payment's refund by the provider's id for it, read fresh."""
        parameters = {"payment_id": payment_id, "refund_id": provider_refund_id}
        found = await self.tx.select(Refund, _REFUND_NAMED, parameters)
        return found[0] if found else None

    async def refund_of_provider(self, provider: str, provider_refund_id: str) -> tuple[Payment, Refund] | None:
        """A refund by the provider's id for it, with its payment."""
        refund_id = await self.tx.fetchval(_REFUND_OF_PROVIDER, {"provider": provider, "refund_id": provider_refund_id})
        return await self.refund_with_payment(refund_id) if refund_id is not None else None

    async def refund_with_payment(self, refund_id: str) -> tuple[Payment, Refund] | None:
        """A refund and its payment."""
        refund = await self.refund(refund_id)
        if refund is None:
            return None
        payment = await self.get(refund.payment_id)
        assert payment is not None  # a foreign key
        return payment, refund

    async def has_unanswered_refund(self, payment_id: str) -> bool:
        """Whether a refund of the payment still waits for the provider's id (UNKNOWN or PENDING)."""
        return await self.tx.fetchrow(_UNANSWERED_REFUND, {"payment_id": payment_id}) is not None

    async def latest_refund_with_key_prefix(self, prefix: str) -> Refund | None:
        """The newest refund whose idempotency key starts with `prefix`."""
        found = await self.tx.select(Refund, _LATEST_REFUND_LIKE, {"pattern": _like_prefix(prefix)})
        return found[0] if found else None

    async def refunds_of(self, payment_id: str) -> list[Refund]:
        """A payment's refunds in the order they were asked for."""
        return await self.tx.select(Refund, _REFUNDS_OF, {"payment_id": payment_id})

    async def refunds_of_many(self, payment_ids: list[str]) -> list[Refund]:
        """The refunds of several payments, in the order they were asked for."""
        if not payment_ids:
            return []
        return await self.tx.select(Refund, _REFUNDS_OF_MANY, {"ids": payment_ids})

    async def of_saga(self, saga_id: str) -> list[Payment]:
        """A saga's payments, oldest first."""
        return await self.tx.select(Payment, _OF_SAGA, {"saga_id": saga_id})

    async def record(self, entry: LedgerEntry) -> None:
        """Append to the ledger (written once, never changed; on PostgreSQL sent with the transaction's next
        statement: Transaction.insert_later)."""
        await self.tx.insert_later(entry)

    async def due_payments(self, now: float, limit: int) -> list[tuple[str, float]]:
        """(id, next_check_at) of unsettled payments whose next check is due, soonest first."""
        return [(row[0], row[1]) for row in await self.tx.fetch(_DUE_PAYMENTS, {"now": now, "limit": limit})]

    async def due_refunds(self, now: float, limit: int) -> list[tuple[str, float]]:
        """(id, next_check_at) of unsettled refunds whose next check is due, soonest first."""
        return [(row[0], row[1]) for row in await self.tx.fetch(_DUE_REFUNDS, {"now": now, "limit": limit})]

    async def due_watched(self, now: float, limit: int) -> list[tuple[str, float]]:
        """(id, next_check_at) of paid payments whose next look for refunds is due (the refund watch)."""
        return [(row[0], row[1]) for row in await self.tx.fetch(_DUE_WATCHED, {"now": now, "limit": limit})]

    async def move_check(self, refund: bool, row_id: str, expected: float, until: float) -> bool:
        """Compare-and-set a payment's (or refund's) next check; False when it no longer holds `expected`."""
        statement = _MOVE_REFUND_CHECK if refund else _MOVE_PAYMENT_CHECK
        return await self.tx.execute(statement, {"id": row_id, "expected": expected, "until": until}) == 1

    async def unsettled_by_provider(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Payments, then refunds, still PENDING or UNKNOWN, counted per provider."""
        payments = [(row[0], int(row[1])) for row in await self.tx.fetch(_UNSETTLED_BY_PROVIDER)]
        refunds = [(row[0], int(row[1])) for row in await self.tx.fetch(_UNSETTLED_REFUNDS_BY_PROVIDER)]
        return payments, refunds


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with `prefix` (its wildcards escaped)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
