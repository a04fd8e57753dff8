"""Parse the many shapes of embedding input into plain text and image items.

Accepted per item: a string (text, or an image when it is a data URI of an image: litellm's multimodal
convention); {"text": s}; {"image": src}; OpenAI content parts {"type": "text", "text": s} and
{"type": "image_url", "image_url": {"url": src}} (or a bare string); and chat-style `messages` whose content
parts become one item each, in order. An image source is a data URI, raw base64, or an http(s) URL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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

# What a bare string item is: "auto" (a text, unless it is a data URI of an image), or what Infinity's
# `modality` field says every bare string is.
StringKind = Literal["auto", "text", "image"]
MODALITIES: tuple[StringKind, ...] = ("text", "image")

# The header of a data URI (RFC 2397): data:[type/subtype][;param...][;base64], up to the first comma. Matched
# on the first _DATA_URI_HEADER_CHARS characters only, so a long string is never scanned for it.
_DATA_URI = re.compile(
    r"data:(?P<type>[-\w.+!#$&^]+/[-\w.+!#$&^]+)?(?P<params>(?:;[^;,\s]+)*),", re.IGNORECASE
)
_DATA_URI_HEADER_CHARS = 1024
# Declared media types an {"image": ...} data URI may carry: images, and the generic byte types some clients
# send for any file. The bytes themselves decide whether it is an image.
_GENERIC_MEDIA_TYPES = ("", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class InputLimits:
    max_items: int
    max_text_chars: int


def parse_request_items(
    raw_input: Any, messages: Sequence[Any] | None, limits: InputLimits, modality: str | None = None
) -> list[InputItem]:
    """The items of a request that carries either `input` or chat-style `messages`.

    `modality` is Infinity's field: "text" (every bare string of `input` is a text) or "image" (every bare
    string is an image source); None reads each bare string as parse_item does.
    """
    if (raw_input is None) == (messages is None):
        raise InvalidRequestError("send exactly one of 'input' or 'messages'", param="input")
    strings = parse_modality(modality)
    if messages is not None:
        if modality is not None:
            raise InvalidRequestError(
                "'modality' applies to 'input' only; in 'messages', give each content part its type",
                param="modality",
            )
        return parse_messages(messages, limits)
    return parse_input(raw_input, limits, strings)


def parse_modality(modality: str | None) -> StringKind:
    """What Infinity's `modality` field makes a bare string: only "text" and "image" are embeddable here."""
    if modality is None:
        return "auto"
    for kind in MODALITIES:
        if modality == kind:
            return kind
    raise InvalidRequestError(
        f"modality {modality!r} is not supported: this CLIP model embeds 'text' and 'image'",
        param="modality",
    )


def parse_input(raw: Any, limits: InputLimits, strings: StringKind = "auto") -> list[InputItem]:
    """The items of an OpenAI-style `input` value; `strings` says what a bare string is."""
    if isinstance(raw, str):
        return [_string(raw, "input", limits, strings)]
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
    return [_item(x, f"input[{i}]", limits, strings) for i, x in enumerate(raw)]


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


def _item(raw: Any, param: str, limits: InputLimits, strings: StringKind = "auto") -> InputItem:
    if isinstance(raw, str):
        return _string(raw, param, limits, strings)
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


def _string(value: str, param: str, limits: InputLimits, strings: StringKind) -> InputItem:
    """A bare string: a text, or an image when `strings` says so or (auto) it is a data URI of an image."""
    if strings == "image":
        return _image(value, param)
    if strings == "auto" and value[:5].lower() == "data:":
        media_type = data_uri_media_type(value)
        if media_type is not None:
            if not media_type.startswith("image/"):
                raise InvalidRequestError(
                    f"{param} is a data URI of {media_type or 'text/plain (no media type)'}, not of an image: "
                    "send an image as data:image/<format>;base64,<data>, and a text as the text itself",
                    param=param,
                )
            return _image(value, param)
    return _text(value, param, limits)


def data_uri_media_type(value: str) -> str | None:
    """The media type (lowercased; "" when none is declared) of a string that is a data URI, else None."""
    match = _DATA_URI.match(value[:_DATA_URI_HEADER_CHARS])
    if match is None:
        return None
    return (match.group("type") or "").lower()


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
    param = param.removesuffix(".image_url").removesuffix(".image")
    if value[:5].lower() == "data:":
        media_type = data_uri_media_type(value)
        if media_type is None:
            raise InvalidRequestError(
                f"{param} starts with 'data:' but is not a data URI: send data:image/<format>;base64,<data>",
                param=param,
                code="invalid_image",
            )
        if not media_type.startswith("image/") and media_type not in _GENERIC_MEDIA_TYPES:
            raise InvalidRequestError(
                f"{param} is a data URI of {media_type}, not of an image: send data:image/<format>;base64,<data>",
                param=param,
                code="invalid_image",
            )
    return ImageItem(value, param)
