"""Payments, their refunds and their ledger: one aggregate, locked through its payment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import LedgerEntry, Payment, Refund
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

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
        return await self.tx.insert(payment)

    async def refund(self, refund_id: str) -> Refund | None:
        return await self.tx.get(Refund, refund_id)

    async def add_refund(self, refund: Refund) -> Refund:
        return await self.tx.insert(refund)

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
        """Append to the ledger (written once, never changed)."""
        await self.tx.insert(entry, tracked=False)

    async def unsettled_by_provider(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Payments, then refunds, still PENDING or UNKNOWN, counted per provider."""
        payments = [(row[0], int(row[1])) for row in await self.tx.fetch(_UNSETTLED_BY_PROVIDER)]
        refunds = [(row[0], int(row[1])) for row in await self.tx.fetch(_UNSETTLED_REFUNDS_BY_PROVIDER)]
        return payments, refunds
