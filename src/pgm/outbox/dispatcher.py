"""Delivers outbox messages over HTTP until a 2xx (docs/reliability.md).

Order: only the oldest undelivered message of an ordering key (a saga, a payment) is ever in flight,
so messages of one key arrive in the order they were written. Several replicas share the work: a
message is claimed by a compare-and-set on its lease, so one process sends it at a time. The lease is
short and renewed while the delivery runs, so the messages a crashed process held go out again within
seconds.

Independence: a pass waits for its batch only briefly (STRAGGLER_SECONDS); a delivery still running
then goes on in the background and is recorded by a later pass, so a receiver that hangs delays its
own messages only. Each destination has its own cap on deliveries in flight, so one that hangs cannot
take the slots of the others.

Failures: connection errors, time-outs, 5xx, 408, 425 and 429 are retried for ever with exponential
back-off and full jitter (capped), because the receiver will come back. Any other 4xx is an answer
retrying cannot fix: after `max_attempts` such answers the message becomes a dead letter (visible in
metrics, logs and /-/outbox, and re-sendable), and the next message of its key goes ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import Float, Select, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from pgm.clock import Clock
from pgm.observability.metrics import Metrics
from pgm.outbound import NoAnswer, Response
from pgm.outbox.writer import DeliveryStatus
from pgm.store.database import Database
from pgm.store.models import OutboxMessage, table_of

log = logging.getLogger(__name__)

Sender = Callable[[OutboxMessage], Awaitable[Response]]
RETRYABLE_STATUS = frozenset({408, 425, 429})
# Short, so that a crashed process's messages are re-sent within seconds; renewed every pass once half
# of it is gone, so a delivery that takes longer (up to the client's time-out) keeps it.
LEASE_SECONDS = 5.0
RENEW_WITHIN_SECONDS = LEASE_SECONDS / 2
BATCH = 100
# Deliveries in flight per destination: a receiver that hangs holds its own slots only.
CONCURRENCY = 32
# How long a pass waits for the rest of its batch once it has started it. On the happy path every
# delivery is back well within it, so a pass still records a whole batch in one transaction
# (docs/performance.md); a slower delivery is recorded by a later pass instead of holding up the rest.
STRAGGLER_SECONDS = 0.2
_OUTBOX = table_of(OutboxMessage)
# The claim's statements, built once: building a statement and its cache key on every call costs more
# than running it (docs/performance.md).
_LEASE = (
    update(_OUTBOX)
    .where(
        _OUTBOX.c.id.in_(bindparam("ids", expanding=True)),
        _OUTBOX.c.status == DeliveryStatus.PENDING.value,
        _OUTBOX.c.lease_until.is_(None) | (_OUTBOX.c.lease_until < bindparam("now")),
    )
    .values(lease_until=bindparam("until"))
    .returning(_OUTBOX.c.id)
)
_BY_IDS = select(OutboxMessage).where(OutboxMessage.id.in_(bindparam("ids", expanding=True)))
# Extends the leases of the deliveries still running here (a delivered or dead message keeps its status).
_RENEW = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)), _OUTBOX.c.status == DeliveryStatus.PENDING.value)
    .values(lease_until=bindparam("until"))
)
# A delivered message needs nothing read back: one UPDATE for all of a batch's deliveries.
_DELIVERED = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("delivered_id"))
    .values(
        status=DeliveryStatus.DELIVERED.value,
        attempts=_OUTBOX.c.attempts + 1,
        lease_until=None,
        last_status_code=bindparam("code"),
        last_error=None,
        delivered_at=bindparam("at"),
    )
)


def _heads_statement() -> Select[OutboxMessage]:
    """The oldest pending message of each ordering key, due and not leased (bind `now` and the
    `destinations` with room for more deliveries)."""
    earlier = aliased(OutboxMessage)
    is_head = ~(
        select(earlier.id)
        .where(
            earlier.destination == OutboxMessage.destination,
            earlier.ordering_key == OutboxMessage.ordering_key,
            earlier.status == DeliveryStatus.PENDING.value,
            earlier.id < OutboxMessage.id,
        )
        .exists()
    )
    now = bindparam("now", type_=Float)
    return (
        select(OutboxMessage)
        .where(
            OutboxMessage.status == DeliveryStatus.PENDING.value,
            OutboxMessage.destination.in_(bindparam("destinations", expanding=True)),
            OutboxMessage.next_attempt_at <= now,
            OutboxMessage.lease_until.is_(None) | (OutboxMessage.lease_until < now),
            is_head,
        )
        .order_by(OutboxMessage.id)
        .limit(BATCH)
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Back-off of failed deliveries."""

    base_seconds: float
    max_seconds: float
    max_attempts: int

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Full jitter: a random delay up to base x 2^(attempts-1), capped."""
        ceiling = min(self.max_seconds, self.base_seconds * (2 ** max(attempts - 1, 0)))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt of a message got: the HTTP status (None without an answer) and the
    error (None when delivered)."""

    message_id: int
    destination: str
    status_code: int | None
    error: str | None


