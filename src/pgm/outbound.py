"""Every outgoing HTTP request of the PGM: one small client of ours over aiohttp, behind a transport seam.

A saga makes three outgoing requests (the provider, the Flow Manager, a notified service), so the client's
own cost is on the hot path: aiohttp directly costs about 120 µs of CPU per request on the development
machine, httpx over aiohttp's connections cost 387 µs (docs/performance.md). What adapters and senders
need is small: a base URL, headers, query parameters, a JSON or form body, a time-out, a hook that signs or
authenticates the request as sent, and an answer with a status, headers and a body.

What this client makes aiohttp do is what aiohttp used directly does (measured 2026-12-03, one POST with
a JSON body and two headers to a loopback uvicorn, CPU of the client's thread, median of 5 runs of 1,000): a
plain `ClientSession().post` 254 µs, the same with our session's settings (time-outs, the dummy cookie
jar, the idle limit) 258 µs, through `HttpClient` 265 µs, so the client's own Python is ≈ 10 µs and its
settings ≈ 4 µs, under the run-to-run noise (± 30 µs). Connections are kept alive and reused: in a bench
step at 200 sagas/s the PGM opened 0.06 per saga, all in bursts when a pause of the event loop put ≈ 30
requests in flight at once, none while requests arrived steadily (docs/performance.md).

`HttpClient` builds the request; a `Transport` sends it. `AiohttpTransport` (one connection pool per
client, so per destination) is what runs in production; `ASGITransport` hands the request to an ASGI
application in the same event loop (a provider fake, a receiver) with no port and no thread, so adapters,
senders and services are tested against the fakes in-process.

Every way of getting no answer raises `NoAnswer`: `TimedOut` when the other side did not answer in time,
`ConnectionFailed` when it could not be reached or dropped the connection. Either way the request may
have been acted on (docs/reliability.md); which one it was only changes the wording of what is reported.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self
from urllib.parse import urlencode

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from pgm import jsontext

# HTTP_LOG_LEVEL=basic turns this logger to INFO (observability/logging.py): one line per request.
REQUEST_LOG = logging.getLogger("pgm.outbound")

QueryValue = str | int | float | bool | None
Query = Mapping[str, QueryValue] | Iterable[tuple[str, QueryValue]]


class NoAnswer(Exception):
    """The request got no answer: it may or may not have been acted on by the other side."""


class TimedOut(NoAnswer):
    """No answer within the time-out (connecting, waiting for a pooled connection, or reading)."""


class ConnectionFailed(NoAnswer):
    """The other side could not be reached, or dropped the connection before answering in full."""


@dataclass(slots=True)
class Request:
    """One request as it will be sent: an auth hook may add headers computed from all of it."""

    method: str
    url: URL
    headers: CIMultiDict[str]
    content: bytes = b""
    timeout_seconds: float = 30.0


@dataclass(slots=True)
class Response:
    """An answer: status, headers (case-insensitive) and the whole body."""

    status_code: int
    headers: CIMultiDictProxy[str] | CIMultiDict[str] = field(default_factory=CIMultiDict)
    content: bytes = b""
    url: URL = field(default_factory=URL)
    reason: str = ""
    _text: str | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """The body decoded with the charset the answer declares (UTF-8 when it declares none)."""
        if self._text is None:
            charset = _charset(self.headers.get("content-type", "")) or "utf-8"
            try:
                self._text = self.content.decode(charset, errors="replace")
            except LookupError:
                self._text = self.content.decode("utf-8", errors="replace")
        return self._text

    def json(self) -> Any:
        """The body as JSON; a body that is not JSON raises ValueError (as json.loads does)."""
        return jsontext.loads(self.content)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


class Transport(Protocol):
    """What sends a built request and returns the whole answer, or raises NoAnswer."""

    async def send(self, request: Request) -> Response: ...

    async def aclose(self) -> None: ...


Auth = Callable[[Request], None]
"""A hook that authenticates a request as it will be sent (adds headers), e.g. a signature over its body."""


def basic_auth(username: str, password: str) -> Auth:
    """HTTP Basic authentication, as a request hook."""
    value = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    def authenticate(request: Request) -> None:
        request.headers["Authorization"] = value

    return authenticate


IDLE_CONNECTION_SECONDS = 2.0
"""How long a kept-alive connection may sit idle in the pool before it is closed instead of reused. Well
under the servers' own keep-alive (`pgm serve`'s is `SERVER_KEEP_ALIVE_SECONDS`, 5 s; nginx's 75 s): a
server closes an idle connection on its own clock, and a request written on a connection it has just
closed is reset ("Connection reset by peer"), its outcome unknown. aiohttp's default of 15 s lost a
sandbox payment that way in the bench (docs/performance.md), the connection pooled 5 s before."""


class AiohttpTransport:
    """Production transport: one aiohttp session (one connection pool) per client.

    The session is opened on first use, inside the running event loop (aiohttp binds a session to it)."""

    def __init__(self, idle_connection_seconds: float = IDLE_CONNECTION_SECONDS) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._idle_connection_seconds = idle_connection_seconds

    def _open(self) -> aiohttp.ClientSession:
        # No cookie jar: no destination of ours uses cookies, and the jar costs on every answer.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=self._idle_connection_seconds),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        )
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        # As before, each phase is bounded on its own (a pool wait plus connect, then each read), not the
        # whole exchange: a slow but steady answer is still an answer.
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)
        return timeout

    async def send(self, request: Request) -> Response:
        session = self._session or self._open()
        try:
            async with session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.content or None,
                timeout=self._timeout(request.timeout_seconds),
                allow_redirects=False,
            ) as answer:
                content = await answer.read()
                return Response(answer.status, answer.headers, content, request.url, answer.reason or "")
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError and ConnectionTimeoutError are TimeoutErrors
            raise TimedOut(_describe(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(_describe(exc)) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


Message = MutableMapping[str, Any]
ASGIApp = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class ASGITransport:
    """Test transport: calls an ASGI application in this event loop, as a server would, with no socket.

    The time-out applies as over the network (an application that takes longer raises TimedOut). An
    exception in the application propagates, so a fake's bug fails the test instead of looking like a 500.
    """

    def __init__(self, app: ASGIApp, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self._app = app
        self._client = client

    async def send(self, request: Request) -> Response:
        url = request.url
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
        if "host" not in request.headers:
            headers.insert(0, (b"host", host_header(url).encode("ascii")))
        if request.content and "content-length" not in request.headers:
            headers.append((b"content-length", str(len(request.content)).encode("ascii")))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.encode("ascii"),
            "query_string": url.raw_query_string.encode("ascii"),
            "root_path": "",
            "headers": headers,
            "client": self._client,
            "server": (url.host or "", url.port or 80),
            "extensions": {},
        }
        body_sent = False
        finished = asyncio.Event()
        status = 0
        answer_headers: CIMultiDict[str] = CIMultiDict()
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": request.content, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    answer_headers.add(name.decode("latin-1"), value.decode("latin-1"))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    finished.set()

        try:
            async with asyncio.timeout(request.timeout_seconds):
                await self._app(scope, receive, send)
        except TimeoutError as exc:
            raise TimedOut(_describe(exc)) from exc
        finally:
            finished.set()
        if not status:
            raise ConnectionFailed(f"the application {self._app!r} returned without answering")
        return Response(status, answer_headers, b"".join(chunks), url)

    async def aclose(self) -> None:
        """Nothing to release: the application's own lifespan belongs to whoever runs it."""


