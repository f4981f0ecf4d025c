"""Where a process's CPU goes, by layer, from py-spy's collapsed stacks.

Each busy sample is attributed to one layer: the one of the innermost frame that belongs to a known layer
(the leaf frame when it does). Time in a C extension counts for the Python frame that called it, so the
sqlite3 module's work counts for whoever runs the statement (SQLAlchemy, or the PGM's store layer).
Shares are of the busy samples (py-spy without --idle leaves out the loop waiting for work).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

# (layer, path fragments of its files), checked in order on each frame's file.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("SQLAlchemy", ("/sqlalchemy/", "/alembic/")),
    ("database driver (sqlite3, asyncpg, aiosqlite, psycopg)", ("/sqlite3/", "/asyncpg/", "/aiosqlite/", "/psycopg")),
    ("the PGM's store layer", ("/pgm/store/",)),
    # uvicorn serves: every aiohttp frame in the PGM is its outgoing client's.
    (
        "HTTP client (pgm.outbound, aiohttp, httpx)",
        ("/httpx", "/aiohttp/", "/multidict/", "/yarl/", "/pgm/outbound", "/pgm/providers/http"),
    ),
    ("validation (pydantic)", ("/pydantic",)),
    ("JSON", ("/json/", "/orjson", "/msgspec")),
    ("logging", ("/logging/", "/pgm/observability/logging")),
    (
        "server stack (uvicorn, Starlette, FastAPI, middleware)",
        ("/uvicorn/", "/starlette/", "/fastapi/", "/h11/", "/httptools/", "/pgm/http/middleware", "/pgm/http/server"),
    ),
    ("metrics", ("/prometheus_client/", "/pgm/observability/")),
    ("event loop (asyncio, uvloop)", ("/asyncio/", "/uvloop/")),
    ("the PGM's own code (services, saga, outbox, adapters...)", ("/pgm/",)),
]
OTHER = "other (standard library, other libraries)"
FRAME_FILE = re.compile(r"\((.*):\d+\)$")


def layer_of(frame: str) -> str | None:
    """The layer of one frame (`function (path/to/file.py:line)`), None when it is none of LAYERS."""
    match = FRAME_FILE.search(frame.strip())
    if match is None:
        return None
    path = "/" + match.group(1).lstrip("/")
    for layer, fragments in LAYERS:
        if any(fragment in path for fragment in fragments):
            return layer
    return None


def attribute(stack: str) -> str:
    """The layer a sample counts for: its innermost frame that belongs to a layer."""
    for frame in reversed(stack.split(";")):
        layer = layer_of(frame)
        if layer is not None:
            return layer
    return OTHER


def layers(lines: Iterable[str]) -> Counter[str]:
    """Samples per layer from collapsed-stack lines (`frame;frame;... count`)."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            counts[attribute(stack)] += int(count)
    return counts


def shares(paths: Iterable[Path]) -> dict[str, float]:
    """Each layer's share of the busy samples of these files (all processes together), largest first."""
    counts: Counter[str] = Counter()
    for path in paths:
        if path.exists():
            counts += layers(path.read_text().splitlines())
    total = sum(counts.values())
    if not total:
        return {}
    return {layer: round(n / total, 3) for layer, n in counts.most_common()}


if __name__ == "__main__":
    # python -m bench.profile FILE.folded...: each layer's share of the busy samples of these files.
    import sys

    for layer, share in shares(Path(argument) for argument in sys.argv[1:]).items():
        sys.stdout.write(f"{share * 100:5.1f} %  {layer}\n")
