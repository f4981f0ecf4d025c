"""MongoDB-style filters, sorts, projections and update commands over JSON documents held in Python."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Document = dict[str, Any]

# Fields the store owns: clients read them but cannot write them through update commands.
SYSTEM_FIELDS = frozenset({"_id", "__STATE__", "createdAt", "updatedAt", "creatorId", "updaterId"})


class QueryError(ValueError):
    """A filter, sort, projection or update command the stand-in cannot accept (answered with 400)."""


def split_path(path: str) -> list[str]:
    """The segments of a dotted path, refusing empty ones."""
    parts = path.split(".")
    if not path or any(part == "" for part in parts):
        raise QueryError(f"invalid field path {path!r}")
    return parts


def values_at(value: Any, parts: Sequence[str]) -> list[Any]:
    """Every value a dotted path reaches, walking into arrays of subdocuments as MongoDB does."""
    if not parts:
        return [value]
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        return values_at(value[head], rest) if head in value else []
    if isinstance(value, list):
        found: list[Any] = []
        if head.isdigit() and int(head) < len(value):
            found.extend(values_at(value[int(head)], rest))
        for item in value:
            if isinstance(item, dict):
                found.extend(values_at(item, parts))
        return found
    return []


def _with_array_elements(values: Iterable[Any]) -> list[Any]:
    """The values plus the elements of those that are arrays: `{"tags": "a"}` matches `["a", "b"]`."""
    expanded: list[Any] = []
    for value in values:
        expanded.append(value)
        if isinstance(value, list):
            expanded.extend(value)
    return expanded


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality where booleans never equal numbers (Python says `True == 1`, MongoDB does not)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    return type(left) is type(right) and bool(left == right)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparable(left: Any, right: Any) -> bool:
    """Range operators only compare values of the same kind, as MongoDB's type brackets do."""
    return (_is_number(left) and _is_number(right)) or (isinstance(left, str) and isinstance(right, str))


def _compile_regex(pattern: Any, options: Any) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise QueryError("$regex needs a string pattern")
    if options is None:
        options = ""
    if not isinstance(options, str):
        raise QueryError("$options needs a string")
    flags = 0
    for option in options:
        if option == "i":
            flags |= re.IGNORECASE
        elif option == "m":
            flags |= re.MULTILINE
        elif option == "s":
            flags |= re.DOTALL
        elif option == "x":
            flags |= re.VERBOSE
        else:
            raise QueryError(f"unsupported $options flag {option!r}")
    try:
        return re.compile(pattern, flags)
    except re.error as error:
        raise QueryError(f"invalid $regex {pattern!r}: {error}") from error


def _is_operator_object(value: Any) -> bool:
    return (
        isinstance(value, dict) and bool(value) and all(isinstance(key, str) and key.startswith("$") for key in value)
    )


def _equals_any(values: list[Any], expected: Any) -> bool:
    if expected is None and not values:
        return True
    return any(json_equal(candidate, expected) for candidate in _with_array_elements(values))


def _range(values: list[Any], operand: Any, test: Callable[[Any, Any], bool]) -> bool:
    return any(
        _comparable(candidate, operand) and test(candidate, operand) for candidate in _with_array_elements(values)
    )


def _match_operators(values: list[Any], operators: Mapping[str, Any]) -> bool:
    """Whether the values a path reaches satisfy every operator of one field condition."""
    for operator, operand in operators.items():
        if operator == "$options":
            if "$regex" not in operators:
                raise QueryError("$options without $regex")
            continue
        if not _match_operator(values, operator, operand, operators):
            return False
    return True


def _match_operator(values: list[Any], operator: str, operand: Any, siblings: Mapping[str, Any]) -> bool:
    if operator == "$eq":
        return _equals_any(values, operand)
    if operator == "$ne":
        return not _equals_any(values, operand)
    if operator in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise QueryError(f"{operator} needs an array")
        found = any(_equals_any(values, item) for item in operand)
        return found if operator == "$in" else not found
    if operator == "$gt":
        return _range(values, operand, lambda a, b: a > b)
    if operator == "$gte":
        return _range(values, operand, lambda a, b: a >= b)
    if operator == "$lt":
        return _range(values, operand, lambda a, b: a < b)
    if operator == "$lte":
        return _range(values, operand, lambda a, b: a <= b)
    if operator == "$exists":
        return bool(values) == bool(operand)
    if operator == "$regex":
        pattern = _compile_regex(operand, siblings.get("$options"))
        return any(isinstance(v, str) and pattern.search(v) is not None for v in _with_array_elements(values))
    if operator == "$not":
        if not _is_operator_object(operand):
            raise QueryError("$not needs an operator object")
        return not _match_operators(values, operand)
    if operator == "$size":
        if not isinstance(operand, int) or isinstance(operand, bool):
            raise QueryError("$size needs an integer")
        return any(isinstance(v, list) and len(v) == operand for v in values)
    if operator == "$all":
        if not isinstance(operand, list):
            raise QueryError("$all needs an array")
        return bool(operand) and all(_equals_any(values, item) for item in operand)
    if operator == "$elemMatch":
        if not isinstance(operand, dict):
            raise QueryError("$elemMatch needs an object")
        return any(isinstance(v, list) and any(_element_matches(e, operand) for e in v) for v in values)
    raise QueryError(f"unsupported query operator {operator!r}")


