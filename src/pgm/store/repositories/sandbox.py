"""The sandbox provider's own books (it is a provider: its tables are not the PGM's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from pgm.store.records import SandboxPayment, SandboxRefund, SandboxToken
from pgm.store.sql import Sql

if TYPE_CHECKING:
    from pgm.store.transaction import Transaction

R = TypeVar("R", SandboxPayment, SandboxRefund, SandboxToken)
_PAYMENT_BY_KEY = Sql(f"{SandboxPayment.TABLE.select} WHERE idempotency_key = :key")
# A payment unless its idempotency key is taken: the unique key decides, with no read before it.
_REFUND_BY_KEY = Sql(f"{SandboxRefund.TABLE.select} WHERE idempotency_key = :key")
_TOKEN_BY_KEY = Sql(f"{SandboxToken.TABLE.select} WHERE idempotency_key = :key")
_REFUNDS_OF = Sql(f"{SandboxRefund.TABLE.select} WHERE payment_id = ANY(:ids) ORDER BY created_at, id")
_PAYMENTS_BY_REFERENCE = Sql(
    f"{SandboxPayment.TABLE.select} WHERE shop_transaction_id = :reference ORDER BY created_at, id"
)
_LATEST_PAYMENTS = Sql(f"{SandboxPayment.TABLE.select} ORDER BY created_at DESC LIMIT :limit")


class SandboxRepository:
    """The sandbox's payments, refunds and tokens in one transaction (records are tracked)."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    async def add(self, record: R) -> R:
        """Insert a payment, refund or token (tracked: later changes are written back)."""
        return await self.tx.insert(record)

    async def payment(self, payment_id: str) -> SandboxPayment | None:
        return await self.tx.get(SandboxPayment, payment_id)

    async def refund(self, refund_id: str) -> SandboxRefund | None:
        return await self.tx.get(SandboxRefund, refund_id)

    async def token(self, token: str) -> SandboxToken | None:
        return await self.tx.get(SandboxToken, token)

    async def add_payment_unless_key_taken(self, payment: SandboxPayment) -> bool:
        """Insert a payment (tracked) unless a payment holds its idempotency key already: False then, and
        nothing is written. One statement where a lookup then an insert took two."""
        return await self.tx.insert_unless_taken(payment, "idempotency_key")

    async def payments_by_key(self, key: str) -> list[SandboxPayment]:
        """The payments created with an idempotency key (at most one: the key is unique)."""
        return await self.tx.select(SandboxPayment, _PAYMENT_BY_KEY, {"key": key})

    async def refunds_by_key(self, key: str) -> list[SandboxRefund]:
        """The refunds created with an idempotency key (at most one: the key is unique)."""
        return await self.tx.select(SandboxRefund, _REFUND_BY_KEY, {"key": key})

    async def tokens_by_key(self, key: str) -> list[SandboxToken]:
        """The tokens created with an idempotency key (at most one: the key is unique)."""
        return await self.tx.select(SandboxToken, _TOKEN_BY_KEY, {"key": key})

    async def refunds_of(self, payment_ids: list[str]) -> list[SandboxRefund]:
        """The refunds of some payments, in the order they were made."""
        if not payment_ids:
            return []
        return await self.tx.select(SandboxRefund, _REFUNDS_OF, {"ids": payment_ids})

    async def payments_by_reference(self, reference: str) -> list[SandboxPayment]:
        """The payments of a shop transaction id, oldest first."""
        return await self.tx.select(SandboxPayment, _PAYMENTS_BY_REFERENCE, {"reference": reference})

    async def latest_payments(self, limit: int) -> list[SandboxPayment]:
        """The newest payments first."""
        return await self.tx.select(SandboxPayment, _LATEST_PAYMENTS, {"limit": limit})
