"""The results table (Markdown and JSON) and the machine it was measured on."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
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
        "| " + " | ".join(title for _key, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        data = row.as_dict()
        lines.append("| " + " | ".join(_cell(data[key]) for key, _title in COLUMNS) + " |")
    lines += [
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
