"""The rerank routes of other servers' clients (/v1/rerank Jina, /v2/rerank Cohere v2, /rerank Infinity) and
the root aliases (/embeddings, /models): scores are the cosines of the server's own /v1/embeddings vectors."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.api.hostile_app import HostileServer
from tests.support import encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio

IMAGES = [base64.b64encode(encode_image(gradient_image(seed=i), "PNG")).decode() for i in range(2)]
DOCS: list[Any] = ["a cat", {"image": IMAGES[0]}, {"type": "text", "text": "a rocket"}, "coffee", "a dog"]
TEXT_OF = {0: "a cat", 2: "a rocket", 3: "coffee", 4: "a dog"}


def _expected(query: Any, embedded: np.ndarray) -> tuple[list[int], np.ndarray]:
    cosines = embedded[1:] @ embedded[0]
    order = np.argsort(-cosines, kind="stable")
    return order.tolist(), cosines[order]


async def _embed(client: Any, items: list[Any]) -> np.ndarray:
    response = await client.post("/v1/embeddings", json={"input": items})
    assert response.status_code == 200, response.text
    return vectors(response.json())


@pytest.mark.parametrize("query", ["a photo of a cat", {"image": IMAGES[1]}])
async def test_jina_rerank_scores_are_the_embeddings_cosines(
    tiny_runtime, tmp_path: Path, query: Any
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post(
            "/v1/rerank", json={"model": "jina-or-not", "query": query, "documents": DOCS}
        )
        assert response.status_code == 404  # a model this server does not serve is named, not ignored
        body = (await client.post("/v1/rerank", json={"query": query, "documents": DOCS})).json()
        want_order, want_scores = _expected(query, await _embed(client, [query, *DOCS]))
    assert set(body) == {"model", "results", "usage"}
    assert body["model"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert [r["index"] for r in body["results"]] == want_order
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], want_scores, atol=1e-6)
    # Jina returns documents by default, as {"text": ...}; an image document as {"image": source}
    assert [r["document"] for r in body["results"]] == [
        {"text": TEXT_OF[i]} if i in TEXT_OF else {"image": IMAGES[0]} for i in want_order
    ]
    images = 1 + (0 if isinstance(query, str) else 1)
    assert body["usage"]["image_count"] == images
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


async def test_cohere_v2_rerank_shape_top_n_and_return_documents(tiny_runtime, tmp_path: Path) -> None:
    query = "a photo of a dog"
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        plain = (await client.post("/v2/rerank", json={"query": query, "documents": DOCS, "top_n": 3})).json()
        with_docs = (
            await client.post(
                "/v2/rerank",
                json={"model": "CLIP-ViT-B-32-laion2B-s34B-b79K", "query": query, "documents": DOCS,
                      "top_n": 2, "return_documents": True},
            )
        ).json()  # fmt: skip
        rank = (await client.post("/v1/rank", json={"query": query, "documents": DOCS})).json()
        want_order, want_scores = _expected(query, await _embed(client, [query, *DOCS]))
    assert set(plain) == {"id", "results", "meta"}
    assert plain["meta"]["api_version"] == {"version": "2"}
    billed = plain["meta"]["billed_units"]
    assert billed == {"input_tokens": rank["usage"]["prompt_tokens"], "images": 1}
    # Cohere's default is no document; top_n keeps the best n, in order
    assert plain["results"] == [
        {"index": i, "relevance_score": pytest.approx(float(s), abs=1e-6)}
        for i, s in zip(want_order[:3], want_scores[:3], strict=True)
    ]
    assert [r["index"] for r in with_docs["results"]] == want_order[:2]
    assert [r["document"] for r in with_docs["results"]] == [
        {"text": TEXT_OF[i]} if i in TEXT_OF else {"image": IMAGES[0]} for i in want_order[:2]
    ]
    assert plain["id"] != with_docs["id"]


async def test_infinity_rerank_shape_has_string_documents(tiny_runtime, tmp_path: Path) -> None:
    query = "a rocket"
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        # what infinity-client sends by default: its placeholder model name and raw_scores
        bare = (
            await client.post(
                "/rerank",
                json={
                    "model": "default/not-specified",
                    "query": query,
                    "documents": DOCS,
                    "raw_scores": False,
                },
            )
        ).json()
        full = (
            await client.post("/rerank", json={"query": query, "documents": DOCS, "return_documents": True,
                                               "top_n": 4})
        ).json()  # fmt: skip
        want_order, want_scores = _expected(query, await _embed(client, [query, *DOCS]))
    assert bare["object"] == "rerank"
    assert set(bare) == {"object", "id", "created", "model", "results", "usage"}
    assert bare["model"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert isinstance(bare["created"], int)
    assert bare["usage"]["prompt_tokens"] == bare["usage"]["total_tokens"] > 0
    assert [r["index"] for r in bare["results"]] == want_order
    np.testing.assert_allclose([r["relevance_score"] for r in bare["results"]], want_scores, atol=1e-6)
    assert all("document" not in r for r in bare["results"])  # Infinity's default: no documents
    assert [r["index"] for r in full["results"]] == want_order[:4]
    assert [r["document"] for r in full["results"]] == [TEXT_OF.get(i, IMAGES[0]) for i in want_order[:4]]


@pytest.mark.parametrize("path", ["/v1/rank", "/v1/rerank", "/v2/rerank", "/rerank"])
async def test_a_text_against_itself_scores_exactly_one(tiny_runtime, tmp_path: Path, path: str) -> None:
    # the float32 cosine of a unit vector with itself is 1.0000002 for some texts; a score never exceeds 1
    texts = [f"a photo of thing number {i}" for i in range(40)]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        embedded = await _embed(client, texts)
        # the product the service computes (documents @ query), from the same vectors
        self_scores = np.array([(embedded @ embedded[i])[i] for i in range(len(texts))])
        assert self_scores.max() > 1.0, "no self-cosine rounds above 1: the test would prove nothing"
        query = int(self_scores.argmax())
        body = (await client.post(path, json={"query": texts[query], "documents": texts})).json()
    scores = [r["relevance_score"] for r in body["results"]]
    assert body["results"][0]["index"] == query
    assert scores[0] == 1.0
    assert max(scores) <= 1.0


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "cat", "documents": []}, "documents"),
        ({"query": "", "documents": ["a"]}, "query"),
        ({"query": "cat", "documents": ["a", ""]}, "documents[1]"),
        ({"query": "cat", "documents": ["a"], "top_n": 0}, "top_n"),
        ({"query": "cat", "documents": ["d"] * 6}, "documents"),
        ({"documents": ["a"]}, "query"),
        ({"query": "cat", "documents": [{"image": "%%%"}]}, "documents[0]"),
        ({"query": "cat", "documents": ["a"], "rank_fields": ["title"]}, "rank_fields"),
    ],
)
async def test_bad_rerank_requests_are_400s(
    tiny_runtime, tmp_path: Path, path: str, body: dict[str, object], param: str
) -> None:
    async with running_app(tiny_runtime, tmp_path, max_rank_documents=5) as (client, _):
        response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_root_aliases_answer_as_their_v1_routes(tiny_runtime, tmp_path: Path) -> None:
    items = ["a cat", {"image": IMAGES[0]}]
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        v1 = (await client.post("/v1/embeddings", json={"input": items})).json()
        # infinity-client's embeddings body: its placeholder model name and dimensions 0 ("as trained")
        root = await client.post(
            "/embeddings", json={"model": "default/not-specified", "input": items, "dimensions": 0}
        )
        assert root.status_code == 200, root.text
        assert (
            await client.post("/v1/embeddings", json={"input": "a", "dimensions": None})
        ).status_code == 200
        assert (
            await client.post("/v1/embeddings", json={"input": "a", "dimensions": 256})
        ).status_code == 400
        models = (await client.get("/models")).json()
        card = (await client.get("/models/CLIP-ViT-B-32-laion2B-s34B-b79K")).json()
        missing = await client.get("/models/no-such-model")
        openai_models = (await client.get("/v1/models")).json()
        schema = (await client.get("/openapi.json")).json()
    np.testing.assert_array_equal(vectors(root.json()), vectors(v1))
    assert root.json()["usage"] == v1["usage"]
    assert card["id"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    # /models is Infinity's shape (infinity-client requires `stats` and refuses any owner but "infinity"): the same
    # model as /v1/models, with its queue as stats and no owner
    (entry,) = models["data"]
    assert models["object"] == "list"
    assert entry["id"] == openai_models["data"][0]["id"]
    assert entry["created"] == openai_models["data"][0]["created"]
    assert entry["stats"] == {"queue_absolute": 0, "batch_size": 32}
    assert "owned_by" not in entry
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "model"
    # each operation is listed once, under /v1 (and the rerank shapes under their own paths)
    assert {"/embeddings", "/models", "/models/{model_id}"}.isdisjoint(schema["paths"])
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/v1/embeddings"} <= set(schema["paths"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/embeddings", {"input": ["a cat", "a dog"]}),
        ("GET", "/models", None),
        ("GET", "/models/CLIP-ViT-B-32-laion2B-s34B-b79K", None),
        ("POST", "/rerank", {"query": "a", "documents": ["a cat", "a dog"]}),
        ("POST", "/v1/rerank", {"query": "a", "documents": ["a cat", "a dog"]}),
        ("POST", "/v2/rerank", {"query": "a", "documents": ["a cat", "a dog"]}),
    ],
)
def test_aliases_and_rerank_routes_need_a_key_and_bill_as_v1(
    auth_server: HostileServer, method: str, path: str, body: dict[str, Any] | None
) -> None:
    client = auth_server.client
    assert client.request(method, path, json=body).status_code == 401
    answer = client.request(method, path, json=body, headers=auth_server.auth_headers(path))
    assert answer.status_code == 200, answer.text
    if body is None:
        return
    twin = "/v1/embeddings" if path == "/embeddings" else "/v1/rank"
    reference = client.post(twin, json=body, headers=auth_server.auth_headers(twin))
    assert int(answer.headers["x-request-cost-micros"]) == int(reference.headers["x-request-cost-micros"]) > 0
