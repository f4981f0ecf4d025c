"""The HTTP server protocol: uvicorn's httptools protocol, with a deadline for a request's headers.

Neither uvicorn nor its parsers bound the time a client may take to send the request line and headers
(uvicorn's keep-alive time-out only runs between requests, and stops at the first byte): a client
trickling its headers a byte at a time holds a connection for ever, and enough of them exhaust the
process (slowloris). Here every request must have its headers complete within
`PGM_HEADER_TIMEOUT_SECONDS` of its first byte (or of the connection, for the first one); otherwise it is
answered 408 and the connection is closed. Bodies are bounded separately (PGM_MAX_BODY_BYTES).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol closing connections whose request headers do not arrive in time."""

    header_timeout_seconds = 10.0
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A new request on a kept-alive connection: its headers get the same deadline.
        if self._header_deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout_seconds, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        log.warning(
            "request headers not complete in time: connection closed",
            extra={"client": self.client[0] if self.client else None, "seconds": self.header_timeout_seconds},
        )
        self.transport.write(_TIMED_OUT)
        self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn (`http=`), with this header deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_seconds": seconds})
