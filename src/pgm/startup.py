"""What `pgm serve` checks before it serves: each wrong setting becomes one line naming its variable.

The application itself would fail later, deep inside the ASGI lifespan, with a long traceback that
names neither the variable nor the value (docs/configuration.md promises both, with exit code 2).
"""

from __future__ import annotations

import socket
from pathlib import Path

from pgm.config import ConfigurationError, Settings
from pgm.store.database import is_sqlite_url, shown_url, sqlite_path
from pgm.store.migrator import ConnectionFailed, check_connection

LISTEN_BACKLOG = 2048  # uvicorn's default


def check_database(settings: Settings) -> None:
    """Connect once to the configured store; raise ConfigurationError naming PGM_DATABASE_URL if it fails."""
    url = settings.database_url
    shown = shown_url(url)
    if is_sqlite_url(url):
        path = sqlite_path(url)
        if path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(f"PGM_DATABASE_URL: cannot create the directory of {shown}: {exc}") from exc
    try:
        check_connection(url, settings.database_connect_timeout_seconds)
    except ConnectionFailed as exc:
        raise ConfigurationError(f"PGM_DATABASE_URL: cannot connect to {shown}: {exc}") from exc


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen before the application starts, so that "PGM started" means the port is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"HTTP_HOST: cannot listen on {host!r}: {exc.strerror}") from exc
    family, kind, protocol, _, address = infos[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"HTTP_PORT: cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock
