"""Where the Flow Manager stand-in keeps sagas: in memory, or in a CRUD Service collection."""

from __future__ import annotations

import copy
from typing import Any, Protocol

import httpx

from pgm.devstack.flow_manager.machine import SagaDocument

# Fields the CRUD owns; writing them back through `$set` would be refused.
CRUD_SYSTEM_FIELDS = frozenset({"_id", "__STATE__", "createdAt", "updatedAt", "creatorId", "updaterId"})


class SagaStoreError(RuntimeError):
    """The saga store could not be read or written (the event is answered 503 so the sender retries)."""


class SagaRepository(Protocol):
    """Reads and writes saga documents by `sagaId`."""

    async def get(self, saga_id: str) -> SagaDocument | None:
        """The saga document, or None when there is no such saga."""
        ...

    async def save(self, saga: SagaDocument) -> SagaDocument:
        """Create or replace the saga document; return it as stored."""
        ...

    async def recent(self, limit: int) -> list[SagaDocument]:
        """Up to `limit` sagas, newest first."""
        ...

    async def ready(self) -> bool:
        """Whether the store can be used now."""
        ...


class InMemorySagaRepository:
    """Sagas in a dict, for runs without a CRUD."""

    def __init__(self) -> None:
        self._sagas: dict[str, SagaDocument] = {}

    async def get(self, saga_id: str) -> SagaDocument | None:
        """The saga document, or None when there is no such saga."""
        saga = self._sagas.get(saga_id)
        return copy.deepcopy(saga) if saga is not None else None

    async def save(self, saga: SagaDocument) -> SagaDocument:
        """Create or replace the saga document; return it as stored."""
        self._sagas[str(saga["sagaId"])] = copy.deepcopy(saga)
        return copy.deepcopy(saga)

    async def recent(self, limit: int) -> list[SagaDocument]:
        """Up to `limit` sagas, newest first."""
        return [copy.deepcopy(saga) for saga in reversed(self._sagas.values())][:limit]

    async def ready(self) -> bool:
        """Always ready."""
        return True


class CrudSagaRepository:
    """Sagas in a CRUD Service collection, written and read the way the real Flow Manager does."""

    def __init__(self, client: httpx.AsyncClient, crud_base_url: str, collection: str) -> None:
        self._client = client
        self._base_url = crud_base_url.rstrip("/")
        self._collection_url = f"{self._base_url}/{collection}/"

    async def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise SagaStoreError(f"{method} {url} failed: {error!r}") from error
        if response.status_code >= 300:
            raise SagaStoreError(f"{method} {url} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    async def get(self, saga_id: str) -> SagaDocument | None:
        """The saga document, or None when there is no such saga."""
        found = await self._request("GET", self._collection_url, params={"sagaId": saga_id})
        if not isinstance(found, list):
            raise SagaStoreError(f"GET {self._collection_url}?sagaId={saga_id} did not answer a JSON array")
        return found[0] if found else None

    async def save(self, saga: SagaDocument) -> SagaDocument:
        """Create or replace the saga document; return it as stored."""
        fields = {key: value for key, value in saga.items() if key not in CRUD_SYSTEM_FIELDS}
        stored = await self._request(
            "POST", f"{self._collection_url}upsert-one", params={"sagaId": saga["sagaId"]}, json={"$set": fields}
        )
        if not isinstance(stored, dict):
            raise SagaStoreError("upsert-one did not answer a JSON object")
        return stored

    async def recent(self, limit: int) -> list[SagaDocument]:
        """Up to `limit` sagas, newest first."""
        found = await self._request("GET", self._collection_url, params={"_l": limit, "_s": "-createdAt"})
        return found if isinstance(found, list) else []

    async def ready(self) -> bool:
        """Whether the CRUD answers its health probe."""
        try:
            response = await self._client.get(f"{self._base_url}/-/healthz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200
