"""The benchmark harness runs end to end on a tiny load and writes a well-formed table.

Timings are never asserted (the machine may be busy): only that every scenario produced a row, that the
correctness checks the harness makes passed, and that the Markdown and JSON files agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "ceiling pair",
    "ceiling saga",
    "ceiling saga remote",
    "saga",
    "saga profiled",
    "saga remote",
    "duplicates x3",
    "v3 pay",
    "callback",
}


@pytest.mark.timeout(300)
def test_quick_run_writes_a_well_formed_table(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((tmp_path / "latest.json").read_text())
    assert {"nproc", "memory_gib", "python", "cpu_model"} <= document["machine"].keys()
    rows = document["rows"]
    assert {row["scenario"] for row in rows} == EXPECTED
    for row in rows:
        assert row["sent"] > 0
        assert row["completed"] == row["sent"], row
        for key in ("p50_ms", "p90_ms", "p99_ms", "achieved_per_s", "cpu_s_per_1000", "peak_mb"):
            assert isinstance(row[key], int | float), (key, row)
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        if row["scenario"] != "duplicates x3":
            assert row["checks"] == "ok", row
    duplicates = next(row for row in rows if row["scenario"] == "duplicates x3")
    assert "payments per saga {1: " in duplicates["checks"]
    assert "DOUBLE" not in duplicates["checks"]
    assert "named different events" not in duplicates["checks"]
    profiled = next(row for row in rows if row["scenario"] == "saga profiled")
    assert profiled["profile"], "py-spy took no sample of the PGM"
    assert abs(sum(profiled["profile"].values()) - 1) < 0.01
    lines = (tmp_path / "latest.md").read_text().splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| store")))
    body = [line for line in lines[header + 2 :] if line.startswith("| ")][: len(rows)]
    assert [line.split(" | ")[2] for line in body] == [row["scenario"] for row in rows]
    assert all(line.count("|") == lines[header].count("|") for line in body)
    # Each PGM step with a ceiling (saga, saga remote, v3 pay) is printed with its ratio to it.
    ratios = {line.split(" | ")[2]: line.split(" | ")[13] for line in body}
    for scenario in ("saga remote", "v3 pay"):
        assert float(ratios[scenario]) > 0, (scenario, ratios)
    targets = lines[lines.index("| target | measured | ratio | |") + 2 : header - 1]
    assert len(targets) == 9, targets
    assert all(line.endswith(("**met** |", "**missed** |", "not measured |")) for line in targets), targets
