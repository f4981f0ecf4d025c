"""The hot path (src/pgm/http/hot.py) answers exactly as FastAPI's routing does: the same requests, good and
bad, sent to an app serving the saga's requests and /v3's pay on its hot path and to one serving
everything through FastAPI, get the same status, headers and body, byte for byte (ids the service draws
at random aside), and count in the same request metrics."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from pgm.config import load_settings
from pgm.crypto import timestamped_hmac
from pgm.http.app import create_app
from pgm.wiring import Wiring
from tests.support.databases import fresh_database
from tests.support.pgm_process import FAST, SANDBOX_SECRET

TOKEN = "hot-path-token"
SANDBOX_KEY = "sk_sandbox_local"
REQUEST_ID = "hot-path-request"
# Nothing listens there: the saga worker's calls fail and are retried, after the answers compared here.
NOWHERE = "http://127.0.0.1:9"
JSON = {"Content-Type": "application/json"}
AUTHORISED = {**JSON, "Authorization": f"Bearer {TOKEN}"}
SANDBOX_AUTHORISED = {**JSON, "Authorization": f"Bearer {SANDBOX_KEY}"}
CALLBACK_MAX_BYTES = 2048


def _command(key: str = "saga-hot-1") -> dict[str, Any]:
    return {"key": key, "value": {"messageLabel": "paymentScheduled", "messagePayload": {"amount": 1299}}}


def _sandbox_payment(**change: Any) -> dict[str, Any]:
    return {"amount": 1299, "currency": "EUR", "reference": "order-hot-1", "outcome": "OK", **change}


def _raw(value: Any) -> bytes:
    return json.dumps(value).encode()


# (method, path, headers, body): every one is sent to both apps. A body given as a list of chunks is
# streamed without a Content-Length: only the streamed body size limit can refuse it.
Case = tuple[str, str, dict[str, str], bytes | list[bytes]]
SAGA_CASES: list[Case] = [
    ("POST", "/saga/pay", JSON, _raw(_command())),  # no token
    ("POST", "/saga/pay", {**JSON, "Authorization": "Bearer wrong"}, _raw(_command())),
    ("POST", "/saga/pay", {**JSON, "Authorization": "Bearer wrong"}, b"{not json"),  # JSON first, then the token
    ("POST", "/saga/pay", {**JSON, "Authorization": "Basic " + TOKEN}, b"[]"),
    ("POST", "/saga/pay", AUTHORISED, b"{not json"),
    ("POST", "/saga/pay", AUTHORISED, b""),
    ("POST", "/saga/pay", AUTHORISED, b"null"),
    ("POST", "/saga/pay", AUTHORISED, b"[1, 2]"),
    ("POST", "/saga/pay", AUTHORISED, b'"text"'),
    ("POST", "/saga/pay", AUTHORISED, b"{}"),
    ("POST", "/saga/pay", AUTHORISED, _raw({"key": "", "value": {}})),
    ("POST", "/saga/pay", AUTHORISED, _raw({"key": "k" * 256, "value": _command()["value"]})),
    ("POST", "/saga/pay", AUTHORISED, _raw({"key": 12, "value": {"messageLabel": 1, "messagePayload": []}})),
    ("POST", "/saga/pay", AUTHORISED, _raw({"key": "s", "value": {"messagePayload": {}}})),
    ("POST", "/saga/pay", AUTHORISED, b'{"key": "s", "value": {"messageLabel": "x", "messagePayload": {"a": NaN}}}'),
    ("POST", "/saga/pay", AUTHORISED, b'{"key": "s\\u0000", "value": {}}'),  # NUL: refused by the middleware
    ("POST", "/saga/pay", AUTHORISED, b'{"key": "\\ud800", "value": {}}'),  # a lone surrogate
    ("POST", "/saga/pay", AUTHORISED, b'{"key": "\xff\xfe"}'),  # not UTF-8
    ("POST", "/saga/pay", AUTHORISED, b"\xef\xbb\xbf" + _raw(_command("saga-bom"))),  # a UTF-8 byte order mark
    ("POST", "/saga/pay", {"Authorization": f"Bearer {TOKEN}"}, _raw(_command())),  # no content type
    ("POST", "/saga/pay", {**AUTHORISED, "Content-Type": "text/plain"}, _raw(_command())),
    ("POST", "/saga/pay", {**AUTHORISED, "Content-Type": "application/x-www-form-urlencoded"}, b"key=a"),
    ("POST", "/saga/pay", {**AUTHORISED, "Content-Type": "application/json; charset=utf-8"}, b"{}"),
    ("POST", "/saga/pay", {**AUTHORISED, "Content-Type": "Application/Problem+JSON"}, b"{}"),
    ("POST", "/saga/pay", {**AUTHORISED, "Content-Type": "application/json/x"}, b"{}"),
    ("POST", "/saga/pay", {**AUTHORISED, "Content-Length": "99999999"}, b"{}"),
    ("POST", "/saga/pay", AUTHORISED, b'{"key": "' + b"x" * 1_100_000 + b'"}'),  # over PGM_MAX_BODY_BYTES
    ("POST", "/saga/pay", AUTHORISED, [b'{"key": "', b"x" * 1_100_000, b'"}']),  # streamed over it
    ("POST", "/saga/pay", AUTHORISED, [b'{"key": "s\\u0000", ', b'"value": {}}']),  # NUL in a streamed body
    ("POST", "/saga/pay?note=%00", AUTHORISED, _raw(_command())),  # NUL in the query
    ("POST", "/saga/pay/", AUTHORISED, _raw(_command())),  # not the table's path: FastAPI's answer
    ("GET", "/saga/pay", AUTHORISED, b""),
    ("PUT", "/saga/refund", AUTHORISED, b"{}"),
    ("POST", "/saga/refund", AUTHORISED, _raw({"key": "s"})),
    ("POST", "/saga/pay-by-link", AUTHORISED, b"{"),
]
SANDBOX_CASES: list[Case] = [
    ("POST", "/sandbox/api/v1/payments", JSON, _raw(_sandbox_payment())),  # no key: after validation
    ("POST", "/sandbox/api/v1/payments", JSON, _raw(_sandbox_payment(amount=0))),
    ("POST", "/sandbox/api/v1/payments", {**JSON, "Authorization": "Bearer nope"}, _raw(_sandbox_payment())),
    ("POST", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, b"{oops"),
    ("POST", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, b""),
    ("POST", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, _raw({"amount": "x", "currency": "EURO"})),
    ("POST", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, _raw(_sandbox_payment(outcome="MAYBE"))),
    ("POST", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, _raw(_sandbox_payment(successUrl="javascript:x"))),
    ("POST", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, _raw(_sandbox_payment(delayMs=10**9))),
    ("POST", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, _raw(_sandbox_payment(outcome="ERROR"))),
    ("POST", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, _raw(_sandbox_payment(reference="order\x00"))),
    ("POST", "/sandbox/api/v1/payments", {**SANDBOX_AUTHORISED, "Content-Length": "2000000"}, b"{}"),
    ("GET", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, b""),
]
CALLBACK_CASES: list[Case] = [
    ("POST", "/v3/sandbox/callback", JSON, b"{}"),  # unsigned
    ("POST", "/v3/sandbox/callback", {**JSON, "Sandbox-Signature": "t=1,v1=00"}, b"{}"),
    ("POST", "/v3/sandbox/callback", JSON, b"x" * (CALLBACK_MAX_BYTES + 1)),  # the callbacks' own limit
    ("POST", "/v3/sandbox/callback", JSON, [b"x" * CALLBACK_MAX_BYTES, b"x"]),  # the same, streamed
    ("POST", "/v3/sandbox/callback", {**JSON, "Content-Length": str(CALLBACK_MAX_BYTES + 1)}, b"{}"),  # declared
    ("POST", "/v3/sandbox/callback?x=%00", JSON, b"{}"),
    ("POST", "/v3/sandbox/callback", JSON, b'{"id": "\\u0000"}'),
    ("GET", "/v3/sandbox/callback", {}, b""),
    ("POST", "/v3/sandbox/callback/authorization", JSON, b"{}"),
    ("POST", "/v3/nobody/callback", JSON, b"{}"),
    ("DELETE", "/v3/sandbox/callback", JSON, b"{}"),
]
PAY = "/v3/sandbox/credit-cards/pay"


def _pay(**change: Any) -> dict[str, Any]:
    return {"amount": 1299, "currency": "EUR", "shopTransactionId": "order-hot-v3", **change}


V3_PAY_CASES: list[Case] = [
    ("POST", PAY, JSON, _raw(_pay())),  # no token
    ("POST", PAY, {**JSON, "Authorization": "Bearer wrong"}, b"{broken"),  # JSON first, then the token
    ("POST", PAY, AUTHORISED, b"{broken"),
    ("POST", PAY, AUTHORISED, b""),
    ("POST", PAY, AUTHORISED, _raw(_pay(amount=0, currency="eur"))),
    ("POST", PAY, AUTHORISED, _raw({"amount": 1299})),
    ("POST", PAY, {**AUTHORISED, "Idempotency-Key": "k" * 201}, _raw(_pay())),
    ("POST", PAY, {**AUTHORISED, "Idempotency-Key": "k" * 201}, _raw(_pay(amount="x"))),  # header and body
    ("POST", PAY, AUTHORISED, _raw(_pay(successRedirectUrl="javascript:alert(1)"))),
    ("POST", PAY, AUTHORISED, _raw(_pay(providerData={"sandboxOutcome": "PERHAPS"}))),
    ("POST", "/v3/nobody/credit-cards/pay", AUTHORISED, _raw(_pay())),  # an unknown provider, before the body
    ("POST", "/v3/nobody/credit-cards/pay", AUTHORISED, b"{}"),
    ("POST", "/v3/sandbox/no-such-method/pay", AUTHORISED, _raw(_pay())),
    ("POST", "/v3/sandbox/subscription/pay", AUTHORISED, _raw(_pay())),  # another route's path
    ("POST", "/v3/sandbox/utility/pay", AUTHORISED, _raw(_pay())),
    ("POST", "/v3/sandbox//pay", AUTHORISED, _raw(_pay())),
    ("POST", "/v3/sandbox/credit%00-cards/pay", AUTHORISED, _raw(_pay())),  # NUL in the path
    ("POST", PAY + "?a=%00", AUTHORISED, _raw(_pay())),
    ("POST", PAY, AUTHORISED, _raw(_pay(shopTransactionId="\ud800"))),  # a lone surrogate in the body
    ("POST", PAY, AUTHORISED, [_raw(_pay(shopTransactionId="x" * 1_100_000))]),
    ("POST", PAY, {**AUTHORISED, "Content-Length": "1048577"}, _raw(_pay())),
    ("POST", PAY + "/", AUTHORISED, _raw(_pay())),
    ("GET", PAY, AUTHORISED, b""),
]
# Ids the service draws itself differ between the two apps: their values are not compared, only their keys.
DRAWN = {"deliveryId", "id", "paymentId", "redirectUrl", "checkoutUrl", "createdAt", "updatedAt"}


@pytest.fixture(scope="module")
def clients(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, TestClient]]:
    """The same service twice, on two databases: one app with the hot path, one without."""
    directory = tmp_path_factory.mktemp("hot")
    with fresh_database(backend, directory) as hot_url, fresh_database(backend, directory) as plain_url:
        apps = []
        for url, hot_path in ((hot_url, True), (plain_url, False)):
            env = {
                **FAST,
                "PGM_DATABASE_URL": url,
                "PGM_API_TOKEN": TOKEN,
                "FLOW_MANAGER_URL": NOWHERE,
                "SAGA_CRUD_URL": NOWHERE,
                "PGM_MAX_CALLBACK_BYTES": str(CALLBACK_MAX_BYTES),
            }
            apps.append(create_app(Wiring(load_settings(env)), hot_path=hot_path))
        with TestClient(apps[0]) as hot, TestClient(apps[1]) as plain:
            yield hot, plain


def _answer(
    client: TestClient, case: Case, request_id: str | None = REQUEST_ID
) -> tuple[int, list[tuple[str, str]], Any]:
    method, path, headers, body = case
    if request_id is not None:
        headers = {**headers, "X-Request-Id": request_id}
    content = body if isinstance(body, bytes) else iter(body)
    response = client.request(method, path, headers=headers, content=content)
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.content
    if isinstance(answer, dict):
        answer = {key: "<drawn>" if key in DRAWN else value for key, value in answer.items()}
    headers_seen = [(name, value) for name, value in response.headers.items() if name != "content-length"]
    if not isinstance(answer, dict):
        headers_seen.append(("content-length", response.headers.get("content-length", "")))
    return response.status_code, headers_seen, answer


def _case_id(case: Case) -> str:
    method, path, headers, body = case
    shown = body[:60] if isinstance(body, bytes) else f"{len(body)} chunks of {[len(chunk) for chunk in body]} bytes"
    return f"{method} {path} {sorted(headers.items())} {shown!r}"


@pytest.mark.parametrize("case", SAGA_CASES + SANDBOX_CASES + CALLBACK_CASES + V3_PAY_CASES, ids=_case_id)
def test_the_hot_path_answers_as_fastapi_does(clients: tuple[TestClient, TestClient], case: Case) -> None:
    hot, plain = clients
    assert _answer(hot, case) == _answer(plain, case)


def test_a_good_command_is_accepted_on_the_hot_path(clients: tuple[TestClient, TestClient]) -> None:
    hot, plain = clients
    case: Case = ("POST", "/saga/refund", AUTHORISED, _raw(_command("saga-hot-accepted")))
    status, headers, body = _answer(hot, case)
    assert (status, headers, body) == _answer(plain, case)
    assert status == 202
    assert body == {"accepted": True, "sagaId": "saga-hot-accepted", "deliveryId": "<drawn>"}
    assert ("x-request-id", REQUEST_ID) in headers


def test_a_sandbox_payment_is_created_on_the_hot_path(clients: tuple[TestClient, TestClient]) -> None:
    hot, plain = clients
    case: Case = ("POST", "/sandbox/api/v1/payments", SANDBOX_AUTHORISED, _raw(_sandbox_payment()))
    status, _, body = _answer(hot, case)
    assert (status, body) == _answer(plain, case)[::2]
    assert status == 201
    assert body["status"] == "ACCEPTED"


def test_a_good_pay_is_answered_on_the_hot_path(clients: tuple[TestClient, TestClient]) -> None:
    hot, plain = clients
    case: Case = ("POST", PAY, {**AUTHORISED, "Idempotency-Key": "hot-pay-1"}, _raw(_pay()))
    status, headers, body = _answer(hot, case)
    assert (status, headers, body) == _answer(plain, case)
    assert set(body) >= {"result", "resultDescription", "paymentId"}


def test_a_signed_callback_is_received_on_the_hot_path(clients: tuple[TestClient, TestClient]) -> None:
    hot, plain = clients
    event = _raw({"id": "evt_hot", "type": "payment.updated", "createdAt": int(time.time()), "data": {"id": "nope"}})
    signature = timestamped_hmac.header(SANDBOX_SECRET, int(time.time()), event)
    case: Case = ("POST", "/v3/sandbox/callback", {**JSON, "Sandbox-Signature": signature}, event)
    assert _answer(hot, case) == _answer(plain, case)


def test_the_hot_path_counts_the_same_request_metrics(clients: tuple[TestClient, TestClient]) -> None:
    hot, plain = clients
    for case in SAGA_CASES[:8] + SANDBOX_CASES[:3] + CALLBACK_CASES[:2] + V3_PAY_CASES[:8]:
        _answer(hot, case)
        _answer(plain, case)
    assert _requests_counted(hot) == _requests_counted(plain)
    assert ("POST", "/saga/pay", "401") in _requests_counted(hot)
    assert ("POST", "/v3/{provider}/callback", "401") in _requests_counted(hot)
    assert ("POST", "/v3/{provider}/{paymentMethod}/pay", "400") in _requests_counted(hot)


def _requests_counted(client: TestClient) -> dict[tuple[str, str, str], float]:
    counted = {}
    for family in text_string_to_metric_families(client.get("/-/metrics").text):
        for sample in family.samples:
            if sample.name == "pgm_http_requests_total":
                labels = sample.labels
                counted[(labels["method"], labels["route"], labels["status"])] = sample.value
    return counted


def test_the_openapi_document_is_the_same(clients: tuple[TestClient, TestClient]) -> None:
    hot, plain = clients
    assert hot.get("/documentation/openapi.json").json() == plain.get("/documentation/openapi.json").json()


def test_the_table_refuses_arguments_its_endpoint_does_not_take(tmp_path: Path) -> None:
    from pgm.http.hot import HotRoute
    from pgm.http.routes import saga

    router = saga.build_router()
    good = saga.hot_routes(router)[0]
    wrong = HotRoute(good.method, good.path, good.route, good.arguments, frozenset({"command"}))
    good.check()
    with pytest.raises(ValueError, match="are not the endpoint's"):
        wrong.check()


# Each middleware's refusal, on a hot route: (case, status, error code). Compared with FastAPI's above; here
# each is checked to be the refusal it stands for, so that none passes by reaching the endpoint instead.
REFUSALS: list[tuple[Case, int, str]] = [
    (("POST", "/saga/pay", {**AUTHORISED, "Content-Length": "99999999"}, b"{}"), 413, "payload_too_large"),
    (("POST", "/saga/pay", AUTHORISED, [b'{"key": "', b"x" * 1_100_000, b'"}']), 413, "payload_too_large"),
    (("POST", "/v3/sandbox/callback", JSON, [b"x" * CALLBACK_MAX_BYTES, b"x"]), 413, "payload_too_large"),
    (
        ("POST", "/v3/sandbox/callback", {**JSON, "Content-Length": str(CALLBACK_MAX_BYTES + 1)}, b"{}"),
        413,
        "payload_too_large",
    ),
    (("POST", PAY, {**AUTHORISED, "Content-Length": "1048577"}, _raw(_pay())), 413, "payload_too_large"),
    (("POST", "/saga/pay?note=%00", AUTHORISED, _raw(_command())), 400, "invalid_request"),
    (("POST", "/v3/sandbox/credit%00-cards/pay", AUTHORISED, _raw(_pay())), 400, "invalid_request"),
    (("POST", "/v3/sandbox/callback?x=%00", JSON, b"{}"), 400, "invalid_request"),
    (("POST", "/saga/pay", AUTHORISED, [b'{"key": "s\\u0000", ', b'"value": {}}']), 400, "invalid_request"),
    (("POST", PAY, AUTHORISED, _raw(_pay(shopTransactionId="\ud800"))), 400, "invalid_request"),
]


@pytest.mark.parametrize(("case", "status", "code"), REFUSALS, ids=[_case_id(case) for case, _, _ in REFUSALS])
def test_each_middleware_refuses_on_a_hot_route(
    clients: tuple[TestClient, TestClient], case: Case, status: int, code: str
) -> None:
    hot, _ = clients
    answered_status, headers, body = _answer(hot, case)
    assert (answered_status, body["code"], body["requestId"]) == (status, code, REQUEST_ID)
    assert ("x-request-id", REQUEST_ID) in headers
    if code == "invalid_request":
        assert "NUL character or a lone UTF-16 surrogate" in body["message"]


@pytest.mark.parametrize("given", [None, "", "x" * 65, "tab\there"])
def test_the_hot_path_makes_a_request_id_as_fastapi_does(
    clients: tuple[TestClient, TestClient], given: str | None
) -> None:
    hot, plain = clients
    case: Case = ("POST", "/saga/pay", AUTHORISED, b"{}")
    answers = [_answer(client, case, request_id=given) for client in (hot, plain)]
    for status, headers, body in answers:
        drawn = dict(headers)["x-request-id"]
        assert re.fullmatch("[0-9a-f]{32}", drawn)
        assert (status, body["requestId"]) == (400, drawn)
    (hot_status, hot_headers, hot_body), (plain_status, plain_headers, plain_body) = answers
    assert hot_status == plain_status
    assert [name for name, _ in hot_headers] == [name for name, _ in plain_headers]
    assert {**hot_body, "requestId": None} == {**plain_body, "requestId": None}


def test_the_hot_path_writes_the_same_access_lines(
    clients: tuple[TestClient, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    hot, plain = clients
    cases = [case for case, _, _ in REFUSALS] + SAGA_CASES[:6] + CALLBACK_CASES[:2] + V3_PAY_CASES[:4]
    lines = []
    for client in (hot, plain):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pgm.access"):
            for case in cases:
                _answer(client, case)
        lines.append(
            [
                (record.getMessage(), record.method, record.path, record.status, record.durationMs >= 0)  # type: ignore[attr-defined]
                for record in caplog.records
                if record.name == "pgm.access"
            ]
        )
    assert lines[0] == lines[1]
    assert len(lines[0]) == len(cases)
    assert ("request", "POST", "/v3/sandbox/callback", 413, True) in lines[0]


def test_the_hot_path_counts_its_refusals_in_the_same_request_metrics(clients: tuple[TestClient, TestClient]) -> None:
    hot, plain = clients
    before = [_requests_counted(client) for client in (hot, plain)]
    for case, _, _ in REFUSALS:
        _answer(hot, case)
        _answer(plain, case)
    added = [
        {key: value - counted.get(key, 0) for key, value in _requests_counted(client).items()}
        for client, counted in ((hot, before[0]), (plain, before[1]))
    ]
    assert added[0] == added[1]
    # Refused before routing, a request counts under no route; refused while its body streams in, under its own.
    assert added[0][("POST", "unmatched", "413")] >= 1
    assert added[0][("POST", "/v3/{provider}/callback", "413")] >= 1


@pytest.fixture(scope="module")
def shedding(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, TestClient]]:
    """The service twice, with and without the hot path, with no room for a /v3 request: each is shed."""
    directory = tmp_path_factory.mktemp("shed")
    with fresh_database(backend, directory) as hot_url, fresh_database(backend, directory) as plain_url:
        apps = []
        for url, hot_path in ((hot_url, True), (plain_url, False)):
            env = {
                **FAST,
                "PGM_DATABASE_URL": url,
                "PGM_API_TOKEN": TOKEN,
                "FLOW_MANAGER_URL": NOWHERE,
                "SAGA_CRUD_URL": NOWHERE,
            }
            # Below the setting's minimum of 1: every /v3 request finds the service full, without holding one.
            settings = dataclasses.replace(load_settings(env), max_in_flight=0)
            apps.append(create_app(Wiring(settings), hot_path=hot_path))
        with TestClient(apps[0]) as hot, TestClient(apps[1]) as plain:
            yield hot, plain


def test_the_hot_path_sheds_v3_pay_as_the_middleware_does(shedding: tuple[TestClient, TestClient]) -> None:
    hot, plain = shedding
    pay: Case = ("POST", PAY, {**AUTHORISED, "Idempotency-Key": "shed-1"}, _raw(_pay()))
    status, headers, body = _answer(hot, pay)
    assert (status, headers, body) == _answer(plain, pay)
    assert (status, body["code"], dict(headers)["retry-after"]) == (503, "overloaded", "1")
    # Never a saga command, the sandbox's provider API or a callback: answered, not shed.
    for case in (SAGA_CASES[0], SANDBOX_CASES[0], CALLBACK_CASES[0]):
        answer = _answer(hot, case)
        assert answer == _answer(plain, case)
        assert answer[0] != 503
    assert _shed(hot) == _shed(plain) == 1.0


def _shed(client: TestClient) -> float:
    for family in text_string_to_metric_families(client.get("/-/metrics").text):
        for sample in family.samples:
            if sample.name == "pgm_requests_shed_total":
                return sample.value
    raise AssertionError("no pgm_requests_shed_total")
