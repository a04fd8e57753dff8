"""json.loads in pieces (api/json_pieces.py) equals json.loads, for valid and invalid documents alike."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipserve.api import json_pieces
from clipserve.api.json_pieces import PIECE, loads_in_pieces

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
    | st.sampled_from(["a,b", "x]y", "{", '"q"', "\\", "}{,:"])  # structure characters inside strings
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=12) | st.dictionaries(st.text(max_size=6), children, max_size=8)
    ),
    max_leaves=120,
).filter(lambda value: isinstance(value, list | dict))
layouts = st.sampled_from(
    [{}, {"separators": (",", ":")}, {"indent": 1}, {"indent": "\t"}, {"separators": (" ,  ", " :\n")}]
)


def dumped(value: Any, layout: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, **layout).encode("utf-8", "surrogatepass")


def in_pieces(data: bytes, piece: int) -> Any:
    return loads_in_pieces(data, json.loads, piece=piece)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, layouts, st.sampled_from([2, 8, 24, 64]))
def test_valid_documents_parse_as_json_loads_parses_them(
    value: Any, layout: dict[str, Any], piece: int
) -> None:
    data = dumped(value, layout)
    got = in_pieces(data, piece)
    assert got == json.loads(data)
    assert json.dumps(got) == json.dumps(json.loads(data))  # the same key order too


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    documents,
    layouts,
    st.integers(min_value=0),
    st.sampled_from([2, 8, 24]),
    st.randoms(use_true_random=False),
)
def test_broken_documents_fail_or_parse_exactly_as_json_loads(
    value: Any, layout: dict[str, Any], seed: int, piece: int, rng: random.Random
) -> None:
    data = bytearray(dumped(value, layout))
    for _ in range(rng.randint(1, 3)):  # delete, insert or replace a byte, preferring structure
        at = rng.randrange(len(data) + 1)
        choice = rng.random()
        if choice < 0.35 and at < len(data):
            del data[at]
        elif choice < 0.7:
            data[at:at] = rng.choice([b",", b"]", b"}", b"[", b"{", b":", b'"', b" ", b"\x0c", b"1"])
        elif at < len(data):
            data[at] = rng.choice(b',]}[{:" 1')
    broken = bytes(data)
    try:
        expected: Any = json.loads(broken)
    except ValueError as exc:
        expected = exc
    if isinstance(expected, ValueError):
        with pytest.raises(type(expected)) as raised:
            in_pieces(broken, piece)
        # the same message, position included: the whole-body parse answered
        assert str(raised.value) == str(expected)
    else:
        assert in_pieces(broken, piece) == expected


def test_a_repeated_key_keeps_its_first_place_and_last_value_across_pieces() -> None:
    big = json.dumps(list(range(200)))
    data = f'{{"a": 1, "b": {big}, "c": 3, "a": {big}, "d": [1, 2], "b": 4}}'.encode()
    got = in_pieces(data, 16)
    assert list(got) == list(json.loads(data)) == ["a", "b", "c", "d"]
    assert got == json.loads(data)


def test_a_large_body_is_parsed_in_small_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    items = [{"id": f"item-{i}", "vector": [rng.uniform(-1, 1) for _ in range(512)]} for i in range(64)]
    data = json.dumps({"items": items, "tokens": list(range(30_000))}).encode()
    sizes: list[int] = []
    real = json.loads

    def recorded(text: Any, **kwargs: Any) -> Any:
        sizes.append(len(text))
        return real(text, **kwargs)

    def whole(_: bytes) -> Any:
        raise AssertionError("fell back to one json.loads of the whole body")

    monkeypatch.setattr(json_pieces.json, "loads", recorded)
    got = loads_in_pieces(data, whole)
    monkeypatch.undo()
    assert got == json.loads(data)
    assert len(data) > 20 * PIECE
    assert max(sizes) <= 2 * PIECE  # each call a small piece of a 0.9 MB body
    assert len(sizes) >= len(data) // (2 * PIECE)


@pytest.mark.parametrize(
    "data",
    [b"  [1, 2]  ", b'"a long string"', b"12345", b"[]", b"{}", b"[" + b" " * 100 + b"]", b'{"a": []}'],
)
def test_small_scalar_and_empty_documents(data: bytes) -> None:
    assert in_pieces(data, 4) == json.loads(data)
