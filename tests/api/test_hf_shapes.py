"""Hugging Face's feature-extraction and sentence-similarity shapes (issue 11, item 5): on / (an Inference
Endpoint's URL), /embed and /similarity (TEI's), the numbers are /v1/embeddings' vectors and their cosines."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from tests.support import bearer, encode_image, gradient_image, open_accounts, running_app, vectors

pytestmark = pytest.mark.anyio

TEXTS = ["a photo of a cat", "a diagram of a rocket", "coffee"]
IMAGE = base64.b64encode(encode_image(gradient_image(), "PNG")).decode()


@pytest.mark.parametrize("path", ["/", "/embed"])
async def test_feature_extraction_answers_embeddings_vectors(tiny_runtime, tmp_path: Path, path: str) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        reference = vectors((await client.post("/v1/embeddings", json={"input": TEXTS})).json())
        many = await client.post(path, json={"inputs": TEXTS, "normalize": True, "truncate": True})
        one = await client.post(path, json={"inputs": TEXTS[0]})
        one_reference = vectors((await client.post("/v1/embeddings", json={"input": TEXTS[0]})).json())
        image = await client.post(path, json={"inputs": [{"image": IMAGE}]})
        image_reference = vectors(
            (await client.post("/v1/embeddings", json={"input": [{"image": IMAGE}]})).json()
        )
    assert many.status_code == 200, many.text
    np.testing.assert_array_equal(np.asarray(many.json(), dtype=np.float32), reference)
    assert len(one.json()) == 1  # a single string: still a list of one embedding, as TEI answers
    np.testing.assert_array_equal(
        np.asarray(one.json(), dtype=np.float32), one_reference
    )  # the same batch of one
    np.testing.assert_array_equal(np.asarray(image.json(), dtype=np.float32), image_reference)


@pytest.mark.parametrize("path", ["/", "/similarity"])
async def test_sentence_similarity_answers_the_cosines(tiny_runtime, tmp_path: Path, path: str) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        reference = vectors((await client.post("/v1/embeddings", json={"input": TEXTS})).json())
        body = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS}, "parameters": {}}
        response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    expected = reference.astype(np.float64) @ reference[0].astype(np.float64)
    scores = response.json()
    assert scores == pytest.approx(expected.tolist(), abs=1e-6)
    assert scores[0] <= 1.0  # a text against itself: 1, never 1.0000002


async def test_hf_shapes_are_billed_like_embeddings(tiny_runtime, tmp_path: Path, database_url: str) -> None:
    accounts = open_accounts(database_url, [1_000_000] * 3)
    requests = [
        ("/v1/embeddings", {"input": [*TEXTS, {"image": IMAGE}]}),
        ("/embed", {"inputs": [*TEXTS, {"image": IMAGE}]}),
        (
            "/similarity",
            {"inputs": {"source_sentence": TEXTS[0], "sentences": [*TEXTS[1:], {"image": IMAGE}]}},
        ),
    ]
    async with running_app(tiny_runtime, tmp_path, database_url=database_url) as (client, app):
        for (_, key), (path, body) in zip(accounts, requests, strict=True):
            response = await client.post(path, json=body, headers=bearer(key))
            assert response.status_code == 200, response.text
        charged = [app.state.context.ledger.audit(account_id).charged_micros for account_id, _ in accounts]
    assert charged[0] > 0
    assert charged == [charged[0]] * 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"inputs": "x", "normalize": False}, "normalize"),
        ({"inputs": "x", "truncate": False}, "truncate"),
        ({"inputs": "x", "truncation_direction": "left"}, "truncation_direction"),
        ({"inputs": "x", "prompt_name": "query"}, "prompt_name"),
        ({"inputs": "x", "encoding_format": "base64"}, "encoding_format"),
        ({"inputs": "x", "dimensions": 64}, "dimensions"),
        ({"inputs": []}, "inputs"),
    ],
)
async def test_what_clipserve_cannot_do_is_a_400_naming_it(
    tiny_runtime, tmp_path: Path, body: dict[str, object], param: str
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
