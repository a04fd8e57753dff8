"""What a vector store may hold: item ids and metadata that every backend stores and returns unchanged.

Both stores check every item with these functions before writing, so a value one backend would refuse,
mangle or fail on later (NaN, integers beyond int64, lone surrogates, metadata nested too deep to read
back) is refused the same way by both, as a 400 naming the field. The service calls them per item first,
with the operator's (smaller) depth cap, so one bad item fails alone.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

from clipserve.errors import InvalidRequestError

# Milvus VARCHAR lengths count UTF-8 bytes, the SQL column counts characters: bytes bound both.
MAX_ID_BYTES = 256
# The deepest metadata any store accepts; the service's configurable cap (max_metadata_depth) is at most this.
MAX_METADATA_DEPTH = 32
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def check_item_id(item_id: object, param: str) -> str:
    """An id: 1 to 256 UTF-8 bytes, no control characters (they could be stored but never addressed by a
    URL path) and no lone surrogates."""
    if not isinstance(item_id, str) or not item_id:
        raise InvalidRequestError("an item id must be a non-empty string", param=param)
    encoded = _utf8(item_id, param)
    if len(encoded) > MAX_ID_BYTES:
        raise InvalidRequestError(
            f"an item id is at most {MAX_ID_BYTES} bytes of UTF-8; this one is {len(encoded)}", param=param
        )
    if any(unicodedata.category(ch) == "Cc" for ch in item_id):
        raise InvalidRequestError("an item id must not contain control characters", param=param)
    return item_id


def check_metadata(metadata: object, param: str, max_depth: int = MAX_METADATA_DEPTH) -> dict[str, Any]:
    """A metadata object both stores keep exactly: JSON objects, lists, strings, booleans, null, integers
    within int64 and finite floats, at most `max_depth` containers deep (the object itself is depth 1)."""
    if not isinstance(metadata, dict):
        raise InvalidRequestError("metadata must be a JSON object", param=param)
    # iterative, so a hostile depth costs no Python recursion
    pending: list[tuple[object, int, str]] = [(metadata, 1, param)]
    while pending:
        value, depth, where = pending.pop()
        if isinstance(value, dict | list):
            if depth > max_depth:
                raise InvalidRequestError(
                    f"metadata may be nested at most {max_depth} levels deep", param=where
                )
            if isinstance(value, dict):
                for key, child in value.items():
                    if not isinstance(key, str):
                        raise InvalidRequestError("metadata keys must be strings", param=where)
                    _utf8(key, where)
                    pending.append((child, depth + 1, f"{where}.{key}"))
            else:
                pending.extend((child, depth + 1, f"{where}[{i}]") for i, child in enumerate(value))
        elif isinstance(value, str):
            _utf8(value, where)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise InvalidRequestError(
                    "metadata integers must fit in 64 bits (-2^63 to 2^63-1); send larger ones as strings",
                    param=where,
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidRequestError("metadata numbers must be finite (no NaN or Infinity)", param=where)
        else:
            raise InvalidRequestError(
                f"metadata values must be JSON values, not {type(value).__name__}", param=where
            )
    return metadata


def _utf8(text: str, param: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError("text must not contain lone UTF-16 surrogates", param=param) from exc


def check_items(ids: list[str], metadata: list[object]) -> None:
    """Every item of a store write, before any of it is written (a write is all or nothing)."""
    for i, (item_id, item_metadata) in enumerate(zip(ids, metadata, strict=True)):
        check_item_id(item_id, f"items[{i}].id")
        check_metadata(item_metadata, f"items[{i}].metadata")
