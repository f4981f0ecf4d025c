"""Bad input gets a clear answer (docs/api.md, docs/reliability.md): one error shape, the field at fault, never a 5xx,
never a secret."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.support.pgm_process import SANDBOX_SECRET, PgmProcess
from tests.support.sandbox_requests import pay_body
from tests.support.servers import wait_for

ERROR_KEYS = {"statusCode", "error", "code", "message", "requestId"}


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The response is the error shape with this status, code and field."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= ERROR_KEYS, body
    assert body["statusCode"] == status
    assert body["code"] == code
    assert body.get("field") == field
    assert body["requestId"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"amount": 0}, "amount", "greater than 0"),
        ({"amount": -1}, "amount", "greater than 0"),
        ({"amount": 12.5}, "amount", "integer"),
        ({"amount": "1299"}, "amount", "integer"),
        ({"amount": True}, "amount", "integer"),
        ({"amount": 10**16}, "amount", "less than or equal"),
        ({"currency": "eur"}, "currency", "ISO 4217"),
        ({"currency": "ABC"}, "currency", "not an ISO 4217 code"),
        ({"currency": None}, "currency", "string"),
        ({"shopTransactionId": ""}, "shopTransactionId", "at least 1"),
        ({"successRedirectUrl": "javascript:alert(1)"}, "successRedirectUrl", "http(s) URL"),
        ({"providerData": "OK"}, "providerData", "dictionary"),
        ({"providerData": {"sandboxOutcome": "PERHAPS"}}, "providerData.sandboxOutcome", "must be one of"),
        ({"providerData": {"sandboxDelayMs": 10**9}}, "providerData.sandboxDelayMs", "from 0 to"),
    ],
)
def test_invalid_pay_fields_are_named(
    pgm: PgmProcess, shop_id: str, change: dict[str, Any], field: str, fragment: str
) -> None:
    body = {**pay_body(shop_id), **change}
    error = assert_error(pgm.post("/v3/sandbox/credit-cards/pay", body), 400, "invalid_request", field)
    assert fragment in error["message"]
    assert pgm.sandbox_payments(shop_id) == []


def test_missing_field_is_named(pgm: PgmProcess, shop_id: str) -> None:
    body = pay_body(shop_id)
    del body["currency"]
    error = assert_error(pgm.post("/v3/sandbox/credit-cards/pay", body), 400, "invalid_request", "currency")
    assert error["message"] == "currency is required"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object"), (b"", "the request body is required")],
)
def test_body_that_is_not_a_json_object(pgm: PgmProcess, content: bytes, message: str) -> None:
    response = pgm.client.post(
        "/v3/sandbox/credit-cards/pay", content=content, headers={"Content-Type": "application/json"}
    )
    assert message in assert_error(response, 400, "invalid_request")["message"]


def _pay_with_raw_note(pgm: PgmProcess, shop_id: str, raw_json_string: str) -> httpx.Response:
    """Pay with providerData.note written exactly as given, escapes and all."""
    content = json.dumps(pay_body(shop_id, providerData={"sandboxOutcome": "OK", "note": "?"}))
    content = content.replace('"?"', raw_json_string)
    return pgm.client.post(
        "/v3/sandbox/credit-cards/pay", content=content.encode(), headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    "text",
    [
        '"\\u0000"',  # NUL: PostgreSQL refuses it in text and JSON
        '"a\\u0000b"',
        '"\\\\\\u0000"',  # an escaped backslash, then NUL
        '"\\ud83d"',  # a lone high surrogate: not encodable as UTF-8
        '"\\ude00x"',  # a lone low surrogate
    ],
)
def test_text_no_store_can_keep_is_refused_before_anything_is_written(pgm: PgmProcess, shop_id: str, text: str) -> None:
    response = _pay_with_raw_note(pgm, shop_id, text)
    assert "NUL character or a lone UTF-16 surrogate" in assert_error(response, 400, "invalid_request")["message"]
    assert pgm.sandbox_payments(shop_id) == []


@pytest.mark.parametrize("text", ['"\\\\u0000"', '"\\ud83d\\ude00"', '"caf\\u00e9"'])
def test_escapes_that_look_alike_but_are_storable_are_accepted(pgm: PgmProcess, shop_id: str, text: str) -> None:
    # An escaped backslash before u0000 is the six characters \u0000; a surrogate pair is one emoji.
    response = _pay_with_raw_note(pgm, shop_id, text)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "OK"


@pytest.mark.parametrize("path", ["/v3/sandbox/subscription/status/a%00b", "/v3/sandbox/status?shopTransactionId=%00"])
def test_nul_in_path_or_query_is_refused(pgm: PgmProcess, path: str) -> None:
    assert_error(pgm.client.get(path), 400, "invalid_request")


def test_unknown_fields_are_ignored(pgm: PgmProcess, shop_id: str) -> None:
    body = {**pay_body(shop_id, "OK"), "callbackUrl": "http://attacker.example/", "__proto__": {"x": 1}}
    assert pgm.post("/v3/sandbox/credit-cards/pay", body).json()["result"] == "OK"


def test_unknown_provider_is_404_naming_it(pgm: PgmProcess, shop_id: str) -> None:
    error = assert_error(pgm.post("/v3/nowhere/credit-cards/pay", pay_body(shop_id)), 404, "provider_not_found")
    assert "'nowhere'" in error["message"]


def test_unsupported_payment_method_is_501_naming_provider_and_method(pgm: PgmProcess, shop_id: str) -> None:
    error = assert_error(pgm.post("/v3/sandbox/bitcoin/pay", pay_body(shop_id)), 501, "not_supported")
    assert "sandbox" in error["message"]
    assert "'bitcoin'" in error["message"]


def test_subscription_interval_is_validated(pgm: PgmProcess, shop_id: str) -> None:
    body = pay_body(shop_id, subscriptionInfo={"interval": "FORTNIGHT"})
    assert_error(
        pgm.post("/v3/sandbox/credit-cards/subscription/schedule", body),
        400,
        "invalid_request",
        "subscriptionInfo.interval",
    )
    missing = pay_body(shop_id, subscriptionInfo={})
    assert_error(
        pgm.post("/v3/sandbox/credit-cards/subscription/pay", missing), 400, "invalid_request", "subscriptionInfo.token"
    )


def test_unknown_route_and_wrong_method_use_the_error_shape(pgm: PgmProcess) -> None:
    assert_error(pgm.get("/v4/anything"), 404, "not_found")
    assert_error(pgm.client.put("/v3/sandbox/refund", json={}), 405, "method_not_allowed")


def test_status_of_an_unknown_payment_is_404(pgm: PgmProcess) -> None:
    assert_error(pgm.get("/v3/sandbox/status", params={"paymentId": "sbx_pay_nope"}), 404, "not_found")
    assert_error(pgm.get("/v3/sandbox/status"), 400, "invalid_request", "paymentId")


def test_request_id_is_kept_when_sane(pgm: PgmProcess) -> None:
    assert pgm.get("/-/healthz", headers={"X-Request-Id": "trace-123"}).headers["x-request-id"] == "trace-123"
    generated = pgm.get("/-/healthz", headers={"X-Request-Id": "x" * 500}).headers["x-request-id"]
    assert len(generated) == 32


@pytest.fixture
def small_body_pgm(start_pgm: Callable[..., PgmProcess]) -> PgmProcess:
    """A PGM that accepts bodies of at most 2 KiB."""
    return start_pgm(PGM_MAX_BODY_BYTES="2048", PGM_API_TOKEN="s3cret-token-value")


def test_oversized_body_is_413(small_body_pgm: PgmProcess, shop_id: str) -> None:
    auth = {"Authorization": "Bearer s3cret-token-value"}
    body = pay_body(shop_id, providerData={"padding": "x" * 4096})
    assert_error(small_body_pgm.post("/v3/sandbox/credit-cards/pay", body, headers=auth), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        yield b'{"amount": 1, "padding": "'
        for _ in range(10):
            yield b"y" * 512
        yield b'"}'

    streamed = small_body_pgm.client.post(
        "/v3/sandbox/credit-cards/pay", content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert_error(streamed, 413, "payload_too_large")


def test_api_token_guards_the_api_but_not_callbacks_or_sandbox_pages(small_body_pgm: PgmProcess, shop_id: str) -> None:
    pgm = small_body_pgm
    assert_error(pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id)), 401, "unauthorized")
    wrong = {"Authorization": "Bearer s3cret-token-valuX"}
    error = assert_error(
        pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id), headers=wrong), 401, "unauthorized"
    )
    assert "s3cret" not in error["message"]
    good = {"Authorization": "Bearer s3cret-token-value"}
    payment = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id), headers=good).json()
    assert pgm.get(payment["redirectToUrl"]).status_code == 200
    assert pgm.decide(payment["redirectToUrl"], "approve").status_code == 200
    assert pgm.client.post("/v3/sandbox/callback", content=b"{}").status_code == 401  # unsigned, not unauthorised
    assert pgm.get("/-/healthz").status_code == 200
    log = pgm.log_path.read_text()
    for secret in ("s3cret-token-value", SANDBOX_SECRET, "sk_sandbox_local"):
        assert secret not in log


def test_past_max_in_flight_the_api_sheds_load_with_503_but_never_callbacks_or_health(
    start_pgm: Callable[..., PgmProcess], shop_id: str
) -> None:
    pgm = start_pgm(PGM_MAX_IN_FLIGHT="1")
    slow = pay_body(shop_id, providerData={"sandboxOutcome": "OK", "sandboxDelayMs": 3000})
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(pgm.post, "/v3/sandbox/credit-cards/pay", slow)
        # In flight once the sandbox holds its payment: the answer to the PGM is what is delayed.
        wait_for(lambda: bool(pgm.sandbox_payments(shop_id)), what="the first payment at the sandbox")
        shed = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(f"{shop_id}-2", "OK"))
        error = assert_error(shed, 503, "overloaded")
        assert "retry" in error["message"]
        assert shed.headers["retry-after"] == "1"
        assert pgm.client.post("/v3/sandbox/callback", content=b"{}").status_code == 401  # checked, not shed
        assert pgm.get("/-/healthz").status_code == 200
        assert first.result().json()["result"] == "OK"
    assert pgm.post("/v3/sandbox/credit-cards/pay", pay_body(f"{shop_id}-2", "OK")).json()["result"] == "OK"
    assert "pgm_requests_shed_total 1.0" in pgm.get("/-/metrics").text


def test_openapi_document_covers_every_route_and_shows_no_secret(pgm: PgmProcess) -> None:
    document = pgm.get("/documentation/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/v3/{provider}/{paymentMethod}/pay",
        "/v3/{provider}/refund",
        "/v3/{provider}/{paymentMethod}/subscription/schedule",
        "/v3/{provider}/{paymentMethod}/subscription/start",
        "/v3/{provider}/{paymentMethod}/subscription/pay",
        "/v3/{provider}/subscription/update/{subscriptionToken}",
        "/v3/{provider}/subscription/status/{subscriptionToken}",
        "/v3/{provider}/subscription/expire/{subscriptionToken}",
        "/v3/{provider}/utility/{paymentMethod}/subscription/token",
        "/v3/{provider}/pay-by-link",
        "/v3/{provider}/status",
        "/v3/{provider}/check",
        "/v3/{provider}/callback",
        "/-/healthz",
        "/-/ready",
        "/-/metrics",
    ):
        assert path in paths, path
    assert set(paths["/v3/{provider}/subscription/expire/{subscriptionToken}"]) == {"delete", "post"}
    # Valid as published: every path parameter declared (`{provider}` included), operation ids unique.
    OpenAPIV31SpecValidator(document).validate()
    for path, methods in paths.items():
        for operation in methods.values():
            declared = {parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), (path, declared)
    assert "examples" in document["components"]["schemas"]["PayBody"]
    text = pgm.get("/documentation/openapi.json").text
    assert SANDBOX_SECRET not in text
    assert "sk_sandbox_local" not in text
    page = pgm.get("/documentation")
    assert page.status_code == 200
    assert "/documentation/static/swagger-ui-bundle.js" in page.text
    assert pgm.get("/documentation/static/swagger-ui-bundle.js").status_code == 200


def test_metrics_expose_requests_provider_calls_and_outbox(pgm: PgmProcess, shop_id: str) -> None:
    pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK"))
    metrics = pgm.get("/-/metrics").text
    assert 'pgm_provider_calls_total{operation="pay",outcome="ok",provider="sandbox"}' in metrics
    assert 'pgm_http_requests_total{method="POST",route="/v3/{provider}/{paymentMethod}/pay",status="200"}' in metrics
    assert "pgm_outbox_delivery_attempts_total" in metrics
    assert "pgm_provider_call_duration_seconds_bucket" in metrics


def test_ready_reports_store_and_migrations(pgm: PgmProcess) -> None:
    assert pgm.get("/-/ready").json() == {
        "status": "OK",
        "checks": {"store": "OK", "migrations": "OK", "providers": "sandbox"},
    }


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v3/sandbox/status?paymentId=a%0Ab", "paymentId"),
        ("GET", "/v3/sandbox/check?paymentId=a%0Ab", "paymentId"),
        ("GET", "/v3/sandbox/status?paymentId=abc%2F", "paymentId"),
        ("GET", "/v3/sandbox/status?paymentId=a%3Fb", "paymentId"),
        ("GET", "/v3/sandbox/check?paymentId=a%23b", "paymentId"),
        ("GET", "/v3/sandbox/status?paymentId=..", "paymentId"),
        ("GET", "/v3/sandbox/status?paymentId=a%20b", "paymentId"),
        ("GET", "/v3/sandbox/subscription/status/a%0Ab", "subscriptionToken"),
        ("DELETE", "/v3/sandbox/subscription/expire/a%0Ab", "subscriptionToken"),
        ("POST", "/v3/sandbox/subscription/expire/a%09b", "subscriptionToken"),
    ],
)
def test_identifiers_no_provider_could_hold_are_refused(pgm: PgmProcess, method: str, path: str, field: str) -> None:
    # They used to reach the provider's URL: a newline made httpx fail (500), a '/' changed the path (502).
    error = assert_error(pgm.client.request(method, path), 400, "invalid_request", field)
    assert field in error["message"]


def test_identifier_refused_in_subscription_update_and_refund_bodies(pgm: PgmProcess, shop_id: str) -> None:
    update = {**pay_body(shop_id), "subscriptionInfo": {"interval": "MONTH", "intervalCount": 1}}
    assert_error(pgm.post("/v3/sandbox/subscription/update/a%0Ab", update), 400, "invalid_request", "subscriptionToken")
    refund = {"amount": 100, "currency": "EUR", "paymentId": "sbx_pay_1/../x"}
    assert_error(pgm.post("/v3/sandbox/refund", refund), 400, "invalid_request", "paymentId")


def test_identifiers_are_encoded_completely_into_provider_urls(pgm: PgmProcess) -> None:
    # `%2F` inside an identifier is three characters, not a slash: encoded as such, the provider finds
    # no such payment (404), instead of being asked for another path (a redirect, then 502).
    for identifier in ("abc%2F", "abc%2F..%2Fpayments", "abc%3Fx%3D1", "a.b", "a%23"):
        response = pgm.client.get("/v3/sandbox/status", params={"paymentId": identifier})
        assert_error(response, 404, "not_found")


def _connect(pgm: PgmProcess) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", pgm.port), timeout=0.2)
    return connection


def _trickle_until_closed(
    connection: socket.socket, first: bytes, deadline_seconds: float, trickle: bool = True
) -> tuple[bytes, float]:
    """Send `first`, then (with `trickle`) one more byte of a header value whenever 0.2 s pass without an
    answer, until the server closes; returns what it answered and how long it took."""
    started = time.monotonic()
    connection.sendall(first)
    received = b""
    while time.monotonic() - started < deadline_seconds:
        try:
            chunk = connection.recv(4096)
        except TimeoutError:
            try:
                if trickle:
                    connection.sendall(b"x")
            except OSError:
                break
            continue
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def test_connections_trickling_their_headers_are_closed(start_pgm: Callable[..., PgmProcess]) -> None:
    pgm = start_pgm(PGM_HEADER_TIMEOUT_SECONDS="1")
    # Headers a byte at a time (slowloris): answered 408 and closed once the header deadline passes.
    with _connect(pgm) as connection:
        answer, elapsed = _trickle_until_closed(connection, b"GET /-/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", 10)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 0.9 <= elapsed < 5, elapsed
    # A connection that sends nothing at all is closed too.
    with _connect(pgm) as connection:
        answer, elapsed = _trickle_until_closed(connection, b"", 10, trickle=False)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    # A kept-alive connection: the second request's headers have the same deadline.
    with _connect(pgm) as connection:
        two = b"GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /-/healthz HTTP/1.1\r\nX-Slow: "
        first, _ = _trickle_until_closed(connection, two, 10)
    assert first.startswith(b"HTTP/1.1 200"), first
    assert first.endswith(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"), first
    # Requests sent at a normal pace are unaffected.
    assert pgm.get("/-/healthz").status_code == 200


def test_the_sandbox_api_refuses_a_return_url_that_is_not_http(pgm: PgmProcess, shop_id: str) -> None:
    # Its hosted page links the payer to the return URL from the PGM's origin: the sandbox applies the
    # same rule as /v3 and sagas, also to clients of its own API.
    for field in ("successUrl", "failureUrl"):
        answer = pgm.client.post(
            "/sandbox/api/v1/payments",
            json={"amount": 100, "currency": "EUR", "reference": shop_id, field: "javascript:alert(1)"},
            headers={"Authorization": "Bearer sk_sandbox_local"},
        )
        error = assert_error(answer, 400, "invalid_request", field)
        assert "http(s) URL" in error["message"]
    assert pgm.sandbox_payments(shop_id) == []
