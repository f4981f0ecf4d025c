"""HTTP routes of the CRUD stand-in, following Mia-Platform CRUD Service conventions for any collection."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html import escape
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from pgm.devstack.crud.query import (
    Document,
    QueryError,
    equality_fields,
    param_condition,
    parse_projection,
    parse_sort,
    project,
    validate_filter,
    validate_update,
)
from pgm.devstack.crud.store import DEFAULT_STATE, STATES, DocumentStore

DEFAULT_LIMIT = 25
MAX_LIMIT = 200
# The header the CRUD Service reads the caller's id from (its USER_ID_HEADER_KEY default).
USER_ID_HEADER = "userid"
ANONYMOUS_USER = "public"

_RESERVED_PARAMS = frozenset({"_q", "_l", "_sk", "_s", "_p", "_st", "_rawp"})
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
NOT_FOUND_BODY = {"error": "not found"}


@dataclass(frozen=True)
class ListParams:
    """What the query string of a read asks for."""

    query: dict[str, Any]
    seed: dict[str, Any]
    states: frozenset[str]
    sort: list[tuple[list[str], bool]] | None
    skip: int
    limit: int
    projection: list[list[str]] | None


HOME_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>CRUD stand-in</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }}</style>
</head><body><h1>CRUD Service stand-in</h1><p>Collections (JSON documents):</p><ul id="links">{items}</ul>
<p><a href="/-/healthz">/-/healthz</a></p></body></html>
"""


def _bad_request(message: str) -> JSONResponse:
    # The body Fastify (which the CRUD Service runs on) gives every 400.
    return JSONResponse({"statusCode": 400, "error": "Bad Request", "message": message}, status_code=400)


def _not_found() -> JSONResponse:
    return JSONResponse(NOT_FOUND_BODY, status_code=404)


def _integer_param(raw: str | None, name: str, *, default: int, minimum: int, maximum: int | None) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise QueryError(f"{name} must be at least {minimum}{upper}, got {value}")
    return value


def parse_list_params(request: Request) -> ListParams:
    """Read `_q`, field filters, `_st`, `_s`, `_sk`, `_l` and `_p` from a request, or raise QueryError."""
    params = request.query_params
    if "_rawp" in params:
        raise QueryError("_rawp is not supported by the CRUD stand-in; use _p")
    clauses: list[dict[str, Any]] = []
    seed: dict[str, Any] = {}
    raw_query = params.get("_q")
    if raw_query is not None:
        try:
            client_query = json.loads(raw_query)
        except ValueError as error:
            raise QueryError(f"_q is not valid JSON: {error}") from error
        validate_filter(client_query)
        clauses.append(client_query)
        seed.update(equality_fields(client_query))
    for key, value in params.multi_items():
        if key in _RESERVED_PARAMS:
            continue
        clause = {key: param_condition(value)}
        validate_filter(clause)
        clauses.append(clause)
        seed[key] = value
    raw_states = params.get("_st")
    states = frozenset(s.strip() for s in raw_states.split(",")) if raw_states else frozenset({DEFAULT_STATE})
    unknown_states = sorted(states - STATES)
    if unknown_states:
        raise QueryError(f"_st accepts {', '.join(sorted(STATES))}; got {', '.join(unknown_states)}")
    raw_sort = params.get("_s")
    raw_projection = params.get("_p")
    return ListParams(
        query={"$and": clauses} if clauses else {},
        seed=seed,
        states=states,
        sort=parse_sort(raw_sort) if raw_sort else None,
        skip=_integer_param(params.get("_sk"), "_sk", default=0, minimum=0, maximum=None),
        limit=_integer_param(params.get("_l"), "_l", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT),
        projection=parse_projection(raw_projection) if raw_projection else None,
    )


def _shape(document: Document, params: ListParams) -> Document:
    return project(document, params.projection) if params.projection else document


