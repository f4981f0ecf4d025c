"""Adopting payments the store has never seen (docs/reliability.md#adopting-payments-made-before-the-switch).

A team switching from another PGM has payments that exist only at the provider. When a refund, a
status, a check or a provider callback names one, the PGM looks it up at the provider and records it
(amount, currency, status, what is already refunded where the provider says), and from then on it is an
ordinary payment: refund arithmetic, locks, ledger and events all hold.

Adoption is race-safe: the row is keyed by a deterministic idempotency key and by the provider's id
(both unique), so two first requests at the same moment adopt once; the loser reads the winner's row.
A payment is never adopted while one of ours for the same merchant reference still waits for the
provider's answer: the unknown id may be that one, and its answer will say so.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from pgm.clock import Clock
from pgm.domain.statuses import PaymentKind, Status
from pgm.providers.base import (
    Notification,
    NotSupported,
    Operation,
    PaymentLookup,
    ProviderAdapter,
    RefundRequest,
)
from pgm.services.settlement import Settlement, Source
from pgm.store.database import Database
from pgm.store.ids import new_id
from pgm.store.records import Payment, Refund
from pgm.store.transaction import DuplicateKey, Transaction

log = logging.getLogger(__name__)

# provider_metadata flags of an adopted payment.
ADOPTED = "adopted"
# The provider could not tell the amount: the recorded amount is what is known to have been paid at
# least (what was refunded through us), and the provider's answer to each refund decides.
AMOUNT_UNVERIFIED = "amountUnverified"


class AdoptionRefused(Exception):
    """The payment cannot be adopted now; the message says why."""


@dataclass(frozen=True)
class Facts:
    """What is known about a payment to adopt, from a lookup, a signed notification or a refund."""

    status: Status
    amount: int | None
    currency: str | None
    shop_transaction_id: str | None
    refunded: int | None = None
    # The succeeded refunds by the provider's id, where it lists them (part or all of `refunded`).
    refunds: tuple[tuple[str, int], ...] = ()
    payment_method: str | None = None
    subscription_token: str | None = None
    source: str = "a lookup at the provider"


def adoption_key(provider: str, provider_payment_id: str) -> str:
    """The adopted row's idempotency key: the same for every request adopting the same payment."""
    digest = hashlib.sha256(f"{provider}\0{provider_payment_id}".encode()).hexdigest()
    return f"adopted:{digest}"


def outside_refund_key(provider: str, provider_refund_id: str) -> str:
    """The idempotency key of a refund made at the provider, not through the PGM: the same for every
    path that records it (a notification, a listing, an adopted payment's refunds)."""
    return f"provider:{provider}:{provider_refund_id}"


def facts_of_lookup(lookup: PaymentLookup) -> Facts:
    """What a provider's lookup says."""
    return Facts(
        status=lookup.status,
        amount=lookup.amount,
        currency=lookup.currency,
        shop_transaction_id=lookup.shop_transaction_id,
        refunded=lookup.refunded_amount,
        refunds=lookup.refunds,
        payment_method=lookup.payment_method,
        subscription_token=lookup.subscription_token,
    )


def facts_of_notification(notification: Notification) -> Facts | None:
    """What a verified notification says, when it carries the amount (Adyen's do)."""
    if notification.status is None or notification.amount is None:
        return None
    return Facts(
        status=notification.status,
        amount=notification.amount,
        currency=notification.currency,
        shop_transaction_id=notification.shop_transaction_id,
        source="the provider's signed notification",
    )


def facts_of_refund(request: RefundRequest) -> Facts:
    """A provider that cannot look payments up: the refund itself is all there is to go on."""
    return Facts(
        status=Status.ACCEPTED,
        amount=None,
        currency=request.currency,
        shop_transaction_id=None,
        source="a refund (the provider cannot look payments up, so its answer to the refund decides)",
    )


