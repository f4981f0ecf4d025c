"""The JSON text the PGM stores, sends and answers with."""

from __future__ import annotations

import json

from pgm import jsontext


def test_compact_utf8_with_non_string_keys_written_as_strings() -> None:
    assert jsontext.dumps({"a": [1, "è"], 2: None}) == '{"a":[1,"è"],"2":null}'.encode()


def test_integers_beyond_64_bits_are_written_as_json_allows() -> None:
    value = {"small": 1, "big": -(2**63) - 1, "bigger": [2**70]}
    assert json.loads(jsontext.dumps(value)) == value
    assert jsontext.loads(jsontext.dumps(value)) == value
    assert jsontext.loads(jsontext.dumps(value).decode()) == value
    assert jsontext.loads('{"id": "12345678901234567890", "n": 1.5}') == {"id": "12345678901234567890", "n": 1.5}
