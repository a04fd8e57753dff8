"""The two text rules of the protocol edge: lone surrogates are found wherever they hide; 'blank' is exactly
what open_clip's cleaning empties."""

from __future__ import annotations

import json
import random
import sys
import unicodedata

import pytest
from open_clip.tokenizer import basic_clean, whitespace_clean

from clipserve.errors import InvalidRequestError
from clipserve.service.inputs import InputLimits, parse_input
from clipserve.service.text_checks import find_lone_surrogate, is_blank, reject_lone_surrogates


def _open_clip_leaves_nothing(text: str) -> bool:
    return whitespace_clean(basic_clean(text)) == ""


@pytest.mark.parametrize(
    ("raw_json", "path"),
    [
        ('"\\ud800"', ""),
        ('{"input": ["ok", "\\udfff"]}', "input[1]"),
        ('{"labels": ["a", "b", "x\\ud800y"]}', "labels[2]"),
        ('{"items": [{"metadata": {"tag": ["a", {"deep": "\\udc00"}]}}]}', "items[0].metadata.tag[1].deep"),
        ('{"items": [{"metadata": {"\\ud800": 1}}]}', "items[0].metadata"),  # a bad key: its object
        ('{"query": {"text": "\\ud83d"}}', "query.text"),  # a high surrogate without its low half
    ],
)
def test_a_lone_surrogate_is_found_with_its_path(raw_json: str, path: str) -> None:
    value = json.loads(raw_json)
    assert find_lone_surrogate(value) == path
    with pytest.raises(InvalidRequestError) as refused:
        reject_lone_surrogates(value)
    assert refused.value.code == "invalid_unicode"
    assert refused.value.param == (path or None)


def test_valid_unicode_passes_including_escaped_surrogate_pairs() -> None:
    value = json.loads(
        '{"input": ["\\ud83d\\ude00 cat", "caf\\u00e9", "\\u4e2d\\u6587", "plain"], "n": [1, 2.5]}'
    )
    assert find_lone_surrogate(value) is None


def test_depth_does_not_matter() -> None:
    value: object = "\ud800"
    for _ in range(5000):  # deeper than Python's recursion limit: the walk is iterative
        value = [value]
    path = find_lone_surrogate(value)
    assert path is not None
    assert path.count("[0]") == 5000


def test_blank_is_exactly_what_open_clip_cleaning_empties_for_every_space_and_control_character() -> None:
    candidates = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if not 0xD800 <= c <= 0xDFFF
        and (chr(c).isspace() or unicodedata.category(chr(c)) in ("Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn"))
        and c < 0x30000  # the unassigned planes beyond add nothing new
    ]
    assert len(candidates) > 200
    rng = random.Random(0)
    for char in [*candidates[:400], *rng.sample(candidates, 300)]:
        assert is_blank(char) == _open_clip_leaves_nothing(char), repr(char)
    for text in ["", " ", "\x00", "\t\n\r\x0b\x0c", "\x00\x00 \ufeff", "\u3000\u2028 \x7f", " \x1f\x1c "]:
        assert is_blank(text), repr(text)
        assert _open_clip_leaves_nothing(text), repr(text)
    for text in ["a", " a ", "\x00x", "\u200b", "\xad", "\x85", ".", "\ue000", "\ufffd", "\U0001f431"]:
        assert not is_blank(text), repr(text)
        assert not _open_clip_leaves_nothing(text), repr(text)


def test_any_visible_character_makes_a_text_not_blank() -> None:
    rng = random.Random(1)
    blank_alphabet = "\x00\x01\t\n \xa0\u3000\ufeff\u2028\x7f"
    for _ in range(300):
        visible = chr(rng.choice([rng.randrange(0x21, 0x7F), rng.randrange(0x4E00, 0x9FFF), 0x1F431]))
        pad = "".join(rng.choice(blank_alphabet) for _ in range(rng.randrange(0, 6)))
        text = pad + visible + pad[::-1]
        assert not is_blank(text)
        assert not _open_clip_leaves_nothing(text), repr(text)


@pytest.mark.parametrize("value", [None, 0, 1.5, True, -(2**70)])
def test_scalars_hold_no_surrogate(value: object) -> None:
    assert find_lone_surrogate(value, "items[0]") is None


@pytest.mark.parametrize(
    "raw",
    [
        " " * 10_000_000,
        ["ok", "\x00" * 10_000_000],
        [{"type": "text", "text": "\u3000" * 10_000_000}],
    ],
)
def test_an_over_long_text_is_refused_by_its_length_before_it_is_scanned(raw: object) -> None:
    # The length check is O(1); the blank check scans the text, so it must not run on 10 M characters (2048
    # texts just over the limit held the event loop for 0.4 s, before admission, for any key).
    with pytest.raises(InvalidRequestError) as refused:
        parse_input(raw, InputLimits(max_items=4, max_text_chars=20_000))
    assert refused.value.code != "empty_text"
    assert "the limit is 20000" in refused.value.message


def test_blank_is_decided_at_the_first_visible_character_of_a_long_text() -> None:
    long_blank = " \t\x00\u3000" * 5_000
    assert is_blank(long_blank)
    assert not is_blank("x" + long_blank)
    assert not is_blank(long_blank + "x")
    assert not is_blank(long_blank + "x" + long_blank)