def _element_matches(element: Any, condition: Mapping[str, Any]) -> bool:
    if _is_operator_object(condition):
        return _match_operators([element], condition)
    return isinstance(element, dict) and matches(element, condition)


def matches(document: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """Whether a document satisfies a MongoDB-style filter (dotted paths, common operators)."""
    if not isinstance(query, Mapping):
        raise QueryError("a filter must be a JSON object")
    for key, condition in query.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(condition, list) or not condition:
                raise QueryError(f"{key} needs a non-empty array of filters")
            results = (matches(document, sub) for sub in condition)
            if key == "$and" and not all(results):
                return False
            if key == "$or" and not any(results):
                return False
            if key == "$nor" and any(results):
                return False
        elif key.startswith("$"):
            raise QueryError(f"unsupported top-level operator {key!r}")
        else:
            values = values_at(document, split_path(key))
            if _is_operator_object(condition):
                if not _match_operators(values, condition):
                    return False
            elif not _equals_any(values, condition):
                return False
    return True


_FIELD_OPERATORS = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$regex", "$options"}
    | {"$not", "$size", "$all", "$elemMatch"}
)


def validate_filter(query: Any) -> None:
    """Raise QueryError for a malformed filter before any document is read (matching short-circuits)."""
    if not isinstance(query, dict):
        raise QueryError("a filter must be a JSON object")
    for key, condition in query.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(condition, list) or not condition:
                raise QueryError(f"{key} needs a non-empty array of filters")
            for sub in condition:
                validate_filter(sub)
        elif key.startswith("$"):
            raise QueryError(f"unsupported top-level operator {key!r}")
        else:
            split_path(key)
            if _is_operator_object(condition):
                _validate_operators(condition)


def _validate_operators(operators: Mapping[str, Any]) -> None:
    unknown = sorted(set(operators) - _FIELD_OPERATORS)
    if unknown:
        raise QueryError(f"unsupported query operator {unknown[0]!r}")
    if "$regex" in operators:
        _compile_regex(operators["$regex"], operators.get("$options"))
    operand = operators.get("$elemMatch")
    if operand is not None:
        if not isinstance(operand, dict):
            raise QueryError("$elemMatch needs an object")
        if _is_operator_object(operand):
            _validate_operators(operand)
        else:
            validate_filter(operand)
    operand = operators.get("$not")
    if operand is not None:
        if not _is_operator_object(operand):
            raise QueryError("$not needs an operator object")
        _validate_operators(operand)
    # Evaluating each operator against nothing checks its operand type.
    for operator, value in operators.items():
        if operator != "$options":
            _match_operator([], operator, value, operators)
    if "$options" in operators and "$regex" not in operators:
        raise QueryError("$options without $regex")


def equality_fields(query: Mapping[str, Any]) -> dict[str, Any]:
    """The `field: value` pairs a filter pins down, which an upsert copies into the document it creates."""
    pinned: dict[str, Any] = {}
    for key, condition in query.items():
        if key == "$and" and isinstance(condition, list):
            for sub in condition:
                if isinstance(sub, dict):
                    pinned.update(equality_fields(sub))
        elif not key.startswith("$"):
            if _is_operator_object(condition):
                if "$eq" in condition:
                    pinned[key] = condition["$eq"]
            else:
                pinned[key] = condition
    return pinned


def param_condition(raw: str) -> dict[str, Any]:
    """The condition for a plain `?field=value` query parameter: the string, or the JSON scalar it spells."""
    # The real service casts parameters with the collection's schema; with no schema here,
    # `?amount=5` finds both 5 and "5".
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"$eq": raw}
    if isinstance(parsed, bool | int | float) or parsed is None:
        return {"$in": [raw, parsed]}
    return {"$eq": raw}


_TYPE_RANK_NULL = 1
_TYPE_RANK_NUMBER = 2
_TYPE_RANK_STRING = 3
_TYPE_RANK_OBJECT = 4
_TYPE_RANK_ARRAY = 5
_TYPE_RANK_BOOL = 8


def _sort_key(value: Any) -> tuple[int, Any]:
    """A key that orders mixed JSON values the way MongoDB orders BSON types."""
    if value is None:
        return (_TYPE_RANK_NULL, 0)
    if isinstance(value, bool):
        return (_TYPE_RANK_BOOL, int(value))
    if _is_number(value):
        return (_TYPE_RANK_NUMBER, float(value))
    if isinstance(value, str):
        return (_TYPE_RANK_STRING, value)
    if isinstance(value, dict):
        return (_TYPE_RANK_OBJECT, json.dumps(value, sort_keys=True))
    return (_TYPE_RANK_ARRAY, json.dumps(value, sort_keys=True))


