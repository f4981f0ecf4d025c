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

from pgm.clock import Clock
from pgm.observability.metrics import Metrics
from pgm.outbound import NoAnswer, Response
from pgm.outbox.writer import DeliveryStatus
from pgm.store.database import Database
from pgm.store.records import OutboxMessage
from pgm.store.transaction import Transaction

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
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that
                    # arrives as the wake-up does, and the dispatcher then never stops (a shutdown hung).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await self._wake.wait()
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
        """How many more deliveries each destination may start (0 for one at its cap: every destination is
        listed, so the claiming statement is the same one every pass)."""
        room = dict.fromkeys(self.senders, CONCURRENCY)
        for delivery in self._in_flight.values():
            room[delivery.destination] -= 1
        return {destination: max(free, 0) for destination, free in room.items()}

    async def _record_and_claim(self, attempts: list[Attempt]) -> tuple[list[OutboxMessage], float]:
        """In one transaction: record `attempts`, renew the leases of the deliveries still running, then find
        the heads now due and lease them, in one statement (a row another process leased in between is not
        returned by it)."""
        now = self.clock.now()
        until = now + LEASE_SECONDS
        renew = [
            message_id
            for message_id, delivery in self._in_flight.items()
            if delivery.lease_until - now < RENEW_WITHIN_SECONDS
        ]
        room = self._room()
        claimed: list[OutboxMessage] = []
        async with self.database.transaction() as tx:
            results = await self._record(tx, attempts, now) if attempts else []
            if renew:
                await tx.outbox.renew(renew, until)
            if any(room.values()):
                # A delivery of this process that outlived its lease is still running: never start it twice.
                claimed = await tx.outbox.lease_heads(room, list(self._in_flight), now, until, BATCH)
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

    async def _record(self, tx: Transaction, attempts: list[Attempt], now: float) -> list[tuple[str, str]]:
        """Record a batch's attempts; return (destination, delivered|retry|dead) for each."""
        delivered = [attempt for attempt in attempts if attempt.error is None]
        failed = [attempt for attempt in attempts if attempt.error is not None]
        results: list[tuple[str, str]] = [(attempt.destination, "delivered") for attempt in delivered]
        if delivered:
            await tx.outbox.delivered([(attempt.message_id, attempt.status_code) for attempt in delivered], now)
        if failed:
            # The back-off and the dead-letter decision depend on the attempts so far: read them (the
            # transaction writes back what _apply_failure changes).
            rows = await tx.outbox.by_ids([attempt.message_id for attempt in failed])
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
        async with self.database.snapshot() as tx:
            rows = await tx.outbox.backlog()
        self.metrics.outbox_backlog.clear()
        for destination, status, count in rows:
            self.metrics.outbox_backlog.labels(destination, status).set(count)

    async def resend(self, message_id: int) -> bool:
        """Put a dead letter back in line; False when there is no such dead letter."""
        # The commit wakes the dispatcher (Database.on_outbox_commit).
        async with self.database.transaction() as tx:
            return await tx.outbox.resend(message_id, self.clock.now())
