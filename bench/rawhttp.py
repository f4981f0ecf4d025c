"""A minimal HTTP/1.1 client pool and server on raw asyncio streams.

The load generator and the Flow Manager / PaymentStatus receiver share the bench process, so both are
kept as cheap as possible: no framework, keep-alive connections, Content-Length bodies only (what
uvicorn and httpx send). The receiver timestamps each request when its body has been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


class HttpError(Exception):
    """The peer closed the connection or answered something that is not HTTP/1.1."""


async def _read_head(reader: asyncio.StreamReader) -> list[bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise HttpError("header block too large") from exc
    return head[:-4].split(b"\r\n")


def _headers(lines: list[bytes]) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
    length = headers.get(b"content-length")
    if length is not None:
        return await reader.readexactly(int(length)) if int(length) else b""
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return await reader.read()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ClientPool:
    """Keep-alive connections to one host; a new connection whenever all are busy (open model)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[Connection] = []
        self._host_header = f"Host: {host}:{port}\r\n".encode()
        self.opened = 0

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """One request; returns (status, body). A reused connection the server has closed is retried once."""
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else await self._open()
        try:
            return await self._exchange(connection, method, path, body, headers)
        except (HttpError, asyncio.IncompleteReadError, ConnectionError):
            connection[1].close()
            if not reused:
                raise
        return await self._exchange(await self._open(), method, path, body, headers)

    async def _open(self) -> Connection:
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def _exchange(
        self, connection: Connection, method: str, path: str, body: bytes, headers: dict[str, str] | None
    ) -> tuple[int, bytes]:
        reader, writer = connection
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        writer.write(
            f"{method} {path} HTTP/1.1\r\n".encode()
            + self._host_header
            + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
            + body
        )
        lines = await _read_head(reader)
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP answer: {lines[0]!r}")
        response_headers = _headers(lines[1:])
        payload = await _read_body(reader, response_headers)
        if response_headers.get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            self._idle.append(connection)
        return int(parts[1]), payload

    async def close(self) -> None:
        """Close the idle connections (between phases, so none goes stale)."""
        idle, self._idle = self._idle, []
        for _reader, writer in idle:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@dataclass
class Received:
    """One request the receiver got: when (perf_counter), where, the PGM's message id, the body."""

    at: float
    path: str
    message_id: str | None
    body: bytes


@dataclass
class Receiver:
    """Records every request and answers 200 `{}` (GET: `[]`, an empty CRUD collection)."""

    records: list[Received] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, host: str = "127.0.0.1") -> Receiver:
        """Listen on a free port."""
        self.server = await asyncio.start_server(self._serve, host, 0, limit=1 << 20, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                lines = await _read_head(reader)
                method, path, _version = lines[0].split(b" ", 2)
                headers = _headers(lines[1:])
                body = await _read_body(reader, headers)
                message_id = headers.get(b"x-pgm-message-id")
                self.records.append(
                    Received(
                        time.perf_counter(),
                        path.decode("latin-1"),
                        message_id.decode("latin-1") if message_id is not None else None,
                        body,
                    )
                )
                self.arrived.set()
                answer = b"[]" if method == b"GET" else b"{}"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(answer), answer)
                )
        except (asyncio.IncompleteReadError, ConnectionError, HttpError, ValueError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
