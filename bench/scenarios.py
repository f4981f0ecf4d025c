"""The measured scenarios. Each is an open model: request i is due at start + i/rate by the clock,
whatever happened to the requests before it. A request sent more than LATE_SECONDS after its due time
is counted as late (never skipped), and every latency is measured from the due time, so a slow load
generator makes the figures worse, never better."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from bench import counting
from bench.processes import SANDBOX_SECRET, Service
from bench.rawhttp import ClientPool, Receiver
from pgm.crypto import timestamped_hmac

LATE_SECONDS = 0.005
EVENT_PATH = "/event"
STATUS_PATH = "/payment-status"
# How long the callback step waits for the outbox to be empty, then for the processes to go idle, before it
# creates its payments.
CALLBACK_SETTLE_SECONDS = 90.0


def pending_outbox_messages(metrics_text: str) -> float:
    """The outbox messages still to deliver, from a Prometheus exposition of the PGM's /-/metrics."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("pgm_outbox_messages{") and 'status="PENDING"' in line
    )


@dataclass
class Row:
    """One line of the results table."""

    backend: str
    processes: int
    scenario: str
    rate: float
    delay_ms: int
    sent: int
    completed: int
    late: int
    max_lag_ms: float
    achieved_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    cpu_s_per_1000: float | None
    peak_mb: float
    checks: str
    notes: list[str] = field(default_factory=list)
    rated: bool = True  # False when `rate` is not in the unit of `achieved_per_s` (duplicates)
    profile: dict[str, float] | None = None  # layer → share of the busy samples (bench/profile.py)
    # --count-statements: the store's statements (SQLite) or round trips (PostgreSQL) per saga, by kind
    statements: dict[str, float] | None = None

    @property
    def sustained(self) -> bool | None:
        """Everything completed, at (nearly) the offered rate; None when that does not apply."""
        if not self.rated:
            return None
        return self.completed == self.sent and self.achieved_per_s >= 0.95 * self.rate

    def as_dict(self) -> dict[str, Any]:
        """For the JSON file."""
        return {**asdict(self), "sustained": self.sustained}


