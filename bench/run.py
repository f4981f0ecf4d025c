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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import processes, report, scenarios
from bench.processes import Service
from bench.rawhttp import Receiver
from bench.scenarios import Row, Target

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCENARIOS = ("ceiling", "saga", "saga-delay", "v3", "callback", "duplicates")


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


def parse(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    """Command-line options → plan."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny load, SQLite, one process: under a minute")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--topologies", default="1,2", help="PGM processes: 1 and/or 2 (2 only on PostgreSQL)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=",".join(SCENARIOS))
    parser.add_argument(
        "--rates", default="10,20,50,100,200,300,500,800", help="saga, v3 and ceiling rates (per second)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per rate")
    parser.add_argument("--delay-ms", type=int, default=50, help="sandboxDelayMs of the saga-delay scenario")
    parser.add_argument("--delay-rate", type=float, default=10.0, help="rate of the saga-delay scenario")
    parser.add_argument("--callback-rate", type=float, default=20.0)
    parser.add_argument("--duplicate-sagas", type=int, default=100)
    parser.add_argument("--duplicate-copies", type=int, default=3)
    parser.add_argument("--duplicate-rate", type=float, default=150.0, help="deliveries per second")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for outstanding outcomes")
    parser.add_argument("--log-level", default="INFO", help="the PGM's LOG_LEVEL (INFO is the production default)")
    parser.add_argument("--postgres", default=os.environ.get("PGM_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--publish", action="store_true", help="also update the table in docs/performance.md")
    parser.add_argument("--from-json", type=Path, help="measure nothing: render (and publish) a results JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        plan = Plan(
            backends=["sqlite"],
            topologies=[1],
            scenarios=list(SCENARIOS),
            rates=[20.0],
            duration=2.0,
            delay_ms=20,
            delay_rate=20.0,
            callback_rate=20.0,
            duplicate_sagas=20,
            duplicate_copies=3,
            duplicate_rate=150.0,
            drain=60.0,  # waits only as long as needed; generous so a busy machine does not fail the smoke test
            log_level=args.log_level,
            admin_url=args.postgres,
        )
        for name in ("backends", "topologies", "scenarios", "rates"):
            given = getattr(args, name)
            if given != parser.get_default(name):
                plan = _replace_list(plan, name, given)
        return plan, args
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
    )
    return plan, args


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _replace_list(plan: Plan, name: str, text: str) -> Plan:
    values: list[object] = list(_list(text))
    if name == "topologies":
        values = [int(str(v)) for v in values]
    if name == "rates":
        values = [float(str(v)) for v in values]
    return Plan(**{**plan.__dict__, name: values})


def say(message: str) -> None:
    """Progress on stderr."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def running(services: list[Service], ready_path: str) -> Iterator[list[Service]]:
    """Start the services (one after the other: migrations), stop them at the end."""
    try:
        for service in services:
            service.start(ready_path)
        yield services
    finally:
        for service in services:
            service.stop()


async def ladder(target: Target, plan: Plan, scenario: str) -> list[Row]:
    """The rates in ascending order, stopping after the first one the target does not sustain."""
    rows = []
    for rate in sorted(plan.rates):
        if scenario == "v3":
            row = await scenarios.payments(target, rate, plan.duration, 0)
        else:
            row = await scenarios.sagas(target, rate, plan.duration, 0, plan.drain, scenario=scenario)
        say(_summary(row))
        rows.append(row)
        if not row.sustained:
            break
    return rows


def _summary(row: Row) -> str:
    return (
        f"{row.backend}/{row.processes} {row.scenario} @{row.rate:g}/s: {row.completed}/{row.sent} done, "
        f"{row.achieved_per_s}/s, p50 {row.p50_ms} p99 {row.p99_ms} ms, late {row.late}, "
        f"CPU {row.cpu_s_per_1000} s/1000, peak {row.peak_mb} MiB; {row.checks}"
    )


async def run_ceiling(plan: Plan, workdir: Path) -> list[Row]:
    """The transport ceiling on the same stack."""
    receiver = await Receiver().start()
    service = processes.ceiling(workdir / "ceiling.log", f"http://127.0.0.1:{receiver.port}")
    try:
        with running([service], "/"):
            return await ladder(Target.of([service], receiver, "none"), plan, "ceiling")
    finally:
        await receiver.close()


def _pgms(url: str, plan: Plan, workdir: Path, group: str, count: int, **env: str) -> list[Service]:
    """`count` PGM processes on one store, configured by `env`, each logging to pgm-<group>-<n>.log."""
    return [processes.pgm(url, workdir / f"pgm-{group}-{i}.log", plan.log_level, **env) for i in range(count)]


async def run_pgm(plan: Plan, backend: str, count: int, workdir: Path) -> list[Row]:
    """Every PGM scenario on one store and topology: a saga group (Flow Manager only) and an API group
    (PaymentStatus notifications only), each on its own fresh processes."""
    rows: list[Row] = []
    receiver = await Receiver().start()
    base = f"http://127.0.0.1:{receiver.port}"
    try:
        with processes.database(backend, workdir, plan.admin_url) as url:
            saga_scenarios = [s for s in plan.scenarios if s in ("saga", "saga-delay", "duplicates")]
            if saga_scenarios:
                services = _pgms(
                    url,
                    plan,
                    workdir,
                    f"{backend}-{count}-saga",
                    count,
                    FLOW_MANAGER_URL=base,
                    SAGA_CRUD_URL=f"{base}/crud/sagas/",
                )
                with running(services, "/-/ready"):
                    target = Target.of(services, receiver, backend)
                    if "saga" in saga_scenarios:
                        rows += await ladder(target, plan, "saga")
                    if "saga-delay" in saga_scenarios:
                        row = await scenarios.sagas(
                            target, plan.delay_rate, plan.duration, plan.delay_ms, plan.drain, scenario="saga"
                        )
                        say(_summary(row))
                        rows.append(row)
                    if "duplicates" in saga_scenarios:
                        row = await scenarios.duplicates(
                            target, plan.duplicate_sagas, plan.duplicate_copies, plan.duplicate_rate, plan.drain
                        )
                        say(_summary(row))
                        rows.append(row)
                    conflicting = scenarios.conflicting_message_ids(receiver)
                    if conflicting:
                        say(f"!! {conflicting} Flow Manager message ids named different events")
            api_scenarios = [s for s in plan.scenarios if s in ("v3", "callback")]
            if api_scenarios:
                services = _pgms(
                    url,
                    plan,
                    workdir,
                    f"{backend}-{count}-api",
                    count,
                    PAYMENT_CALLBACK_URL=f"{base}{scenarios.STATUS_PATH}",
                )
                with running(services, "/-/ready"):
                    target = Target.of(services, receiver, backend)
                    if "v3" in api_scenarios:
                        rows += await ladder(target, plan, "v3")
                    if "callback" in api_scenarios:
                        row = await scenarios.callbacks(target, plan.callback_rate, plan.duration, plan.drain)
                        say(_summary(row))
                        rows.append(row)
    finally:
        await receiver.close()
    return rows


async def run(plan: Plan) -> list[Row]:
    """Everything in the plan, in a temporary directory (logs are kept when a step fails)."""
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="pgm-bench-"))
    say(f"work directory {workdir}")
    if "ceiling" in plan.scenarios:
        rows += await run_ceiling(plan, workdir)
    for backend in plan.backends:
        if backend == "postgres" and not processes.postgres_available(plan.admin_url):
            say(f"PostgreSQL at {plan.admin_url} does not answer: skipped")
            continue
        for count in plan.topologies:
            if count > 1 and backend == "sqlite":
                continue  # several processes share a store only on PostgreSQL
            rows += await run_pgm(plan, backend, count, workdir)
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
