"""Parse a JSON body within limits, without any single step holding the GIL (so the event loop) for long.

Two costs made one hostile body stall every request: building millions of Python objects (a 34 MB object of
2.5 M keys) and parsers that hold the GIL for the whole document (json, orjson: several ns per byte of string).
So, before any Python object exists, a scan over the bytes counts keys, strings, values and depth in windows
of at most WINDOW bytes (the GIL is free between windows) and refuses what is over a limit. Then long plain
strings (base64 images, URLs, long texts) are cut out and decoded on their own (a memcpy-speed `str()`),
and json parses only what is left: the structure, numbers and short strings, all bounded by the limits, in
pieces of at most ~32 KiB (api/json_pieces.py), so no single parse call holds the GIL for more than about a
millisecond.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clipserve.api.json_pieces import loads_in_pieces
from clipserve.config import Settings
from clipserve.errors import InvalidJsonError, JsonTooComplexError
from clipserve.runtime.fair_queue import FairExecutor

T = TypeVar("T")
# Bytes looked at per step of the scan; the GIL is released between steps.
WINDOW = 64 * 1024
# Strings at least this long, without escapes, are decoded apart from the document.
LONG_STRING = 1024
# A double needs at most 24 characters; a body may hold a few longer numbers (each is refused where it is
# used, as one item's error), but Python's int() is quadratic in the digits, so not many.
LONG_NUMBER_CHARS = 64
MAX_LONG_NUMBERS = 16
MAX_NUMBER_CHARS = 4300  # Python's own limit for int(str)
MAX_WHITESPACE_RUN = 1024

_PLAIN_RUN = re.compile(rb'[^"\\]*+')
_ESCAPED_RUN = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_CONTROL = re.compile(rb"[\x00-\x1f]")
# A number longer than a double needs, or a run of whitespace no formatter writes.
_LONG_TOKEN = re.compile(rb"[^\s,:\[\]{}]{%d,}|\s{%d,}" % (LONG_NUMBER_CHARS + 1, MAX_WHITESPACE_RUN + 1))
# _LONG_TOKEN tries every position (about 130 ns a byte: 360 ms for 2.7 MB of floats), so a gap is first checked
# with bytes.translate/split/in (C, a few ns a byte) and searched only when it holds a long token or run.
_WHITESPACE = b" \t\n\r\x0b\x0c"  # what \s matches in a bytes pattern
_WHITESPACE_TO_SPACE = bytes.maketrans(_WHITESPACE, b" " * len(_WHITESPACE))
_SEPARATORS_TO_SPACE = bytes.maketrans(_WHITESPACE + b",:[]{}", b" " * (len(_WHITESPACE) + 6))
_LONG_RUN = b" " * (MAX_WHITESPACE_RUN + 1)


@dataclass(frozen=True)
class JsonLimits:
    """The most a body may contain; each bounds memory and parse time (docs/security.md, Request bodies)."""

    max_depth: int
    max_keys: int
    max_strings: int
    max_values: int


@dataclass
class _Scan:
    limits: JsonLimits
    depth: int = 0
    long_numbers: int = 0
    keys: int = 0
    strings: int = 0
    values: int = 0
    # (start, end) of the content of long strings without escapes, in order
    long_strings: list[tuple[int, int]] = field(default_factory=list)

    def gap(self, body: bytes, start: int, end: int) -> None:
        """Count the structure between two strings (outside any string)."""
        count = body.count
        opens = count(b"{", start, end) + count(b"[", start, end)
        closes = count(b"}", start, end) + count(b"]", start, end)
        self.keys += count(b":", start, end)
        self.values += count(b",", start, end) + opens
        self._check_counts()
        if self.depth + opens > self.limits.max_depth:
            self._walk_brackets(body, start, end)
        else:
            self.depth = max(0, self.depth + opens - closes)
        if end - start > LONG_NUMBER_CHARS and _may_hold_long_tokens(body[start:end]):
            for token in _LONG_TOKEN.finditer(body, start, end):
                self._long_token(token.group())

    def _long_token(self, token: bytes) -> None:
        if token[:1].isspace():
            raise InvalidJsonError(
                f"request body has a run of more than {MAX_WHITESPACE_RUN} whitespace characters"
            )
        self.long_numbers += 1
        if self.long_numbers > MAX_LONG_NUMBERS or len(token) > MAX_NUMBER_CHARS:
            raise InvalidJsonError(
                f"request body has numbers too long to be meant as numbers (more than {MAX_LONG_NUMBERS} "
                f"over {LONG_NUMBER_CHARS} characters, or one over {MAX_NUMBER_CHARS})"
            )

    def _walk_brackets(self, body: bytes, start: int, end: int) -> None:
        # Only when the depth could pass the limit here; each step is an opening bracket (bounded by
        # max_values, checked above) or a closing one that cannot take the depth below zero more than once.
        for match in _BRACKET.finditer(body, start, end):
            if match.group() in (b"{", b"["):
                self.depth += 1
                if self.depth > self.limits.max_depth:
                    raise JsonTooComplexError(
                        f"request body is nested deeper than {self.limits.max_depth} levels",
                        code="json_too_deep",
                        status_code=400,
                    )
            else:
                self.depth -= 1
                if self.depth < 0:
                    raise InvalidJsonError("request body is not valid JSON (unbalanced brackets)")

    def string(self) -> None:
        self.strings += 1
        if self.strings > self.limits.max_strings:
            raise JsonTooComplexError(
                f"request body has more than {self.limits.max_strings} strings", code="json_too_many_strings"
            )

    def _check_counts(self) -> None:
        if self.keys > self.limits.max_keys:
            raise JsonTooComplexError(
                f"request body has more than {self.limits.max_keys} object keys", code="json_too_many_keys"
            )
        if self.values > self.limits.max_values:
            raise JsonTooComplexError(
                f"request body has more than {self.limits.max_values} values", code="json_too_many_values"
            )


def _may_hold_long_tokens(gap: bytes) -> bool:
    """Whether `gap` (text outside strings) has a token over LONG_NUMBER_CHARS or a whitespace run over
    MAX_WHITESPACE_RUN: exact, at C speed."""
    if _LONG_RUN in gap.translate(_WHITESPACE_TO_SPACE):
        return True
    return max(map(len, gap.translate(_SEPARATORS_TO_SPACE).split()), default=0) > LONG_NUMBER_CHARS


def scan_json(body: bytes, limits: JsonLimits) -> list[tuple[int, int]]:
    """Refuse a body over `limits` before parsing it; returns the spans of its long plain strings.

    Exact for valid JSON. For invalid JSON the counts can be off after the first error, which is harmless:
    the parser stops at that error, so it never builds more than the scanned valid prefix holds.
    """
    scan = _Scan(limits)
    size = len(body)
    position = 0
    while position < size:
        window_end = min(size, position + WINDOW)
        quote = body.find(b'"', position, window_end)
        scan.gap(body, position, quote if quote >= 0 else window_end)
        if quote < 0:
            position = window_end
            continue
        scan.string()
        position = _string_end(body, quote + 1, scan)
    return scan.long_strings


def _string_end(body: bytes, start: int, scan: _Scan) -> int:
    """The position after the closing quote of the string whose content starts at `start`."""
    size = len(body)
    position = start
    escaped = False
    while True:
        window_end = min(size, position + WINDOW)
        run = (_ESCAPED_RUN if escaped else _PLAIN_RUN).match(body, position, window_end)
        assert run is not None  # both patterns match the empty string
        position = run.end()
        if position >= size:
            raise InvalidJsonError("request body is not valid JSON (a string is not closed)")
        if body[position] == 0x22:  # the closing quote
            if not escaped and position - start >= LONG_STRING:
                scan.long_strings.append((start, position))
            return position + 1
        if body[position] == 0x5C and not escaped:  # a backslash: from here, match escapes too
            escaped = True
        elif position == run.start() and window_end == size:
            raise InvalidJsonError("request body is not valid JSON (a string is not closed)")


def parse_json(body: bytes, limits: JsonLimits) -> Any:
    """The parsed body, refused with a 400/413 when it is not JSON or is over `limits`."""
    long_strings = scan_json(body, limits)
    if not long_strings:
        return loads_in_pieces(body, _loads)
    # Long strings become placeholders that no client can forge (a fresh nonce per body), parsed apart.
    nonce = secrets.token_hex(8)
    view = memoryview(body)
    parts: list[bytes | memoryview] = []
    decoded: dict[str, str] = {}
    previous = 0
    for index, (start, end) in enumerate(long_strings):
        placeholder = f"\x00{nonce}:{index}"
        parts.append(view[previous:start])
        parts.append(b"\\u0000" + placeholder[1:].encode() + b'"')
        decoded[placeholder] = _decode_plain(body, start, end)
        previous = end + 1
    parts.append(view[previous:])
    skeleton = loads_in_pieces(b"".join(parts), _loads)
    return _substitute(skeleton, decoded.get)


def _decode_plain(body: bytes, start: int, end: int) -> str:
    for window in range(start, end, WINDOW):
        if _CONTROL.search(body, window, min(end, window + WINDOW)):
            raise InvalidJsonError("request body is not valid JSON (a control character inside a string)")
    try:
        return str(memoryview(body)[start:end], "utf-8", "surrogatepass")  # as json.loads(bytes) decodes
    except UnicodeDecodeError as exc:
        raise InvalidJsonError("request body is not valid UTF-8") from exc


def _substitute(value: Any, lookup: Callable[[str], str | None]) -> Any:
    """Put the long strings back in place of their placeholders (a walk bounded by max_values)."""
    stack: list[Any] = [value]
    if isinstance(value, str):
        found = lookup(value)
        return value if found is None else found
    while stack:
        container = stack.pop()
        if isinstance(container, dict) and any(key.startswith("\x00") for key in container):
            # a long key: rebuild in place, in order (a repeated key keeps its first place, as in json)
            rebuilt = {lookup(key) or key: item for key, item in container.items()}
            container.clear()
            container.update(rebuilt)
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in items:
            if isinstance(item, str):
                if item.startswith("\x00"):
                    found = lookup(item)
                    if found is not None:
                        container[key] = found
            elif isinstance(item, dict | list):
                stack.append(item)
    return value


def _loads(data: bytes) -> Any:
    # The standard library's parser, as FastAPI used: the same numbers (big ints stay ints), NaN and errors.
    if json.detect_encoding(data) != "utf-8":
        raise InvalidJsonError("request body must be UTF-8 JSON")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise InvalidJsonError(f"request body is not valid JSON ({exc.msg} at byte {exc.pos})") from exc
    except ValueError as exc:  # e.g. an integer over Python's digit limit
        raise InvalidJsonError(f"request body is not valid JSON ({exc})") from exc


class JsonBodyParser:
    """Where large bodies are parsed and validated: its own few threads, so a burst of them queues there, taken
    in turn across callers (a FairExecutor), so one account's queue of large bodies does not delay another's."""

    def __init__(self, limits: JsonLimits, inline_bytes: int, workers: int) -> None:
        self.limits = limits
        self.inline_bytes = inline_bytes
        self._pool = FairExecutor(workers, thread_name_prefix="clipserve-json")

    @classmethod
    def from_settings(cls, settings: Settings) -> JsonBodyParser:
        limits = JsonLimits(
            settings.max_json_depth,
            settings.max_json_keys,
            settings.max_json_strings,
            settings.max_json_values,
        )
        return cls(limits, settings.json_inline_parse_bytes, settings.json_parse_workers)

    async def run(self, work: Callable[[], T], tenant: Hashable = None) -> T:
        """Run `work` on the JSON threads, in `tenant`'s turn (the caller's account, or its address)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool.for_tenant(tenant), work)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
