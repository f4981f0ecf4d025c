"""The bench's statement counter (bench/counting.py) on a real sqlite3 connection and on statements made up
here (the bench's `--count-statements` runs it in a PGM process)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from asyncpg.connection import Connection

from bench import counting


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("BEGIN IMMEDIATE", "BEGIN IMMEDIATE"),
        ("BEGIN;", "BEGIN"),
        ("COMMIT;", "COMMIT"),
        ("INSERT INTO outbox (a, b) VALUES (1, 2) RETURNING id", "INSERT outbox"),
        ("  UPDATE payments SET status = 'ACCEPTED' WHERE id = 'p'", "UPDATE payments"),
        ("SELECT o.id FROM outbox o WHERE o.status = 'PENDING'", "SELECT outbox"),
        ("SELECT 1", "SELECT"),
    ],
)
def test_a_statement_is_counted_by_its_kind_and_first_table(statement: str, expected: str) -> None:
    assert counting.kind(statement) == expected


def test_every_statement_of_a_sqlite_connection_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # install() replaces these: put back after the test
    monkeypatch.setattr(sqlite3, "connect", sqlite3.connect)
    for name in ("execute", "_execute", "_executemany", "_get_statement"):
        monkeypatch.setattr(Connection, name, getattr(Connection, name))
    counts: Counter[str] = Counter()
    counting.install(counts)
    connection = sqlite3.connect(tmp_path / "counted.db", isolation_level=None)
    connection.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, payload TEXT)")
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany("INSERT INTO outbox (payload) VALUES (?)", [("a",), ("b",)])
    connection.execute("SELECT payload FROM outbox WHERE id = ?", (1,)).fetchall()
    connection.execute("COMMIT")
    connection.close()
    assert counts == Counter({"CREATE": 1, "BEGIN IMMEDIATE": 1, "INSERT outbox": 2, "SELECT outbox": 1, "COMMIT": 1})


def test_per_operation_divides_the_difference_of_two_snapshots() -> None:
    before = Counter({"BEGIN IMMEDIATE": 10, "COMMIT": 10, "INSERT inbox": 5})
    after = Counter({"BEGIN IMMEDIATE": 24, "COMMIT": 24, "INSERT inbox": 9, "SELECT payments": 6})
    per_saga = counting.per_operation(before, after, 2)
    assert per_saga == {"BEGIN IMMEDIATE": 7.0, "COMMIT": 7.0, "INSERT inbox": 2.0, "SELECT payments": 3.0}
    assert counting.summary(per_saga).startswith("19.00 per operation (7 write transactions on SQLite)")
