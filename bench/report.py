"""The results table (Markdown and JSON) and the machine it was measured on."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenarios import Row

MARK_BEGIN = "<!-- bench:begin -->"
MARK_END = "<!-- bench:end -->"


def machine() -> dict[str, Any]:
    """nproc, memory, Python, CPU model, load average: the conditions next to the figures."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}" if value < 1000 else f"{value:.0f}"
    return str(value)


COLUMNS = [
    ("backend", "store"),
    ("processes", "procs"),
    ("scenario", "scenario"),
    ("rate", "offered/s"),
    ("delay_ms", "provider ms"),
    ("sent", "sent"),
    ("completed", "done"),
    ("late", "late"),
    ("achieved_per_s", "achieved/s"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("cpu_s_per_1000", "CPU s/1000"),
    ("cpu_ratio", "CPU x ceiling"),
    ("peak_mb", "peak MiB"),
    ("sustained", "held"),
    ("checks", "checks"),
]


def markdown(rows: list[Row], info: dict[str, Any], command: str) -> str:
    """The table with its conditions."""
    lines = [
        f"Measured {info['date']} on {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, "
        f"Python {info['python']}, Linux {info['kernel']}; load average {_load(info['loadavg_start'])} at the start, "
        f"{_load(info['loadavg_end'])} at the end.",
        "",
        f"Command: `{command}`",
        "",
        *targets_table(rows),
        "",
        "| " + " | ".join(title for _key, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        data = {**row.as_dict(), "cpu_ratio": cpu_ratio(row, rows)}
        lines.append("| " + " | ".join(_cell(data[key]) for key, _title in COLUMNS) + " |")
    lines += profile_table(rows)
    lines += [
        "",
        "`ceiling pair`, `ceiling saga` and `ceiling saga remote` are the ceilings (bench/ceiling.py: the same "
        "server stack and outbound client, no store, no validation): one request in and one out, the ceiling "
        "of `v3 pay`; a saga's 3 requests in and 3 out with the provider in-process, the ceiling of `saga`; "
        "its 2 in and 2 out with the provider in another process, the ceiling of `saga remote` (the PGM's "
        "sandbox adapter on SANDBOX_BASE_URL, the same provider process for both). `CPU x ceiling` is the "
        "step's CPU per operation over its ceiling's at the same offered rate.",
        "",
        "Latency is the PGM's added latency: from the moment a request was due (constant arrival rate) to its "
        "outcome (saga: the event at the Flow Manager; v3: the response; callback: the PaymentStatus "
        "notification), minus the simulated provider latency. `late` counts requests the load generator sent "
        "more than 5 ms after they were due; `held` says whether the rate was sustained (everything done, "
        "achieved >= 95 % of offered). CPU is utime+stime of the process(es) under test per 1,000 "
        "completed operations, up to the moment they were idle again; peak is VmHWM of the largest process.",
    ]
    return "\n".join(lines) + "\n"


def _load(values: Any) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def write(rows: list[Row], info: dict[str, Any], command: str, directory: Path, publish_to: Path | None) -> Path:
    """bench/results/<stamp>.{md,json} and latest.{md,json}; optionally the block in docs/performance.md."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    text = markdown(rows, info, command)
    document = {"machine": info, "command": command, "rows": [row.as_dict() for row in rows]}
    for name in (stamp, "latest"):
        (directory / f"{name}.md").write_text(text)
        (directory / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    if publish_to is not None:
        publish(text, publish_to)
    return directory / f"{stamp}.md"


def publish(text: str, path: Path) -> None:
    """Replace the table between the markers of `path` (docs/performance.md)."""
    current = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), re.DOTALL)
    if pattern.search(current):
        path.write_text(pattern.sub(lambda _m: f"{MARK_BEGIN}\n{text}{MARK_END}", current))
    else:
        sys.stderr.write(f"bench: {path} has no {MARK_BEGIN} block; not published\n")


# Which ceiling each PGM scenario is compared with (bench/ceiling.py).
CEILING_OF = {"saga": "ceiling saga", "saga remote": "ceiling saga remote", "v3 pay": "ceiling pair"}


def ceiling_row(row: Row, rows: Sequence[Row]) -> Row | None:
    """The ceiling's step at the same offered rate (only for steps without simulated provider latency)."""
    shape = CEILING_OF.get(row.scenario)
    if shape is None or row.delay_ms:
        return None
    return next((r for r in rows if r.scenario == shape and r.rate == row.rate), None)


def cpu_ratio(row: Row, rows: Sequence[Row]) -> float | None:
    """CPU per operation over the ceiling's at the same rate."""
    reference = ceiling_row(row, rows)
    if reference is None or not reference.cpu_s_per_1000 or row.cpu_s_per_1000 is None:
        return None
    return round(row.cpu_s_per_1000 / reference.cpu_s_per_1000, 1)


@dataclass(frozen=True)
class Saturation:
    """The highest offered rate a scenario held, and whether the ladder stopped above it (else the true
    saturation is higher than the ladder went: `held` is a lower bound)."""

    held: float | None
    bounded: bool
    achieved_beyond: float | None  # achieved/s at the first step not held


def saturation(rows: list[Row], backend: str, processes: int, scenario: str) -> Saturation | None:
    """Where a scenario's ladder stopped; None when it did not run."""
    ladder = sorted(
        (r for r in rows if (r.backend, r.processes, r.scenario, r.delay_ms) == (backend, processes, scenario, 0)),
        key=lambda r: r.rate,
    )
    if not ladder:
        return None
    held = [r.rate for r in ladder if r.sustained]
    failed = [r for r in ladder if not r.sustained]
    return Saturation(
        held=max(held) if held else None,
        bounded=bool(failed),
        achieved_beyond=failed[0].achieved_per_s if failed else None,
    )


def _held_text(value: Saturation) -> str:
    if value.held is None:
        return "no rate held"
    text = f"{value.held:g}/s held" if value.bounded else f"≥ {value.held:g}/s (held every step)"
    if value.achieved_beyond is not None:
        text += f", {value.achieved_beyond:g}/s at the next step"
    return text


@dataclass(frozen=True)
class Verdict:
    """One target: what it asks, what was measured, the ratio, met or missed."""

    target: str
    measured: str
    ratio: str
    met: bool | None  # None: not measured in this run


def _saturation_verdict(rows: list[Row], target: str, pgm: tuple[str, int, str], shape: str) -> Verdict:
    mine = saturation(rows, *pgm)
    ceiling = saturation(rows, "none", 1, shape)
    if mine is None or ceiling is None or ceiling.held is None:
        return Verdict(target, "not measured", "-", None)
    measured = f"PGM {_held_text(mine)}; {shape} {_held_text(ceiling)}"
    ratio = (mine.held or 0.0) / ceiling.held
    # A ceiling that held every step is a lower bound: the ratio is then an upper bound.
    ratio_text = f"{ratio:.2f}" if ceiling.bounded else f"≤ {ratio:.2f}"
    return Verdict(target, measured, ratio_text, ratio >= 0.5)


def _cpu_step(rows: list[Row], backend: str, processes: int, scenario: str) -> Row | None:
    """The step whose CPU per operation a target is judged on: the highest rate held, or, when none was
    held (a machine busy with other work), the lowest rate tried: CPU per operation is still measured."""
    ladder = [r for r in rows if (r.backend, r.processes, r.scenario, r.delay_ms) == (backend, processes, scenario, 0)]
    held = [r for r in ladder if r.sustained]
    if held:
        return max(held, key=lambda r: r.rate)
    return min(ladder, key=lambda r: r.rate, default=None)


def _cpu_verdict(
    rows: list[Row], target: str, pgm: tuple[str, int, str], limit_ratio: float | None, limit_ms: float | None
) -> Verdict:
    """CPU per operation at the highest rate the PGM held (else its lowest rate), against its ceiling's at
    that rate and/or a limit in milliseconds."""
    row = _cpu_step(rows, *pgm)
    if row is None or row.cpu_s_per_1000 is None:
        return Verdict(target, "not measured", "-", None)
    reference = ceiling_row(row, rows)
    measured = f"{row.cpu_s_per_1000:g} ms per operation at {row.rate:g}/s{'' if row.sustained else ' (not held)'}"
    met = True
    ratio_text = "-"
    if reference is not None and reference.cpu_s_per_1000:
        ratio = row.cpu_s_per_1000 / reference.cpu_s_per_1000
        measured += f"; {reference.scenario} {reference.cpu_s_per_1000:g} ms"
        ratio_text = f"{ratio:.1f}"
        if limit_ratio is not None:
            met = met and ratio <= limit_ratio
    elif limit_ratio is not None:
        return Verdict(target, measured + "; no ceiling step at that rate", "-", None)
    if limit_ms is not None:
        met = met and row.cpu_s_per_1000 <= limit_ms
    return Verdict(target, measured, ratio_text, met)


def targets(rows: list[Row]) -> list[Verdict]:
    """The targets of docs/performance.md, each against this run's rows."""
    verdicts = [
        _saturation_verdict(
            rows,
            "saturation ≥ 0.5 x the saga-shaped ceiling's (SQLite, 1 process)",
            ("sqlite", 1, "saga"),
            "ceiling saga",
        ),
        _saturation_verdict(
            rows,
            "the same with the sandbox in another process (2 in, 2 out)",
            ("sqlite", 1, "saga remote"),
            "ceiling saga remote",
        ),
    ]
    at_300 = next(
        (r for r in rows if (r.backend, r.processes, r.scenario, r.delay_ms, r.rate) == ("sqlite", 1, "saga", 0, 300)),
        None,
    )
    target = "≥ 300 sagas/s held with PGM-added p99 < 50 ms (SQLite, 1 process)"
    if at_300 is None:
        top = saturation(rows, "sqlite", 1, "saga")
        measured = "300/s not reached" + (f": {_held_text(top)}" if top is not None else "")
        verdicts.append(Verdict(target, measured, "-", False if top is not None else None))
    else:
        verdicts.append(
            Verdict(
                target,
                f"300/s {'held' if at_300.sustained else 'not held'} ({at_300.achieved_per_s:g}/s achieved), "
                f"p99 {at_300.p99_ms} ms",
                "-",
                bool(at_300.sustained) and at_300.p99_ms is not None and at_300.p99_ms < 50,
            )
        )
    verdicts += [
        _cpu_verdict(rows, "CPU per saga ≤ 2 x the ceiling's (SQLite, 1 process)", ("sqlite", 1, "saga"), 2.0, None),
        _cpu_verdict(
            rows, "CPU per saga ≤ 4 ms client side (PostgreSQL, 1 process)", ("postgres", 1, "saga"), None, 4.0
        ),
    ]
    two = saturation(rows, "postgres", 2, "saga")
    target = "PostgreSQL, 2 processes: ≥ 200 sagas/s held"
    if two is None:
        verdicts.append(Verdict(target, "not measured", "-", None))
    else:
        verdicts.append(Verdict(target, _held_text(two), "-", (two.held or 0) >= 200))
    pgm_rows = [r for r in rows if r.backend != "none"]
    if pgm_rows:
        peak = max(r.peak_mb for r in pgm_rows)
        megabytes = peak * 1024 * 1024 / 1e6
        verdicts.append(
            Verdict(
                "peak memory < 150 MB per process",
                f"{megabytes:.0f} MB ({peak:g} MiB), the largest",
                "-",
                megabytes < 150,
            )
        )
    else:
        verdicts.append(Verdict("peak memory < 150 MB per process", "not measured", "-", None))
    v3_saturation = _saturation_verdict(
        rows,
        "/v3 pay: saturation ≥ 0.5 x the one-pair ceiling's (SQLite, 1 process)",
        ("sqlite", 1, "v3 pay"),
        "ceiling pair",
    )
    v3_cpu = _cpu_verdict(
        rows, "/v3 pay: CPU ≤ 2 x the one-pair ceiling's (SQLite, 1 process)", ("sqlite", 1, "v3 pay"), 2.0, None
    )
    return [*verdicts, v3_saturation, v3_cpu]


def targets_table(rows: list[Row]) -> list[str]:
    """The targets as Markdown lines."""
    lines = ["| target | measured | ratio | |", "|---|---|---|---|"]
    for verdict in targets(rows):
        state = {True: "**met**", False: "**missed**", None: "not measured"}[verdict.met]
        lines.append(f"| {verdict.target} | {verdict.measured} | {verdict.ratio} | {state} |")
    return lines


def profile_table(rows: list[Row]) -> list[str]:
    """Where the CPU of the profiled steps goes: each layer's share of the busy samples, and that share of
    the step's CPU per operation in milliseconds."""
    profiled = [r for r in rows if r.profile]
    if not profiled:
        return []
    titles = [f"{r.backend}/{r.processes} {r.scenario} @{r.rate:g}/s" for r in profiled]
    lines = [
        "",
        "Where the CPU goes (py-spy on the profiled steps; bench/profile.py says how samples are attributed):",
        "",
        "| layer | " + " | ".join(titles) + " |",
        "|---|" + "|".join("---" for _ in profiled) + "|",
    ]
    layers: list[str] = []
    for row in profiled:
        layers += [layer for layer in row.profile or {} if layer not in layers]
    for layer in layers:
        cells = []
        for row in profiled:
            share = (row.profile or {}).get(layer, 0.0)
            cell = f"{share * 100:.0f} %"
            if row.cpu_s_per_1000 is not None:
                cell += f", {share * row.cpu_s_per_1000:.2f} ms"
            cells.append(cell)
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    totals = [f"100 %, {r.cpu_s_per_1000:g} ms" if r.cpu_s_per_1000 is not None else "100 %" for r in profiled]
    lines.append("| **all (CPU per operation)** | " + " | ".join(totals) + " |")
    return lines
