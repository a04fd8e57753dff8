from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import torch

from clipserve.runtime.images import decode_image
from tests.support import data_uri, encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio

PNG = encode_image(gradient_image(), "PNG")
B64 = base64.b64encode(PNG).decode()


def expected_text(runtime, texts: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    return runtime.encode_texts(runtime.tokenize(texts).ids)


def expected_image(runtime, data: bytes) -> np.ndarray:  # type: ignore[no-untyped-def]
    pixels = runtime.preprocess(decode_image(data, max_pixels=10**8))
    return runtime.encode_images(torch.stack([pixels]))[0]


async def test_a_string_gets_one_unit_vector_of_512_floats(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": "a photo of a cat"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert body["data"][0]["object"] == "embedding"
    (vector,) = vectors(body)
    assert vector.shape == (512,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    np.testing.assert_allclose(vector, expected_text(tiny_runtime, ["a photo of a cat"])[0], atol=1e-6)


async def test_every_text_form_gives_the_same_vector(tiny_runtime, tmp_path: Path) -> None:
    text = "a dog in the snow"
    bodies = [
        {"input": text},
        {"input": [text]},
        {"input": [{"text": text}]},
        {"input": [{"type": "text", "text": text}]},
        {"messages": [{"role": "user", "content": text}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]},
    ]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        results = [vectors((await client.post("/v1/embeddings", json=b)).json())[0] for b in bodies]
    for result in results:
        np.testing.assert_array_equal(result, results[0])


async def test_every_image_form_gives_the_same_vector(tiny_runtime, tmp_path: Path) -> None:
    uri = data_uri(PNG)
    bodies = [
        {"input": [{"image": uri}]},
        {"input": [{"image": B64}]},
        {"input": [{"type": "image_url", "image_url": {"url": uri}}]},
        {"input": [{"type": "image_url", "image_url": {"url": B64}}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}]}]},
    ]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        results = [vectors((await client.post("/v1/embeddings", json=b)).json())[0] for b in bodies]
    reference = expected_image(tiny_runtime, PNG)
    for result in results:
        np.testing.assert_allclose(result, reference, atol=1e-6)


async def test_mixed_inputs_keep_their_order_and_usage_counts_both(tiny_runtime, tmp_path: Path) -> None:
    texts = ["first text", "second, longer text about a cat"]
    body = {"input": [texts[0], {"image": B64}, {"text": texts[1]}]}
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = (await client.post("/v1/embeddings", json=body)).json()
    got = vectors(response)
    want_texts = expected_text(tiny_runtime, texts)
    np.testing.assert_allclose(got[0], want_texts[0], atol=1e-6)
    np.testing.assert_allclose(got[1], expected_image(tiny_runtime, PNG), atol=1e-6)
    np.testing.assert_allclose(got[2], want_texts[1], atol=1e-6)
    tokens = sum(tiny_runtime.tokenize(texts).token_counts)
    assert response["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens, "image_count": 1}


async def test_base64_encoding_round_trips_the_float_vectors(tiny_runtime, tmp_path: Path) -> None:
    body = {"input": ["a", "b", {"image": B64}]}
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        as_float = (await client.post("/v1/embeddings", json=body)).json()
        as_b64 = (await client.post("/v1/embeddings", json={**body, "encoding_format": "base64"})).json()
    assert all(isinstance(d["embedding"], str) for d in as_b64["data"])
    np.testing.assert_array_equal(vectors(as_b64), vectors(as_float))


@pytest.mark.parametrize(
    "model",
    [
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "CLIP-ViT-B-32-laion2B-s34B-b79K",
        "ViT-B-32/laion2b_s34b_b79k",
    ],
)
async def test_model_accepts_the_hub_id_and_short_names(tiny_runtime, tmp_path: Path, model: str) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": "x", "model": model})
    assert response.status_code == 200
    assert response.json()["model"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


async def test_dimensions_512_is_fine_and_anything_else_is_a_400(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        ok = await client.post("/v1/embeddings", json={"input": "x", "dimensions": 512})
        bad = await client.post("/v1/embeddings", json={"input": "x", "dimensions": 256})
    assert ok.status_code == 200
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "dimensions"
    assert "512" in bad.json()["error"]["message"]


async def test_every_response_says_who_it_is_and_where_time_went(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": ["a", {"image": B64}]})
        echoed = await client.post("/v1/embeddings", json={"input": "a"}, headers={"x-request-id": "my-id-1"})
        error = await client.post("/v1/embeddings", json={"input": ""})
    for name in (
        "x-request-id",
        "x-decode-time-ms",
        "x-queue-time-ms",
        "x-compute-time-ms",
        "x-total-time-ms",
    ):
        assert name in response.headers
    assert float(response.headers["x-compute-time-ms"]) > 0
    assert echoed.headers["x-request-id"] == "my-id-1"
    assert error.headers["x-request-id"].startswith("req_")
    assert response.headers["x-clipserve-weights"].startswith("random")
    assert error.headers["x-clipserve-weights"].startswith("random")


async def test_texts_tokenized_in_chunks_keep_their_order_vectors_and_token_counts(
    tiny_runtime, tmp_path: Path
) -> None:
    from clipserve.service.embeddings import TOKENIZE_CHUNK_CHARS

    # long and short texts spanning several tokenizing chunks
    texts = [f"text {i} " + "word " * (TOKENIZE_CHUNK_CHARS // 10 * (i % 3)) for i in range(9)]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json={"input": texts})
    assert response.status_code == 200, response.text
    tokenized = tiny_runtime.tokenize(texts)
    np.testing.assert_allclose(vectors(response.json()), expected_text(tiny_runtime, texts), atol=1e-6)
    assert response.json()["usage"]["prompt_tokens"] == sum(tokenized.token_counts)


def test_text_chunks_are_bounded_consecutive_runs() -> None:
    from clipserve.service.embeddings import TOKENIZE_CHUNK_CHARS, _text_chunks

    texts = ["a" * 10, "b" * (TOKENIZE_CHUNK_CHARS - 5), "c" * 3, "d" * (3 * TOKENIZE_CHUNK_CHARS), "e"]
    chunks = _text_chunks(texts)
    assert [t for chunk in chunks for t in chunk] == texts
    assert all(sum(map(len, c)) <= TOKENIZE_CHUNK_CHARS or len(c) == 1 for c in chunks)
    assert len(chunks) == 4
    assert _text_chunks([]) == [[]]
