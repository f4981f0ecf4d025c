"""The JSON response of every route that builds its own answer (the error shape, the sandbox's provider
API): orjson instead of the standard library's encoder, about fifteen times cheaper per document on the
development machine (docs/performance.md). Routes with a return type are already serialised by Pydantic."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse as StarletteJSONResponse

from pgm import jsontext


class JSONResponse(StarletteJSONResponse):
    """Starlette's JSONResponse, rendered with orjson (compact, UTF-8, as Starlette's own)."""

    def render(self, content: Any) -> bytes:
        return jsontext.dumps(content)
