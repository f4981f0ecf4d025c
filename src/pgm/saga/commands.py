"""Saga commands in (docs/flow-manager.md, docs/reliability.md): each delivery is stored before the 202, then
executed by a worker that survives restarts. Well-formed commands that cannot succeed end in a failure event, so a
saga never stalls.

Money moves at most once: a command resolves to a deterministic operation key,
`saga:<id>:<operation>:<n>` for pay-like commands (a saga pays once) and
`saga:<id>:refund:<refunds so far>:<attempt>` for refunds (a saga may refund several times; a new
attempt only after a recorded failure). The key is the payment's or refund's idempotency key, so a
second delivery, even a concurrent one, finds the first operation and re-sends its outcome (or, while
it is still running, does nothing and lets it report).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pgm.clock import Clock
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
from pgm.observability.metrics import Metrics
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
from pgm.services.payments import PaymentService
from pgm.services.validation import RequestRefused
from pgm.store.database import Database, insert_row
from pgm.store.models import InboxCommand, Payment, Refund, table_of

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
PENDING, DONE = "PENDING", "DONE"
# Read from the saga document when the payload lacks them, but a command can do without them.
OPTIONAL_FIELDS = frozenset({"payRequestData", "refundDetails"})
# Core statements on the inbox table: ORM-enabled INSERT/UPDATE add a unit-of-work or session
# synchronisation pass that costs about as much as the statement (docs/performance.md).
_INBOX = table_of(InboxCommand)
# Built once: building a statement and its cache key on every call costs more than running it.
_MARK_DONE = (
    update(_INBOX)
    .where(_INBOX.c.id == bindparam("command_id"))
    .values(status=DONE, operation_key=bindparam("key"), result=bindparam("summary"), updated_at=bindparam("now"))
)
# Renews a lease this process holds: a compare-and-set on the value it wrote (see _renew_leases).
_RENEW_LEASE = (
    update(_INBOX)
    .where(
        _INBOX.c.id == bindparam("command_id"),
        _INBOX.c.status == PENDING,
        _INBOX.c.lease_until == bindparam("lease"),
    )
    .values(lease_until=bindparam("until"))
)
CONCURRENCY = 32


class CannotSucceed(Exception):
    """A well-formed command that cannot succeed: answered with a failure event naming why."""


class RetryLater(Exception):
    """Something the command needs is unavailable for now (the CRUD): run it again later."""


class SagaCommands:
    """Accepts command deliveries and executes them."""

    def __init__(
        self,
        database: Database,
        registry: ProviderRegistry,
        payments: PaymentService,
        events: SagaEvents,
        crud: SagaCrud,
        clock: Clock,
        metrics: Metrics,
        lease_seconds: float,
        retry_base_seconds: float,
        wake_dispatcher: Callable[[], None],
        max_attempts: int = 30,
    ) -> None:
        self.database = database
        self.registry = registry
        self.payments = payments
        self.events = events
        self.crud = crud
        self.clock = clock
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.wake_dispatcher = wake_dispatcher
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        # The lease this process holds on each command it runs, renewed while the command runs.
        self._leases: dict[int, float] = {}
        self._semaphore = asyncio.Semaphore(CONCURRENCY)
        self._worker_running = False  # set by run(): commands run in this process only while the worker does

    async def accept(self, route: Route, saga_id: str, label: str, payload: dict[str, Any]) -> str:
        """Store one delivery durably; it runs after the caller has its 202."""
        now = self.clock.now()
        delivery_id = uuid.uuid4().hex
        # With room to run it, this process leases the row in the insert and runs it from memory: no
        # claim and no read of it back (three transactions fewer per command). Otherwise, or after a crash
        # (the lease runs out), the worker's claim picks it up like any other.
        run_now = self._worker_running and len(self._running) < CONCURRENCY
        command = InboxCommand(
            delivery_id=delivery_id,
            saga_id=saga_id,
            route=route.value,
            label=label,
            payload=payload,
            status=PENDING,
            attempts=1 if run_now else 0,
            lease_until=now + self.lease_seconds if run_now else None,
            created_at=now,
            updated_at=now,
        )
        async with self.database.write() as session:
            await insert_row(session, command)
        self.metrics.saga_commands.labels(route.value, "accepted").inc()
        if run_now:
            assert command.lease_until is not None
            self._spawn(command.id, command.lease_until, command)
        else:
            self._wake.set()
        return delivery_id

    def _spawn(self, command_id: int, lease_until: float, command: InboxCommand | None = None) -> None:
        self._leases[command_id] = lease_until
        task = asyncio.create_task(self._execute_guarded(command_id, command))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def run(self) -> None:
        """Execute deliveries until cancelled, including those a crashed process left behind."""
        self._worker_running = True
        while True:
            claimed: list[tuple[int, float]] = []
            try:
                await self._renew_leases()
                claimed = await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("inbox pass failed")
            for command_id, lease_until in claimed:
                self._spawn(command_id, lease_until)
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(self.lease_seconds / 3, 1.0))
                self._wake.clear()

    async def _renew_leases(self) -> None:
        """Extend the leases of the commands running here once a third of them is gone, so a command keeps
        its lease however long its provider call takes, while a crashed process's leases run out within
        `lease_seconds`. Each renewal is a compare-and-set on the lease this process wrote: a command that
        finished, was put off (`_retry_later`) or was taken over by another process is left alone."""
        now = self.clock.now()
        due = [
            (command_id, lease)
            for command_id, lease in self._leases.items()
            if lease - now < self.lease_seconds * 2 / 3
        ]
        if not due:
            return
        until = now + self.lease_seconds
        renewed: list[int] = []
        async with self.database.write() as session:
            for command_id, lease in due:
                result = await session.execute(_RENEW_LEASE, {"command_id": command_id, "lease": lease, "until": until})
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    renewed.append(command_id)
        for command_id, _ in due:
            if command_id not in self._leases:
                continue  # finished meanwhile
            if command_id in renewed:
                self._leases[command_id] = until
            else:
                # Nothing more to renew. Should another process have taken it over (this one stalled for a
                # whole lease), its run finds the operation recorded under its key and does not call the
                # provider again (docs/reliability.md).
                del self._leases[command_id]

    async def _claim(self) -> list[tuple[int, float]]:
        """Lease runnable commands: new ones, and those whose lease ran out (their process died). Returns
        (command id, lease) for each command claimed."""
        now = self.clock.now()
        async with self.database.read() as session:
            due = (
                await session.execute(
                    select(InboxCommand.id, InboxCommand.lease_until)
                    .where(
                        InboxCommand.status == PENDING,
                        (InboxCommand.lease_until.is_(None)) | (InboxCommand.lease_until < now),
                    )
                    .order_by(InboxCommand.id)
                    .limit(CONCURRENCY)
                )
            ).all()
        # A command still running here whose renewal failed is never started a second time in this process.
        runnable = [(command_id, lease) for command_id, lease in due if command_id not in self._leases]
        claimed: list[tuple[int, float]] = []
        if not runnable:
            return claimed
        until = now + self.lease_seconds
        # One transaction for the batch (each row still claimed by its own compare-and-set on the lease):
        # a transaction per command cost a BEGIN IMMEDIATE/COMMIT each under load.
        async with self.database.write() as session:
            for command_id, lease in runnable:
                condition = _INBOX.c.lease_until.is_(None) if lease is None else _INBOX.c.lease_until == lease
                result = await session.execute(
                    update(_INBOX)
                    .where(_INBOX.c.id == command_id, _INBOX.c.status == PENDING, condition)
                    .values(lease_until=until, attempts=_INBOX.c.attempts + 1)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append((command_id, until))
        return claimed

    async def _execute_guarded(self, command_id: int, command: InboxCommand | None = None) -> None:
        async with self._semaphore:
            try:
                await self.execute(command_id, command)
            except Exception as exc:
                # Left PENDING: its lease runs out and it is tried again, up to the attempt cap.
                log.exception("saga command failed", extra={"commandId": command_id})
                await self._give_up_when_exhausted(command_id, exc)
            finally:
                self._leases.pop(command_id, None)
            self.wake_dispatcher()

    async def _give_up_when_exhausted(self, command_id: int, error: Exception) -> None:
        """A command that failed `max_attempts` times ends in its failure event instead of running forever
        (a fault that repeats on every attempt would otherwise keep the saga waiting, with no event)."""
        try:
            async with self.database.read() as session:
                command = await session.get(InboxCommand, command_id)
            if command is None or command.status != PENDING or command.attempts < self.max_attempts:
                return
            cause = getattr(error, "orig", None) or error
            detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
            reason = f"gave up after {command.attempts} attempts: {type(cause).__name__}: {detail}"
            await self._fail(command, Route(command.route), reason)
            self.metrics.saga_commands.labels(command.route, "gave_up").inc()
        except Exception:
            log.exception("saga command could not be given up", extra={"commandId": command_id})

    async def execute(self, command_id: int, command: InboxCommand | None = None) -> None:
        """Run one claimed delivery to its outcome (`command`: the row as just leased, when at hand)."""
        if command is None:
            async with self.database.read() as session:
                command = await session.get(InboxCommand, command_id)
        if command is None or command.status != PENDING:
            return
        route = Route(command.route)
        try:
            saga = await self._saga_data(command, route)
            adapter = self._adapter(saga, route)
            finished = False
            if route is Route.REFUND:
                key, result = await self._refund(command, saga, adapter)
            else:
                key, result, finished = await self._pay_like(command, saga, adapter, route)
            if not finished:
                await self._finish(command_id, key, result)
            self.metrics.saga_commands.labels(route.value, "executed").inc()
        except CannotSucceed as reason:
            await self._fail(command, route, str(reason))
            self.metrics.saga_commands.labels(route.value, "refused").inc()
        except RetryLater as reason:
            await self._retry_later(command, str(reason))
            self.metrics.saga_commands.labels(route.value, "retry").inc()

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
                    raise CannotSucceed(f"saga {command.saga_id} was not found in the CRUD")
            else:
                metadata = document.get("metadata")
                stored = metadata if isinstance(metadata, dict) else {}
        try:
            return read_saga_data(command.saga_id, route, merge(stored, payload))
        except SagaDataError as exc:
            raise CannotSucceed(str(exc)) from exc

    def _adapter(self, saga: SagaData, route: Route) -> ProviderAdapter:
        adapter = self.registry.get(saga.provider)
        if adapter is None:
            raise CannotSucceed(f"provider {saga.provider!r} is unknown or not enabled")
        operation = OPERATIONS[route]
        if operation not in adapter.capabilities.operations:
            raise CannotSucceed(f"provider {adapter.name} does not support {operation.value}")
        # Payment method, currency, amounts, redirect URLs...: the payment service's rules
        # (services/validation.py), the same for /v3 and sagas.
        return adapter

    async def _pay_like(
        self, command: InboxCommand, saga: SagaData, adapter: ProviderAdapter, route: Route
    ) -> tuple[str, str, bool]:
        """Run the operation; returns its key, its result, and whether the command was marked DONE already
        (in the transaction of the provider's answer)."""
        operation = OPERATIONS[route]
        key = saga_operation_key(saga.saga_id, route.value, 1)
        finished = False

        async def finish_with_the_answer(session: AsyncSession, summary: str) -> None:
            nonlocal finished
            await self._mark_done(session, command.id, key, summary)
            finished = True

        request = PayRequest(
            amount=saga.amount,
            currency=saga.currency,
            shop_transaction_id=saga.shop_transaction_id,
            payment_method=saga.payment_method,
            idempotency_key=key,
            success_redirect_url=_text(saga.pay_request_data.get("successRedirect")),
            failure_redirect_url=_text(saga.pay_request_data.get("failureRedirect")),
            provider_data=saga.provider_data,
            subscription=self._subscription(saga, route, adapter),
        )
        try:
            outcome = await self.payments.start(
                adapter,
                operation,
                request,
                saga_id=saga.saga_id,
                saga_context={"payRequestData": saga.pay_request_data},
                on_answer=finish_with_the_answer,
            )
        except RequestRefused as exc:
            raise CannotSucceed(_saga_wording(exc)) from exc
        except InvalidProviderData as exc:
            raise CannotSucceed(str(exc)) from exc
        if outcome.conflict:
            # The saga's key is its own id: a delivery asking for something else than the first one
            # (its data changed in between) gets the first outcome again, never a second payment.
            log.warning("saga command differs from its first delivery", extra={"sagaId": saga.saga_id, "key": key})
        if outcome.replayed and outcome.payment.status == Status.UNKNOWN and command.attempts > 1:
            # This delivery ran before and its run stopped during the provider call (the process died, so
            # its lease ran out): ask the provider now rather than leave the saga to reconciliation.
            outcome = await self.payments.resume_interrupted(adapter, outcome.payment)
        elif outcome.replayed:
            await self._replay(saga.saga_id, key, Status(outcome.payment.status))
        return key, f"{outcome.result.value}: {outcome.description}", finished

    def _subscription(self, saga: SagaData, route: Route, adapter: ProviderAdapter) -> SubscriptionInfo | None:
        if route not in (Route.SUBSCRIPTION_SCHEDULE, Route.SUBSCRIPTION_START, Route.SUBSCRIPTION_PAY):
            return None
        info = saga.subscription_info
        token = _text(info.get("token"))
        if route is Route.SUBSCRIPTION_PAY:
            if token is None:
                raise CannotSucceed("payRequestData.subscriptionInfo.token is missing")
            return SubscriptionInfo(token=token)
        raw_interval = info.get("interval")
        try:
            interval = Interval(str(raw_interval))
        except ValueError as exc:
            raise CannotSucceed(
                f"payRequestData.subscriptionInfo.interval {raw_interval!r} is not DAY, WEEK, MONTH or YEAR"
            ) from exc
        count = info.get("intervalCount", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise CannotSucceed("payRequestData.subscriptionInfo.intervalCount must be a positive integer")
        expires_after = info.get("expiresAfter")
        if expires_after is not None and (
            isinstance(expires_after, bool)
            or not isinstance(expires_after, int)
            or not 1 <= expires_after <= MAX_SUBSCRIPTION_PAYMENTS
        ):
            raise CannotSucceed(
                "payRequestData.subscriptionInfo.expiresAfter must be an integer from 1 to "
                f"{MAX_SUBSCRIPTION_PAYMENTS} (the maximum number of payments)"
            )
        return SubscriptionInfo(token=token, interval=interval, interval_count=count, expires_after=expires_after)

    async def _refund(self, command: InboxCommand, saga: SagaData, adapter: ProviderAdapter) -> tuple[str, str]:
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
            raise CannotSucceed(_saga_wording(exc)) from exc
        except InvalidProviderData as exc:
            raise CannotSucceed(str(exc)) from exc
        if outcome.refund is None:
            if outcome.retryable:
                # A payment made before the switch the provider could not be asked about yet.
                raise RetryLater(outcome.description)
            raise CannotSucceed(outcome.description)
        refund = outcome.refund
        if outcome.replayed and refund.status == Status.UNKNOWN and command.attempts > 1:
            # As for a payment (_pay_like): the previous run died during the provider call; ask now.
            assert outcome.payment is not None
            outcome = await self.payments.resume_interrupted_refund(adapter, refund, outcome.payment)
        elif outcome.replayed:
            await self._replay(saga.saga_id, key, Status(refund.status))
        return key, f"{outcome.status.value}: {outcome.description}"

    async def _started_refund(self, saga: SagaData, refund_id: str) -> tuple[str, str]:
        """The command a Flow Manager sends on entering REFUND_REQUESTED after the PGM's `refundRequested`
        for a refund that started outside the saga: it is that refund, never a new one. Its outcome event
        is already in the outbox behind `refundRequested` (or follows when the provider settles it), so
        nothing is sent again: a re-sent outcome could land on a later refund's state and move it."""
        async with self.database.read() as session:
            found = (
                await session.execute(
                    select(Refund, Payment).join(Payment, Payment.id == Refund.payment_id).where(Refund.id == refund_id)
                )
            ).first()
        if found is None or found[1].saga_id != saga.saga_id:
            raise CannotSucceed(f"refundRequestData.refundId {refund_id!r} is not a refund of saga {saga.saga_id}")
        refund = found[0]
        log.info(
            "refund command resolved to a refund already started", extra={"sagaId": saga.saga_id, "refundId": refund_id}
        )
        return (
            refund.idempotency_key,
            f"{Status(refund.status).public}: the refund {refund_id} started outside the saga",
        )

    async def _refund_attempt(self, base: str) -> int:
        """The attempt a refund delivery belongs to: the latest one, unless that one failed."""
        async with self.database.read() as session:
            latest = await session.scalar(
                select(Refund)
                .where(Refund.idempotency_key.like(_like_prefix(f"{base}:"), escape="\\"))
                .order_by(Refund.created_at.desc())
                .limit(1)
            )
        if latest is None:
            return 1
        attempt = int(latest.idempotency_key.rsplit(":", 1)[1])
        return attempt + 1 if latest.status == Status.FAILED else attempt

    async def _replay(self, saga_id: str, key: str, status: Status) -> None:
        """A repeated command: re-send the outcome it had; while it still runs, the first delivery reports."""
        if status is Status.UNKNOWN:
            return
        async with self.database.write() as session:
            await self.events.replay(session, saga_id, key)

    async def _finish(self, command_id: int, key: str, result: str) -> None:
        async with self.database.write() as session:
            await self._mark_done(session, command_id, key, result)

    async def _mark_done(self, session: AsyncSession, command_id: int, key: str, result: str) -> None:
        await session.execute(
            _MARK_DONE, {"command_id": command_id, "key": key, "summary": result[:1000], "now": self.clock.now()}
        )

    async def _fail(self, command: InboxCommand, route: Route, reason: str) -> None:
        """Answer a command that cannot succeed with the failure event of its route, and close it."""
        # The refusal answers this command's content: a duplicate delivery refused for the same reason gets
        # an event with the same X-Pgm-Message-Id (docs/reliability.md).
        content = json.dumps([command.route, command.payload], sort_keys=True, separators=(",", ":"), default=str)
        origin = f"refused:{hashlib.sha256(content.encode()).hexdigest()}"
        async with self.database.write() as session:
            saga_id = command.saga_id
            if route is Route.REFUND:
                details = await self._refund_details(command)
                refused = {"error": reason, "refundDetails": details}
                await self.events.emit(session, saga_id, None, Event.REFUND_FAILED, refused, origin=origin)
            else:
                if route is Route.SUBSCRIPTION_AUTHORIZATION:
                    pay_request = command.payload.get("payRequestData")
                    scheduled = {"payRequestData": pay_request if isinstance(pay_request, dict) else {}}
                    await self.events.emit(
                        session, saga_id, None, Event.AUTHORIZATION_SCHEDULED, scheduled, origin=origin
                    )
                await self.events.emit(session, saga_id, None, Event.PAYMENT_FAILED, {"error": reason}, origin=origin)
            await session.execute(
                update(_INBOX)
                .where(_INBOX.c.id == command.id)
                .values(status=DONE, result=f"refused: {reason}"[:1000], updated_at=self.clock.now())
            )
        log.info("saga command refused", extra={"sagaId": command.saga_id, "route": route.value, "reason": reason})

    async def _refund_details(self, command: InboxCommand) -> dict[str, Any]:
        """refundDetails as they stand (unchanged by a refused refund): from our ledger when we know the payment."""
        async with self.database.read() as session:
            # A saga may hold a failed attempt beside the payment that went through: refunds are of the latter.
            payment = await session.scalar(
                select(Payment)
                .where(Payment.saga_id == command.saga_id)
                .order_by((Payment.status == Status.ACCEPTED.value).desc(), Payment.created_at.desc())
                .limit(1)
            )
            if payment is not None:
                return refund_details((await self.payments.settlement.position(session, payment)).succeeded)
        details = command.payload.get("refundDetails")
        return details if isinstance(details, dict) else refund_details([])

    async def _retry_later(self, command: InboxCommand, reason: str) -> None:
        if command.attempts >= self.max_attempts:
            await self._fail(command, Route(command.route), f"gave up after {command.attempts} attempts: {reason}")
            return
        delay = min(self.retry_base_seconds * 2 ** max(command.attempts - 1, 0), 60.0)
        async with self.database.write() as session:
            await session.execute(
                update(_INBOX)
                .where(_INBOX.c.id == command.id)
                .values(lease_until=self.clock.now() + delay, result=f"retrying: {reason}"[:1000])
            )

    async def aclose(self) -> None:
        """Let running commands finish their current step (they resume after a restart otherwise)."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


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


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with `prefix` (its wildcards escaped)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
