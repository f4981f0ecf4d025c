"""Reading saga documents from the Flow Manager's CRUD collection (read only, Mia CRUD conventions)."""

from __future__ import annotations

import json
from typing import Any

from pgm.outbound import HttpClient, NoAnswer


class CrudUnavailable(NoAnswer):
    """The CRUD gave no usable answer (time-out, 5xx, nonsense): retry later (a failed delivery to the outbox too)."""


class SagaCrud:
    """GET {SAGA_CRUD_URL}?sagaId= and ?_q= on the saga collection."""

    def __init__(self, collection_url: str, client: HttpClient) -> None:
        # The collection URL may be configured with or without its trailing slash.
        self.collection_url = collection_url.rstrip("/") + "/"
        self.client = client

    async def saga(self, saga_id: str) -> dict[str, Any] | None:
        """The saga document, or None when the CRUD has no such saga."""
        found = await self._query({"sagaId": saga_id})
        return found[0] if found else None

    async def saga_by_payment(self, payment_id: str) -> dict[str, Any] | None:
        """The saga whose metadata names this provider payment id (either spelling)."""
        query = {"$or": [{"metadata.paymentId": payment_id}, {"metadata.paymentID": payment_id}]}
        found = await self._query({"_q": json.dumps(query), "_l": "2"})
        return found[0] if found else None

    async def _query(self, params: dict[str, str]) -> list[dict[str, Any]]:
        try:
            response = await self.client.get(self.collection_url, params=params)
        except NoAnswer as exc:
            raise CrudUnavailable(f"the CRUD could not be reached ({type(exc).__name__})") from exc
        if response.status_code == 404:
            return []
        if response.status_code >= 300:
            raise CrudUnavailable(f"the CRUD answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise CrudUnavailable("the CRUD answered with a body that is not JSON") from exc
        if not isinstance(body, list):
            raise CrudUnavailable("the CRUD answered with something other than a list of documents")
        return [document for document in body if isinstance(document, dict)]