Routes = Mapping[str, Transport]
"""Transports by origin (`http://stripe.test`, `http://127.0.0.1:8080`): where a test sends what would go there."""


def origin_of(url: str | URL) -> str:
    """The origin a route is keyed by: scheme, host and port as written (`http://host:8080`)."""
    return str(URL(url).origin())


class RoutedTransport:
    """Sends a request to the transport routed for its origin, and any other over the network.

    How the composition is handed in-process destinations (`pgm.wiring.Wiring.transports`): a test routes
    a provider's base URL to its fake's ASGI app, and the adapter, unchanged, talks to it with no port.
    The routed transports belong to whoever routed them; only the network fallback is closed here."""

    def __init__(self, routes: Routes) -> None:
        self._routes = {origin_of(origin): transport for origin, transport in routes.items()}
        self._network = AiohttpTransport()

    async def send(self, request: Request) -> Response:
        transport = self._routes.get(str(request.url.origin()), self._network)
        return await transport.send(request)

    async def aclose(self) -> None:
        await self._network.aclose()


def routed(routes: Routes | None) -> Transport | None:
    """A client's transport for these routes: None without any, so the client opens its own pool (production)."""
    return RoutedTransport(routes) if routes else None


class HttpClient:
    """A client for one destination: its base URL, default headers, time-out and authentication.

    `url` arguments are joined to the base URL as httpx did: `/payments` under `https://host/api` is
    `https://host/api/payments`; an absolute URL is used as it is. Credentials written in a URL
    (`https://user:password@host/...`, as a PAYMENT_CALLBACK_URL may carry) are sent as HTTP Basic
    authentication, never left in the URL."""

    def __init__(
        self,
        timeout_seconds: float,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        *,
        auth: Auth | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.base_url = base_url if not base_url or base_url.endswith("/") else base_url + "/"
        self.headers: CIMultiDict[str] = CIMultiDict(headers or {})
        self.auth = auth
        self.transport: Transport = transport or AiohttpTransport()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Query | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float | None = None,
    ) -> Response:
        """Send one request and return the whole answer; no answer raises NoAnswer (TimedOut, ConnectionFailed)."""
        request_headers = self.headers.copy()
        if headers:
            request_headers.update(headers)
        body = b""
        if json is not None:
            body = jsontext.dumps(json)
            request_headers.setdefault("Content-Type", "application/json")
        elif data is not None:
            body = urlencode(data).encode("ascii")
            request_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif content is not None:
            body = content
        target = self._url(url, params)
        if target.user is not None:
            if "authorization" not in request_headers:
                credentials = f"{target.user}:{target.password or ''}".encode()
                request_headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
            target = target.with_user(None)
        request = Request(method, target, request_headers, body, timeout_seconds or self.timeout_seconds)
        if self.auth is not None:
            self.auth(request)
        response = await self.transport.send(request)
        if REQUEST_LOG.isEnabledFor(logging.INFO):
            REQUEST_LOG.info(
                'HTTP Request: %s %s "HTTP/1.1 %d %s"', method, target, response.status_code, response.reason
            )
        return response

    async def get(self, url: str, **kwargs: Any) -> Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> Response:
        return await self.request("POST", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> Response:
        return await self.request("DELETE", url, **kwargs)

    def _url(self, url: str, params: Query | None) -> URL:
        if self.base_url and "://" not in url:
            url = self.base_url + url.lstrip("/")
        target = URL(url)
        if params:
            target = target.extend_query([(name, _query_value(value)) for name, value in _pairs(params)])
        return target

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def http_client(
    timeout_seconds: float,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    *,
    transport: Transport | None = None,
) -> HttpClient:
    """A client whose every call is bounded by `timeout_seconds` (pool wait and connect, then each read)."""
    return HttpClient(timeout_seconds, base_url, headers, transport=transport)


def _pairs(params: Query) -> Iterable[tuple[str, QueryValue]]:
    return params.items() if isinstance(params, Mapping) else params


def _query_value(value: QueryValue) -> str:
    """Query values written as httpx wrote them: booleans in lower case, None as an empty value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def host_header(url: URL) -> str:
    """The Host header a request to `url` carries: the port only when it is not the scheme's default."""
    host = url.raw_host or ""
    return host if url.is_default_port() or url.port is None else f"{host}:{url.port}"


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
