from __future__ import annotations

import pytest

from clipserve.errors import InvalidRequestError
from clipserve.service.inputs import (
    ImageItem,
    InputLimits,
    TextItem,
    parse_input,
    parse_messages,
    parse_request_items,
)

LIMITS = InputLimits(max_items=2048, max_text_chars=1000)


def test_string_input_is_one_text() -> None:
    assert parse_input("a cat", LIMITS) == [TextItem("a cat", "input")]


def test_every_item_form_is_understood_in_order() -> None:
    raw = [
        "plain",
        {"text": "dict text"},
        {"image": "aGVsbG8="},
        {"type": "text", "text": "part text"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": "data:image/png;base64,aGVsbG8="},
    ]
    items = parse_input(raw, LIMITS)
    assert items == [
        TextItem("plain", "input[0]"),
        TextItem("dict text", "input[1]"),
        ImageItem("aGVsbG8=", "input[2]"),
        TextItem("part text", "input[3]"),
        ImageItem("https://example.com/a.png", "input[4]"),
        ImageItem("data:image/png;base64,aGVsbG8=", "input[5]"),
    ]


def test_chat_messages_become_one_item_per_part() -> None:
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "aGVsbG8="}}]},
        {"role": "user", "content": "a caption"},
        {"role": "user", "content": [{"type": "text", "text": "t1"}, {"type": "text", "text": "t2"}]},
    ]
    items = parse_messages(messages, LIMITS)
    assert [type(i).__name__ for i in items] == ["ImageItem", "TextItem", "TextItem", "TextItem"]
    assert items[1] == TextItem("a caption", "messages[1].content")


@pytest.mark.parametrize(
    ("raw", "param", "fragment"),
    [
        ("", "input", "empty string"),
        ([""], "input[0]", "empty string"),
        (["ok", {"text": ""}], "input[1].text", "empty string"),
        ([], "input", "must not be empty"),
        (5, "input", "must be a string or a list"),
        ([1, 2, 3], "input", "token-id arrays"),
        ([[1, 2], [3]], "input", "token-id arrays"),
        ([{"text": 5}], "input[0].text", "must be a string"),
        ([{"image": ""}], "input[0].image", "non-empty string"),
        ([{"text": "a", "image": "b"}], "input[0]", "exactly one"),
        ([{"type": "audio", "audio": "x"}], "input[0]", "unsupported content part"),
        ([None], "input[0]", "must be a string"),
        (["x" * 1001], "input[0]", "characters"),
    ],
)
def test_bad_input_names_the_item(raw: object, param: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_input(raw, LIMITS)
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_more_than_max_items_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="at most 2048"):
        parse_input(["a"] * 2049, LIMITS)
    assert len(parse_input(["a"] * 2048, LIMITS)) == 2048


def test_exactly_one_of_input_or_messages() -> None:
    with pytest.raises(InvalidRequestError, match="exactly one"):
        parse_request_items(None, None, LIMITS)
    with pytest.raises(InvalidRequestError, match="exactly one"):
        parse_request_items("a", [{"content": "b"}], LIMITS)
    assert parse_request_items(None, [{"content": "b"}], LIMITS) == [TextItem("b", "messages[0].content")]
