"""The schema has one description per layer, and they agree: the migrations (store/migrations/), the models
they are checked against (store/models.py), and the records the repositories read and write
(store/records.py). A column added to one and not the others fails here, not in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, Boolean, create_engine

from pgm.store import migrator
from pgm.store.models import Base
from pgm.store.records import Record
from tests.support.databases import fresh_database


def _record_classes() -> list[type[Record]]:
    return sorted(Record.__subclasses__(), key=lambda cls: cls.TABLE.name)


def test_the_migrated_schema_is_the_models(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        migrator.upgrade(url)
        engine = create_engine(migrator.sync_url(url))
        try:
            with engine.connect() as connection:
                differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        finally:
            engine.dispose()
    assert differences == []


@pytest.mark.parametrize("record", _record_classes(), ids=lambda cls: cls.TABLE.name)
def test_each_record_maps_its_tables_columns(record: type[Record]) -> None:
    mapping = record.TABLE
    table = Base.metadata.tables[mapping.name]
    assert set(mapping.columns) == {column.name for column in table.columns}
    assert [column.name for column in table.primary_key.columns] == [mapping.key]
    assert mapping.json == {column.name for column in table.columns if isinstance(column.type, JSON)}
    assert mapping.booleans == {column.name for column in table.columns if isinstance(column.type, Boolean)}


def test_every_table_has_a_record() -> None:
    mapped = {record.TABLE.name for record in _record_classes()}
    assert set(Base.metadata.tables) - {"alembic_version"} == mapped
