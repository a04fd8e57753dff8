"""json.loads in pieces: a large document parsed as many small json.loads calls, so no call holds the GIL long.

`json.loads` is one C call: for a 3 MB body of numbers it holds the GIL (and so the event loop) for 40-100 ms on
this hardware. Here an outline pass (a Python loop over the document's strings and brackets, which yields the GIL
between steps like any bytecode) finds each container's span; a container of at most PIECE bytes is one
json.loads, a larger one is cut at its own top-level commas into segments of about PIECE bytes, each parsed as
`[segment]` or `{segment}` and joined, and its large children are parsed the same way, recursively. The result
is json.loads's, value for value (dicts keep a repeated key's first place and last value, as json does).

Anything the outline does not expect (unbalanced or mismatched brackets, a misplaced comma, a segment that does
not parse) falls back to one json.loads of the whole document, which then answers exactly as it always did:
the pieces are an optimisation of valid documents, never a second parser with its own rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Bytes per json.loads call (a few hundred microseconds for dense numbers).
PIECE = 32 * 1024
# Bytes the outline's regex looks at per step.
_STEP = 64 * 1024

_TOKEN = re.compile(rb'["\[\]{}]')
_STRING_CONTENT = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_BLANK = re.compile(rb"[ \t\n\r]*+")  # JSON's whitespace (bytes.strip() would also take \v and \f)
_COLON = re.compile(rb"[ \t\n\r]*+:[ \t\n\r]*+")
_QUOTE, _OPEN_ARRAY, _OPEN_OBJECT, _COMMA = 0x22, 0x5B, 0x7B, 0x2C


class _Unexpected(Exception):
    """The outline found something it does not handle; parse the whole document at once instead."""


@dataclass
class _Span:
    start: int
    end: int = -1  # exclusive
    children: list[_Span] = field(default_factory=list)  # direct children: containers and strings
    is_string: bool = False


def loads_in_pieces(data: bytes, whole: Callable[[bytes], Any], piece: int = PIECE) -> Any:
    """json.loads(data) as json.loads calls on at most about `piece` bytes each; `whole(data)` (the caller's
    json.loads with its own errors) when `data` is small, not a container, or anything is unexpected."""
    if len(data) <= piece:
        return whole(data)
    try:
        root = _outline(data)
        if root is not None:
            return _Pieces(data, piece).value(root)
    except (_Unexpected, ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
        pass
    return whole(data)


def _outline(data: bytes) -> _Span | None:
    """The document's top-level container with its nested containers and strings; None for a scalar."""
    size = len(data)
    start = _BLANK.match(data).end()  # type: ignore[union-attr]  # matches the empty string
    if start >= size or data[start] not in (_OPEN_ARRAY, _OPEN_OBJECT):
        return None
    stack: list[_Span] = []
    root: _Span | None = None
    position = start
    while position < size:
        match = _TOKEN.search(data, position, min(size, position + _STEP))
        if match is None:
            position += _STEP
            continue
        at = match.start()
        byte = data[at]
        if root is not None:
            raise _Unexpected("more after the top-level value")
        if byte == _QUOTE:
            end = _string_end(data, at + 1)
            if not stack:
                raise _Unexpected("a string outside the top-level container")
            stack[-1].children.append(_Span(at, end, is_string=True))
            position = end
        elif byte in (_OPEN_ARRAY, _OPEN_OBJECT):
            span = _Span(at)
            if stack:
                stack[-1].children.append(span)
            stack.append(span)
            position = at + 1
        else:
            if not stack or data[stack[-1].start] + 2 != byte:  # '[' + 2 == ']', '{' + 2 == '}'
                raise _Unexpected("unbalanced brackets")
            span = stack.pop()
            span.end = at + 1
            if not stack:
                root = span
            position = at + 1
    if root is None or stack or _BLANK.match(data, root.end).end() != size:  # type: ignore[union-attr]
        raise _Unexpected("not one complete container")
    return root


def _string_end(data: bytes, content_start: int) -> int:
    size = len(data)
    position = content_start
    while True:  # a step per _STEP bytes, so a long string with escapes yields the GIL too
        run = _STRING_CONTENT.match(data, position, min(size, position + _STEP))
        assert run is not None  # matches the empty string
        end = run.end()
        if end < size and data[end] == _QUOTE:
            return end + 1
        if end >= size or end == position:
            raise _Unexpected("a string that does not close")
        position = end