@dataclass
class Target:
    """The processes under test, with a client pool each (requests are spread round-robin)."""

    services: list[Service]
    pools: list[ClientPool]
    receiver: Receiver
    backend: str
    # Whether the last settle() gave up with the processes still busy (a backlog left by an overloaded step).
    unsettled: bool = False

    @classmethod
    def of(cls, services: list[Service], receiver: Receiver, backend: str) -> Target:
        """Pools for these services."""
        return cls(services, [ClientPool("127.0.0.1", s.port) for s in services], receiver, backend)

    def pool(self, index: int) -> ClientPool:
        """The pool request `index` goes to."""
        return self.pools[index % len(self.pools)]

    def counts(self) -> Counter[str] | None:
        """The store's statements or round trips so far, all processes together (bench/counting.py); None
        unless the processes are counted (--count-statements)."""
        counted = [s for s in self.services if s.counts_path is not None]
        if not counted:
            return None
        total: Counter[str] = Counter()
        for service in counted:
            assert service.counts_path is not None
            total += counting.snapshot(service.pid, service.counts_path)
        return total

    def cpu(self) -> float:
        """CPU seconds of all the processes so far."""
        return sum(s.cpu() for s in self.services)

    def peak_mb(self) -> float:
        """The largest peak RSS among the processes."""
        return max(s.peak_mb() for s in self.services)

    async def settle(self, timeout: float = 15.0) -> float:
        """Wait until the processes are idle (trailing outbox work done); return CPU seconds now. Idle: less
        than 8 % of a core each over a quarter of a second (their pollers cost less)."""
        window = 0.25
        before = self.cpu()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(window)
            now = self.cpu()
            if now - before < 0.08 * window * len(self.services):
                self.unsettled = False
                return now
            before = now
        self.unsettled = True
        return self.cpu()

    async def drain_outbox(self, timeout: float) -> None:
        """Wait until the store has no outbox message left to deliver (`pgm_outbox_messages`, PENDING, read
        from the first process's /-/metrics: the processes share one store). A backlog waiting out its
        back-off costs no CPU, so `settle` alone can take it for idle; sets `unsettled` when time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = await self.pools[0].request("GET", "/-/metrics")
            if status == 200 and pending_outbox_messages(body.decode()) == 0:
                return
            await asyncio.sleep(0.25)
        self.unsettled = True

    async def reset(self) -> None:
        """Close idle client connections between phases."""
        for pool in self.pools:
            await pool.close()


@dataclass
class Sent:
    """What the open loop did."""

    due: list[float]
    late: int
    max_lag: float
    statuses: list[int]
    answered: list[float]
    bodies: list[bytes]


async def open_loop(rate: float, count: int, send: Callable[[int], Awaitable[tuple[int, bytes]]]) -> Sent:
    """Send request i at start + i/rate, each in its own task, never waiting for earlier answers."""
    start = time.perf_counter() + 0.05
    due = [start + i / rate for i in range(count)]
    statuses = [0] * count
    answered = [0.0] * count
    bodies = [b""] * count
    late = 0
    max_lag = 0.0

    async def one(i: int) -> None:
        try:
            statuses[i], bodies[i] = await send(i)
        except Exception as exc:
            statuses[i], bodies[i] = -1, repr(exc).encode()
        answered[i] = time.perf_counter()

    tasks = []
    for i, at in enumerate(due):
        wait = at - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        lag = time.perf_counter() - at
        if lag > LATE_SECONDS:
            late += 1
        max_lag = max(max_lag, lag)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return Sent(due, late, max_lag, statuses, answered, bodies)


def percentiles(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """p50, p90, p99 in milliseconds (None without data)."""
    if not values:
        return None, None, None
    if len(values) == 1:
        return values[0] * 1000, values[0] * 1000, values[0] * 1000
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[89] * 1000, cuts[98] * 1000


class Arrivals:
    """First arrival per key of the receiver's requests at one path, from a mark on."""

    def __init__(self, receiver: Receiver, path: str, key: Callable[[dict[str, Any]], str | None]) -> None:
        self.receiver = receiver
        self.path = path
        self.key = key
        self.cursor = len(receiver.records)
        self.first: dict[str, float] = {}
        self.count: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()

    def scan(self) -> None:
        """Read the requests that arrived since the last scan."""
        records = self.receiver.records
        for record in records[self.cursor :]:
            if record.path != self.path:
                continue
            document = json.loads(record.body)
            key = self.key(document)
            if key is None:
                continue
            self.count[key] += 1
            value = document.get("value")
            if isinstance(value, dict):
                self.labels[str(value.get("messageLabel"))] += 1
            self.first.setdefault(key, record.at)
        self.cursor = len(records)

    async def wait(self, keys: Sequence[str], timeout: float) -> bool:
        """Until every key has arrived at least once, or the timeout."""
        wanted = set(keys)
        deadline = time.monotonic() + timeout
        while True:
            self.scan()
            if wanted <= self.first.keys():
                return True
            if time.monotonic() > deadline:
                return False
            self.receiver.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.receiver.arrived.wait(), 0.25)


def saga_payload(shop_transaction_id: str, delay_ms: int) -> dict[str, Any]:
    """The saga's whole metadata, as the Flow Manager sends it by default: no CRUD read is needed."""
    return {
        "amount": 1299,
        "currency": "EUR",
        "provider": "sandbox",
        "paymentMethod": "credit-cards",
        "shopTransactionId": shop_transaction_id,
        "type": "DIRECT",
        "payRequestData": {
            "successRedirect": "https://shop.example/ok",
            "failureRedirect": "https://shop.example/ko",
            "providerData": {"sandboxOutcome": "OK", "sandboxDelayMs": delay_ms},
        },
    }


def command(saga_id: str, payload: dict[str, Any]) -> bytes:
    """A Flow Manager command envelope."""
    value = {"messageLabel": "paymentScheduled", "messagePayload": payload}
    return json.dumps({"key": saga_id, "value": value}).encode()


def _event_key(saga_ids: Sequence[str]) -> Callable[[dict[str, Any]], str | None]:
    """The saga an event is for, when it is one of these (a late event of an earlier step is not)."""
    wanted = set(saga_ids)

    def key(document: dict[str, Any]) -> str | None:
        saga_id = document.get("key")
        return saga_id if isinstance(saga_id, str) and saga_id in wanted else None

    return key


def duplicate_message_ids(receiver: Receiver, since: int = 0) -> int:
    """How many Flow Manager deliveries repeated a message id already delivered (must be 0 where every
    command was sent once: the outbox delivers each message once)."""
    seen = Counter(r.message_id for r in receiver.records[since:] if r.path == EVENT_PATH and r.message_id)
    return sum(n - 1 for n in seen.values() if n > 1)


