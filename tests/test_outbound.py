"""The outgoing HTTP client: how it builds requests, what it answers, and its two transports (aiohttp over
real sockets on loopback; an ASGI application in process, with no port and no thread)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest
from multidict import CIMultiDict
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from yarl import URL

from pgm.cli import SERVER_KEEP_ALIVE_SECONDS
from pgm.outbound import (
    IDLE_CONNECTION_SECONDS,
    AiohttpTransport,
    ASGITransport,
    HttpClient,
    Request,
    TimedOut,
    basic_auth,
    http_client,
)
from pgm.outbound import Response as Answer
from tests.support.servers import recording_receiver

Seen = list[dict[str, Any]]


def _echo_app(seen: Seen) -> Starlette:
    """Records each request it gets and answers it back as JSON."""

    async def echo(request: StarletteRequest) -> Response:
        body = await request.body()
        seen.append(
            {
                "method": request.method,
                "path": request.url.path,
                "raw_path": request.scope["raw_path"],
                "query": request.url.query,
                "headers": dict(request.headers),
                "body": body,
            }
        )
        return JSONResponse({"received": len(body)}, status_code=201, headers={"X-Echo": "yes"})

    async def latin1(_: StarletteRequest) -> Response:
        return PlainTextResponse("caf\xe9".encode("latin-1"), headers={"Content-Type": "text/plain; charset=latin-1"})

    return Starlette(routes=[Route("/latin1", latin1), Route("/{rest:path}", echo, methods=["GET", "POST", "DELETE"])])


def _in_process(call: Callable[[HttpClient], Awaitable[Any]], seen: Seen, **client: Any) -> Any:
    async def run() -> Any:
        async with HttpClient(5.0, transport=ASGITransport(_echo_app(seen)), **client) as http:
            return await call(http)

    return asyncio.run(run())


def test_a_json_request_is_joined_to_the_base_url_with_its_query_and_headers() -> None:
    seen: Seen = []
    response = _in_process(
        lambda http: http.post(
            "/payments/a%2Fb",
            params={"limit": 2, "active": True, "cursor": None, "q": '{"$or": "a+b&c=d é"}'},
            json={"amount": 100, "note": "caffè"},
            headers={"Idempotency-Key": "k-1"},
        ),
        seen,
        base_url="http://provider.test/api",
        headers={"Accept": "application/json"},
    )
    [request] = seen
    assert request["method"] == "POST"
    assert request["raw_path"] == b"/api/payments/a%2Fb"  # one segment, as path_segment encoded it
    assert parse_qsl(request["query"], keep_blank_values=True) == [
        ("limit", "2"),
        ("active", "true"),
        ("cursor", ""),
        ("q", '{"$or": "a+b&c=d é"}'),
    ]
    assert request["headers"]["host"] == "provider.test"
    assert request["headers"]["accept"] == "application/json"
    assert request["headers"]["idempotency-key"] == "k-1"
    assert request["headers"]["content-type"] == "application/json"
    assert orjson.loads(request["body"]) == {"amount": 100, "note": "caffè"}
    assert (response.status_code, response.is_success) == (201, True)
    assert response.headers["x-echo"] == response.headers["X-Echo"] == "yes"
    assert response.json() == {"received": len(request["body"])}


def test_an_absolute_url_ignores_the_base_url_and_a_form_is_url_encoded() -> None:
    seen: Seen = []
    _in_process(
        lambda http: http.post("http://elsewhere.test:8080/token", data={"grant_type": "client", "a": "b c"}),
        seen,
        base_url="http://provider.test/api",
    )
    [request] = seen
    assert (request["headers"]["host"], request["path"]) == ("elsewhere.test:8080", "/token")
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert request["body"] == b"grant_type=client&a=b+c"


def test_the_text_of_an_answer_is_decoded_with_its_declared_charset() -> None:
    response = _in_process(lambda http: http.get("http://provider.test/latin1"), [])
    assert response.text == "café"
    with pytest.raises(ValueError, match="not valid UTF-8"):
        response.json()


def test_credentials_in_a_url_become_basic_authorization_and_leave_the_url() -> None:
    seen: Seen = []
    _in_process(lambda http: http.post("http://notifier:s3cret@notify.test/payment-status", json={}), seen)
    [request] = seen
    assert request["headers"]["authorization"] == "Basic " + base64.b64encode(b"notifier:s3cret").decode()
    assert request["headers"]["host"] == "notify.test"


def test_an_auth_hook_sees_the_request_exactly_as_it_is_sent() -> None:
    def sign(request: Request) -> None:
        request.headers["X-Signed"] = hashlib.sha256(request.url.raw_path_qs.encode() + request.content).hexdigest()

    seen: Seen = []
    _in_process(
        lambda http: http.post("/v1/pay", params={"x": "1"}, content=b"body"),
        seen,
        base_url="http://p.test/",
        auth=sign,
    )
    [request] = seen
    assert request["headers"]["x-signed"] == hashlib.sha256(b"/v1/pay?x=1body").hexdigest()


def test_basic_auth_is_a_hook() -> None:
    seen: Seen = []
    _in_process(lambda http: http.get("http://p.test/"), seen, auth=basic_auth("merchant", "pw"))
    assert seen[0]["headers"]["authorization"] == "Basic " + base64.b64encode(b"merchant:pw").decode()


def test_an_application_that_does_not_answer_in_time_times_out() -> None:
    never = asyncio.Event()

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        await never.wait()  # never set: the client gives up first

    async def call() -> None:
        async with HttpClient(0.05, transport=ASGITransport(silent)) as http:
            await http.get("http://provider.test/")

    with pytest.raises(TimedOut):
        asyncio.run(call())


def test_credentials_in_a_url_are_sent_as_basic_authorization_over_the_network() -> None:
    async def post(url: str) -> int:
        async with http_client(5.0) as client:
            return (await client.post(url, json={"status": "ACCEPTED"})).status_code

    with recording_receiver() as (receiver, base_url):
        status = asyncio.run(post(base_url.replace("://", "://notifier:s3cret@") + "/payment-status"))
        [request] = receiver.wait_for_requests(1, path="/payment-status")
    assert status == 200
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"notifier:s3cret").decode()


def test_an_answer_with_an_integer_beyond_64_bits_is_read_exactly() -> None:
    # A provider's id or amount is an integer too large for orjson, which would refuse it or read a float.
    answer = Answer(200, content=b'{"id": 123456789012345678901234567890, "amount": 1500}')
    assert answer.json() == {"id": 123456789012345678901234567890, "amount": 1500}


def test_an_answer_that_is_not_json_raises_value_error() -> None:
    with pytest.raises(ValueError, match="line 1 column 1"):
        Answer(200, content=b"<html>502 Bad Gateway</html>").json()


def test_a_connection_idle_past_the_limit_is_not_reused() -> None:
    """A kept-alive connection left idle longer than the client's limit is closed and a new one opened:
    reusing one the server closed meanwhile is reset, the request's outcome unknown."""

    async def run() -> list[int]:
        connections: list[int] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(len(connections))
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while await reader.readuntil(b"\r\n\r\n"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = AiohttpTransport(idle_connection_seconds=0.2)
        try:
            for pause in (0.0, 0.05, 0.5):  # reused after 50 ms, replaced after 500 ms
                await asyncio.sleep(pause)
                request = Request("GET", URL(f"http://127.0.0.1:{port}/"), CIMultiDict())
                assert (await transport.send(request)).content == b"ok"
        finally:
            await transport.aclose()
            server.close()
        return connections

    assert asyncio.run(run()) == [0, 1]


def test_the_client_drops_an_idle_connection_well_before_pgm_serve_does() -> None:
    # The server's clock starts when it has written its answer, the client's when it has read it: under
    # load the client reads later, so its limit must be well under the server's, not just under it.
    assert IDLE_CONNECTION_SECONDS * 2 <= SERVER_KEEP_ALIVE_SECONDS