class Adoption:
    """Looks payments up at the provider and records them as if the PGM had made them."""

    def __init__(self, database: Database, settlement: Settlement, clock: Clock) -> None:
        self.database = database
        self.settlement = settlement
        self.clock = clock

    async def look_up(self, adapter: ProviderAdapter, provider_payment_id: str) -> PaymentLookup | None:
        """The provider's lookup; None when the provider cannot look payments up. ProviderRejected
        (no such payment) and OutcomeUnknown (no answer) are the caller's to translate."""
        if Operation.STATUS not in adapter.capabilities.operations:
            return None
        try:
            return await adapter.payment_details(provider_payment_id)
        except NotSupported:
            return None

    async def adopt(
        self, adapter: ProviderAdapter, provider_payment_id: str, facts: Facts, announce: bool = False
    ) -> Payment:
        """Record the payment (or return the row that already holds it).

        `announce`: the payment enters as UNKNOWN and moves to what the provider reports in the same
        transaction, through the usual path, so PAYMENT_CALLBACK_URL and the saga hear of it (a callback
        the previous PGM never saw). Otherwise it enters as the provider reports it, silently: the
        previous PGM already told them. Either way no one ever reads it half-adopted."""
        now = self.clock.now()
        unverified = facts.amount is None
        status = Status.UNKNOWN if announce else facts.status
        refunded = facts.refunded or 0
        payment = Payment(
            id=new_id("pay"),
            provider=adapter.name,
            payment_method=facts.payment_method or _payment_method(adapter),
            kind=PaymentKind.PAYMENT.value,
            status=status.value,
            amount=facts.amount if facts.amount is not None else refunded,
            currency=facts.currency or _currency(adapter),
            shop_transaction_id=facts.shop_transaction_id or "",
            provider_payment_id=provider_payment_id,
            idempotency_key=adoption_key(adapter.name, provider_payment_id),
            subscription_token=facts.subscription_token,
            saga_context={},
            provider_metadata={ADOPTED: True, **({AMOUNT_UNVERIFIED: True} if unverified else {})},
            description=f"adopted from {facts.source}",
            created_at=now,
            updated_at=now,
            # A payment still open at the provider is followed by reconciliation like one of ours.
            next_check_at=None if status.is_final else now + self.settlement.policy.first_after_seconds,
            check_attempts=0,
        )
        try:
            async with self.database.transaction() as tx:
                existing = await tx.payments.by_provider_id(adapter.name, provider_payment_id)
                if existing is not None:
                    return existing
                if facts.shop_transaction_id and await tx.payments.awaiting_answer(
                    adapter.name, facts.shop_transaction_id
                ):
                    raise AdoptionRefused(
                        f"payment {provider_payment_id} may be one the PGM is making right now for "
                        f"{facts.shop_transaction_id}: its provider's answer is not known yet"
                    )
                await tx.payments.add(payment)
                await self.settlement.record(tx, payment, status, Source.ADOPTION, f"adopted from {facts.source}")
                await self._record_refunds(tx, adapter.name, payment, facts, refunded, now)
                if announce:
                    await self.settlement.payment_status(
                        tx, payment, facts.status, Source.ADOPTION, f"adopted from {facts.source}"
                    )
        except DuplicateKey:
            # Another request adopted it at the same moment: its row is the one.
            async with self.database.snapshot() as tx:
                existing = await tx.payments.by_provider_id(adapter.name, provider_payment_id)
            if existing is None:
                raise
            return existing
        log.info(
            "payment adopted",
            extra={"provider": adapter.name, "paymentId": provider_payment_id, "status": facts.status.value},
        )
        return payment

    async def adopt_refund(
        self, tx: Transaction, payment: Payment, refund_id: str, amount: int, source: Source
    ) -> tuple[Refund, bool] | None:
        """A refund of one of our payments that the PGM did not ask for (made in the provider's dashboard
        or API, found in a notification or a listing) becomes one of the payment's refunds, so the refund
        arithmetic, the notifications and the payment's saga follow the money. Call with the payment
        locked; the refund enters UNKNOWN and `refund_started` is told, so the caller applies its status.

        Returns the refund row that holds it and whether it is new: the one already recorded under its id
        (the PGM's own answer may have named it while the caller waited for the lock), or the new one. None while a
        refund of ours on that payment still waits for the provider's id: the provider's refund may be
        that one (a notification can beat the answer), so it waits and is matched once the answer names it.
        Race-safe: the key is deterministic, so a second adoption of the same refund fails on it."""
        # Read fresh: PostgreSQL shows what committed while the caller waited for the lock.
        named = await tx.payments.refund_named(payment.id, refund_id)
        if named is not None:
            return named, False
        if await tx.payments.has_unanswered_refund(payment.id):
            return None
        now = self.clock.now()
        refund = Refund(
            id=new_id("ref"),
            payment_id=payment.id,
            amount=amount,
            status=Status.UNKNOWN.value,
            provider_refund_id=refund_id,
            idempotency_key=outside_refund_key(payment.provider, refund_id),
            saga_id=None,
            created_at=now,
            updated_at=now,
            next_check_at=None,
            check_attempts=0,
        )
        await tx.payments.add_refund(refund)
        note = "refund made at the provider, not through the PGM"
        await self.settlement.record(tx, payment, Status.UNKNOWN, source, note, refund=refund)
        await self.settlement.refund_started(tx, payment, refund)
        log.info(
            "refund made outside the PGM recorded",
            extra={"provider": payment.provider, "refundId": refund_id, "amount": amount, "source": source.value},
        )
        return refund, True

    async def _record_refunds(
        self, tx: Transaction, provider: str, payment: Payment, facts: Facts, refunded: int, now: float
    ) -> None:
        """What the provider says was refunded already: one refund per listed refund, keyed as a refund made
        outside the PGM is (services/callbacks.py), so its notification arriving later finds it and is not
        counted twice; any remainder the provider gives only as a sum, as one refund."""
        anonymous = refunded - sum(amount for _, amount in facts.refunds)
        entries: list[tuple[str | None, int]] = list(facts.refunds)
        if anonymous > 0:
            entries.append((None, anonymous))
        for refund_id, amount in entries:
            refund = Refund(
                id=new_id("ref"),
                payment_id=payment.id,
                amount=amount,
                status=Status.ACCEPTED.value,
                provider_refund_id=refund_id,
                idempotency_key=outside_refund_key(provider, refund_id)
                if refund_id
                else f"{payment.idempotency_key}:refunded",
                description="refunded before the PGM adopted the payment",
                created_at=now,
                updated_at=now,
                next_check_at=None,
                check_attempts=0,
            )
            await tx.payments.add_refund(refund)
            note = "refunded before the PGM adopted the payment"
            await self.settlement.record(tx, payment, Status.ACCEPTED, Source.ADOPTION, note, refund=refund)


def _payment_method(adapter: ProviderAdapter) -> str:
    capabilities = adapter.capabilities
    if capabilities.default_payment_method:
        return capabilities.default_payment_method
    methods = sorted(capabilities.payment_methods)
    return methods[0] if len(methods) == 1 else "unknown"


def _currency(adapter: ProviderAdapter) -> str:
    currencies = sorted(adapter.capabilities.currencies)
    return currencies[0] if len(currencies) == 1 else "EUR"
