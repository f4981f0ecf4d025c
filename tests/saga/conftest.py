"""A saga stack per module and backend, with the Flow Manager merging metadata deeply (its setting in
the shipped configuration) or shallowly (its default)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import fresh_database
from tests.support.saga_stack import SagaStack, saga_stack


@pytest.fixture(scope="module", params=["deep", "shallow"])
def merge(request: pytest.FixtureRequest) -> str:
    """How the Flow Manager merges event payloads into saga metadata."""
    return str(request.param)


@pytest.fixture(scope="module")
def stack(backend: str, merge: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SagaStack]:
    """CRUD stand-in, PGM and Flow Manager stand-in, shared by the module."""
    directory = tmp_path_factory.mktemp("saga")
    with fresh_database(backend, directory) as url, saga_stack(url, directory, deep_merge=merge == "deep") as running:
        yield running
