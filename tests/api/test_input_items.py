"""What an input item is: a bare data URI of an image is that image, everywhere items are read (issue 11, items
1, 2 and 13); Infinity's `modality`; and what a bad image source is told."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from clipserve.runtime.images import decode_image
from tests.support import data_uri, encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio

PNG = encode_image(gradient_image(), "PNG")
JPEG = encode_image(gradient_image(seed=1), "JPEG")
B64 = base64.b64encode(PNG).decode()
URI = data_uri(PNG)
JPEG_URI = data_uri(JPEG, "image/jpeg")


def expected_text(runtime: Any, texts: list[str]) -> np.ndarray:
    return runtime.encode_texts(runtime.tokenize(texts).ids)


def expected_image(runtime: Any, data: bytes) -> np.ndarray:
    pixels = runtime.preprocess(decode_image(data, max_pixels=10**8))
    return runtime.encode_images(torch.stack([pixels]))[0]


async def test_a_bare_data_uri_of_an_image_is_embedded_as_that_image(tiny_runtime, tmp_path: Path) -> None:
    body = {"input": ["a photo of a cat", URI, JPEG_URI]}  # litellm's multimodal-embedding shape
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json=body)
        single = await client.post("/v1/embeddings", json={"input": URI})
    assert response.status_code == 200, response.text
    got = vectors(response.json())
    np.testing.assert_allclose(got[0], expected_text(tiny_runtime, ["a photo of a cat"])[0], atol=1e-6)
    np.testing.assert_allclose(got[1], expected_image(tiny_runtime, PNG), atol=1e-6)
    np.testing.assert_allclose(got[2], expected_image(tiny_runtime, JPEG), atol=1e-6)
    tokens = sum(tiny_runtime.tokenize(["a photo of a cat"]).token_counts)
    assert response.json()["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens, "image_count": 2}
    assert single.json()["usage"] == {"prompt_tokens": 0, "total_tokens": 0, "image_count": 1}
    np.testing.assert_allclose(vectors(single.json())[0], expected_image(tiny_runtime, PNG), atol=1e-6)


async def test_rank_reads_bare_data_uris_as_images_in_query_and_documents(
    tiny_runtime, tmp_path: Path
) -> None:
    documents = ["a cat", URI, JPEG_URI]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        ranked = await client.post("/v1/rank", json={"query": JPEG_URI, "documents": documents})
    assert ranked.status_code == 200, ranked.text
    want = np.stack(
        [
            expected_text(tiny_runtime, ["a cat"])[0],
            expected_image(tiny_runtime, PNG),
            expected_image(tiny_runtime, JPEG),
        ]
    )
    cosines = want @ expected_image(tiny_runtime, JPEG)
    scores = {r["index"]: r["relevance_score"] for r in ranked.json()["results"]}
    np.testing.assert_allclose([scores[i] for i in range(3)], cosines, atol=1e-5)
    assert ranked.json()["usage"]["image_count"] == 3


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("data:text/plain;base64,aGVsbG8=", "text/plain"),
        ("data:,hello", "no media type"),
        ("data:application/pdf;base64,JVBERi0=", "application/pdf"),
    ],
)
async def test_a_bare_data_uri_of_something_else_is_a_400(
    tiny_runtime, tmp_path: Path, value: str, named: str
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": ["ok", value]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input[1]"
    assert named in error["message"]
    assert "not of an image" in error["message"]


async def test_text_that_merely_starts_with_data_colon_is_text(tiny_runtime, tmp_path: Path) -> None:
    texts = ["data: the numbers from 2023", "Data:image is a word"]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": texts})
        explicit = await client.post("/v1/embeddings", json={"input": [{"text": URI[:200]}]})
    np.testing.assert_allclose(vectors(response.json()), expected_text(tiny_runtime, texts), atol=1e-6)
    # An explicit {"text": ...} is a text even when it looks like a data URI.
    np.testing.assert_allclose(
        vectors(explicit.json())[0], expected_text(tiny_runtime, [URI[:200]])[0], atol=1e-6
    )
    assert explicit.json()["usage"]["image_count"] == 0


async def test_modality_image_makes_bare_strings_image_sources(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        as_images = await client.post("/v1/embeddings", json={"input": [B64, URI], "modality": "image"})
        one = await client.post("/v1/embeddings", json={"input": B64, "modality": "image"})
        as_texts = await client.post("/v1/embeddings", json={"input": [URI[:100]], "modality": "text"})
    assert as_images.status_code == 200, as_images.text
    for vector in [*vectors(as_images.json()), *vectors(one.json())]:
        np.testing.assert_allclose(vector, expected_image(tiny_runtime, PNG), atol=1e-6)
    assert as_images.json()["usage"]["image_count"] == 2
    np.testing.assert_allclose(
        vectors(as_texts.json())[0], expected_text(tiny_runtime, [URI[:100]])[0], atol=1e-6
    )


@pytest.mark.parametrize("modality", ["audio", "IMAGE", ""])
async def test_an_unknown_modality_is_a_400_naming_it(tiny_runtime, tmp_path: Path, modality: str) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": "x", "modality": modality})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "modality"
    assert repr(modality) in response.json()["error"]["message"]


async def test_modality_with_messages_is_a_400(tiny_runtime, tmp_path: Path) -> None:
    body = {"messages": [{"role": "user", "content": B64}], "modality": "image"}
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "modality"


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            "data:image/png;base64,iVBOR!w0KGgo=",
            "data URI's payload (after the comma) is not valid base64: '!' at character 5",
        ),
        (
            "data:image/png;base64,ab=cd",
            "data URI's payload (after the comma) is not valid base64: its '=' padding",
        ),
        ("cat.jpg", "not an http(s) URL or a data URI, and not valid base64: '.' at character 3"),
        ("data:image/png;base64," + base64.b64encode(b"plain bytes").decode(), "could not decode the image"),
        ("data:text/plain;base64,aGVsbG8=", "data URI of text/plain, not of an image"),
        ("data:image/png;base64", "starts with 'data:' but is not a data URI"),
    ],
)
async def test_a_bad_image_source_says_what_is_wrong(
    tiny_runtime, tmp_path: Path, source: str, says: str
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": [{"image": source}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert says in error["message"], error["message"]
    assert error["param"] == "input[0]"
    assert error["code"] == "invalid_image"
    assert "neither" not in error["message"]
