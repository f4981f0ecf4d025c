"""SQL written once, run on either driver: sqlite3 (`?` placeholders) and asyncpg (`$1`, `$2`, ...).

A statement is written with named placeholders (`:payment_id`) and translated for both drivers when
the module that holds it is imported, so nothing is parsed or compiled per call. `= ANY(:ids)` takes a
list: PostgreSQL binds it as an array, SQLite reads it from a JSON array (json_each), so one statement
serves both. JSON columns are encoded by pgm.jsontext (orjson); both drivers keep bytes as BLOB/bytea.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pgm import jsontext

# `:name`, but not PostgreSQL's `::type` cast nor a `:` inside a word.
_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_ANY = re.compile(r"=\s*ANY\(:([A-Za-z_]\w*)\)")
_WORD = re.compile(r"[a-z_]\w*")


class Sql:
    """One statement, translated for both drivers at construction (build these at import time)."""

    __slots__ = ("_lists", "names", "postgres", "sqlite", "text", "words")

    def __init__(self, text: str) -> None:
        self.text = " ".join(text.split())
        # The names it uses (tables among them), to tell whether it can see rows a queued write changes.
        self.words = frozenset(_WORD.findall(self.text.lower()))
        self._lists = frozenset(_ANY.findall(self.text))
        names: list[str] = []
        numbered: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in numbered:
                names.append(name)
                numbered[name] = len(names)
            return f"${numbered[name]}"

        self.postgres = _PLACEHOLDER.sub(number, self.text)
        self.names = tuple(names)
        sqlite_text = _ANY.sub(r"IN (SELECT value FROM json_each(:\1))", self.text)
        # sqlite3 binds named parameters from a mapping: each name once, whatever its repeats.
        self.sqlite = sqlite_text

    def sqlite_parameters(self, parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        """The parameters for sqlite3 (lists of `= ANY(...)` as JSON arrays)."""
        if not self._lists:
            return parameters
        return {
            name: jsontext.dumps(list(value)).decode() if name in self._lists else value
            for name, value in parameters.items()
        }

    def postgres_arguments(self, parameters: Mapping[str, Any]) -> Sequence[Any]:
        """The positional arguments for asyncpg, in placeholder order."""
        return [parameters[name] for name in self.names]

    def __repr__(self) -> str:
        return f"Sql({self.text!r})"


@functools.lru_cache(maxsize=512)
def with_writes(writes: tuple[Sql, ...], main: Sql) -> Sql:
    """`main` with `writes` (INSERT or UPDATE statements) run as data-modifying WITH parts of it: one
    statement, so one round trip on PostgreSQL. Every part sees the database as it was before the statement
    (PostgreSQL runs them on one snapshot), so `main` must not read what the writes change. A write's
    placeholders are renamed `w<i>_<name>` (`parameters_with_writes`)."""
    parts = ", ".join(f"w{i} AS ({_renamed(write.text, f'w{i}_')})" for i, write in enumerate(writes))
    return Sql(f"WITH {parts} {main.text}")


def _renamed(text: str, prefix: str) -> str:
    return _PLACEHOLDER.sub(lambda match: f":{prefix}{match.group(1)}", text)


def parameters_with_writes(writes: Sequence[Mapping[str, Any]], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of `with_writes(...)`: each write's renamed, then the main statement's."""
    merged = {f"w{i}_{name}": value for i, given in enumerate(writes) for name, value in given.items()}
    merged.update(parameters)
    return merged


def dump_json(value: Any) -> str:
    """A JSON column's value as text (both drivers store it as text: SQLite JSON, PostgreSQL json)."""
    return jsontext.dumps(value).decode()


def load_json(value: Any) -> Any:
    """A JSON column read back: text from sqlite3 or a bare asyncpg connection; already decoded when the
    connection carries a json codec (SQLAlchemy's asyncpg dialect installs one)."""
    if isinstance(value, (str, bytes)):
        return jsontext.loads(value)
    return value
