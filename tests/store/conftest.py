"""What the store's tests share: a migrated database per module on each backend, and a Database on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pgm.store import migrator
from pgm.store.database import Database
from tests.support.databases import fresh_database


@pytest.fixture(scope="module")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(backend, tmp_path_factory.mktemp("store")) as url:
        migrator.upgrade(url)
        yield url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()
