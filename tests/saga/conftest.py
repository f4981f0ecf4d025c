"""A saga stack per module and backend, with the Flow Manager merging metadata deeply (its setting in
the shipped configuration) or shallowly (its default)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import fresh_database
from tests.support.saga_stack import SagaStack, SharedSagaPgm, shared_saga_pgm


@pytest.fixture(scope="module", params=["deep", "shallow"])
def merge(request: pytest.FixtureRequest) -> str:
    """How the Flow Manager merges event payloads into saga metadata."""
    return str(request.param)


@pytest.fixture(scope="module")
def shared_pgm(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedSagaPgm]:
    """The CRUD stand-in and the PGM, shared by both merge settings of the module's run."""
    directory = tmp_path_factory.mktemp("saga")
    with fresh_database(backend, directory) as url, shared_saga_pgm(url, directory) as shared:
        yield shared


@pytest.fixture(scope="module")
def stack(shared_pgm: SharedSagaPgm, merge: str) -> Iterator[SagaStack]:
    """CRUD stand-in, PGM and Flow Manager stand-in, shared by the module (a Flow Manager per merge setting)."""
    with shared_pgm.stack_for(deep_merge=merge == "deep") as running:
        yield running