class _Pieces:
    def __init__(self, data: bytes, piece: int) -> None:
        self.data = data
        self.loads = json.loads
        self.piece = piece

    def value(self, span: _Span) -> Any:
        if span.is_string or span.end - span.start <= self.piece:
            return self.loads(self.data[span.start : span.end])
        result: list[Any] | dict[Any, Any] = [] if self.data[span.start] == _OPEN_ARRAY else {}
        self._fill(span, result)
        return result

    def _fill(self, span: _Span, result: list[Any] | dict[Any, Any]) -> None:
        """Parse the members of a large container into `result`: runs of small members as segments cut at
        top-level commas (only in the gaps between children, where no string or container can hide one),
        large members one by one."""
        data, children, is_array = self.data, span.children, isinstance(result, list)
        first, close = span.start + 1, span.end - 1
        pending = first  # start of the members not parsed yet (just after a top-level comma or the bracket)
        for index, child in enumerate(children):
            gap_start = max(pending, children[index - 1].end if index else first)
            if child.is_string or child.end - child.start <= self.piece:
                if child.start - pending > self.piece:
                    pending = self._cut(result, pending, gap_start, child.start)
                continue
            if is_array:
                member_start = child.start
            else:  # an object member: its key is the string just before, then a colon
                key = children[index - 1] if index else None
                if key is None or not key.is_string or not _COLON.fullmatch(data, key.end, child.start):
                    raise _Unexpected("a large value that is not an object member")
                member_start = key.start
                gap_start = max(pending, children[index - 2].end if index >= 2 else first)
            comma = data.rfind(b",", gap_start, member_start)
            if comma >= 0:
                if not _blank(data, comma + 1, member_start):
                    raise _Unexpected("text between a comma and a large member")
                self._segment(result, pending, comma)
            elif not _blank(data, pending, member_start):
                raise _Unexpected("a large member not preceded by a comma")
            if isinstance(result, list):
                result.append(self.value(child))
            else:
                result[self.loads(data[member_start : children[index - 1].end])] = self.value(child)
            pending = self._after_member(
                child.end, children[index + 1].start if index + 1 < len(children) else close, close
            )
        if pending == close:
            return  # the last member was a large one
        gap_start = max(pending, children[-1].end if children else first)
        if close - pending > self.piece:
            pending = self._cut(result, pending, gap_start, close)
        if pending == first and _blank(data, first, close):
            return  # an empty container (only whitespace inside)
        self._segment(result, pending, close)

    def _after_member(self, end: int, limit: int, close: int) -> int:
        """Where the members after a large one start: past its comma, or the close if it was the last."""
        after = _BLANK.match(self.data, end, limit).end()  # type: ignore[union-attr]  # matches ""
        if after == limit:
            if limit != close:
                raise _Unexpected("two members without a comma")
            return close
        if self.data[after] != _COMMA:
            raise _Unexpected("text after a large member")
        return after + 1

    def _cut(self, result: list[Any] | dict[Any, Any], pending: int, gap_start: int, limit: int) -> int:
        """Parse segments of about `piece` bytes from `pending`, cut at commas in the top-level gap
        [gap_start, limit); returns where the members not parsed yet start."""
        data = self.data
        search_from = gap_start
        while limit - pending > self.piece:
            comma = data.rfind(b",", search_from, min(limit, pending + self.piece))
            if comma < 0:
                comma = data.find(b",", max(search_from, pending + self.piece), limit)
                if comma < 0:
                    return pending  # no comma left in this gap: cut in a later one
            self._segment(result, pending, comma)
            pending = search_from = comma + 1
        return pending

    def _segment(self, result: list[Any] | dict[Any, Any], start: int, end: int) -> None:
        if _blank(self.data, start, end):
            raise _Unexpected("an empty member")
        text = self.data[start:end]
        if isinstance(result, list):
            result.extend(self.loads(b"[" + text + b"]"))
        else:
            result.update(self.loads(b"{" + text + b"}"))


def _blank(data: bytes, start: int, end: int) -> bool:
    return _BLANK.match(data, start, end).end() == end  # type: ignore[union-attr]  # matches ""
