"""Count the store's statements and round trips in a PGM process (`python -m bench --count-statements`).

`python -m bench.counting serve` is `python -m pgm serve` with counters on the drivers, installed before
the PGM imports them, so the PGM runs unchanged:

* SQLite: every statement sqlite3 runs (`Connection.set_trace_callback` on each connection the PGM opens),
  by kind and table: `BEGIN IMMEDIATE` (a write transaction), `BEGIN` (a read snapshot), `COMMIT`,
  `INSERT outbox`, `SELECT payments`, ...
* PostgreSQL: every round trip asyncpg makes, by kind and table: a statement (`Connection._execute`), a
  simple query such as BEGIN or COMMIT (`Connection.execute` without arguments), an `executemany` batch,
  and a statement prepared on first use on a connection (`PREPARE`, a round trip of its own). The store keeps
  its PostgreSQL connections itself and never resets one it is given back, so there is no reset to count.

The counts are cumulative. On SIGUSR1 the process writes them as JSON to `$PGM_BENCH_COUNTS_FILE` (written
aside and renamed, so a reader never sees half of it); the bench signals before and after a step and
divides the difference by the sagas the step completed (`snapshot`, `per_operation`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

COUNTS_FILE = "PGM_BENCH_COUNTS_FILE"
_TABLE = re.compile(r"\b(?:INTO|UPDATE|FROM)\s+([A-Za-z_][\w.]*)", re.IGNORECASE)


def kind(statement: str) -> str:
    """What a statement is, for counting: its first word (`BEGIN IMMEDIATE` apart) and the first table it
    names (`INSERT outbox`, `SELECT payments`)."""
    text = statement.lstrip().rstrip(";")
    words = text.split(None, 2)
    if not words:
        return "(empty)"
    first = words[0].upper()
    if first == "BEGIN":
        return "BEGIN IMMEDIATE" if len(words) > 1 and words[1].upper() == "IMMEDIATE" else "BEGIN"
    table = _TABLE.search(text)
    return f"{first} {table.group(1)}" if table and first in {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"} else first


def install(counts: Counter[str]) -> None:
    """Count into `counts` every statement of every sqlite3 connection and every asyncpg round trip."""
    _count_sqlite(counts)
    _count_asyncpg(counts)


def _count_sqlite(counts: Counter[str]) -> None:
    import sqlite3

    connect = sqlite3.connect

    def counted_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(*args, **kwargs)
        connection.set_trace_callback(lambda statement: counts.update((kind(statement),)))
        return connection

    sqlite3.connect = counted_connect  # type: ignore[assignment]


def _count_asyncpg(counts: Counter[str]) -> None:
    try:
        from asyncpg.connection import Connection
    except ImportError:  # pragma: no cover - asyncpg is a dependency of the PGM
        return

    execute, run, run_many, statement = (
        Connection.execute,
        Connection._execute,
        Connection._executemany,
        Connection._get_statement,
    )

    async def counted_execute(self: Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if not args:  # the simple query protocol: one round trip (with arguments it goes through _execute)
            counts[kind(query)] += 1
        return await execute(self, query, *args, **kwargs)

    async def counted_run(self: Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        counts[kind(query)] += 1
        return await run(self, query, *args, **kwargs)

    async def counted_run_many(self: Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        counts[f"{kind(query)} (executemany)"] += 1
        return await run_many(self, query, *args, **kwargs)

    async def counted_statement(self: Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        record_class = kwargs.get("record_class") or self._protocol.get_record_class()
        if kwargs.get("use_cache", True) and not self._stmt_cache.has(
            (query, record_class, kwargs.get("ignore_custom_codec", False))
        ):
            counts["PREPARE"] += 1
        return await statement(self, query, *args, **kwargs)

    Connection.execute = counted_execute
    Connection._execute = counted_run
    Connection._executemany = counted_run_many
    Connection._get_statement = counted_statement


def _write_on_signal(counts: Counter[str], path: Path) -> None:
    def write(_signal: int, _frame: object) -> None:
        aside = path.with_suffix(".tmp")
        aside.write_text(json.dumps(dict(counts)), encoding="utf-8")
        aside.replace(path)

    signal.signal(signal.SIGUSR1, write)


def snapshot(pid: int, path: Path, timeout: float = 5.0) -> Counter[str]:
    """The cumulative counts of the counted PGM process `pid` (bench side)."""
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} wrote no counts to {path}")
        time.sleep(0.01)
    return Counter(json.loads(path.read_text(encoding="utf-8")))


def per_operation(before: Counter[str], after: Counter[str], operations: int) -> dict[str, float]:
    """What one operation cost, by kind (the difference of two snapshots over `operations`)."""
    if not operations:
        return {}
    difference = after - before
    return {name: round(count / operations, 2) for name, count in sorted(difference.items())}


def summary(per_saga: dict[str, float]) -> str:
    """One line: the transactions and statements (SQLite) or round trips (PostgreSQL) per operation."""
    total = sum(per_saga.values())
    writes = per_saga.get("BEGIN IMMEDIATE", 0.0)
    parts = ", ".join(f"{name} {count:g}" for name, count in per_saga.items())
    return f"{total:.2f} per operation ({writes:g} write transactions on SQLite): {parts}"


def main() -> None:
    """`python -m bench.counting serve`: the PGM with counted drivers."""
    counts: Counter[str] = Counter()
    install(counts)
    _write_on_signal(counts, Path(os.environ[COUNTS_FILE]))
    from pgm.cli import main as pgm_main

    sys.argv[0] = "pgm"
    pgm_main()


if __name__ == "__main__":
    main()
