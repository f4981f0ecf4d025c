"""Pay-like use cases (pay, subscriptions, authorization, pay-by-link), refunds and status checks.

Every operation is recorded before the provider is called (status UNKNOWN, keyed by its idempotency
key), so a crash or a lost answer leaves a row that reconciliation settles by asking the provider;
the same key never creates a second payment. No transaction is open while a provider is called.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from pgm.clock import Clock
from pgm.domain.idempotency import provider_idempotency_key
from pgm.domain.refunds import refund_refusal
from pgm.domain.statuses import PaymentKind, Status
from pgm.observability.metrics import Metrics
from pgm.providers.base import (
    Operation,
    OutcomeUnknown,
    PaymentLookup,
    PayRequest,
    PayResult,
    PayResultCode,
    ProviderAdapter,
    ProviderRejected,
    RefundRequest,
    RefundResult,
)
from pgm.services.adoption import (
    AMOUNT_UNVERIFIED,
    Adoption,
    AdoptionRefused,
    facts_of_lookup,
    facts_of_refund,
)
from pgm.services.callbacks import CallbackService
from pgm.services.lookups import ask_about_payment, ask_about_refund
from pgm.services.policy import IdempotencyConflict, check_pay_request, check_refund_request, request_digest
from pgm.services.settlement import Settlement, Source, refund_position_of
from pgm.store.database import Database
from pgm.store.ids import new_id
from pgm.store.records import Payment, Refund
from pgm.store.transaction import DuplicateKey

log = logging.getLogger(__name__)

OPERATION_KIND = {
    Operation.PAY: PaymentKind.PAYMENT,
    Operation.SUBSCRIPTION_SCHEDULE: PaymentKind.SUBSCRIPTION_SCHEDULE,
    Operation.SUBSCRIPTION_START: PaymentKind.SUBSCRIPTION_START,
    Operation.SUBSCRIPTION_PAY: PaymentKind.SUBSCRIPTION_PAY,
    Operation.AUTHORIZATION_TOKEN: PaymentKind.AUTHORIZATION,
    Operation.PAY_BY_LINK: PaymentKind.PAY_BY_LINK,
}


@dataclass(frozen=True)
class PayOutcome:
    """The result of a pay-like operation as the API reports it."""

    payment: Payment
    result: PayResultCode
    description: str
    replayed: bool = False


@dataclass(frozen=True)
class RefundOutcome:
    """The result of a refund as the API reports it. `refund` is None when it was refused before any
    provider call (over-refund, unknown payment)."""

    status: Status
    description: str
    payment: Payment | None
    refund: Refund | None
    replayed: bool = False
    # Refused only because the provider did not answer a lookup: nothing was refunded, asking again may work.
    retryable: bool = False


class RefundRefused(Exception):
    """The refund must not reach the provider; the message says why."""


class LookupUnanswered(RefundRefused):
    """A payment made before the switch could not be looked up now: nothing was refunded."""


def _call(adapter: ProviderAdapter, operation: Operation, request: PayRequest) -> Awaitable[PayResult]:
    calls: dict[Operation, Callable[[PayRequest], Awaitable[PayResult]]] = {
        Operation.PAY: adapter.pay,
        Operation.SUBSCRIPTION_SCHEDULE: adapter.schedule_subscription,
        Operation.SUBSCRIPTION_START: adapter.start_subscription,
        Operation.SUBSCRIPTION_PAY: adapter.pay_subscription,
        Operation.AUTHORIZATION_TOKEN: adapter.authorization_token,
        Operation.PAY_BY_LINK: adapter.pay_by_link,
    }
    return calls[operation](request)


def result_of(payment: Payment) -> PayResultCode:
    """The `result` a recorded payment reports when asked again (idempotent replay)."""
    status = Status(payment.status)
    if status is Status.ACCEPTED:
        return PayResultCode.OK
    if status is Status.FAILED:
        return PayResultCode.KO
    if payment.redirect_url and payment.kind != PaymentKind.PAY_BY_LINK:
        return PayResultCode.REDIRECT_TO_URL
    return PayResultCode.PENDING


class PaymentService:
    """Runs pay-like operations, refunds and status checks against the providers."""

    def __init__(
        self,
        database: Database,
        settlement: Settlement,
        callbacks: CallbackService,
        clock: Clock,
        metrics: Metrics,
        adoption: Adoption | None = None,
    ) -> None:
        self.database = database
        self.settlement = settlement
        self.callbacks = callbacks
        self.clock = clock
        self.metrics = metrics
        self.adoption = adoption or Adoption(database, settlement, clock)

    async def start(
        self,
        adapter: ProviderAdapter,
        operation: Operation,
        request: PayRequest,
        saga_id: str | None = None,
        saga_context: dict[str, Any] | None = None,
    ) -> PayOutcome:
        """Run a pay-like operation once per idempotency key (`request.idempotency_key` is ours)."""
        check_pay_request(adapter, operation, request)
        adapter.check(operation, request)
        digest = request_digest(request)
        payment, created = await self._create(adapter, operation, request, saga_id, saga_context, digest)
        if not created:
            if _differs(payment, request, digest):
                _conflict(request.idempotency_key, saga_id)
            return PayOutcome(payment, result_of(payment), payment.description or "", replayed=True)
        provider_request = replace(request, idempotency_key=provider_idempotency_key(request.idempotency_key))
        try:
            result = await _call(adapter, operation, provider_request)
        except ProviderRejected as refusal:
            payment = await self._settle(payment.id, Status.FAILED, Source.ANSWER, str(refusal))
            return PayOutcome(payment, PayResultCode.KO, str(refusal))
        except OutcomeUnknown as lost:
            return await self._after_lost_answer(adapter, payment, str(lost))
        async with self.database.transaction() as tx:
            locked = await tx.payments.lock(payment.id)
            await self.settlement.answered(tx, locked, result)
            payment = locked
            subject_id = payment.provider_payment_id
            waiting = subject_id is not None and await self.callbacks.any_deferred(tx, adapter, subject_id)
        # A callback that came before this answer waits for it; reloaded only when one did.
        if waiting and subject_id is not None and await self.callbacks.apply_deferred(adapter, subject_id):
            payment = await self.reload(payment.id)
        return PayOutcome(payment, result.result, result.description)

    async def _create(
        self,
        adapter: ProviderAdapter,
        operation: Operation,
        request: PayRequest,
        saga_id: str | None,
        saga_context: dict[str, Any] | None,
        digest: str,
    ) -> tuple[Payment, bool]:
        now = self.clock.now()
        payment = Payment(
            id=new_id("pay"),
            provider=adapter.name,
            payment_method=request.payment_method,
            kind=OPERATION_KIND[operation].value,
            status=Status.UNKNOWN.value,
            amount=request.amount,
            currency=request.currency,
            shop_transaction_id=request.shop_transaction_id,
            idempotency_key=request.idempotency_key,
            request_digest=digest,
            subscription_token=request.subscription.token if request.subscription else None,
            saga_id=saga_id,
            saga_context=saga_context or {},
            provider_metadata={},
            created_at=now,
            updated_at=now,
            # Reconciliation only looks at it once the provider call has surely ended.
            next_check_at=now + self.settlement.policy.first_after_seconds,
            check_attempts=0,
        )
        try:
            # The key's unique constraint decides in the insert itself: no lookup before it on the hot path
            # (a statement, a round trip on PostgreSQL), the existing payment read only when there is one.
            async with self.database.transaction() as tx:
                if not await tx.payments.add_unless_key_taken(payment):
                    existing = await tx.payments.by_key(request.idempotency_key)
                    if existing is not None:
                        return existing, False
                    raise DuplicateKey(f"payment key {request.idempotency_key} taken by a payment not committed yet")
                await self.settlement.record(
                    tx, payment, Status.UNKNOWN, Source.REQUEST, f"{operation.value} requested"
                )
        except DuplicateKey:
            # Another delivery of the same operation got there first: replay its state.
            existing = await self.find_by_key(request.idempotency_key)
            if existing is None:
                raise
            return existing, False
        return payment, True

    async def resume_interrupted(self, adapter: ProviderAdapter, payment: Payment) -> PayOutcome:
        """A saga command taken over from a process that stopped during the provider call: that answer is
        lost, so ask the provider now, as after any lost answer, instead of waiting for reconciliation."""
        return await self._after_lost_answer(
            adapter, payment, "the process calling the provider stopped before recording the answer"
        )

    async def resume_interrupted_refund(
        self, adapter: ProviderAdapter, refund: Refund, payment: Payment
    ) -> RefundOutcome:
        """A saga refund taken over from a process that stopped during the provider call: ask the provider
        now (by our idempotency key); what it cannot say yet, reconciliation settles later."""
        found = await ask_about_refund(adapter, payment, refund)
        if not isinstance(found, RefundResult):
            return RefundOutcome(Status(refund.status), refund.description or "", payment, refund, replayed=True)
        refund, payment = await self.apply_refund_result(refund.id, found, Source.STATUS_CHECK)
        return RefundOutcome(Status(refund.status), refund.description or found.description, payment, refund)

    async def _after_lost_answer(self, adapter: ProviderAdapter, payment: Payment, reason: str) -> PayOutcome:
        """A lost answer is not a failure: ask the provider once now, else leave it to reconciliation."""
        log.warning("provider answer lost", extra={"provider": adapter.name, "paymentId": payment.id, "reason": reason})
        found = await ask_about_payment(adapter, payment)
        description = f"{reason}; the outcome will be confirmed with the provider"
        if not isinstance(found, PaymentLookup):
            # No record yet, or no answer: reconciliation asks again on its schedule.
            async with self.database.transaction() as tx:
                locked = await tx.payments.lock(payment.id)
                locked.description = description
                await self.settlement.record(tx, locked, Status.UNKNOWN, Source.ANSWER, reason)
                payment = locked
            return PayOutcome(payment, PayResultCode.PENDING, description)
        payment = await self.apply_lookup(adapter, payment.id, found, Source.STATUS_CHECK)
        return PayOutcome(payment, result_of(payment), payment.description or description)

    async def apply_lookup(
        self, adapter: ProviderAdapter, payment_id: str, found: PaymentLookup, source: Source
    ) -> Payment:
        """Record what the provider said about a payment when asked."""
        async with self.database.transaction() as tx:
            locked = await tx.payments.lock(payment_id)
            if not locked.provider_payment_id:
                locked.provider_payment_id = found.payment_id
            if found.subscription_token and not locked.subscription_token:
                locked.subscription_token = found.subscription_token
            # A lost answer found again still lets the payer be sent to the provider's page.
            locked.redirect_url = locked.redirect_url or found.redirect_url
            locked.link = locked.link or found.link
            await self.settlement.payment_status(tx, locked, found.status, source, None)
            payment = locked
        await self.callbacks.apply_deferred(adapter, found.payment_id)
        return await self.reload(payment.id)

    async def _settle(self, payment_id: str, status: Status, source: Source, note: str) -> Payment:
        async with self.database.transaction() as tx:
            locked = await tx.payments.lock(payment_id)
            await self.settlement.payment_status(tx, locked, status, source, note)
            return locked

    async def refund(
        self,
        adapter: ProviderAdapter,
        request: RefundRequest,
        saga_id: str | None = None,
    ) -> RefundOutcome:
        """Refund once per idempotency key; refused without a provider call when it exceeds what is left."""
        check_refund_request(request)
        adapter.check(Operation.REFUND, request)
        try:
            if await self.find_payment(adapter.name, request.payment_id) is None:
                await self._adopt_for_refund(adapter, request)
            refund, payment, created = await self._reserve_refund(adapter, request, saga_id)
        except RefundRefused as refusal:
            return RefundOutcome(
                Status.FAILED,
                str(refusal),
                await self.find_payment(adapter.name, request.payment_id),
                None,
                retryable=isinstance(refusal, LookupUnanswered),
            )
        if not created:
            if refund.amount != request.amount or refund.payment_id != payment.id:
                _conflict(request.idempotency_key, saga_id)
            return RefundOutcome(Status(refund.status), refund.description or "", payment, refund, replayed=True)
        provider_request = replace(request, idempotency_key=provider_idempotency_key(request.idempotency_key))
        try:
            result = await adapter.refund(provider_request)
        except ProviderRejected as refusal:
            result = RefundResult(Status.FAILED, None, str(refusal))
        except OutcomeUnknown as lost:
            found = await ask_about_refund(adapter, payment, refund)
            result = (
                found
                if isinstance(found, RefundResult)
                else RefundResult(Status.UNKNOWN, None, f"{lost}; the outcome will be confirmed with the provider")
            )
        refund, payment = await self.apply_refund_result(refund.id, result, Source.ANSWER)
        if refund.provider_refund_id:
            await self.callbacks.apply_deferred(adapter, refund.provider_refund_id)
            refund, payment = await self.reload_refund(refund.id)
        return RefundOutcome(Status(refund.status), refund.description or result.description, payment, refund)

    async def _adopt_for_refund(self, adapter: ProviderAdapter, request: RefundRequest) -> None:
        """A refund of a payment made before the switch: look it up at the provider and adopt it; where
        the provider cannot look payments up, the refund itself is what there is to go on."""
        name, payment_id = adapter.name, request.payment_id
        try:
            lookup = await self.adoption.look_up(adapter, payment_id)
        except ProviderRejected as exc:
            raise RefundRefused(f"payment {payment_id} is not known to provider {name}: {exc}") from exc
        except OutcomeUnknown as exc:
            raise LookupUnanswered(
                f"payment {payment_id} could not be looked up at provider {name} ({exc}); nothing was refunded"
            ) from exc
        facts = facts_of_lookup(lookup) if lookup is not None else facts_of_refund(request)
        try:
            await self.adoption.adopt(adapter, payment_id, facts)
        except AdoptionRefused as exc:
            raise RefundRefused(str(exc)) from exc

    async def _reserve_refund(
        self, adapter: ProviderAdapter, request: RefundRequest, saga_id: str | None
    ) -> tuple[Refund, Payment, bool]:
        """Under the payment's lock: replay a known refund, or check the arithmetic and reserve the amount."""
        now = self.clock.now()
        async with self.database.transaction() as tx:
            payment = await tx.payments.by_provider_id(adapter.name, request.payment_id)
            if payment is None:
                raise RefundRefused(f"payment {request.payment_id} is not known to provider {adapter.name} here")
            locked = await tx.payments.lock(payment.id)
            existing = await tx.payments.refund_by_key(request.idempotency_key)
            if existing is not None:
                return existing, locked, False
            if locked.kind == PaymentKind.AUTHORIZATION:
                raise RefundRefused("an authorization token moves no money, so it cannot be refunded")
            if locked.provider_metadata.get(AMOUNT_UNVERIFIED) and locked.status == Status.ACCEPTED:
                # Adopted from a provider that did not tell the amount: it decides; what it has refunded
                # through us is the least that was paid.
                position = await refund_position_of(tx, locked)
                locked.amount = max(locked.amount, position.total_refunded + position.in_flight + request.amount)
            if request.currency != locked.currency:
                raise RefundRefused(f"refund currency {request.currency} differs from the payment's {locked.currency}")
            refusal = refund_refusal(await refund_position_of(tx, locked), request.amount)
            if refusal:
                raise RefundRefused(refusal)
            refund = Refund(
                id=new_id("ref"),
                payment_id=locked.id,
                amount=request.amount,
                status=Status.UNKNOWN.value,
                idempotency_key=request.idempotency_key,
                saga_id=saga_id,
                created_at=now,
                updated_at=now,
                next_check_at=now + self.settlement.policy.first_after_seconds,
                check_attempts=0,
            )
            await tx.payments.add_refund(refund)
            await self.settlement.record(tx, locked, Status.UNKNOWN, Source.REQUEST, "refund requested", refund=refund)
            if saga_id is None:
                await self.settlement.refund_started(tx, locked, refund)
            return refund, locked, True

    async def apply_refund_result(self, refund_id: str, result: RefundResult, source: Source) -> tuple[Refund, Payment]:
        """Record what the provider said about a refund."""
        async with self.database.transaction() as tx:
            found = await tx.payments.refund(refund_id)
            assert found is not None
            payment = await tx.payments.lock(found.payment_id)
            refund = await tx.payments.fresh_refund(refund_id)
            assert refund is not None
            if result.refund_id and not refund.provider_refund_id:
                refund.provider_refund_id = result.refund_id
            if result.status is Status.UNKNOWN:
                refund.description = result.description
            else:
                await self.settlement.refund_status(tx, payment, refund, result.status, source, result.description)
            return refund, payment

    async def status(
        self, adapter: ProviderAdapter, provider_payment_id: str, check: bool = False
    ) -> tuple[PaymentLookup, Payment | None]:
        """Ask the provider about a payment (its check operation for /check) and record the answer when
        the payment is ours."""
        ask = adapter.check_payment if check else adapter.payment_status
        lookup = await ask(provider_payment_id)
        payment = await self.find_payment(adapter.name, provider_payment_id)
        if payment is None:
            # A payment made before the switch: from now on it is one of ours.
            try:
                details = await self.adoption.look_up(adapter, provider_payment_id) or lookup
                payment = await self.adoption.adopt(adapter, provider_payment_id, facts_of_lookup(details))
            except AdoptionRefused:
                return lookup, None
        payment = await self.apply_lookup(adapter, payment.id, lookup, Source.STATUS_CHECK)
        return lookup, payment

    async def find_by_key(self, idempotency_key: str) -> Payment | None:
        """The payment created under an idempotency key."""
        async with self.database.snapshot() as tx:
            return await tx.payments.by_key(idempotency_key)

    async def find_payment(self, provider: str, provider_payment_id: str) -> Payment | None:
        """Our record of a provider's payment."""
        async with self.database.snapshot() as tx:
            return await tx.payments.by_provider_id(provider, provider_payment_id)

    async def reload(self, payment_id: str) -> Payment:
        """A fresh copy of a payment."""
        async with self.database.snapshot() as tx:
            payment = await tx.payments.get(payment_id)
            assert payment is not None
            return payment

    async def reload_refund(self, refund_id: str) -> tuple[Refund, Payment]:
        """Fresh copies of a refund and its payment."""
        async with self.database.snapshot() as tx:
            found = await tx.payments.refund_with_payment(refund_id)
            assert found is not None
            return found[1], found[0]


def _conflict(key: str, saga_id: str | None) -> None:
    """A request replayed under a key that asks for something else than the first one: a client's is
    refused (IdempotencyConflict, `/v3` answers 409); a saga's key is its own id, so a delivery whose data
    changed in between gets the first outcome again, never a second payment (docs/api.md,
    docs/flow-manager.md)."""
    if saga_id is None:
        raise IdempotencyConflict
    log.warning("saga command differs from its first delivery", extra={"sagaId": saga_id, "key": key})


def _differs(payment: Payment, request: PayRequest, digest: str) -> bool:
    """Whether a request replayed under a payment's key asks for something else than the payment."""
    if payment.request_digest is not None:
        return payment.request_digest != digest
    # Recorded before requests were fingerprinted: compare what the row kept.
    return (
        payment.amount != request.amount
        or payment.currency != request.currency
        or payment.shop_transaction_id != request.shop_transaction_id
        or payment.payment_method != request.payment_method
    )
