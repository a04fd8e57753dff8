"""parse_json gives exactly what json.loads gives, for every body within the limits (long strings included)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from clipserve.api.json_limits import LONG_STRING, WINDOW, JsonBodyParser, JsonLimits, parse_json
from clipserve.errors import InvalidJsonError, JsonTooComplexError

LIMITS = JsonLimits(max_depth=32, max_keys=1000, max_strings=2000, max_values=10_000)
LONG = "x" * (LONG_STRING + 5)

BODIES = [
    {"input": "a cat"},
    {"input": [LONG, "short", {"image": "data:image/png;base64," + "A" * (WINDOW * 3 + 7)}]},
    {"input": [LONG + 'with "quotes" and \\ backslashes\n', "é" * LONG_STRING, "\u2028" + LONG]},
    {LONG: LONG, "nested": {"k": [LONG, [LONG, {"deep": LONG}]]}, "n": [1, -2.5e-3, 10**40, None, True]},
    {"\x00fake:0": "a client's own placeholder-looking string", "v": LONG},
    {"emoji": "🐱" * LONG_STRING, "astral (a surrogate pair when escaped)": "😀" + LONG},
]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("body", BODIES)
def test_parse_json_equals_json_loads(body: dict[str, object], indent: int | None) -> None:
    for ensure_ascii in (True, False):
        raw = json.dumps(body, indent=indent, ensure_ascii=ensure_ascii).encode()
        assert parse_json(raw, LIMITS) == json.loads(raw)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{" + b",".join(b'"k%d":0' % i for i in range(1001)) + b"}", "json_too_many_keys"),
        (b"[" + b",".join([b'"s"'] * 2001) + b"]", "json_too_many_strings"),
        (b"[" + b",".join([b"0"] * 10_001) + b"]", "json_too_many_values"),
        (b"[" * 33 + b"]" * 33, "json_too_deep"),
        (b'{"a": "' + b"[" * 100 + b'"}', None),  # brackets inside a string are not structure
    ],
)
def test_limits_count_structure_outside_strings_only(raw: bytes, code: str | None) -> None:
    if code is None:
        assert parse_json(raw, LIMITS) == json.loads(raw)
        return
    with pytest.raises(JsonTooComplexError) as caught:
        parse_json(raw, LIMITS)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "' + b"x" * 5000,
        b'{"a": "x\\',
        b'{"a": "' + b"x" * 5000 + b'\n"}',
        b'{"a": "\xff' + b"x" * 5000 + b'"}',
    ],
)
def test_broken_strings_are_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidJsonError):
        parse_json(raw, LIMITS)


@pytest.mark.anyio
async def test_large_bodies_are_parsed_in_turn_across_callers() -> None:
    parser = JsonBodyParser(JsonLimits(32, 1000, 1000, 1000), inline_bytes=0, workers=1)
    gate = threading.Event()
    order: list[str] = []
    try:
        held = asyncio.ensure_future(parser.run(lambda: gate.wait(10), "account:1"))
        await asyncio.sleep(0)
        backlog = [
            asyncio.ensure_future(parser.run(lambda i=i: order.append(f"a{i}"), "account:1"))
            for i in range(20)
        ]
        other = asyncio.ensure_future(parser.run(lambda: order.append("b"), "account:2"))
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(held, *backlog, other)
    finally:
        parser.close()
    # not behind the twenty bodies of the account that came first: at most its first (which, queued after the
    # account's previous body had left the queue, counts as a newcomer too)
    assert order.index("b") <= 1
    assert [o for o in order if o != "b"] == [f"a{i}" for i in range(20)]
