"""The bench's verdicts on the targets and its profile attribution, on rows and stacks made up here (the
smoke test runs the harness itself)."""

from __future__ import annotations

from pathlib import Path

from bench.profile import attribute, shares
from bench.report import cpu_ratio, markdown, saturation, targets
from bench.scenarios import Row


def row(backend: str, processes: int, scenario: str, rate: float, **given: object) -> Row:
    """A step that held its rate unless told otherwise."""
    values: dict[str, object] = {
        "backend": backend,
        "processes": processes,
        "scenario": scenario,
        "rate": rate,
        "delay_ms": 0,
        "sent": int(rate * 8),
        "completed": int(rate * 8),
        "late": 0,
        "max_lag_ms": 1.0,
        "achieved_per_s": rate,
        "p50_ms": 5.0,
        "p90_ms": 10.0,
        "p99_ms": 20.0,
        "cpu_s_per_1000": 3.0,
        "peak_mb": 100.0,
        "checks": "ok",
    }
    values.update(given)
    return Row(**values)  # type: ignore[arg-type]


def ladder(
    backend: str, processes: int, scenario: str, held: list[float], failed: float | None, cpu: float
) -> list[Row]:
    rows = [row(backend, processes, scenario, rate, cpu_s_per_1000=cpu) for rate in held]
    if failed is not None:
        rows.append(row(backend, processes, scenario, failed, achieved_per_s=failed * 0.6, cpu_s_per_1000=cpu))
    return rows


def verdicts(rows: list[Row]) -> dict[str, bool | None]:
    return {verdict.target: verdict.met for verdict in targets(rows)}


def test_saturation_is_the_highest_rate_held_and_a_ladder_that_never_failed_is_a_lower_bound() -> None:
    rows = ladder("none", 1, "ceiling saga", [100, 200, 400], None, 1.5) + ladder("sqlite", 1, "saga", [100], 200, 9)
    ceiling = saturation(rows, "none", 1, "ceiling saga")
    pgm = saturation(rows, "sqlite", 1, "saga")
    assert ceiling is not None
    assert pgm is not None
    assert (ceiling.held, ceiling.bounded) == (400, False)
    assert (pgm.held, pgm.bounded, pgm.achieved_beyond) == (100, True, 120)
    first = targets(rows)[0]
    assert first.ratio == "≤ 0.25"
    assert first.met is False


def test_a_pgm_at_half_its_ceiling_and_within_twice_its_cpu_meets_those_targets() -> None:
    rows = (
        ladder("none", 1, "ceiling saga", [100, 300, 600], 800, 1.5)
        + ladder("sqlite", 1, "saga", [100, 300], 400, 2.9)
        + ladder("none", 1, "ceiling pair", [100, 300, 600], 800, 0.8)
        + ladder("sqlite", 1, "v3 pay", [100, 300], 600, 1.7)
    )
    met = verdicts(rows)
    assert met["saturation ≥ 0.5 x the saga-shaped ceiling's (SQLite, 1 process)"] is True
    assert met["≥ 300 sagas/s held with PGM-added p99 < 50 ms (SQLite, 1 process)"] is True
    assert met["CPU per saga ≤ 2 x the ceiling's (SQLite, 1 process)"] is True
    assert met["/v3 pay: saturation ≥ 0.5 x the one-pair ceiling's (SQLite, 1 process)"] is True
    assert met["/v3 pay: CPU ≤ 2 x the one-pair ceiling's (SQLite, 1 process)"] is False  # 1.7 / 0.8 > 2
    assert met["PostgreSQL, 2 processes: ≥ 200 sagas/s held"] is None  # not measured
    assert cpu_ratio(rows[4], rows) == 1.9  # the PGM's 300/s step against the ceiling's 300/s step


def test_a_held_300_with_a_slow_p99_and_memory_over_150_mb_are_missed() -> None:
    rows = [
        *ladder("none", 1, "ceiling saga", [300], None, 1.5),
        row("sqlite", 1, "saga", 300, p99_ms=75.0, peak_mb=150.0),
        row("postgres", 2, "saga", 200),
        row("postgres", 1, "saga", 100, cpu_s_per_1000=3.9),
    ]
    met = verdicts(rows)
    assert met["≥ 300 sagas/s held with PGM-added p99 < 50 ms (SQLite, 1 process)"] is False
    assert met["peak memory < 150 MB per process"] is False  # 150 MiB is 157 MB
    assert met["PostgreSQL, 2 processes: ≥ 200 sagas/s held"] is True
    assert met["CPU per saga ≤ 4 ms client side (PostgreSQL, 1 process)"] is True
    table = markdown(rows, _machine(), "python -m bench")
    assert "| ≥ 300 sagas/s held with PGM-added p99 < 50 ms (SQLite, 1 process) | 300/s held" in table
    assert "**missed** |" in table


def _machine() -> dict[str, object]:
    return {
        "date": "2026-12-03 12:00 UTC",
        "nproc": 2,
        "cpu_model": "test",
        "memory_gib": 1.0,
        "python": "3.11",
        "kernel": "6",
        "loadavg_start": (0.0, 0.0, 0.0),
        "loadavg_end": (0.0, 0.0, 0.0),
    }


def test_a_sample_counts_for_the_innermost_frame_that_belongs_to_a_layer(tmp_path: Path) -> None:
    site = "/app/.venv/lib/python3.11/site-packages"
    server = f"run (uvicorn/server.py:1);handle ({site}/starlette/routing.py:2)"
    store = f"{server};pay (/app/src/pgm/services/payments.py:3);insert (/app/src/pgm/store/payments.py:4)"
    json = f"{server};send (/app/src/pgm/outbox/senders.py:5);dumps (/usr/lib/python3.11/json/__init__.py:6)"
    assert attribute(store) == "the PGM's store layer"
    assert attribute(json) == "JSON"
    assert attribute(server + ";<lambda> (<string>:1)") == "server stack (uvicorn, Starlette, FastAPI, middleware)"
    folded = tmp_path / "pgm.folded"
    folded.write_text(f"{store} 30\n{json} 10\n")
    assert shares([folded, tmp_path / "missing.folded"]) == {"the PGM's store layer": 0.75, "JSON": 0.25}


def test_cpu_per_saga_is_judged_at_the_lowest_rate_when_a_busy_machine_held_none() -> None:
    rows = [
        *ladder("none", 1, "ceiling saga", [20], 50, 2.0),
        row("sqlite", 1, "saga", 20, achieved_per_s=15.0, cpu_s_per_1000=16.0),
    ]
    verdict = next(v for v in targets(rows) if v.target.startswith("CPU per saga ≤ 2 x"))
    assert verdict.measured == "16 ms per operation at 20/s (not held); ceiling saga 2 ms"
    assert (verdict.ratio, verdict.met) == ("8.0", False)
