"""What the operator's commands read and change (operator_cli.py): listings across the aggregates, and the
same changes the running PGM makes itself (a dead letter put back in line, a check made due now)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgm.store.records import LedgerEntry, OutboxMessage, Payment, ProviderEvent
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

_SQLITE_HAS_PAYMENTS = Sql("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'payments'")
_POSTGRES_HAS_PAYMENTS = Sql(
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'payments'"
)
# A filter left None matches everything (typed, so that PostgreSQL knows the parameter's type).
_PAYMENTS = Sql(f"""
    {Payment.TABLE.select}
    WHERE (CAST(:status AS TEXT) IS NULL OR status = :status)
      AND (CAST(:provider AS TEXT) IS NULL OR provider = :provider)
      AND (CAST(:saga_id AS TEXT) IS NULL OR saga_id = :saga_id)
    ORDER BY created_at DESC LIMIT :limit
""")
_PAYMENTS_NAMED = Sql(f"""
    {Payment.TABLE.select}
    WHERE id = :reference OR provider_payment_id = :reference OR shop_transaction_id = :reference
       OR saga_id = :reference
    ORDER BY created_at
""")
_LEDGER = Sql(f"{LedgerEntry.TABLE.select} WHERE payment_id = :payment_id ORDER BY id")
_EVENTS_ABOUT = Sql(f"{ProviderEvent.TABLE.select} WHERE subject_id = ANY(:subjects) ORDER BY id")
_MESSAGES_OF_KEY = Sql(f"{OutboxMessage.TABLE.select} WHERE ordering_key = :key ORDER BY id")
_MESSAGES = Sql(f"""
    {OutboxMessage.TABLE.select}
    WHERE status = :status AND (CAST(:destination AS TEXT) IS NULL OR destination = :destination)
    ORDER BY id LIMIT :limit
""")
_DEAD = Sql("SELECT id FROM outbox WHERE status = 'DEAD' ORDER BY id")
_DEAD_AMONG = Sql("SELECT id FROM outbox WHERE status = 'DEAD' AND id = ANY(:ids) ORDER BY id")
# Unsettled payments and refunds, and paid payments under the refund watch (a next check set).
_PAYMENT_TARGETS = Sql("""
    SELECT id, check_attempts, status FROM payments
    WHERE status IN ('PENDING', 'UNKNOWN') OR (status = 'ACCEPTED' AND next_check_at IS NOT NULL)
""")
_REFUND_TARGETS = Sql("SELECT id, check_attempts, status FROM refunds WHERE status IN ('PENDING', 'UNKNOWN')")
_PAYMENTS_DUE = Sql("""
    UPDATE payments SET next_check_at = :now
    WHERE status IN ('PENDING', 'UNKNOWN') OR (status = 'ACCEPTED' AND next_check_at IS NOT NULL)
""")
_REFUNDS_DUE = Sql("UPDATE refunds SET next_check_at = :now WHERE status IN ('PENDING', 'UNKNOWN')")


class OperationsRepository:
    """The operator's reads and changes, in one transaction."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def has_schema(self) -> bool:
        """Whether the PGM's tables are there (the PGM has run on this database)."""
        return bool(await self.tx.fetchval(_SQLITE_HAS_PAYMENTS if self.tx.is_sqlite else _POSTGRES_HAS_PAYMENTS))

    async def payments(
        self, status: str | None, provider: str | None, saga_id: str | None, limit: int
    ) -> list[Payment]:
        """The newest payments first, filtered by what is given."""
        parameters = {"status": status, "provider": provider, "saga_id": saga_id, "limit": limit}
        return await self.tx.select(Payment, _PAYMENTS, parameters)

    async def payments_named(self, reference: str) -> list[Payment]:
        """The payments a reference names: the PGM's id, the provider's, the merchant's or the saga's."""
        return await self.tx.select(Payment, _PAYMENTS_NAMED, {"reference": reference})

    async def ledger(self, payment_id: str) -> list[LedgerEntry]:
        """A payment's ledger, oldest first."""
        return await self.tx.select(LedgerEntry, _LEDGER, {"payment_id": payment_id})

    async def events_about(self, subjects: list[str]) -> list[ProviderEvent]:
        """The provider notifications about these payments or refunds (the provider's ids or ours)."""
        return await self.tx.select(ProviderEvent, _EVENTS_ABOUT, {"subjects": subjects})

    async def messages_of_key(self, ordering_key: str) -> list[OutboxMessage]:
        """The outbox messages of one ordering key (a payment's PaymentStatus notifications)."""
        return await self.tx.select(OutboxMessage, _MESSAGES_OF_KEY, {"key": ordering_key})

    async def messages(self, status: str, destination: str | None, limit: int) -> list[OutboxMessage]:
        """Outbox messages of one status (and destination, when given), oldest first."""
        parameters = {"status": status, "destination": destination, "limit": limit}
        return await self.tx.select(OutboxMessage, _MESSAGES, parameters)

    async def dead_letters(self, among: list[int] | None = None) -> list[int]:
        """The ids of the dead letters (only those `among`, when given)."""
        if among is None:
            rows = await self.tx.fetch(_DEAD)
        else:
            rows = await self.tx.fetch(_DEAD_AMONG, {"ids": among})
        return [int(row[0]) for row in rows]

    async def check_targets(self) -> list[tuple[bool, str, int, str]]:
        """(is a refund, id, checks so far, status) of everything reconciliation looks at: unsettled
        payments and refunds, and paid payments under the refund watch."""
        payments = [(False, row[0], int(row[1]), row[2]) for row in await self.tx.fetch(_PAYMENT_TARGETS)]
        refunds = [(True, row[0], int(row[1]), row[2]) for row in await self.tx.fetch(_REFUND_TARGETS)]
        return payments + refunds

    async def make_checks_due(self, now: float) -> None:
        """Make every check of `check_targets` due now."""
        await self.tx.execute(_PAYMENTS_DUE, {"now": now})
        await self.tx.execute(_REFUNDS_DUE, {"now": now})