@dataclass
class _InFlight:
    """A delivery running in this process, and the lease it holds."""

    destination: str
    lease_until: float


class OutboxDispatcher:
    """The background loop that empties the outbox."""

    def __init__(
        self,
        database: Database,
        senders: dict[str, Sender],
        policy: RetryPolicy,
        clock: Clock,
        metrics: Metrics,
        poll_seconds: float,
    ) -> None:
        self.database = database
        self.senders = senders
        self._heads = _heads_statement()
        self.policy = policy
        self.clock = clock
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self._in_flight: dict[int, _InFlight] = {}
        self._finished: list[Attempt] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """New messages were committed: look now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled.

        One transaction per pass records the deliveries finished since the last one, renews the leases of
        those still running and leases the next batch: under load that is one transaction per batch
        (docs/performance.md). A crash before a result is recorded only re-sends that message (at least
        once, de-duplicated downstream by its X-Pgm-Message-Id)."""
        try:
            while True:
                batch: list[asyncio.Task[None]] = []
                try:
                    finished, self._finished = self._finished, []
                    claimed, lease_until = await self._record_and_claim(finished)
                    batch = [self._start(message, lease_until) for message in claimed]
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The unrecorded results are lost, not their messages: the leases run out and they go again.
                    log.exception("outbox pass failed")
                if batch:
                    await asyncio.wait(batch, timeout=STRAGGLER_SECONDS)
                else:
                    # A delivery still running must be back in time to renew its lease.
                    timeout = min(self.poll_seconds, RENEW_WITHIN_SECONDS / 2) if self._in_flight else self.poll_seconds
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                self._wake.clear()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, message: OutboxMessage, lease_until: float) -> asyncio.Task[None]:
        self._in_flight[message.id] = _InFlight(message.destination, lease_until)
        task = asyncio.create_task(self._deliver_and_report(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver_and_report(self, message: OutboxMessage) -> None:
        try:
            attempt = await self._deliver(message)
        finally:
            self._in_flight.pop(message.id, None)
        self._finished.append(attempt)
        # A delivery that outlived its pass: the next pass records it and sends its key's next message.
        self._wake.set()

    def _room(self) -> dict[str, int]:
        """How many more deliveries each destination may start."""
        room = dict.fromkeys(self.senders, CONCURRENCY)
        for delivery in self._in_flight.values():
            room[delivery.destination] -= 1
        return {destination: free for destination, free in room.items() if free > 0}

    async def _record_and_claim(self, attempts: list[Attempt]) -> tuple[list[OutboxMessage], float]:
        """In one transaction: record `attempts`, renew the leases of the deliveries still running, then find
        the heads now due and lease them (a row another process leased in between is not returned by the
        update)."""
        now = self.clock.now()
        until = now + LEASE_SECONDS
        renew = [
            message_id
            for message_id, delivery in self._in_flight.items()
            if delivery.lease_until - now < RENEW_WITHIN_SECONDS
        ]
        room = self._room()
        claimed: list[OutboxMessage] = []
        async with self.database.write() as session:
            results = await self._record(session, attempts, now) if attempts else []
            if renew:
                await session.execute(_RENEW, {"ids": renew, "until": until})
            if room:
                heads = (await session.scalars(self._heads, {"now": now, "destinations": list(room)})).all()
                # A delivery of this process that outlived its lease is still running: never start it twice.
                for message in heads:
                    if message.id not in self._in_flight and room[message.destination] > 0:
                        room[message.destination] -= 1
                        claimed.append(message)
                if claimed:
                    leased = set(
                        (
                            await session.scalars(
                                _LEASE, {"ids": [message.id for message in claimed], "now": now, "until": until}
                            )
                        ).all()
                    )
                    claimed = [message for message in claimed if message.id in leased]
        for message_id in renew:
            delivery = self._in_flight.get(message_id)
            if delivery is not None:
                delivery.lease_until = until
        for destination, result in results:
            self.metrics.outbox_attempts.labels(destination, result).inc()
        return claimed, until

    async def _deliver(self, message: OutboxMessage) -> Attempt:
        sender = self.senders[message.destination]
        status_code: int | None = None
        error: str | None = None
        try:
            response = await sender(message)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}: {response.text[:300]}"
        except NoAnswer as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        except Exception as exc:  # a sender bug must not stop the dispatcher
            log.exception("outbox sender failed", extra={"destination": message.destination})
            error = f"{type(exc).__name__}"
        return Attempt(message.id, message.destination, status_code, error)

    async def _record(self, session: AsyncSession, attempts: list[Attempt], now: float) -> list[tuple[str, str]]:
        """Record a batch's attempts; return (destination, delivered|retry|dead) for each."""
        delivered = [attempt for attempt in attempts if attempt.error is None]
        failed = [attempt for attempt in attempts if attempt.error is not None]
        results: list[tuple[str, str]] = [(attempt.destination, "delivered") for attempt in delivered]
        if delivered:
            await session.execute(
                _DELIVERED,
                [{"delivered_id": attempt.message_id, "code": attempt.status_code, "at": now} for attempt in delivered],
            )
        if failed:
            # The back-off and the dead-letter decision depend on the attempts so far: read them.
            rows = await session.scalars(_BY_IDS, {"ids": [attempt.message_id for attempt in failed]})
            by_id = {row.id: row for row in rows}
            for attempt in failed:
                row = by_id.get(attempt.message_id)
                if row is not None:
                    results.append((row.destination, self._apply_failure(row, attempt, now)))
        return results

    def _apply_failure(self, row: OutboxMessage, attempt: Attempt, now: float) -> str:
        """Record one failed attempt on its row; return what follows: retry or dead."""
        row.attempts += 1
        row.lease_until = None
        row.last_status_code = attempt.status_code
        row.last_error = attempt.error
        code = attempt.status_code
        permanent = code is not None and 400 <= code < 500 and code not in RETRYABLE_STATUS
        if permanent and row.attempts >= self.policy.max_attempts:
            row.status = DeliveryStatus.DEAD.value
            log.error(
                "outbox message dead-lettered",
                extra={"destination": row.destination, "messageId": row.id, "error": attempt.error},
            )
            return "dead"
        row.next_attempt_at = now + self.policy.delay(row.attempts, self._rng)
        return "retry"

    async def refresh_backlog_metrics(self) -> None:
        """Update the outbox gauge from the store."""
        async with self.database.read() as session:
            rows = (
                await session.execute(
                    select(OutboxMessage.destination, OutboxMessage.status, func.count())
                    .where(OutboxMessage.status != DeliveryStatus.DELIVERED.value)
                    .group_by(OutboxMessage.destination, OutboxMessage.status)
                )
            ).all()
        self.metrics.outbox_backlog.clear()
        for destination, status, count in rows:
            self.metrics.outbox_backlog.labels(destination, status).set(count)

    async def resend(self, message_id: int) -> bool:
        """Put a dead letter back in line; False when there is no such dead letter."""
        async with self.database.write() as session:
            result = await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id, OutboxMessage.status == DeliveryStatus.DEAD.value)
                .values(
                    status=DeliveryStatus.PENDING.value, attempts=0, next_attempt_at=self.clock.now(), lease_until=None
                )
            )
            resent = bool(result.rowcount == 1)  # type: ignore[attr-defined]
        if resent:
            self.wake()
        return resent
