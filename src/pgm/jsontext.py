"""JSON text for what the PGM stores, sends and answers: orjson, more than ten times cheaper than the
standard library's encoder (docs/performance.md), with the standard library as the fallback for what
orjson refuses and a client may legitimately send: an integer beyond 64 bits (JSON sets no limit, and a
saga's metadata is the client's). Without the fallback such a payload failed its store write with a 500,
and orjson reads such an integer back as a float, which would change the client's number."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Nineteen digits or more may be an integer beyond 64 bits (or harmlessly, digits in a string).
_LONG_DIGITS_TEXT = re.compile(r"\d{19,}")
_LONG_DIGITS_BYTES = re.compile(rb"\d{19,}")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of `value` (dict keys that are not strings are written as strings)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(text: str | bytes) -> Any:
    """The value of a JSON document, every integer exact whatever its size."""
    pattern = _LONG_DIGITS_TEXT if isinstance(text, str) else _LONG_DIGITS_BYTES
    if pattern.search(text):  # type: ignore[arg-type]
        return json.loads(text)
    return orjson.loads(text)
