"""Reading what a PGM keeps in its store, for tests that must prove something was (not) kept."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from pgm.config import normalise_database_url


def count_rows(database_url: str, table: str, where: str = "1 = 1") -> int:
    """How many rows of `table` match `where` (SQL written by the test itself, never by its input)."""
    engine = create_engine(normalise_database_url(database_url))
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT COUNT(*) FROM {table} WHERE {where}")).scalar_one())
    finally:
        engine.dispose()


def execute(database_url: str, statement: str, **parameters: object) -> None:
    """Run one statement written by the test, with bound parameters (a provider's back office acting)."""
    engine = create_engine(normalise_database_url(database_url))
    try:
        with engine.begin() as connection:
            connection.execute(text(statement), parameters)
    finally:
        engine.dispose()
