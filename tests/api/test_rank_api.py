"""/v1/rank: documents ordered by cosine to the query, in the rerank shape."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from tests.support import encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio

IMAGES = [base64.b64encode(encode_image(gradient_image(seed=i), "PNG")).decode() for i in range(3)]
DOCS = ["a cat", {"image": IMAGES[0]}, {"type": "text", "text": "a rocket"}, {"image": IMAGES[1]}, "coffee"]


@pytest.mark.parametrize(
    "query",
    ["a photo of a cat", {"image": IMAGES[2]}, {"type": "image_url", "image_url": {"url": IMAGES[2]}}],
)
async def test_documents_come_back_ordered_by_cosine(tiny_runtime, tmp_path: Path, query: object) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        ranked = (
            await client.post(
                "/v1/rank",
                json={"model": "CLIP-ViT-B-32-laion2B-s34B-b79K", "query": query, "documents": DOCS},
            )
        ).json()
        embedded = vectors((await client.post("/v1/embeddings", json={"input": [query, *DOCS]})).json())
    cosines = embedded[1:] @ embedded[0]
    want = np.argsort(-cosines, kind="stable")
    assert [r["index"] for r in ranked["results"]] == want.tolist()
    np.testing.assert_allclose([r["relevance_score"] for r in ranked["results"]], cosines[want], atol=1e-5)
    assert ranked["results"][0]["document"] == (
        {"text": DOCS[want[0]]} if isinstance(DOCS[want[0]], str) else DOCS[want[0]]
    )
    assert ranked["usage"]["image_count"] == 2 + (0 if isinstance(query, str) else 1)
    assert ranked["model"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


async def test_top_n_and_return_documents(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        full = (await client.post("/v1/rank", json={"query": "cat", "documents": DOCS})).json()
        short = (
            await client.post(
                "/v1/rank", json={"query": "cat", "documents": DOCS, "top_n": 2, "return_documents": False}
            )
        ).json()
    assert len(short["results"]) == 2
    assert [r["index"] for r in short["results"]] == [r["index"] for r in full["results"][:2]]
    assert all("document" not in r for r in short["results"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "cat", "documents": []}, "documents"),
        ({"query": "", "documents": ["a"]}, "query"),
        ({"query": "cat", "documents": ["a", ""]}, "documents[1]"),
        ({"query": "cat", "documents": ["a"], "top_n": 0}, "top_n"),
        ({"query": "cat", "documents": ["d"] * 6}, "documents"),
        ({"documents": ["a"]}, "query"),
        ({"query": "cat"}, "documents"),
        ({"query": "cat", "documents": [{"image": "%%%"}]}, "documents[0]"),
    ],
)
async def test_bad_rank_requests_are_400s(
    tiny_runtime, tmp_path: Path, body: dict[str, object], param: str
) -> None:
    async with running_app(tiny_runtime, tmp_path, max_rank_documents=5) as (client, _):
        response = await client.post("/v1/rank", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
