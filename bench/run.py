"""The benchmark's command line: which stores, topologies, scenarios and rates; see bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import counting, processes, profile, report, scenarios
from bench.processes import Service
from bench.rawhttp import Receiver
from bench.scenarios import Row, Target

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCENARIOS = ("ceiling", "saga", "saga-remote", "saga-delay", "v3", "callback", "duplicates", "profile")


@dataclass(frozen=True)
class Plan:
    """What to run."""

    backends: list[str]
    topologies: list[int]
    scenarios: list[str]
    rates: list[float]
    duration: float
    delay_ms: int
    delay_rate: float
    callback_rate: float
    duplicate_sagas: int
    duplicate_copies: int
    duplicate_rate: float
    drain: float
    log_level: str
    admin_url: str
    warm_up: bool
    profile_rate: float
    start_together: bool
    count_statements: bool = False


# --quick: tiny load on SQLite and one process, every scenario once (the smoke test runs it); the
# drain waits only as long as needed and is generous, so a busy machine does not fail the smoke test.
QUICK = {
    "backends": "sqlite",
    "topologies": "1",
    "rates": "20",
    "duration": 1.0,
    "delay_ms": 20,
    "delay_rate": 20.0,
    "duplicate_sagas": 20,
    "drain": 60.0,
    "warm_up": False,
    "profile_rate": 20.0,
}


def parse(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    """Command-line options → plan."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny load, SQLite, one process: under a minute")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--topologies", default="1,2", help="PGM processes: 1 and/or 2 (2 only on PostgreSQL)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=",".join(SCENARIOS))
    parser.add_argument(
        "--rates", default="20,50,100,200,300,400,500,600,800,1000", help="saga, v3 and ceiling rates (per second)"
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per rate")
    parser.add_argument("--delay-ms", type=int, default=50, help="sandboxDelayMs of the saga-delay scenario")
    parser.add_argument("--delay-rate", type=float, default=10.0, help="rate of the saga-delay scenario")
    parser.add_argument("--callback-rate", type=float, default=20.0)
    parser.add_argument("--duplicate-sagas", type=int, default=100)
    parser.add_argument("--duplicate-copies", type=int, default=3)
    parser.add_argument("--duplicate-rate", type=float, default=150.0, help="deliveries per second")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for outstanding outcomes")
    parser.add_argument("--log-level", default="INFO", help="the PGM's LOG_LEVEL (INFO is the production default)")
    parser.add_argument("--postgres", default=os.environ.get("PGM_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL))
    parser.add_argument(
        "--no-warm-up", dest="warm_up", action="store_false", help="measure from the first request of a process"
    )
    parser.add_argument(
        "--profile-rate",
        type=float,
        default=0.0,
        help="rate of the profiled saga step (py-spy); default: half the highest rate the PGM held",
    )
    parser.add_argument(
        "--count-statements",
        action="store_true",
        help="count the store's statements (SQLite) or round trips (PostgreSQL) per saga (bench/counting.py); "
        "the counters cost CPU, so measure CPU in a run without them",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--publish", action="store_true", help="also update the table in docs/performance.md")
    parser.add_argument("--from-json", type=Path, help="measure nothing: render (and publish) a results JSON file")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    plan = Plan(
        backends=_list(args.backends),
        topologies=[int(t) for t in _list(args.topologies)],
        scenarios=_list(args.scenarios),
        rates=[float(r) for r in _list(args.rates)],
        duration=args.duration,
        delay_ms=args.delay_ms,
        delay_rate=args.delay_rate,
        callback_rate=args.callback_rate,
        duplicate_sagas=args.duplicate_sagas,
        duplicate_copies=args.duplicate_copies,
        duplicate_rate=args.duplicate_rate,
        drain=args.drain,
        log_level=args.log_level,
        admin_url=args.postgres,
        warm_up=args.warm_up,
        profile_rate=args.profile_rate,
        start_together=args.quick,
        count_statements=args.count_statements,
    )
    unknown = set(plan.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    return plan, args


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def say(message: str) -> None:
    """Progress on stderr."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def running(services: list[Service], ready_path: str, together: bool = False) -> Iterator[list[Service]]:
    """Start the services and stop them at the end: one after the other, each ready before the next starts
    (so start-ups never overlap a measurement, and the first runs the migrations of a shared database
    alone); `together`: all at once, for services that share no database."""
    try:
        if together:
            for service in services:
                service.launch()
            for service in services:
                service.wait_ready(ready_path)
        else:
            for service in services:
                service.start(ready_path)
        yield services
    finally:
        for service in services:
            service.stop()


Step = Callable[[float, float], Awaitable[Row]]  # (rate, duration) → the step's row
WARM_UP_RATE = 50.0
WARM_UP_SECONDS = 1.0


async def ladder(step: Step, plan: Plan, ceilings: Sequence[Row] = ()) -> list[Row]:
    """The rates in ascending order, stopping after the first one the target does not sustain. A fresh
    process first serves a short untimed load, so that its first step does not measure its start-up
    (first imports, connections, caches)."""
    if plan.warm_up:
        await step(WARM_UP_RATE, WARM_UP_SECONDS)
    rows = []
    for rate in sorted(plan.rates):
        row = await step(rate, plan.duration)
        say(_summary(row, ceilings))
        rows.append(row)
        if not row.sustained:
            break
    return rows


def _summary(row: Row, ceilings: Sequence[Row] = ()) -> str:
    statements = f"; store: {counting.summary(row.statements)}" if row.statements else ""
    return (
        f"{row.backend}/{row.processes} {row.scenario} @{row.rate:g}/s: {row.completed}/{row.sent} done, "
        f"{row.achieved_per_s}/s, p50 {row.p50_ms} p99 {row.p99_ms} ms, late {row.late}, "
        f"CPU {row.cpu_s_per_1000} s/1000, peak {row.peak_mb} MiB{_ratio(row, ceilings)}; {row.checks}{statements}"
    )


def _ratio(row: Row, ceilings: Sequence[Row]) -> str:
    ratio = report.cpu_ratio(row, ceilings)
    return "" if ratio is None else f", CPU {ratio:g}x its ceiling's"


def _saga_step(target: Target, plan: Plan, scenario: str, path: str) -> Step:
    async def step(rate: float, duration: float) -> Row:
        return await scenarios.sagas(target, rate, duration, 0, plan.drain, scenario=scenario, path=path)

    return step


async def profiled_step(step: Step, plan: Plan, target: Target, ladder_rows: list[Row], workdir: Path) -> Row:
    """One more step with py-spy on the processes, at `--profile-rate` or half the highest rate held: the
    row carries each layer's share of the busy samples (bench/profile.py)."""
    held = [r.rate for r in ladder_rows if r.sustained]
    rate = plan.profile_rate or max(max(held, default=0.0) / 2, 20.0)
    name = f"profile-{target.backend}-{len(target.services)}"
    with processes.profiled(target.services, workdir, name) as outputs:
        row = await step(rate, plan.duration)
    row.scenario += " profiled"
    row.profile = profile.shares(outputs)
    say(_summary(row) + f"; profile {workdir}/{name}-*.folded")
    return row


async def run_ceilings(plan: Plan, workdir: Path, provider: Service | None) -> list[Row]:
    """The ceilings of the selected scenarios, on the same stack: the one-pair ceiling for /v3 pay, the
    saga-shaped ceiling with the provider in-process, and with the provider in another process."""
    wanted = [
        (scenario, path)
        for scenario, path, needed_by in CEILING_SHAPES
        if needed_by in plan.scenarios or plan.scenarios == ["ceiling"]
    ]
    if not wanted:
        return []
    receiver = await Receiver().start()
    provider_url = provider.url if provider is not None else None
    service = processes.ceiling(workdir / "ceiling.log", f"http://127.0.0.1:{receiver.port}", provider_url)
    rows: list[Row] = []
    try:
        with running([service], "/"):
            if provider is not None:
                processes.send_webhooks_to(provider, [f"{service.url}{processes.SANDBOX_CALLBACK_PATH}"])
            target = Target.of([service], receiver, "none")
            for scenario, path in wanted:
                if path.startswith("/remote") and provider is None:
                    continue
                rows += await ladder(_saga_step(target, plan, scenario, path), plan)
    finally:
        await receiver.close()
    return rows


# (the ceiling's scenario name, its path in bench/ceiling.py, the PGM scenario it is the ceiling of)
CEILING_SHAPES = [
    ("ceiling pair", "/pair", "v3"),
    ("ceiling saga", "/saga/pay", "saga"),
    ("ceiling saga remote", "/remote/saga/pay", "saga-remote"),
]


@dataclass
class Group:
    """PGM processes configured one way, on a database of their own, and what is measured on them."""

    name: str
    env: dict[str, str]
    measure: Callable[[Target], Awaitable[list[Row]]]
    services: list[Service] = field(default_factory=list)


async def run_pgm(
    plan: Plan, backend: str, count: int, workdir: Path, provider: Service | None, ceilings: Sequence[Row]
) -> list[Row]:
    """Every PGM scenario on one store and topology, in groups of `count` fresh processes: sagas with the
    sandbox in the PGM (Flow Manager only), sagas with the sandbox in another process (SANDBOX_BASE_URL,
    the provider stand-in), and an API group (PaymentStatus notifications only)."""
    receiver = await Receiver().start()
    base = f"http://127.0.0.1:{receiver.port}"
    saga_env = {"FLOW_MANAGER_URL": base, "SAGA_CRUD_URL": f"{base}/crud/sagas/"}

    async def sagas(target: Target) -> list[Row]:
        rows: list[Row] = []
        step = _saga_step(target, plan, "saga", "/saga/pay")
        if "saga" in plan.scenarios:
            rows += await ladder(step, plan, ceilings)
        if "profile" in plan.scenarios and count == 1:
            rows.append(await profiled_step(step, plan, target, rows, workdir))
        if "saga-delay" in plan.scenarios:
            rows.append(
                await scenarios.sagas(target, plan.delay_rate, plan.duration, plan.delay_ms, plan.drain, "saga")
            )
            say(_summary(rows[-1]))
        if "duplicates" in plan.scenarios:
            rows.append(
                await scenarios.duplicates(
                    target, plan.duplicate_sagas, plan.duplicate_copies, plan.duplicate_rate, plan.drain
                )
            )
            say(_summary(rows[-1]))
        conflicting = scenarios.conflicting_message_ids(receiver)
        if conflicting:
            say(f"!! {conflicting} Flow Manager message ids named different events")
        return rows

    async def remote_sagas(target: Target) -> list[Row]:
        assert provider is not None
        callbacks = [f"{s.url}{processes.SANDBOX_CALLBACK_PATH}" for s in target.services]
        processes.send_webhooks_to(provider, callbacks)
        return await ladder(_saga_step(target, plan, "saga remote", "/saga/pay"), plan, ceilings)

    async def api(target: Target) -> list[Row]:
        rows: list[Row] = []
        if "v3" in plan.scenarios:

            async def pay(rate: float, duration: float) -> Row:
                return await scenarios.payments(target, rate, duration, 0)

            rows += await ladder(pay, plan, ceilings)
        if "callback" in plan.scenarios:
            rows.append(await scenarios.callbacks(target, plan.callback_rate, plan.duration, plan.drain))
            say(_summary(rows[-1]))
        return rows

    groups = []
    if {"saga", "saga-delay", "duplicates", "profile"} & set(plan.scenarios):
        groups.append(Group("saga", saga_env, sagas))
    if "saga-remote" in plan.scenarios and provider is not None:
        groups.append(Group("remote", {**saga_env, "SANDBOX_BASE_URL": f"{provider.url}/sandbox"}, remote_sagas))
    if {"v3", "callback"} & set(plan.scenarios):
        groups.append(Group("api", {"PAYMENT_CALLBACK_URL": f"{base}{scenarios.STATUS_PATH}"}, api))
    rows: list[Row] = []
    try:
        with contextlib.ExitStack() as stack:
            for group in groups:
                url = stack.enter_context(processes.database(backend, workdir, plan.admin_url))
                group.services = [
                    processes.pgm(
                        url, workdir / f"pgm-{backend}-{count}-{group.name}-{i}.log", plan.log_level, **group.env
                    )
                    for i in range(count)
                ]
            if plan.start_together:
                # --quick: the groups start at once, each on its own database (their start-ups overlap,
                # their measurements do not); a group's second process after its first has migrated.
                stack.enter_context(running([g.services[0] for g in groups], "/-/ready", together=True))
                stack.enter_context(running([s for g in groups for s in g.services[1:]], "/-/ready", together=True))
            for group in groups:
                with running([] if plan.start_together else group.services, "/-/ready"):
                    rows += await group.measure(Target.of(group.services, receiver, backend))
    finally:
        await receiver.close()
    return rows


async def run(plan: Plan) -> list[Row]:
    """Everything in the plan, in a temporary directory (logs are kept when a step fails)."""
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="pgm-bench-"))
    say(f"work directory {workdir}")
    if plan.count_statements:
        os.environ["PGM_BENCH_COUNTS"] = str(workdir)  # the PGM processes start counted (processes.pgm)
    # The provider of the remote modes runs apart for the whole run: the ceiling's and the PGM's.
    remote = "saga-remote" in plan.scenarios or plan.scenarios == ["ceiling"]
    provider = processes.ceiling(workdir / "provider.log", "http://127.0.0.1:9") if remote else None
    with running([provider] if provider is not None else [], "/"):
        ceilings = await run_ceilings(plan, workdir, provider) if "ceiling" in plan.scenarios else []
        rows += ceilings
        for backend in plan.backends:
            if backend == "postgres" and not processes.postgres_available(plan.admin_url):
                say(f"PostgreSQL at {plan.admin_url} does not answer: skipped")
                continue
            for count in plan.topologies:
                if count > 1 and backend == "sqlite":
                    continue  # several processes share a store only on PostgreSQL
                rows += await run_pgm(plan, backend, count, workdir, provider, ceilings)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m bench`."""
    plan, args = parse(argv)
    publish = ROOT / "docs" / "performance.md" if args.publish else None
    if args.from_json is not None:
        document = json.loads(args.from_json.read_text())
        rows = [Row(**{k: v for k, v in row.items() if k != "sustained"}) for row in document["rows"]]
        text = report.markdown(rows, document["machine"], document["command"])
        if publish is not None:
            report.publish(text, publish)
        sys.stdout.write(text)
        return
    info = report.machine()
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        import uvloop

        rows = uvloop.run(run(plan))
    except ImportError:
        rows = asyncio.run(run(plan))
    info["loadavg_end"] = os.getloadavg()
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    path = report.write(rows, info, command, args.out, publish)
    sys.stdout.write(report.markdown(rows, info, command))
    say(f"written {path} and {args.out / 'latest.md'}")
