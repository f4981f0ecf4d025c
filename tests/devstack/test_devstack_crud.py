"""The CRUD stand-in answers like Mia-Platform's CRUD Service over real HTTP."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def client(crud_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=crud_url, timeout=10) as http:
        yield http


@pytest.fixture
def collection() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


def insert(client: httpx.Client, collection: str, *documents: dict[str, Any]) -> list[str]:
    ids = []
    for document in documents:
        response = client.post(f"/{collection}/", json=document)
        assert response.status_code == 200, response.text
        ids.append(response.json()["_id"])
    return ids


def listed(client: httpx.Client, collection: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/{collection}/", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


PAYMENTS = [
    {"name": "a", "amount": 100, "metadata": {"paymentId": "pay_1", "provider": "stripe"}, "tags": ["x", "y"]},
    {"name": "b", "amount": 250, "metadata": {"paymentId": "pay_2", "provider": "sandbox"}, "tags": ["y"]},
    {"name": "c", "amount": 900, "metadata": {"provider": "Stripe", "paymentID": "old_3"}},
    {"name": "d", "amount": 50, "lines": [{"sku": "s1", "qty": 2}, {"sku": "s2", "qty": 5}]},
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"metadata.paymentId": "pay_1"}, ["a"]),
        ({"metadata.paymentId": {"$eq": "pay_2"}}, ["b"]),
        ({"amount": {"$ne": 100}}, ["b", "c", "d"]),
        ({"amount": {"$gt": 100}}, ["b", "c"]),
        ({"amount": {"$gte": 100, "$lt": 900}}, ["a", "b"]),
        ({"amount": {"$lte": 100}}, ["a", "d"]),
        ({"metadata.provider": {"$in": ["stripe", "sandbox"]}}, ["a", "b"]),
        ({"metadata.provider": {"$nin": ["stripe"]}}, ["b", "c", "d"]),
        ({"metadata.paymentId": {"$exists": False}}, ["c", "d"]),
        ({"metadata.paymentID": {"$exists": True}}, ["c"]),
        ({"metadata.provider": {"$regex": "^strip", "$options": "i"}}, ["a", "c"]),
        ({"$or": [{"metadata.paymentId": "pay_2"}, {"metadata.paymentID": "old_3"}]}, ["b", "c"]),
        ({"$and": [{"amount": {"$gt": 60}}, {"tags": "y"}]}, ["a", "b"]),
        ({"tags": "x"}, ["a"]),
        ({"lines.sku": "s2"}, ["d"]),
        ({"lines.qty": {"$gt": 4}}, ["d"]),
        ({"metadata": {"$exists": True}, "amount": {"$not": {"$gt": 200}}}, ["a"]),
    ],
)
def test_q_filter_operators_follow_mongodb_semantics_on_dotted_paths(
    client: httpx.Client, collection: str, query: dict[str, Any], expected: list[str]
) -> None:
    insert(client, collection, *PAYMENTS)
    found = listed(client, collection, _q=json.dumps(query))
    assert [doc["name"] for doc in found] == expected


def test_query_parameters_filter_by_field_equality_as_string_or_json_scalar(
    client: httpx.Client, collection: str
) -> None:
    insert(client, collection, *PAYMENTS)
    assert [d["name"] for d in listed(client, collection, name="b")] == ["b"]
    assert [d["name"] for d in listed(client, collection, amount="900")] == ["c"]
    assert [d["name"] for d in listed(client, collection, **{"metadata.provider": "sandbox"})] == ["b"]
    assert listed(client, collection, name="zzz") == []


def test_sort_skip_and_limit_page_through_documents(client: httpx.Client, collection: str) -> None:
    insert(client, collection, *({"n": n, "group": n % 2} for n in range(30)))
    assert len(listed(client, collection)) == 25
    page = listed(client, collection, _s="-n", _sk=5, _l=3)
    assert [d["n"] for d in page] == [24, 23, 22]
    two_keys = listed(client, collection, _s="group,-n", _l=4)
    assert [(d["group"], d["n"]) for d in two_keys] == [(0, 28), (0, 26), (0, 24), (0, 22)]
    assert len(listed(client, collection, _l=200)) == 30


def test_projection_returns_only_listed_fields_and_the_id(client: httpx.Client, collection: str) -> None:
    insert(client, collection, PAYMENTS[0])
    [document] = listed(client, collection, _p="name,metadata.paymentId")
    assert set(document) == {"_id", "name", "metadata"}
    assert document["metadata"] == {"paymentId": "pay_1"}


def test_documents_carry_the_crud_system_fields(client: httpx.Client, collection: str) -> None:
    [document_id] = insert(client, collection, {"name": "a"})
    document = client.get(f"/{collection}/{document_id}").json()
    assert OBJECT_ID.match(document["_id"])
    assert document["__STATE__"] == "PUBLIC"
    assert ISO_UTC.match(document["createdAt"])
    assert document["updatedAt"] == document["createdAt"]
    assert document["creatorId"] == document["updaterId"] == "public"


def test_only_public_documents_are_listed_unless_st_asks_for_other_states(
    client: httpx.Client, collection: str
) -> None:
    insert(client, collection, {"name": "live"}, {"name": "draft", "__STATE__": "DRAFT"})
    assert [d["name"] for d in listed(client, collection)] == ["live"]
    assert [d["name"] for d in listed(client, collection, _st="DRAFT")] == ["draft"]
    assert [d["name"] for d in listed(client, collection, _st="PUBLIC,DRAFT")] == ["live", "draft"]
    assert client.get(f"/{collection}/count", params={"_st": "PUBLIC,DRAFT"}).json() == 2


def test_upsert_one_creates_from_the_filter_then_updates_with_set_and_unset(
    client: httpx.Client, collection: str
) -> None:
    created = client.post(
        f"/{collection}/upsert-one",
        params={"sagaId": "saga-1"},
        json={"$set": {"currentState": "A", "metadata": {"amount": 1, "note": "x"}}},
    )
    assert created.status_code == 200, created.text
    first = created.json()
    assert first["sagaId"] == "saga-1"
    assert first["currentState"] == "A"
    assert OBJECT_ID.match(first["_id"])

    updated = client.post(
        f"/{collection}/upsert-one",
        params={"sagaId": "saga-1"},
        json={"$set": {"currentState": "B", "metadata.amount": 2}, "$unset": {"metadata.note": True}},
    ).json()
    assert updated["_id"] == first["_id"]
    assert updated["currentState"] == "B"
    assert updated["metadata"] == {"amount": 2}
    assert updated["createdAt"] == first["createdAt"]
    assert updated["updatedAt"] >= first["updatedAt"]

    [stored] = listed(client, collection, sagaId="saga-1")
    assert stored == updated
    assert client.get(f"/{collection}/count").json() == 1


def test_upsert_one_refuses_unknown_operators_and_system_fields(client: httpx.Client, collection: str) -> None:
    unknown = client.post(f"/{collection}/upsert-one", params={"k": "v"}, json={"$rename": {"a": "b"}})
    assert unknown.status_code == 400
    assert "$rename" in unknown.json()["message"]
    system = client.post(f"/{collection}/upsert-one", params={"k": "v"}, json={"$set": {"createdAt": "now"}})
    assert system.status_code == 400


def test_concurrent_upserts_on_one_filter_create_a_single_document(client: httpx.Client, collection: str) -> None:
    def upsert(n: int) -> int:
        response = client.post(
            f"/{collection}/upsert-one", params={"sagaId": "same"}, json={"$set": {f"seen.w{n}": True}}
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(upsert, range(16)))
    assert statuses == [200] * 16
    [document] = listed(client, collection, sagaId="same")
    assert len(document["seen"]) == 16


def test_count_applies_filters(client: httpx.Client, collection: str) -> None:
    insert(client, collection, *PAYMENTS)
    assert client.get(f"/{collection}/count").json() == 4
    assert client.get(f"/{collection}/count", params={"_q": json.dumps({"amount": {"$gt": 200}})}).json() == 2


def test_missing_document_answers_404_with_the_crud_body(client: httpx.Client, collection: str) -> None:
    response = client.get(f"/{collection}/{'0' * 24}")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


def test_delete_removes_one_document(client: httpx.Client, collection: str) -> None:
    [document_id] = insert(client, collection, {"name": "gone"})
    assert client.delete(f"/{collection}/{document_id}").status_code == 204
    assert client.get(f"/{collection}/{document_id}").status_code == 404
    assert client.delete(f"/{collection}/{document_id}").status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"_q": "{not json"},
        {"_q": json.dumps({"amount": {"$where": "1"}})},
        {"_q": json.dumps({"$or": []})},
        {"_q": json.dumps({"name": {"$regex": "("}})},
        {"_q": json.dumps(["a"])},
        {"_l": "201"},
        {"_l": "0"},
        {"_l": "ten"},
        {"_sk": "-1"},
        {"_st": "ARCHIVED"},
        {"_s": "-"},
    ],
)
def test_bad_query_parameters_answer_400_with_a_json_message(
    client: httpx.Client, collection: str, params: dict[str, str]
) -> None:
    response = client.get(f"/{collection}/", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["statusCode"] == 400
    assert body["message"]


def test_probes_answer(client: httpx.Client) -> None:
    assert client.get("/-/healthz").status_code == 200
    assert client.get("/-/ready").status_code == 200