def event_ids(receiver: Receiver, since: int, saga_ids: set[str]) -> dict[str, set[str]]:
    """The X-Pgm-Message-Id values each of these sagas' events arrived with."""
    ids: dict[str, set[str]] = {}
    for record in receiver.records[since:]:
        if record.path == EVENT_PATH and record.message_id:
            saga_id = json.loads(record.body).get("key")
            if saga_id in saga_ids:
                ids.setdefault(saga_id, set()).add(record.message_id)
    return ids


def conflicting_message_ids(receiver: Receiver, since: int = 0) -> int:
    """How many message ids were delivered with different bodies (must be 0: an id names one event, and
    an event re-sent for a repeated command keeps its id, so there a repeated id is expected)."""
    bodies: dict[str, set[bytes]] = {}
    for record in receiver.records[since:]:
        if record.path == EVENT_PATH and record.message_id:
            bodies.setdefault(record.message_id, set()).add(record.body)
    return sum(1 for seen in bodies.values() if len(seen) > 1)


def store_state(database_url: str, saga_ids: Sequence[str]) -> dict[str, str]:
    """What the PGM's store says about each of these sagas (read after the step, from the processes'
    database): its commands in the inbox, its payment, its undelivered Flow Manager messages. A saga the
    run did not see finish is then told apart: lost (no command stored), still queued or running, in
    reconciliation (its provider call lost its answer: an overloaded run's provider time-out; it settles
    PGM_RECONCILE_AFTER_SECONDS after the payment, docs/reliability.md), or its event still in the outbox."""
    if not saga_ids:
        return {}
    marks = ",".join(["?" if database_url.startswith("sqlite") else "%s"] * len(saga_ids))
    queries = {
        "inbox": f"SELECT saga_id, status, attempts FROM inbox WHERE saga_id IN ({marks})",
        "payments": f"SELECT saga_id, status, description FROM payments WHERE saga_id IN ({marks})",
        "outbox": "SELECT ordering_key, status, attempts FROM outbox"
        f" WHERE status <> 'DELIVERED' AND ordering_key IN ({marks})",
    }
    rows: dict[str, list[tuple[Any, ...]]] = {}
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(database_url.split("///", 1)[1])) as connection:
            for name, sql in queries.items():
                rows[name] = connection.execute(sql, list(saga_ids)).fetchall()
    else:
        import psycopg

        with psycopg.connect(database_url) as connection:
            for name, sql in queries.items():
                rows[name] = connection.execute(sql, list(saga_ids)).fetchall()
    facts: dict[str, list[str]] = {s: [] for s in saga_ids}
    commands: dict[str, Counter[str]] = {s: Counter() for s in saga_ids}
    for saga_id, status, attempts in rows["inbox"]:
        commands[saga_id][f"{status} (attempt {attempts})"] += 1
    states = {}
    for saga_id in saga_ids:
        held = commands[saga_id]
        payments = [(status, description) for s, status, description in rows["payments"] if s == saga_id]
        queued = [(status, attempts) for key, status, attempts in rows["outbox"] if key == saga_id]
        facts[saga_id].append("commands " + (", ".join(f"{n}x {c}" for c, n in sorted(held.items())) or "none"))
        facts[saga_id] += [f"payment {status} ({(description or '')[:80]})" for status, description in payments]
        facts[saga_id] += [f"event {status} after {attempts} attempts" for status, attempts in queued]
        if not held:
            verdict = "LOST: no command stored"
        elif any(c.startswith("PENDING") for c in held):
            verdict = "still queued or running"
        elif queued:
            verdict = "event not delivered yet"
        elif any(status in ("UNKNOWN", "PENDING") for status, _ in payments):
            verdict = "in reconciliation"
        else:
            verdict = "UNEXPLAINED"
        states[saga_id] = f"{verdict}: {'; '.join(facts[saga_id])}"
    return states


async def unfinished(target: Target, saga_ids: Sequence[str]) -> list[str]:
    """Checks naming what the store says of the sagas the run did not see finish (a few, in full)."""
    database_url = target.services[0].env.get("PGM_DATABASE_URL")
    if not saga_ids or database_url is None:  # a ceiling has no store
        return []
    try:
        states = await asyncio.to_thread(store_state, database_url, saga_ids)
    except Exception as exc:  # the report must still be written
        return [f"store not readable: {exc!r}"]
    verdicts = Counter(state.split(":", 1)[0] for state in states.values())
    shown = [f"{saga_id}: {states[saga_id]}" for saga_id in list(saga_ids)[:3]]
    return [f"unfinished {dict(verdicts)}", *shown]


