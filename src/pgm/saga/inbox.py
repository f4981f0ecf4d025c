"""The durable inbox of saga commands (docs/reliability.md): each delivery is stored before the 202, then
run by an executor under a lease that survives restarts; the inbox's counterpart on the way out is the
outbox (`pgm.outbox`).

The inbox knows nothing of what a command means. It is handed an executor, which runs one command to a
`CommandDone`, or raises `CommandRefused` (a well-formed command that cannot succeed) or `RetryLater`
(something it needs is unavailable for now); the executor also writes the answer to a refused command,
in the transaction that closes it. A command that keeps failing ends refused after `max_attempts`
attempts, so a saga never stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pgm.clock import Clock
from pgm.domain.saga import Route
from pgm.observability.metrics import Metrics
from pgm.store.database import Database
from pgm.store.records import InboxCommand
from pgm.store.transaction import Transaction

log = logging.getLogger(__name__)

PENDING, DONE = "PENDING", "DONE"
CONCURRENCY = 32


@dataclass(frozen=True)
class CommandDone:
    """A command run to its outcome: the key of the operation it resolved to, and a one-line summary."""

    operation_key: str
    summary: str


class CommandRefused(Exception):
    """A well-formed command that cannot succeed: answered with a failure event naming why."""


class RetryLater(Exception):
    """Something the command needs is unavailable for now: run it again later."""


class CommandExecutor(Protocol):
    """What a command means: the inbox hands each command it runs to one of these."""

    async def execute(self, command: InboxCommand) -> CommandDone:
        """Run one command to its outcome; raises CommandRefused or RetryLater."""

    async def refuse(self, tx: Transaction, command: InboxCommand, reason: str) -> None:
        """Write the answer to a command that cannot succeed, in the transaction that closes it."""


class Inbox:
    """Accepts command deliveries durably and runs them through the executor."""

    def __init__(
        self,
        database: Database,
        executor: CommandExecutor,
        clock: Clock,
        metrics: Metrics,
        lease_seconds: float,
        retry_base_seconds: float,
        wake_dispatcher: Callable[[], None],
        max_attempts: int = 30,
    ) -> None:
        self.database = database
        self.executor = executor
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
        async with self.database.single_statement() as tx:
            # Untracked: the worker runs it from this copy, and its closing is written by statement.
            await tx.inbox.add(command, tracked=False)
        self.metrics.saga_commands.labels(route.value, "accepted").inc()
        if run_now:
            assert command.lease_until is not None
            self._spawn(command.id, command.lease_until, command)
        else:
            self._wake.set()
        return delivery_id

    def _spawn(self, command_id: int, lease_until: float, command: InboxCommand | None = None) -> None:
        self._leases[command_id] = lease_until
        task = asyncio.create_task(self._run_guarded(command_id, command))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def run(self) -> None:
        """Run deliveries until cancelled, including those a crashed process left behind."""
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
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that
                # arrives as the wake-up does, and the worker would then never stop (as the outbox's did).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(self.lease_seconds / 3, 1.0)):
                        await self._wake.wait()
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
        async with self.database.transaction() as tx:
            for command_id, lease in due:
                if await tx.inbox.renew(command_id, lease, until):
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
        async with self.database.snapshot() as tx:
            due = await tx.inbox.runnable(now, CONCURRENCY)
        # A command still running here whose renewal failed is never started a second time in this process.
        runnable = [(command_id, lease) for command_id, lease in due if command_id not in self._leases]
        claimed: list[tuple[int, float]] = []
        if not runnable:
            return claimed
        until = now + self.lease_seconds
        # One transaction for the batch (each row still claimed by its own compare-and-set on the lease):
        # a transaction per command cost a BEGIN IMMEDIATE/COMMIT each under load.
        async with self.database.transaction() as tx:
            for command_id, lease in runnable:
                if await tx.inbox.claim(command_id, lease, until):
                    claimed.append((command_id, until))
        return claimed

    async def _run_guarded(self, command_id: int, command: InboxCommand | None = None) -> None:
        async with self._semaphore:
            try:
                await self.run_command(command_id, command)
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
            async with self.database.snapshot() as tx:
                command = await tx.inbox.get(command_id)
            if command is None or command.status != PENDING or command.attempts < self.max_attempts:
                return
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            reason = f"gave up after {command.attempts} attempts: {type(error).__name__}: {detail}"
            await self._refuse(command, reason)
            self.metrics.saga_commands.labels(command.route, "gave_up").inc()
        except Exception:
            log.exception("saga command could not be given up", extra={"commandId": command_id})

    async def run_command(self, command_id: int, command: InboxCommand | None = None) -> None:
        """Run one claimed delivery to its outcome (`command`: the row as just leased, when at hand)."""
        if command is None:
            async with self.database.snapshot() as tx:
                command = await tx.inbox.get(command_id)
        if command is None or command.status != PENDING:
            return
        try:
            done = await self.executor.execute(command)
        except CommandRefused as reason:
            await self._refuse(command, str(reason))
            self.metrics.saga_commands.labels(command.route, "refused").inc()
            return
        except RetryLater as reason:
            await self._retry_later(command, str(reason))
            self.metrics.saga_commands.labels(command.route, "retry").inc()
            return
        async with self.database.single_statement() as tx:
            await tx.inbox.done(command_id, done.operation_key, done.summary[:1000], self.clock.now())
        self.metrics.saga_commands.labels(command.route, "executed").inc()

    async def _refuse(self, command: InboxCommand, reason: str) -> None:
        """Close a command that cannot succeed, with the executor's answer to it in the same transaction."""
        async with self.database.transaction() as tx:
            await self.executor.refuse(tx, command, reason)
            await tx.inbox.refused(command.id, f"refused: {reason}"[:1000], self.clock.now())
        log.info("saga command refused", extra={"sagaId": command.saga_id, "route": command.route, "reason": reason})

    async def _retry_later(self, command: InboxCommand, reason: str) -> None:
        if command.attempts >= self.max_attempts:
            await self._refuse(command, f"gave up after {command.attempts} attempts: {reason}")
            return
        delay = min(self.retry_base_seconds * 2 ** max(command.attempts - 1, 0), 60.0)
        async with self.database.single_statement() as tx:
            await tx.inbox.put_off(command.id, self.clock.now() + delay, f"retrying: {reason}"[:1000])

    async def aclose(self) -> None:
        """Let running commands finish their current step (they resume after a restart otherwise)."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