def parse_sort(spec: str) -> list[tuple[list[str], bool]]:
    """`-createdAt,name` → [(["createdAt"], descending), (["name"], ascending)]."""
    keys: list[tuple[list[str], bool]] = []
    for item in spec.split(","):
        field = item.strip()
        descending = field.startswith("-")
        field = field.lstrip("-+")
        if not field:
            raise QueryError(f"invalid _s {spec!r}")
        keys.append((split_path(field), descending))
    return keys


def sort_documents(documents: list[Document], keys: list[tuple[list[str], bool]]) -> list[Document]:
    """The documents ordered by several keys, each ascending or descending; ties keep insertion order."""
    ordered = list(documents)
    # Stable sorts applied from the least to the most significant key give a multi-key order.
    for parts, descending in reversed(keys):
        ordered.sort(key=functools.partial(_document_sort_key, parts), reverse=descending)
    return ordered


def _document_sort_key(parts: list[str], document: Document) -> tuple[int, Any]:
    found = values_at(document, parts)
    return _sort_key(found[0] if found else None)


def parse_projection(spec: str) -> list[list[str]]:
    """`a,b.c` → [["a"], ["b", "c"]]."""
    return [split_path(field.strip()) for field in spec.split(",") if field.strip()]


def project(document: Document, fields: list[list[str]]) -> Document:
    """Only the listed fields of a document (nested paths keep their parents), plus `_id`."""
    projected: Document = {}
    if "_id" in document:
        projected["_id"] = document["_id"]
    for parts in fields:
        _copy_path(document, projected, parts)
    return projected


def _copy_path(source: Any, target: Document, parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if not isinstance(source, dict) or head not in source:
        return
    if not rest or not isinstance(source[head], dict):
        target[head] = source[head]
        return
    child = target.setdefault(head, {})
    if isinstance(child, dict):
        _copy_path(source[head], child, rest)


UPDATE_OPERATORS = frozenset({"$set", "$unset", "$setOnInsert", "$inc", "$mul", "$push", "$addToSet", "$currentDate"})


def validate_update(commands: Any) -> None:
    """Raise QueryError for an update body that is not a map of known operators over writable fields."""
    if not isinstance(commands, dict):
        raise QueryError("the body must be a JSON object of update operators")
    for operator, fields in commands.items():
        if operator not in UPDATE_OPERATORS:
            raise QueryError(f"unsupported update operator {operator!r}")
        if not isinstance(fields, dict):
            raise QueryError(f"{operator} needs an object")
        for path, value in fields.items():
            parts = split_path(path)
            if parts[0] in SYSTEM_FIELDS:
                raise QueryError(f"{path!r} is managed by the CRUD and cannot be written")
            if operator in ("$inc", "$mul") and not _is_number(value):
                raise QueryError(f"{operator} needs numbers, got {value!r} for {path!r}")


def apply_update(document: Document, commands: Mapping[str, Any], *, inserting: bool, now: datetime) -> None:
    """Apply validated update operators to a document in place (`$setOnInsert` only when inserting)."""
    for operator, fields in commands.items():
        if operator == "$setOnInsert" and not inserting:
            continue
        for path, value in fields.items():
            _apply_one(document, operator, split_path(path), value, now)


def _apply_one(document: Document, operator: str, parts: list[str], value: Any, now: datetime) -> None:
    parent = _parent_for_write(document, parts, create=operator != "$unset")
    if parent is None:
        return
    leaf = parts[-1]
    if operator in ("$set", "$setOnInsert"):
        parent[leaf] = value
    elif operator == "$unset":
        parent.pop(leaf, None)
    elif operator in ("$inc", "$mul"):
        current = parent.get(leaf, 0)
        if not _is_number(current):
            raise QueryError(f"{operator} cannot change the non-numeric field {'.'.join(parts)!r}")
        parent[leaf] = current + value if operator == "$inc" else current * value
    elif operator in ("$push", "$addToSet"):
        current = parent.setdefault(leaf, [])
        if not isinstance(current, list):
            raise QueryError(f"{operator} needs {'.'.join(parts)!r} to be an array")
        items = value["$each"] if isinstance(value, dict) and isinstance(value.get("$each"), list) else [value]
        for item in items:
            if operator == "$push" or not any(json_equal(item, existing) for existing in current):
                current.append(item)
    elif operator == "$currentDate":
        parent[leaf] = iso_timestamp(now)


def _parent_for_write(document: Document, parts: list[str], *, create: bool) -> Document | None:
    node = document
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            if not create:
                return None
            child = node[part] = {}
        if not isinstance(child, dict):
            raise QueryError(f"cannot write inside the non-object field {part!r}")
        node = child
    return node


def set_path(document: Document, path: str, value: Any) -> None:
    """Set a dotted path in a document, creating the objects on the way."""
    parts = split_path(path)
    parent = _parent_for_write(document, parts, create=True)
    if parent is not None:
        parent[parts[-1]] = value


def iso_timestamp(moment: datetime) -> str:
    """`2024-05-01T12:00:00.000Z`: the shape the CRUD Service gives dates in JSON, sortable as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