def _row(
    target: Target,
    scenario: str,
    rate: float,
    delay_ms: int,
    sent: Sent,
    latencies: list[float],
    done_at: list[float],
    cpu: float | None,
    checks: list[str],
) -> Row:
    completed = len(latencies)
    p50, p90, p99 = percentiles(sorted(latencies))
    return Row(
        backend=target.backend,
        processes=len(target.services),
        scenario=scenario,
        rate=rate,
        delay_ms=delay_ms,
        sent=len(sent.due),
        completed=completed,
        late=sent.late,
        max_lag_ms=round(sent.max_lag * 1000, 1),
        achieved_per_s=_throughput(done_at),
        p50_ms=_round(p50),
        p90_ms=_round(p90),
        p99_ms=_round(p99),
        cpu_s_per_1000=round(cpu / completed * 1000, 2) if cpu is not None and completed else None,
        peak_mb=round(target.peak_mb(), 1),
        checks="; ".join(checks) or "ok",
    )


def _throughput(done_at: list[float]) -> float:
    """Completions per second, from the first completion to the last: a step that keeps up completes at
    the offered rate whatever its latency; one that falls behind spreads its completions over longer.
    (Counting from the first due time instead would charge a short step its latency once more.)"""
    if len(done_at) < 2:
        return float(len(done_at))
    return round((len(done_at) - 1) / max(max(done_at) - min(done_at), 1e-9), 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def sagas(
    target: Target,
    rate: float,
    duration: float,
    delay_ms: int,
    drain: float,
    scenario: str = "saga",
    path: str = "/saga/pay",
) -> Row:
    """A saga command at `path` at a constant rate; latency = due time → event at the Flow Manager, minus
    the delay. The ceilings take the same command at their own paths (bench/ceiling.py)."""
    count = max(int(rate * duration), 1)
    run = uuid.uuid4().hex[:8]
    saga_ids = [f"bench-{run}-{i}" for i in range(count)]
    bodies = [command(s, saga_payload(f"order-{s}", delay_ms)) for s in saga_ids]
    arrivals = Arrivals(target.receiver, EVENT_PATH, _event_key(saga_ids))
    mark = len(target.receiver.records)
    await target.reset()
    counts_before = target.counts()
    cpu_before = target.cpu()

    async def send(i: int) -> tuple[int, bytes]:
        return await target.pool(i).request("POST", path, bodies[i])

    sent = await open_loop(rate, count, send)
    await arrivals.wait(saga_ids, drain)
    cpu_after = await target.settle()
    counts_after = target.counts()
    arrivals.scan()
    latencies = [
        arrivals.first[s] - sent.due[i] - delay_ms / 1000 for i, s in enumerate(saga_ids) if s in arrivals.first
    ]
    done_at = [arrivals.first[s] for s in saga_ids if s in arrivals.first]
    checks = []
    refused = sum(1 for status in sent.statuses if status != 202)
    if refused:
        checks.append(f"{refused} commands not answered 202")
    missing = count - len(latencies)
    if missing:
        checks.append(f"{missing} events missing after {drain:.0f}s")
        checks += await unfinished(target, [s for s in saga_ids if s not in arrivals.first])
    repeated = sum(1 for s in saga_ids if arrivals.count[s] > 1)
    if repeated:
        checks.append(f"{repeated} sagas got more than one event")
    others = {label: n for label, n in arrivals.labels.items() if label != "paymentExecuted"}
    if others:
        checks.append(f"unexpected events {others}")
    duplicated = duplicate_message_ids(target.receiver, mark)
    if duplicated:
        checks.append(f"{duplicated} outbox messages delivered twice")
    row = _row(target, scenario, rate, delay_ms, sent, latencies, done_at, cpu_after - cpu_before, checks)
    if counts_before is not None and counts_after is not None:
        row.statements = counting.per_operation(counts_before, counts_after, len(latencies))
    return row


async def payments(target: Target, rate: float, duration: float, delay_ms: int) -> Row:
    """POST /v3/sandbox/credit-cards/pay at a constant rate; latency = due time → response, minus the delay."""
    count = max(int(rate * duration), 1)
    run = uuid.uuid4().hex[:8]
    bodies = [
        json.dumps(
            {
                "amount": 1299,
                "currency": "EUR",
                "shopTransactionId": f"v3-{run}-{i}",
                "providerData": {"sandboxOutcome": "OK", "sandboxDelayMs": delay_ms},
            }
        ).encode()
        for i in range(count)
    ]
    await target.reset()
    cpu_before = target.cpu()

    async def send(i: int) -> tuple[int, bytes]:
        return await target.pool(i).request(
            "POST", "/v3/sandbox/credit-cards/pay", bodies[i], {"Idempotency-Key": f"v3-{run}-{i}"}
        )

    sent = await open_loop(rate, count, send)
    cpu_after = await target.settle()
    ok = [i for i in range(count) if sent.statuses[i] == 200 and json.loads(sent.bodies[i]).get("result") == "OK"]
    latencies = [sent.answered[i] - sent.due[i] - delay_ms / 1000 for i in ok]
    done_at = [sent.answered[i] for i in ok]
    # A 503 is the PGM shedding load (PGM_MAX_IN_FLIGHT): reported apart from real failures.
    shed = sum(1 for status in sent.statuses if status == 503)
    failed = count - len(ok) - shed
    checks = [f"{shed} shed (503)"] if shed else []
    checks += [f"{failed} payments not answered 200 OK"] if failed else []
    return _row(target, "v3 pay", rate, delay_ms, sent, latencies, done_at, cpu_after - cpu_before, checks)


async def callbacks(target: Target, rate: float, duration: float, drain: float) -> Row:
    """Signed sandbox callbacks that settle PENDING payments; latency = due time → PaymentStatus ACCEPTED."""
    count = max(int(rate * duration), 1)
    run = uuid.uuid4().hex[:8]
    references = [f"cb-{run}-{i}" for i in range(count)]
    payment_ids: list[str] = [""] * count
    gate = asyncio.Semaphore(16)

    async def create(i: int) -> None:
        body = json.dumps(
            {
                "amount": 1299,
                "currency": "EUR",
                "shopTransactionId": references[i],
                "providerData": {"sandboxOutcome": "PENDING"},
            }
        ).encode()
        async with gate:
            status, answer = await target.pool(i).request("POST", "/v3/sandbox/credit-cards/pay", body)
        # A lost provider answer leaves paymentId null (the payment is reconciled later): not usable here.
        created = json.loads(answer).get("paymentId") if status == 200 else None
        if created:
            payment_ids[i] = str(created)

    # The previous step's backlog must not spill into these payments: an overloaded `v3 pay` step before
    # this one can leave its sandbox webhooks being retried for tens of seconds (in back-off, with the CPU
    # idle between attempts), so wait for the outbox to be empty, then for the processes to be idle.
    await target.drain_outbox(timeout=CALLBACK_SETTLE_SECONDS)
    drained = not target.unsettled
    await target.settle(timeout=CALLBACK_SETTLE_SECONDS)
    target.unsettled = target.unsettled or not drained
    carried_over = target.unsettled
    await asyncio.gather(*(create(i) for i in range(count)))
    await target.settle()  # their own notifications and webhooks are sent before the clock starts
    accepted = Arrivals(
        target.receiver,
        STATUS_PATH,
        lambda d: d.get("shopTransactionId") if d.get("status") == "ACCEPTED" else None,
    )
    await target.reset()
    cpu_before = target.cpu()

    async def send(i: int) -> tuple[int, bytes]:
        event = {
            "id": f"evt_bench_{run}_{i}",
            "type": "payment.updated",
            "createdAt": int(time.time()),
            "data": {"id": payment_ids[i], "status": "ACCEPTED", "reference": references[i], "amount": 1299},
        }
        body = json.dumps(event, separators=(",", ":")).encode()
        signature = timestamped_hmac.header(SANDBOX_SECRET, int(time.time()), body)
        return await target.pool(i).request("POST", "/v3/sandbox/callback", body, {"Sandbox-Signature": signature})

    sent = await open_loop(rate, count, send)
    await accepted.wait(references, drain)
    cpu_after = await target.settle()
    accepted.scan()
    latencies = [accepted.first[r] - sent.due[i] for i, r in enumerate(references) if r in accepted.first]
    done_at = [accepted.first[r] for r in references if r in accepted.first]
    checks = []
    if not all(payment_ids):
        checks.append(f"{sum(1 for p in payment_ids if not p)} pending payments not created")
    rejected = sum(1 for status in sent.statuses if status != 200)
    if rejected:
        checks.append(f"{rejected} callbacks not answered 200")
    if len(latencies) < count:
        checks.append(f"{count - len(latencies)} PaymentStatus missing after {drain:.0f}s")
    if carried_over:
        # Its notifications then wait behind that backlog: late, and done in a burst (achieved/s overstated).
        checks.append("started with the previous step's backlog still being delivered")
    return _row(target, "callback", rate, 0, sent, latencies, done_at, cpu_after - cpu_before, checks)


async def duplicates(target: Target, sagas_count: int, copies: int, rate: float, drain: float) -> Row:
    """Every command delivered `copies` times within milliseconds (round-robin over the processes):
    one sandbox payment per saga, checked at GET /sandbox/payments; latency = first delivery → first event."""
    run = uuid.uuid4().hex[:8]
    saga_ids = [f"dup-{run}-{i}" for i in range(sagas_count)]
    bodies = [command(s, saga_payload(f"order-{s}", 0)) for s in saga_ids]
    arrivals = Arrivals(target.receiver, EVENT_PATH, _event_key(saga_ids))
    mark = len(target.receiver.records)
    await target.reset()
    cpu_before = target.cpu()

    async def send(i: int) -> tuple[int, bytes]:
        return await target.pool(i).request("POST", "/saga/pay", bodies[i // copies])

    sent = await open_loop(rate, sagas_count * copies, send)
    await arrivals.wait(saga_ids, drain)
    await asyncio.sleep(1.0)  # replays of the later deliveries
    cpu_after = await target.settle()
    arrivals.scan()
    latencies = [arrivals.first[s] - sent.due[i * copies] for i, s in enumerate(saga_ids) if s in arrivals.first]
    done_at = [arrivals.first[s] for s in saga_ids if s in arrivals.first]
    gate = asyncio.Semaphore(16)

    async def books(i: int) -> int:
        async with gate:
            status, answer = await target.pool(i).request(
                "GET", f"/sandbox/payments?shopTransactionId={quote('order-' + saga_ids[i])}"
            )
        return len(json.loads(answer)) if status == 200 else -1

    booked = await asyncio.gather(*(books(i) for i in range(sagas_count)))
    counts = Counter(booked)
    checks = [f"payments per saga {dict(sorted(counts.items()))}"]
    if max(counts) > 1:
        checks.append("DOUBLE PAYMENT")
    refused = sum(1 for status in sent.statuses if status != 202)
    if refused:
        checks.append(f"{refused} deliveries not answered 202")
    events = [arrivals.count[s] for s in saga_ids]
    checks.append(f"events per saga {min(events)}..{max(events)} (≤{copies})")
    # Every event of a saga here is its one outcome, re-sent for each repeated command with the id it was
    # first sent with: two ids for one saga are two different events. A delivery beyond one per command
    # repeats an id already delivered: the outbox's at-least-once (a lease that ran out while its process
    # stalled, docs/reliability.md), which a receiver drops by X-Pgm-Message-Id.
    ids = event_ids(target.receiver, mark, set(saga_ids))
    differing = sum(1 for seen in ids.values() if len(seen) > 1)
    if differing:
        checks.append(f"{differing} SAGAS GOT DIFFERENT EVENTS")
    beyond = sum(max(n - copies, 0) for n in events)
    if beyond:
        checks.append(f"{beyond} events beyond one per delivery, each repeating its saga's event id (at least once)")
    stalled = [s for i, s in enumerate(saga_ids) if booked[i] != 1 or s not in arrivals.first]
    if stalled:
        checks.append("MISSING PAYMENT OR EVENT")
        checks += await unfinished(target, stalled)
    others = {label: n for label, n in arrivals.labels.items() if label != "paymentExecuted"}
    if others:
        checks.append(f"unexpected events {others}")
    conflicting = conflicting_message_ids(target.receiver, mark)
    if conflicting:
        checks.append(f"{conflicting} message ids named different events")
    row = _row(target, f"duplicates x{copies}", rate, 0, sent, latencies, done_at, cpu_after - cpu_before, checks)
    row.completed = len(latencies)
    row.sent = sagas_count
    row.notes.append("rate = deliveries/s; sent/completed/achieved count sagas")
    row.rated = False
    return row
