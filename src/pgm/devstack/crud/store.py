"""JSON documents in SQLite, one table for every collection, read and written under one lock."""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pgm.devstack.crud.query import (
    SYSTEM_FIELDS,
    Document,
    QueryError,
    apply_update,
    iso_timestamp,
    matches,
    set_path,
    sort_documents,
)

STATES = frozenset({"PUBLIC", "DRAFT", "TRASH", "DELETED"})
DEFAULT_STATE = "PUBLIC"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (collection, id)
)
"""

_OBJECT_ID_RANDOM = secrets.token_bytes(5)
_object_id_counter = itertools.count(secrets.randbelow(1 << 24))


def new_object_id() -> str:
    """A 24-hex-digit id laid out like a MongoDB ObjectId: seconds, per-process random, counter."""
    counter = next(_object_id_counter) % (1 << 24)
    return (int(time.time()).to_bytes(4, "big") + _OBJECT_ID_RANDOM + counter.to_bytes(3, "big")).hex()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DocumentStore:
    """Collections of JSON documents with the CRUD Service's system fields, safe to share between threads."""

    def __init__(self, database_path: str, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # One connection behind one lock: every read-modify-write (upsert) is atomic without retries.
        self._connection = sqlite3.connect(database_path, check_same_thread=False, isolation_level=None)
        if database_path != ":memory:" and not database_path.startswith("file::memory:"):
            self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(_SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()

    def collections(self) -> list[str]:
        """The names of the collections that hold at least one document."""
        with self._lock:
            rows = self._connection.execute("SELECT DISTINCT collection FROM documents ORDER BY collection")
            return [str(row[0]) for row in rows]

    def find(
        self,
        collection: str,
        query: Mapping[str, Any],
        states: frozenset[str],
        *,
        sort: list[tuple[list[str], bool]] | None = None,
        skip: int = 0,
        limit: int | None = None,
    ) -> list[Document]:
        """The documents in the given states matching the filter, sorted, then paged."""
        with self._lock:
            found = self._matching(collection, query, states)
        if sort:
            found = sort_documents(found, sort)
        end = None if limit is None else skip + limit
        return found[skip:end]

    def count(self, collection: str, query: Mapping[str, Any], states: frozenset[str]) -> int:
        """How many documents in the given states match the filter."""
        with self._lock:
            return len(self._matching(collection, query, states))

    def get(
        self, collection: str, document_id: str, query: Mapping[str, Any], states: frozenset[str]
    ) -> Document | None:
        """One document by `_id`, if it also matches the filter and is in one of the states."""
        with self._lock:
            return self._get(collection, document_id, query, states)

    def insert(self, collection: str, body: Mapping[str, Any], user_id: str) -> Document:
        """Store a new document; the body may choose its `__STATE__` but no other system field."""
        document = copy.deepcopy(dict(body))
        state = document.pop("__STATE__", DEFAULT_STATE)
        if state not in STATES:
            raise QueryError(f"__STATE__ must be one of {sorted(STATES)}, got {state!r}")
        written = sorted(SYSTEM_FIELDS.intersection(document))
        if written:
            raise QueryError(f"{written[0]!r} is managed by the CRUD and cannot be written")
        with self._lock:
            created = self._stamp_new(document, user_id, state)
            self._write(collection, created, new=True)
            return created

    def upsert_one(
        self,
        collection: str,
        query: Mapping[str, Any],
        seed: Mapping[str, Any],
        commands: Mapping[str, Any],
        states: frozenset[str],
        user_id: str,
    ) -> Document:
        """Update the first matching document, or create one from the filter's pinned fields and the update."""
        with self._lock:
            existing = self._matching(collection, query, states)
            now = self._clock()
            if existing:
                document = existing[0]
                apply_update(document, commands, inserting=False, now=now)
                document["updatedAt"] = iso_timestamp(now)
                document["updaterId"] = user_id
                self._write(collection, document, new=False)
                return document
            document = {}
            for path, value in seed.items():
                if path.split(".")[0] not in SYSTEM_FIELDS:
                    set_path(document, path, copy.deepcopy(value))
            apply_update(document, commands, inserting=True, now=now)
            created = self._stamp_new(document, user_id, DEFAULT_STATE)
            self._write(collection, created, new=True)
            return created

    def patch(
        self,
        collection: str,
        document_id: str,
        query: Mapping[str, Any],
        commands: Mapping[str, Any],
        states: frozenset[str],
        user_id: str,
    ) -> Document | None:
        """Apply update operators to one document by `_id`; None when it is not there."""
        with self._lock:
            document = self._get(collection, document_id, query, states)
            if document is None:
                return None
            now = self._clock()
            apply_update(document, commands, inserting=False, now=now)
            document["updatedAt"] = iso_timestamp(now)
            document["updaterId"] = user_id
            self._write(collection, document, new=False)
            return document

    def delete(self, collection: str, document_id: str, query: Mapping[str, Any], states: frozenset[str]) -> bool:
        """Remove one document by `_id`; False when it is not there."""
        with self._lock:
            if self._get(collection, document_id, query, states) is None:
                return False
            self._connection.execute("DELETE FROM documents WHERE collection = ? AND id = ?", (collection, document_id))
            return True

    def _stamp_new(self, document: Document, user_id: str, state: str) -> Document:
        timestamp = iso_timestamp(self._clock())
        return {
            "_id": new_object_id(),
            **document,
            "__STATE__": state,
            "createdAt": timestamp,
            "updatedAt": timestamp,
            "creatorId": user_id,
            "updaterId": user_id,
        }

    def _matching(self, collection: str, query: Mapping[str, Any], states: frozenset[str]) -> list[Document]:
        rows = self._connection.execute(
            "SELECT body FROM documents WHERE collection = ? ORDER BY seq", (collection,)
        ).fetchall()
        documents = (json.loads(row[0]) for row in rows)
        return [doc for doc in documents if doc.get("__STATE__") in states and matches(doc, query)]

    def _get(
        self, collection: str, document_id: str, query: Mapping[str, Any], states: frozenset[str]
    ) -> Document | None:
        row = self._connection.execute(
            "SELECT body FROM documents WHERE collection = ? AND id = ?", (collection, document_id)
        ).fetchone()
        if row is None:
            return None
        document: Document = json.loads(row[0])
        if document.get("__STATE__") not in states or not matches(document, query):
            return None
        return document

    def _write(self, collection: str, document: Document, *, new: bool) -> None:
        body = json.dumps(document, separators=(",", ":"))
        if new:
            self._connection.execute(
                "INSERT INTO documents (collection, id, body) VALUES (?, ?, ?)", (collection, document["_id"], body)
            )
        else:
            self._connection.execute(
                "UPDATE documents SET body = ? WHERE collection = ? AND id = ?", (body, collection, document["_id"])
            )
