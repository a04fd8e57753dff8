"""Text the service refuses wherever it enters: lone UTF-16 surrogates, and texts with nothing to embed.

Both are pure functions so that whichever code turns a JSON body into Python (the wire models' validator,
a body parser off the event loop, a per-item parser) can apply the same rule.
"""

from __future__ import annotations

import re
from typing import Any

from clipserve.errors import InvalidRequestError

# json.loads turns "\ud800" (and raw CESU-8 bytes) into a str holding a lone surrogate, which no UTF-8 encoder
# (the tokenizer's, SQLite's, Milvus's, our JSON responses') accepts.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# What open_clip's text cleaning deletes outright: whitespace (str.split) and the control characters ftfy's
# remove_control_chars drops (U+00-08, 0B, 0E-1F, 7F, 206A-206F, FEFF, FFF9-FFFC). U+0085 is whitespace to
# str.split but ftfy first reads it as cp1252 ("..."), so it is not here. A text made only of these reaches the
# model as the empty string; tests/unit/test_hostile_text_checks.py checks the set against open_clip's cleaning.
# The pattern is the complement: a text is blank when it holds no character outside the set, and the search stops
# at the first one (a `[set]*` fullmatch backtracks over a long blank prefix before failing at its end).
_NOT_BLANK = re.compile(
    r"[^\x00-\x20\x7f\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u206a-\u206f\ufeff\ufff9-\ufffc]"
)


def has_lone_surrogate(text: str) -> bool:
    # An ASCII string (O(1) to ask) cannot hold one: most texts skip the scan.
    return not text.isascii() and _SURROGATE.search(text) is not None


def find_lone_surrogate(value: Any, path: str = "") -> str | None:
    """Where in a parsed JSON value the first lone surrogate is (in a string or an object key), or None.

    The path is written as the error `param` is (`input[3]`, `labels[0]`, `items[2].metadata.tag`); a bad
    object key reports the object's path. The walk is iterative, so any nesting depth is safe.
    """
    # Paths are kept as (parent, key) links and written out only for the one that is reported. Strings are
    # checked where they are met and only non-empty containers go on the stack; parsed JSON holds exact types,
    # so one `type() is` test sorts a value, and a list of numbers only (a vector) is one pass in C. A 64 KiB
    # body (the largest validated on the event loop) takes 0.5-2 ms, 10-15 ms at worst when made of ~30,000
    # tiny nested arrays; larger bodies are validated in a worker thread, where this loop yields the GIL.
    if isinstance(value, str):
        return path if has_lone_surrogate(value) else None
    if not isinstance(value, dict | list | tuple):
        return None  # a number, a boolean or null holds no text
    stack: list[tuple[Any, _Trail]] = [(value, None)]
    search = _SURROGATE.search
    while stack:
        current, trail = stack.pop()
        if type(current) is dict:
            pairs: Any = current.items()
        elif _TEXT_OR_CONTAINER.isdisjoint(map(type, current)):
            continue
        else:
            pairs = enumerate(current)
        for key, item in pairs:
            if type(key) is str and not key.isascii() and search(key):
                return _render(path, trail)
            kind = type(item)
            if kind is str:
                if not item.isascii() and search(item):
                    return _render(path, (trail, key))
            elif (kind is dict or kind is list or kind is tuple) and item:
                stack.append((item, (trail, key)))
    return None


_Trail = tuple[Any, str | int] | None
_TEXT_OR_CONTAINER = frozenset({str, dict, list, tuple})


def _render(path: str, trail: _Trail) -> str:
    keys: list[str | int] = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    for key in reversed(keys):
        path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
    return path


def reject_lone_surrogates(value: Any, path: str = "") -> None:
    """Raise a 400 naming the field when `value` holds a lone UTF-16 surrogate anywhere."""
    where = find_lone_surrogate(value, path)
    if where is not None:
        named = f"'{where}'" if where else "the request body"
        raise InvalidRequestError(
            f"{named} holds a lone UTF-16 surrogate (e.g. \\ud800 without its pair), which is not "
            "valid Unicode text: send UTF-8, or escape characters outside the BMP as surrogate pairs",
            param=where or None,
            code="invalid_unicode",
        )


def is_blank(text: str) -> bool:
    """True when nothing of `text` survives open_clip's cleaning of whitespace and control characters.

    The scan is as long as the text's blank prefix: check a text's length limit first.
    """
    return _NOT_BLANK.search(text) is None
