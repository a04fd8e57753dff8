"""Metadata filters: a small MongoDB-style language, parsed once into a tree both backends can run.

    {"color": "red", "year": {"$gte": 2000, "$lt": 2010}, "$or": [{"tag": {"$in": ["a", "b"]}}, {"x": 1}]}

A bare value means equality; operators are $eq $ne $gt $gte $lt $lte $in $nin; $and / $or take lists of
filters; the keys of one object are ANDed. Fields are metadata keys (dots reach into nested objects).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clipserve.errors import InvalidRequestError

Scalar = str | int | float | bool
# fullmatch, not `^...$`: `$` also matches before a trailing newline, which then reached Milvus expressions
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}(\.[A-Za-z_][A-Za-z0-9_\-]{0,63}){0,3}")
_COMPARISONS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"}
_MAX_NODES = 64


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # one of _COMPARISONS
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Filter, ...]


Filter = Condition | AllOf | AnyOf


def parse_filter(raw: Any, param: str = "filter") -> Filter | None:
    """The tree of a filter object (None for an empty one); a clear 400 for anything malformed."""
    if raw is None or raw == {}:
        return None
    counter = [0]
    return _parse(raw, param, counter)


def _parse(raw: Any, param: str, counter: list[int]) -> Filter:
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidRequestError("a filter must be a non-empty JSON object", param=param)
    parts: list[Filter] = []
    for key, value in raw.items():
        counter[0] += 1
        if counter[0] > _MAX_NODES:
            raise InvalidRequestError(f"a filter may have at most {_MAX_NODES} conditions", param=param)
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidRequestError(f"{key} takes a non-empty list of filters", param=f"{param}.{key}")
            children = tuple(_parse(v, f"{param}.{key}[{i}]", counter) for i, v in enumerate(value))
            parts.append(AllOf(children) if key == "$and" else AnyOf(children))
        elif key.startswith("$"):
            raise InvalidRequestError(f"unknown filter operator {key!r} (use $and, $or)", param=param)
        else:
            parts.extend(_field_conditions(key, value, f"{param}.{key}"))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _field_conditions(field: str, value: Any, param: str) -> list[Filter]:
    if not _FIELD.fullmatch(field):
        raise InvalidRequestError(
            f"filter field {field!r} is not a metadata key (letters, digits, _ and -, dots for nesting)",
            param=param,
        )
    if not isinstance(value, Mapping):
        return [Condition(field, "$eq", _scalar(value, param))]
    if not value:
        raise InvalidRequestError("an operator object must not be empty", param=param)
    conditions: list[Filter] = []
    for op, operand in value.items():
        if op not in _COMPARISONS:
            raise InvalidRequestError(
                f"unknown operator {op!r}; use one of {sorted(_COMPARISONS)}", param=f"{param}.{op}"
            )
        if op in ("$in", "$nin"):
            if not isinstance(operand, list) or not operand or len(operand) > 1000:
                raise InvalidRequestError(f"{op} takes a list of 1 to 1000 values", param=f"{param}.{op}")
            conditions.append(Condition(field, op, tuple(_scalar(v, f"{param}.{op}") for v in operand)))
        else:
            scalar = _scalar(operand, f"{param}.{op}")
            if op in ("$gt", "$gte", "$lt", "$lte") and isinstance(scalar, bool):
                raise InvalidRequestError(f"{op} compares numbers or strings", param=f"{param}.{op}")
            conditions.append(Condition(field, op, scalar))
    return conditions


def _scalar(value: Any, param: str) -> Scalar:
    if isinstance(value, bool | str):
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidRequestError("filter strings must not contain NUL characters", param=param)
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise InvalidRequestError(
                        "filter strings must not contain lone UTF-16 surrogates", param=param
                    ) from exc
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise InvalidRequestError("filter values must be strings, numbers or booleans", param=param)


# --- evaluation (the embedded store) ---


def _lookup(metadata: Mapping[str, Any], field: str) -> tuple[bool, Any]:
    current: Any = metadata
    for part in field.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def _same_kind(a: Any, b: Any) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, numeric) and isinstance(b, numeric)) or (isinstance(a, str) and isinstance(b, str))


def matches(tree: Filter | None, metadata: Mapping[str, Any]) -> bool:
    """Whether an item's metadata passes the filter. A missing field, or one of another type, fails every
    comparison except $ne and $nin (as in MongoDB)."""
    if tree is None:
        return True
    if isinstance(tree, AllOf):
        return all(matches(part, metadata) for part in tree.parts)
    if isinstance(tree, AnyOf):
        return any(matches(part, metadata) for part in tree.parts)
    found, value = _lookup(metadata, tree.field)
    op, operand = tree.op, tree.value
    if op in ("$in", "$nin"):
        assert isinstance(operand, tuple)
        hit = found and any(_same_kind(value, v) and value == v for v in operand)
        return hit if op == "$in" else not hit
    equal = found and _same_kind(value, operand) and value == operand
    if op == "$eq":
        return equal
    if op == "$ne":
        return not equal
    if not found or not _same_kind(value, operand):
        return False
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    if op == "$lt":
        return bool(value < operand)
    return bool(value <= operand)
