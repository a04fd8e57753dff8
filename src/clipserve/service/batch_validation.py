"""A batch's input file checked up front, before anything runs or is charged.

Each non-blank line must be a JSON object {"custom_id", "method": "POST", "url": <the batch's endpoint>, "body"},
within the online request limits: no larger than max_request_bytes, within the JSON limits, and a body the online
endpoint would accept (checked by the caller's `check_body`, the online code path's own validation). Any failing
line fails the whole batch with per-line errors ({code, message, param, line}, OpenAI's `errors.data`); the first
`max_errors` are kept.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from clipserve.errors import ClipserveError
from clipserve.store.batch_records import LineError, NewLine

BATCH_ENDPOINTS = ("/v1/embeddings", "/v1/classify", "/v1/rank")
CUSTOM_ID_CHARS = 512  # the column's size
_LINE_KEYS = {"custom_id", "method", "url", "body"}


@dataclass(frozen=True)
class BatchInputLimits:
    max_requests: int  # request lines per file
    max_line_bytes: int  # the online max_request_bytes
    max_errors: int  # errors kept on a failed batch


@dataclass
class ValidatedInput:
    """The file's request lines (bodies still to be checked) and the errors found so far."""

    lines: list[NewLine] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0  # all errors, also those over max_errors

    def add(self, error: LineError, limits: BatchInputLimits) -> None:
        self.error_count += 1
        if len(self.errors) < limits.max_errors:
            self.errors.append(error)


def split_lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its newline) of a JSONL byte stream, whatever the chunking (linear
    in the stream's size, however long a line is)."""
    number = 0
    partial: list[bytes] = []  # the current line's pieces from earlier chunks
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        for piece in pieces[:-1]:
            number += 1
            line = b"".join([*partial, piece]) if partial else piece
            partial = []
            yield number, line.rstrip(b"\r")
        if pieces[-1]:
            partial.append(pieces[-1])
    if partial:
        yield number + 1, b"".join(partial).rstrip(b"\r")


class RequestLineCounter:
    """Counts the non-blank lines of a byte stream fed chunk by chunk, holding no line in memory."""

    def __init__(self) -> None:
        self.count = 0
        self._pending = False  # the unfinished line so far has a non-blank byte

    def feed(self, chunk: bytes) -> None:
        pieces = chunk.split(b"\n")
        for piece in pieces[:-1]:
            if self._pending or piece.strip():
                self.count += 1
            self._pending = False
        self._pending = self._pending or bool(pieces[-1].strip())

    def finish(self) -> int:
        if self._pending:
            self.count += 1
            self._pending = False
        return self.count


def validate_lines(
    lines: Iterable[tuple[int, bytes]],
    endpoint: str,
    limits: BatchInputLimits,
    parse: Callable[[bytes], Any],
) -> ValidatedInput:
    """Check every line's shape (JSON object, custom_id unique, method, url, size); `parse` parses one line's
    JSON within the JSON limits (raising a ClipserveError or ValueError)."""
    result = ValidatedInput()
    seen: set[str] = set()
    requests = 0
    for number, raw in lines:
        if not raw.strip():
            continue  # a blank line (a trailing newline, say) is no request
        requests += 1
        if requests > limits.max_requests:
            result.add(
                LineError(
                    "too_many_requests",
                    f"the file has more than {limits.max_requests} requests, this server's limit per batch",
                    None,
                    number,
                ),
                limits,
            )
            break
        error = _check_line(number, raw, endpoint, limits, parse, seen, result)
        if error is not None:
            result.add(error, limits)
    if requests == 0:
        result.add(LineError("empty_file", "the input file has no requests", None, None), limits)
    return result


def _check_line(
    number: int,
    raw: bytes,
    endpoint: str,
    limits: BatchInputLimits,
    parse: Callable[[bytes], Any],
    seen: set[str],
    result: ValidatedInput,
) -> LineError | None:
    if len(raw) > limits.max_line_bytes:
        return LineError(
            "request_too_large",
            f"the line is {len(raw)} bytes, over this server's request limit of {limits.max_line_bytes}",
            None,
            number,
        )
    try:
        value = parse(raw)
    except ClipserveError as exc:
        return LineError("invalid_json_line", f"the line is not valid JSON: {exc.message}", None, number)
    except ValueError as exc:
        return LineError("invalid_json_line", f"the line is not valid JSON: {exc}", None, number)
    if not isinstance(value, dict):
        return LineError("invalid_json_line", "the line must be a JSON object", None, number)
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= CUSTOM_ID_CHARS:
        return LineError(
            "invalid_custom_id",
            f"custom_id must be a string of 1-{CUSTOM_ID_CHARS} characters",
            "custom_id",
            number,
        )
    if custom_id in seen:
        return LineError(
            "duplicate_custom_id", f"custom_id {custom_id!r} is used by an earlier line", "custom_id", number
        )
    seen.add(custom_id)
    unknown = sorted(set(value) - _LINE_KEYS)
    if unknown:
        return LineError("invalid_line", f"unknown field {unknown[0]!r} in the line", unknown[0], number)
    if value.get("method") != "POST":
        return LineError("invalid_method", "method must be 'POST'", "method", number)
    url = value.get("url")
    if url != endpoint:
        return LineError(
            "invalid_url", f"url must be this batch's endpoint {endpoint!r}, not {url!r}", "url", number
        )
    body = value.get("body")
    if not isinstance(body, dict):
        return LineError(
            "invalid_body", "body must be a JSON object (the endpoint's request)", "body", number
        )
    result.lines.append(NewLine(number, custom_id, json.dumps(body, separators=(",", ":"))))
    return None


async def check_bodies(
    result: ValidatedInput,
    limits: BatchInputLimits,
    check_body: Callable[[NewLine], Awaitable[LineError | None]],
) -> None:
    """Check each shaped line's body as the online endpoint would (`check_body`: its error, or None)."""
    for line in result.lines:
        error = await check_body(line)
        if error is not None:
            result.add(error, limits)
    result.errors.sort(key=lambda error: error.line or 0)


async def validate_input(
    chunks: Callable[[], Iterable[bytes]],
    endpoint: str,
    limits: BatchInputLimits,
    parse: Callable[[bytes], Any],
    check_body: Callable[[NewLine], Awaitable[LineError | None]],
) -> ValidatedInput:
    """A whole input file checked: its lines' shapes in a worker thread (the file is read there too), then
    each body as the online endpoint would check it."""
    result = await asyncio.to_thread(lambda: validate_lines(split_lines(chunks()), endpoint, limits, parse))
    await check_bodies(result, limits, check_body)
    return result