def _check_collection(name: str) -> None:
    if not _COLLECTION_NAME.match(name):
        raise QueryError(f"invalid collection name {name!r}")


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as error:
        raise QueryError(f"the body is not valid JSON: {error}") from error


def _user_id(request: Request) -> str:
    return request.headers.get(USER_ID_HEADER) or ANONYMOUS_USER


def create_crud_app(database_path: str) -> FastAPI:
    """A FastAPI app serving every collection of a SQLite file (or `:memory:`) the way Mia's CRUD does."""
    store = DocumentStore(database_path)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(title="CRUD Service stand-in", lifespan=lifespan)
    app.state.store = store

    @app.exception_handler(QueryError)
    async def query_error(_: Request, error: QueryError) -> JSONResponse:
        return _bad_request(str(error))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        # Opening the stand-in's address in a browser lists its collections instead of a 404.
        names = await run_in_threadpool(store.collections)
        items = "".join(f'<li><a href="/{escape(name)}/">/{escape(name)}/</a></li>' for name in names)
        return HTMLResponse(HOME_PAGE.format(items=items or "<li>none yet</li>"))

    @app.get("/-/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "OK"}

    @app.get("/-/ready")
    async def ready() -> dict[str, str]:
        return {"status": "OK"}

    @app.get("/-/collections")
    async def collections() -> list[str]:
        return await run_in_threadpool(store.collections)

    @app.get("/{collection}/count")
    async def count(collection: str, request: Request) -> int:
        _check_collection(collection)
        params = parse_list_params(request)
        return await run_in_threadpool(store.count, collection, params.query, params.states)

    @app.get("/{collection}/")
    @app.get("/{collection}", include_in_schema=False)
    async def list_documents(collection: str, request: Request) -> list[Document]:
        _check_collection(collection)
        params = parse_list_params(request)
        found = await run_in_threadpool(
            lambda: store.find(
                collection, params.query, params.states, sort=params.sort, skip=params.skip, limit=params.limit
            )
        )
        return [_shape(document, params) for document in found]

    @app.post("/{collection}/upsert-one")
    async def upsert_one(collection: str, request: Request) -> Document:
        _check_collection(collection)
        params = parse_list_params(request)
        commands = await _json_body(request)
        validate_update(commands)
        document = await run_in_threadpool(
            store.upsert_one, collection, params.query, params.seed, commands, params.states, _user_id(request)
        )
        return _shape(document, params)

    @app.post("/{collection}/")
    @app.post("/{collection}", include_in_schema=False)
    async def insert_one(collection: str, request: Request) -> dict[str, str]:
        _check_collection(collection)
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise QueryError("the body must be a JSON object")
        document = await run_in_threadpool(store.insert, collection, body, _user_id(request))
        return {"_id": document["_id"]}

    @app.get("/{collection}/{document_id}", response_model=None)
    async def get_document(collection: str, document_id: str, request: Request) -> Document | JSONResponse:
        _check_collection(collection)
        params = parse_list_params(request)
        document = await run_in_threadpool(store.get, collection, document_id, params.query, params.states)
        return _not_found() if document is None else _shape(document, params)

    @app.patch("/{collection}/{document_id}", response_model=None)
    async def patch_document(collection: str, document_id: str, request: Request) -> Document | JSONResponse:
        _check_collection(collection)
        params = parse_list_params(request)
        commands = await _json_body(request)
        validate_update(commands)
        document = await run_in_threadpool(
            store.patch, collection, document_id, params.query, commands, params.states, _user_id(request)
        )
        return _not_found() if document is None else _shape(document, params)

    @app.delete("/{collection}/{document_id}", response_model=None)
    async def delete_document(collection: str, document_id: str, request: Request) -> Response:
        _check_collection(collection)
        params = parse_list_params(request)
        deleted = await run_in_threadpool(store.delete, collection, document_id, params.query, params.states)
        return Response(status_code=204) if deleted else _not_found()

    return app
