"""Parse the many shapes of embedding input into plain text and image items.

Accepted per item: a string (text); {"text": s}; {"image": src}; OpenAI content parts
{"type": "text", "text": s} and {"type": "image_url", "image_url": {"url": src}} (or a bare string);
and chat-style `messages` whose content parts become one item each, in order. An image source is a data
URI, raw base64, or an http(s) URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clipserve.errors import InvalidRequestError
from clipserve.service.text_checks import is_blank


@dataclass(frozen=True)
class TextItem:
    text: str
    param: str = "input"  # where the item sits in the request, for error messages


@dataclass(frozen=True)
class ImageItem:
    source: str  # data URI, base64, or http(s) URL
    param: str = "input"


InputItem = TextItem | ImageItem


@dataclass(frozen=True)
class InputLimits:
    max_items: int
    max_text_chars: int


def parse_request_items(
    raw_input: Any, messages: Sequence[Any] | None, limits: InputLimits
) -> list[InputItem]:
    """The items of a request that carries either `input` or chat-style `messages`."""
    if (raw_input is None) == (messages is None):
        raise InvalidRequestError("send exactly one of 'input' or 'messages'", param="input")
    return parse_input(raw_input, limits) if messages is None else parse_messages(messages, limits)


def parse_input(raw: Any, limits: InputLimits) -> list[InputItem]:
    """The items of an OpenAI-style `input` value."""
    if isinstance(raw, str):
        return [_text(raw, "input", limits)]
    if not isinstance(raw, list):
        raise InvalidRequestError(
            "'input' must be a string or a list of strings, text items or image items", param="input"
        )
    if not raw:
        raise InvalidRequestError("'input' must not be empty", param="input")
    _check_count(len(raw), limits, "input")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw) or any(
        isinstance(x, list) for x in raw
    ):
        raise InvalidRequestError(
            "token-id arrays are not accepted: CLIP uses its own tokenizer, so send the text itself "
            "(with LangChain's OpenAIEmbeddings, set check_embedding_ctx_length=False)",
            param="input",
        )
    return [_item(x, f"input[{i}]", limits) for i, x in enumerate(raw)]


def parse_messages(messages: Sequence[Any], limits: InputLimits) -> list[InputItem]:
    """The items of a vLLM-style chat body: every content part of every message, in order."""
    if not messages:
        raise InvalidRequestError("'messages' must not be empty", param="messages")
    items: list[InputItem] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict) or "content" not in message:
            raise InvalidRequestError("each message must be an object with 'content'", param=param)
        content = message["content"]
        if isinstance(content, str):
            items.append(_text(content, f"{param}.content", limits))
        elif isinstance(content, list) and content:
            items.extend(_item(part, f"{param}.content[{j}]", limits) for j, part in enumerate(content))
        else:
            raise InvalidRequestError(
                "message content must be a string or a list of content parts", param=param
            )
        _check_count(len(items), limits, "messages")
    return items


def _check_count(count: int, limits: InputLimits, param: str) -> None:
    if count > limits.max_items:
        raise InvalidRequestError(
            f"too many inputs: {count}; at most {limits.max_items} per request", param=param
        )


def parse_item(raw: Any, param: str, limits: InputLimits) -> InputItem:
    """One item in any accepted form (string, text/image object, or OpenAI content part)."""
    return _item(raw, param, limits)


def parse_items(raw: Any, param: str, limits: InputLimits) -> list[InputItem]:
    """A non-empty list of items (or one item), e.g. /v1/classify's images or /v1/rank's documents."""
    if not isinstance(raw, list):
        return [_item(raw, param, limits)]
    if not raw:
        raise InvalidRequestError(f"'{param}' must not be empty", param=param)
    _check_count(len(raw), limits, param)
    return [_item(x, f"{param}[{i}]", limits) for i, x in enumerate(raw)]


def parse_image_items(raw: Any, param: str, limits: InputLimits) -> list[InputItem]:
    """Like parse_items, but where only images make sense: a bare string is an image source, not a text."""
    if isinstance(raw, str):
        return [_image(raw, param)]
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        _check_count(len(raw), limits, param)
        return [_image(x, f"{param}[{i}]") for i, x in enumerate(raw)]
    return parse_items(raw, param, limits)


def _item(raw: Any, param: str, limits: InputLimits) -> InputItem:
    if isinstance(raw, str):
        return _text(raw, param, limits)
    if not isinstance(raw, dict):
        raise InvalidRequestError(
            f"{param} must be a string, {{'text': ...}}, {{'image': ...}} or an OpenAI content part",
            param=param,
        )
    kind = raw.get("type")
    if kind == "text" or (kind is None and "text" in raw and "image" not in raw):
        return _text(raw.get("text"), f"{param}.text", limits)
    if kind == "image_url":
        image_url = raw.get("image_url")
        source = image_url.get("url") if isinstance(image_url, dict) else image_url
        return _image(source, f"{param}.image_url")
    if kind in ("image", "input_image") or (kind is None and "image" in raw and "text" not in raw):
        return _image(raw.get("image", raw.get("image_url")), f"{param}.image")
    if kind is not None:
        raise InvalidRequestError(
            f"unsupported content part type {kind!r}: use 'text' or 'image_url'", param=param
        )
    raise InvalidRequestError(f"{param} must have exactly one of 'text' or 'image'", param=param)


def _text(value: Any, param: str, limits: InputLimits) -> TextItem:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{param} must be a string, got {type(value).__name__}", param=param)
    if value == "":
        raise InvalidRequestError(
            f"{param} is an empty string; every input must be non-empty", param=param, code="empty_text"
        )
    if len(value) > limits.max_text_chars:  # first: the blank check below scans the text
        raise InvalidRequestError(
            f"{param} is {len(value)} characters; the limit is {limits.max_text_chars} "
            "(CLIP reads only the first 77 tokens)",
            param=param,
        )
    if is_blank(value):  # "" once open_clip cleans it: refused like "", not embedded as an empty prompt
        raise InvalidRequestError(
            f"{param} is blank (only whitespace or control characters); every input must have text",
            param=param,
            code="empty_text",
        )
    return TextItem(value, param.removesuffix(".text"))


def _image(value: Any, param: str) -> ImageItem:
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(
            f"{param} must be a non-empty string: a data URI, base64, or an http(s) URL", param=param
        )
    return ImageItem(value, param.removesuffix(".image_url").removesuffix(".image"))
