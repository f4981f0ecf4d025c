"""What the edge refuses as unstorable text (src/pgm/http/middleware.py: contains_unstorable_text): NUL and lone
surrogates, raw, as JSON escapes or percent-encoded in a form; never an escaped backslash before a `u`, a
valid surrogate pair, or a body without any escape (which skips the scan)."""

from __future__ import annotations

import pytest

from pgm.http.middleware import contains_unstorable_text

FORM = b"application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("body", "content_type", "refused"),
    [
        (b'{"a": "plain text, no escape at all"}', b"application/json", False),
        (b'{"a": "\x00"}', b"application/json", True),
        (b'{"a": "\\u0000"}', b"application/json", True),
        (b'{"a": "\\ud800"}', b"application/json", True),
        (b'{"a": "\\uDC00"}', b"application/json", True),
        (b'{"a": "\\ud83d\\ude00"}', b"application/json", False),
        (b'{"a": "\\ud83d\\ude00\\ud800"}', b"application/json", True),
        (b'{"a": "\\\\u0000"}', b"application/json", False),
        (b'{"a": "\\\\\\u0000"}', b"application/json", True),
        (b'{"a": "caf\\u00e9"}', b"application/json", False),
        (b"a=%00", FORM, True),
        (b"a=%00", b"application/json", False),
        (b"a=b", FORM + b"; charset=utf-8", False),
    ],
)
def test_unstorable_text(body: bytes, content_type: bytes, refused: bool) -> None:
    assert contains_unstorable_text(body, content_type) is refused
