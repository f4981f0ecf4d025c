"""Asking a provider about one of our payments or refunds whose outcome we do not know (a lost answer, a
process that stopped during the call, reconciliation): one way to ask, and one reading of the answer.

Each call answers what the provider said (its lookup), None when it has no record of the payment or refund
(so it was never created), or `Unanswered` when it said nothing usable now: it did not answer in time, it
refused the lookup, or it cannot look this up. A lost answer is settled by asking, never by guessing
(docs/reliability.md): callers record the lookup, treat "no record" as final only where that is safe, and
leave the rest to reconciliation's next attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pgm.domain.idempotency import provider_idempotency_key
from pgm.providers.base import (
    NotSupported,
    OutcomeUnknown,
    PaymentLookup,
    ProviderAdapter,
    ProviderRejected,
    RefundResult,
)


class PaymentAsked(Protocol):
    """What asking about a payment needs of our record of it."""

    @property
    def id(self) -> str: ...
    @property
    def provider_payment_id(self) -> str | None: ...
    @property
    def idempotency_key(self) -> str: ...
    @property
    def shop_transaction_id(self) -> str: ...


class RefundAsked(Protocol):
    """What asking about a refund needs of our record of it."""

    @property
    def provider_refund_id(self) -> str | None: ...
    @property
    def idempotency_key(self) -> str: ...


@dataclass(frozen=True)
class Unanswered:
    """The provider said nothing usable now; `reason` says why (for logs and the check's outcome)."""

    reason: str


async def ask_about_payment(adapter: ProviderAdapter, payment: PaymentAsked) -> PaymentLookup | Unanswered | None:
    """The provider's view of a payment: by its id once we know it, else by our idempotency key and the
    merchant reference (the creation's answer was lost)."""
    try:
        if payment.provider_payment_id:
            return await adapter.payment_status(payment.provider_payment_id)
        key = provider_idempotency_key(payment.idempotency_key)
        return await adapter.find_payment(key, payment.shop_transaction_id)
    except (OutcomeUnknown, ProviderRejected, NotSupported) as exc:
        return Unanswered(str(exc))


async def ask_about_refund(
    adapter: ProviderAdapter, payment: PaymentAsked, refund: RefundAsked
) -> RefundResult | Unanswered | None:
    """The provider's view of a refund of `payment`: by the refund's id once we know it, and by our
    idempotency key."""
    if not payment.provider_payment_id:
        return Unanswered(f"payment {payment.id} has no id at provider {adapter.name} yet")
    try:
        return await adapter.refund_status(
            payment.provider_payment_id, refund.provider_refund_id, provider_idempotency_key(refund.idempotency_key)
        )
    except (OutcomeUnknown, ProviderRejected, NotSupported) as exc:
        return Unanswered(str(exc))
