"""What a saga command means (docs/flow-manager.md): the saga's data turned into a payment service call,
and its outcome into the command's result. The inbox (`saga/inbox.py`) stores and runs the commands;
well-formed commands that cannot succeed end in a failure event, so a saga never stalls.

Money moves at most once: a command resolves to a deterministic operation key,
`saga:<id>:<operation>:<n>` for pay-like commands (a saga pays once) and
`saga:<id>:refund:<refunds so far>:<attempt>` for refunds (a saga may refund several times; a new
attempt only after a recorded failure). The key is the payment's or refund's idempotency key, so a
second delivery, even a concurrent one, finds the first operation and re-sends its outcome (or, while
it is still running, does nothing and lets it report).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pgm.domain.idempotency import saga_key_part, saga_operation_key
from pgm.domain.saga import (
    Event,
    Route,
    SagaData,
    SagaDataError,
    merge,
    missing_fields,
    read_saga_data,
    refund_details,
)
from pgm.domain.statuses import Status
from pgm.providers.base import (
    MAX_SUBSCRIPTION_PAYMENTS,
    Interval,
    InvalidProviderData,
    Operation,
    PayRequest,
    ProviderAdapter,
    RefundRequest,
    SubscriptionInfo,
)
from pgm.providers.registry import ProviderRegistry
from pgm.saga.crud import CrudUnavailable, SagaCrud
from pgm.saga.events import SagaEvents
from pgm.saga.inbox import CommandDone, CommandRefused, RetryLater
from pgm.services.payments import PaymentService
from pgm.services.policy import (
    MAX_INTERVAL_COUNT,
    NotOffered,
    ProviderNotFound,
    RequestRefused,
    provider_for,
)
from pgm.services.settlement import refund_position_of
from pgm.store.database import Database
from pgm.store.records import InboxCommand
from pgm.store.transaction import Transaction

log = logging.getLogger(__name__)

OPERATIONS = {
    Route.PAY: Operation.PAY,
    Route.REFUND: Operation.REFUND,
    Route.SUBSCRIPTION_SCHEDULE: Operation.SUBSCRIPTION_SCHEDULE,
    Route.SUBSCRIPTION_START: Operation.SUBSCRIPTION_START,
    Route.SUBSCRIPTION_PAY: Operation.SUBSCRIPTION_PAY,
    Route.SUBSCRIPTION_AUTHORIZATION: Operation.AUTHORIZATION_TOKEN,
    Route.PAY_BY_LINK: Operation.PAY_BY_LINK,
}
# Read from the saga document when the payload lacks them, but a command can do without them.
OPTIONAL_FIELDS = frozenset({"payRequestData", "refundDetails"})


class SagaCommands:
    """What a saga command means: the inbox's executor, from a command to a PaymentService call and
    from its outcome to the command's result (the outcome's event comes from the settlement)."""

    def __init__(
        self,
        database: Database,
        registry: ProviderRegistry,
        payments: PaymentService,
        events: SagaEvents,
        crud: SagaCrud,
    ) -> None:
        self.database = database
        self.registry = registry
        self.payments = payments
        self.events = events
        self.crud = crud

    async def execute(self, command: InboxCommand) -> CommandDone:
        """Run one command to its outcome; raises CommandRefused or RetryLater."""
        route = Route(command.route)
        saga = await self._saga_data(command, route)
        adapter = self._adapter(saga, route)
        if route is Route.REFUND:
            return await self._refund(command, saga, adapter)
        return await self._pay_like(command, saga, adapter, route)

    async def _saga_data(self, command: InboxCommand, route: Route) -> SagaData:
        payload = command.payload
        stored: dict[str, Any] = {}
        if missing_fields(route, payload):
            try:
                document = await self.crud.saga(command.saga_id)
            except CrudUnavailable as exc:
                raise RetryLater(str(exc)) from exc
            if document is None:
                if not set(missing_fields(route, payload)) <= OPTIONAL_FIELDS:
                    raise CommandRefused(f"saga {command.saga_id} was not found in the CRUD")
            else:
                metadata = document.get("metadata")
                stored = metadata if isinstance(metadata, dict) else {}
        try:
            return read_saga_data(command.saga_id, route, merge(stored, payload))
        except SagaDataError as exc:
            raise CommandRefused(str(exc)) from exc

    def _adapter(self, saga: SagaData, route: Route) -> ProviderAdapter:
        # The same policy as /v3's (services/policy.py): provider and operation here; payment method,
        # currency, amounts, redirect URLs, terms... in the payment service's call.
        try:
            return provider_for(self.registry, saga.provider, OPERATIONS[route])
        except (ProviderNotFound, NotOffered) as exc:
            raise CommandRefused(str(exc)) from exc

    async def _pay_like(
        self, command: InboxCommand, saga: SagaData, adapter: ProviderAdapter, route: Route
    ) -> CommandDone:
        operation = OPERATIONS[route]
        key = saga_operation_key(saga.saga_id, route.value, 1)
        request = PayRequest(
            amount=saga.amount,
            currency=saga.currency,
            shop_transaction_id=saga.shop_transaction_id,
            payment_method=saga.payment_method,
            idempotency_key=key,
            success_redirect_url=_text(saga.pay_request_data.get("successRedirect")),
            failure_redirect_url=_text(saga.pay_request_data.get("failureRedirect")),
            provider_data=saga.provider_data,
            subscription=self._subscription(saga, route),
        )
        try:
            outcome = await self.payments.start(
                adapter,
                operation,
                request,
                saga_id=saga.saga_id,
                saga_context={"payRequestData": saga.pay_request_data},
            )
        except RequestRefused as exc:
            raise CommandRefused(_saga_wording(exc)) from exc
        except (InvalidProviderData, NotOffered) as exc:
            raise CommandRefused(str(exc)) from exc
        # A delivery whose data changed since the first gets the first outcome (the service decides:
        # services/payments.py, _conflict).
        if outcome.replayed and outcome.payment.status == Status.UNKNOWN and command.attempts > 1:
            # This delivery ran before and its run stopped during the provider call (the process died, so
            # its lease ran out): ask the provider now rather than leave the saga to reconciliation.
            outcome = await self.payments.resume_interrupted(adapter, outcome.payment)
        elif outcome.replayed:
            await self._replay(saga.saga_id, key, Status(outcome.payment.status))
        return CommandDone(key, f"{outcome.result.value}: {outcome.description}")

    def _subscription(self, saga: SagaData, route: Route) -> SubscriptionInfo | None:
        """The saga's subscription terms as the payment service takes them: only their types are checked
        here (as /v3's schema does); what they must hold is the policy's (services/policy.py)."""
        if route not in (Route.SUBSCRIPTION_SCHEDULE, Route.SUBSCRIPTION_START, Route.SUBSCRIPTION_PAY):
            return None
        info = saga.subscription_info
        token = _text(info.get("token"))
        if route is Route.SUBSCRIPTION_PAY:
            return SubscriptionInfo(token=token)
        raw_interval = info.get("interval")
        interval: Interval | None = None
        if raw_interval is not None:
            try:
                interval = Interval(str(raw_interval))
            except ValueError as exc:
                raise CommandRefused(
                    f"payRequestData.subscriptionInfo.interval {raw_interval!r} is not DAY, WEEK, MONTH or YEAR"
                ) from exc
        count = info.get("intervalCount", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise CommandRefused(
                f"payRequestData.subscriptionInfo.intervalCount must be an integer from 1 to {MAX_INTERVAL_COUNT}"
            )
        expires_after = info.get("expiresAfter")
        if expires_after is not None and (isinstance(expires_after, bool) or not isinstance(expires_after, int)):
            raise CommandRefused(
                "payRequestData.subscriptionInfo.expiresAfter must be an integer from 1 to "
                f"{MAX_SUBSCRIPTION_PAYMENTS} (the maximum number of payments)"
            )
        return SubscriptionInfo(token=token, interval=interval, interval_count=count, expires_after=expires_after)

    async def _refund(self, command: InboxCommand, saga: SagaData, adapter: ProviderAdapter) -> CommandDone:
        assert saga.payment_id is not None
        if saga.started_refund_id is not None:
            return await self._started_refund(saga, saga.started_refund_id)
        base = f"saga:{saga_key_part(saga.saga_id)}:refund:{saga.refunds_so_far}"
        key = f"{base}:{await self._refund_attempt(base)}"
        provider_data = saga.refund_request_data.get("providerData")
        request = RefundRequest(
            payment_id=saga.payment_id,
            amount=saga.amount,
            currency=saga.currency,
            idempotency_key=key,
            provider_data=provider_data if isinstance(provider_data, dict) else {},
        )
        try:
            outcome = await self.payments.refund(adapter, request, saga_id=saga.saga_id)
        except RequestRefused as exc:
            raise CommandRefused(_saga_wording(exc)) from exc
        except (InvalidProviderData, NotOffered) as exc:
            raise CommandRefused(str(exc)) from exc
        if outcome.refund is None:
            if outcome.retryable:
                # A payment made before the switch the provider could not be asked about yet.
                raise RetryLater(outcome.description)
            raise CommandRefused(outcome.description)
        refund = outcome.refund
        if outcome.replayed and refund.status == Status.UNKNOWN and command.attempts > 1:
            # As for a payment (_pay_like): the previous run died during the provider call; ask now.
            assert outcome.payment is not None
            outcome = await self.payments.resume_interrupted_refund(adapter, refund, outcome.payment)
        elif outcome.replayed:
            await self._replay(saga.saga_id, key, Status(refund.status))
        return CommandDone(key, f"{outcome.status.value}: {outcome.description}")

    async def _started_refund(self, saga: SagaData, refund_id: str) -> CommandDone:
        """The command a Flow Manager sends on entering REFUND_REQUESTED after the PGM's `refundRequested`
        for a refund that started outside the saga: it is that refund, never a new one. Its outcome event
        is already in the outbox behind `refundRequested` (or follows when the provider settles it), so
        nothing is sent again: a re-sent outcome could land on a later refund's state and move it."""
        async with self.database.snapshot() as tx:
            found = await tx.payments.refund_with_payment(refund_id)
        if found is None or found[0].saga_id != saga.saga_id:
            raise CommandRefused(f"refundRequestData.refundId {refund_id!r} is not a refund of saga {saga.saga_id}")
        refund = found[1]
        log.info(
            "refund command resolved to a refund already started", extra={"sagaId": saga.saga_id, "refundId": refund_id}
        )
        return CommandDone(
            refund.idempotency_key, f"{Status(refund.status).public}: the refund {refund_id} started outside the saga"
        )

    async def _refund_attempt(self, base: str) -> int:
        """The attempt a refund delivery belongs to: the latest one, unless that one failed."""
        async with self.database.snapshot() as tx:
            latest = await tx.payments.latest_refund_with_key_prefix(f"{base}:")
        if latest is None:
            return 1
        attempt = int(latest.idempotency_key.rsplit(":", 1)[1])
        return attempt + 1 if latest.status == Status.FAILED else attempt

    async def _replay(self, saga_id: str, key: str, status: Status) -> None:
        """A repeated command: re-send the outcome it had; while it still runs, the first delivery reports."""
        if status is Status.UNKNOWN:
            return
        async with self.database.transaction() as tx:
            await self.events.replay(tx, saga_id, key)

    async def refuse(self, tx: Transaction, command: InboxCommand, reason: str) -> None:
        """Answer a command that cannot succeed with the failure event of its route."""
        # The refusal answers this command's content: a duplicate delivery refused for the same reason gets
        # an event with the same X-Pgm-Message-Id (docs/reliability.md).
        content = json.dumps([command.route, command.payload], sort_keys=True, separators=(",", ":"), default=str)
        origin = f"refused:{hashlib.sha256(content.encode()).hexdigest()}"
        saga_id, route = command.saga_id, Route(command.route)
        if route is Route.REFUND:
            details = await self._refund_details(tx, command)
            refused = {"error": reason, "refundDetails": details}
            await self.events.emit(tx, saga_id, None, Event.REFUND_FAILED, refused, origin=origin)
            return
        if route is Route.SUBSCRIPTION_AUTHORIZATION:
            pay_request = command.payload.get("payRequestData")
            scheduled = {"payRequestData": pay_request if isinstance(pay_request, dict) else {}}
            await self.events.emit(tx, saga_id, None, Event.AUTHORIZATION_SCHEDULED, scheduled, origin=origin)
        await self.events.emit(tx, saga_id, None, Event.PAYMENT_FAILED, {"error": reason}, origin=origin)

    async def _refund_details(self, tx: Transaction, command: InboxCommand) -> dict[str, Any]:
        """refundDetails as they stand (unchanged by a refused refund): from our ledger when we know the payment."""
        # A saga may hold a failed attempt beside the payment that went through: refunds are of the latter.
        payment = await tx.payments.settled_of_saga(command.saga_id)
        if payment is not None:
            return refund_details((await refund_position_of(tx, payment)).succeeded)
        details = command.payload.get("refundDetails")
        return details if isinstance(details, dict) else refund_details([])


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# The saga's names for the fields the payment service's rules name as /v3 does.
_SAGA_FIELDS = {
    "successRedirectUrl": "payRequestData.successRedirect",
    "failureRedirectUrl": "payRequestData.failureRedirect",
    "subscriptionInfo": "payRequestData.subscriptionInfo",
    "paymentId": "paymentId",
}


def _saga_wording(refusal: RequestRefused) -> str:
    """The refusal's message with the field named as it is in the saga's metadata."""
    message = str(refusal)
    for wire_name, saga_name in _SAGA_FIELDS.items():
        if message.startswith(wire_name):
            return saga_name + message[len(wire_name) :]
    return message
