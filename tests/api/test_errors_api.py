"""Every bad input gets a clear 4xx in OpenAI's error shape; never a 500."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.support import encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio

PNG_B64 = base64.b64encode(encode_image(gradient_image(), "PNG")).decode()
TRUNCATED_JPEG_B64 = base64.b64encode(encode_image(gradient_image(), "JPEG")[:400]).decode()


def bomb_png() -> str:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(data).decode()


def assert_openai_error(
    response: Any, status: int, *, param: str | None = None, code: str | None = None
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": ""}, "input", None),
        ({"input": ["fine", ""]}, "input[1]", None),
        ({"input": []}, "input", None),
        ({"input": 42}, "input", None),
        ({"input": [1, 2, 3]}, "input", None),
        ({"input": [{"text": 3}]}, "input[0].text", None),
        ({"input": [{"image": "%%% not base64 %%%"}]}, "input[0]", "invalid_image"),
        ({"input": [{"image": base64.b64encode(b"just text").decode()}]}, "input[0]", "invalid_image"),
        ({"input": ["ok", {"image": TRUNCATED_JPEG_B64}]}, "input[1]", "invalid_image"),
        ({"input": [{"image": bomb_png()}]}, "input[0]", "image_too_large"),
        ({"input": [{"image": "file:///etc/passwd"}]}, "input[0]", "invalid_image"),
        (
            {"input": [{"type": "image_url", "image_url": {"url": "gopher://x/y"}}]},
            "input[0]",
            "invalid_image",
        ),
        ({"input": ["x"] * 2049}, "input", None),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", None),
        ({"input": "x", "dimensions": "many"}, "dimensions", None),
        ({"input": "x", "dimensions": 1024}, "dimensions", None),
        ({}, "input", None),
        ({"input": "x", "messages": [{"content": "y"}]}, "input", None),
        ({"messages": [{"role": "user"}]}, "messages[0]", None),
        ({"messages": "hello"}, "messages", None),
    ],
)
async def test_bad_requests_get_a_400_that_names_the_problem(
    tiny_runtime, tmp_path: Path, body: dict[str, Any], param: str, code: str | None
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json=body)
    assert_openai_error(response, 400, param=param, code=code)


async def test_unknown_model_is_a_404_model_not_found(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"})
        retrieve = await client.get("/v1/models/gpt-4")
    assert_openai_error(response, 404, param="model", code="model_not_found")
    assert_openai_error(retrieve, 404, code="model_not_found")


async def test_malformed_json_and_non_object_bodies_are_400s(tiny_runtime, tmp_path: Path) -> None:
    headers = {"content-type": "application/json"}
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        broken = await client.post("/v1/embeddings", content=b'{"input": ', headers=headers)
        array = await client.post("/v1/embeddings", content=b"[1, 2]", headers=headers)
    assert_openai_error(broken, 400, code="invalid_json")
    assert_openai_error(array, 400)


async def test_unknown_routes_and_methods_use_the_error_shape(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        missing = await client.post("/v1/nothing-here", json={})
        wrong_method = await client.get("/v1/embeddings")
    assert_openai_error(missing, 404)
    assert_openai_error(wrong_method, 405)


async def test_oversized_bodies_are_413_whether_declared_or_streamed(tiny_runtime, tmp_path: Path) -> None:
    big = {"input": ["word " * 500] * 20}  # ~50 kB
    async with running_app(tiny_runtime, tmp_path, max_request_bytes=16 * 1024) as (client, _):
        declared = await client.post("/v1/embeddings", json=big)

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(40):
                yield b" " * 1024

        streamed = await client.post(
            "/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}
        )
        fine = await client.post("/v1/embeddings", json={"input": "still works"})
    assert_openai_error(declared, 413, code="request_too_large")
    assert_openai_error(streamed, 413, code="request_too_large")
    assert fine.status_code == 200


async def test_image_caps_are_configurable(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path, max_image_pixels=1000, max_image_bytes=2048) as (
        client,
        _,
    ):
        too_many_pixels = await client.post("/v1/embeddings", json={"input": [{"image": PNG_B64}]})
        small = base64.b64encode(encode_image(gradient_image(20, 20), "PNG")).decode()
        fine = await client.post("/v1/embeddings", json={"input": [{"image": small}]})
    assert_openai_error(too_many_pixels, 400, code="image_too_large")
    assert fine.status_code == 200


async def test_text_over_the_character_cap_is_a_400(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path, max_text_chars=100) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": ["ok", "y" * 101]})
    assert_openai_error(response, 400, param="input[1]")
