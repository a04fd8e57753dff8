"""/v1/classify in Jina's and Hugging Face's shapes, the prompt cache, and its limits."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from clipserve.runtime.images import decode_image
from tests.support import encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio

IMAGES = [base64.b64encode(encode_image(gradient_image(seed=i), "PNG")).decode() for i in range(3)]
LABELS = ["cat", "dog", "rocket", "coffee"]


async def test_scores_are_a_softmax_over_labels_best_first(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post(
            "/v1/classify",
            json={
                "model": "CLIP-ViT-B-32-laion2B-s34B-b79K",
                "input": [{"image": i} for i in IMAGES],
                "labels": LABELS,
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    for entry in body["data"]:
        scores = [p["score"] for p in entry["predictions"]]
        assert entry["object"] == "classification"
        assert sorted(p["label"] for p in entry["predictions"]) == sorted(LABELS)
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert (entry["prediction"], entry["score"]) == (entry["predictions"][0]["label"], scores[0])
    assert body["usage"]["image_count"] == 3
    assert "x-compute-time-ms" in response.headers


async def test_top_k_multi_label_and_the_image_shorthand(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        top2 = (
            await client.post("/v1/classify", json={"image": IMAGES[0], "labels": LABELS, "top_k": 2})
        ).json()
        full = (
            await client.post("/v1/classify", json={"image": {"image": IMAGES[0]}, "labels": LABELS})
        ).json()
        multi = (
            await client.post(
                "/v1/classify", json={"image": IMAGES[0], "labels": LABELS, "multi_label": True}
            )
        ).json()
    assert top2["data"][0]["predictions"] == full["data"][0]["predictions"][:2]
    cosines = {p["label"]: p["score"] for p in multi["data"][0]["predictions"]}
    # each label's score is the plain cosine between the image and "a photo of a {label}." (docs/api.md)
    image = tiny_runtime.preprocess(decode_image(base64.b64decode(IMAGES[0]), max_pixels=10**8))[None]
    image_vector = tiny_runtime.encode_images(image)[0]
    label_vectors = tiny_runtime.encode_texts(
        tiny_runtime.tokenize([f"a photo of a {x}." for x in LABELS]).ids
    )
    want = dict(zip(LABELS, (label_vectors @ image_vector).tolist(), strict=True))
    assert cosines == pytest.approx(want, abs=1e-5)
    # the same order: softmax is monotonic in the cosine
    assert [p["label"] for p in multi["data"][0]["predictions"]] == [
        p["label"] for p in full["data"][0]["predictions"]
    ]


async def test_a_repeated_label_set_is_served_from_the_cache(tiny_runtime, tmp_path: Path) -> None:
    body = {"image": IMAGES[0], "labels": LABELS, "template": "a photo of a {}, a type of thing."}
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        cold = (await client.post("/v1/classify", json=body)).json()
        warm = (await client.post("/v1/classify", json=body)).json()
        metrics = (await client.get("/metrics")).text
    assert cold["usage"]["prompt_tokens"] > 0
    assert cold["usage"]["cached_tokens"] == 0
    assert warm["usage"]["prompt_tokens"] == 0
    assert warm["usage"]["cached_tokens"] == cold["usage"]["prompt_tokens"]
    assert warm["data"] == cold["data"]
    assert re.search(r"^clipserve_prompt_cache_hits_total 4\.0$", metrics, re.MULTILINE)
    assert re.search(r"^clipserve_prompt_cache_misses_total 4\.0$", metrics, re.MULTILINE)
    assert re.search(r"^clipserve_prompt_cache_entries 4\.0$", metrics, re.MULTILINE)


async def test_the_hugging_face_shape_returns_a_sorted_label_list(tiny_runtime, tmp_path: Path) -> None:
    # Exactly what huggingface_hub's InferenceClient.zero_shot_image_classification sends.
    hf_body = {"inputs": IMAGES[1], "parameters": {"candidate_labels": LABELS}}
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        hf = await client.post("/v1/classify", json=hf_body)
        with_template = await client.post(
            "/v1/classify",
            json={"inputs": IMAGES[1], "parameters": {"candidate_labels": "cat, dog,rocket ,coffee",
                                                       "hypothesis_template": "a photo of a {}."}},
        )  # fmt: skip
        jina_default = (await client.post("/v1/classify", json={"image": IMAGES[1], "labels": LABELS})).json()
        jina_hf_template = (
            await client.post(
                "/v1/classify",
                json={"image": IMAGES[1], "labels": LABELS, "template": "This is a photo of {}."},
            )
        ).json()
    assert hf.status_code == 200
    payload = hf.json()
    assert isinstance(payload, list)
    assert set(payload[0]) == {"label", "score"}
    assert [p["score"] for p in payload] == sorted((p["score"] for p in payload), reverse=True)
    assert payload == jina_hf_template["data"][0]["predictions"]  # HF's default template
    assert with_template.json() == jina_default["data"][0]["predictions"]  # comma-separated labels


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"image": IMAGES[0], "labels": ["cat", "cat", "dog"]}, "labels"),
        ({"image": IMAGES[0], "labels": ["cat", " "]}, "labels[1]"),
        ({"image": IMAGES[0], "labels": ["cat"]}, "labels"),
        ({"image": IMAGES[0], "labels": [f"l{i}" for i in range(11)]}, "labels"),
        ({"image": IMAGES[0], "labels": LABELS, "template": "no placeholder"}, "template"),
        ({"image": IMAGES[0], "labels": LABELS, "template": "unknown-set"}, "template"),
        (
            {"image": IMAGES[0], "labels": LABELS, "template": "openai-imagenet"},
            "labels",
        ),  # 4 x 80 > 100 prompts
        ({"image": IMAGES[0], "labels": LABELS, "top_k": 0}, "top_k"),
        ({"input": ["a text, not an image"], "labels": LABELS}, "input"),
        ({"input": [{"image": IMAGES[0]}], "image": IMAGES[0], "labels": LABELS}, "input"),
        ({"labels": LABELS}, "input"),
        ({"image": IMAGES[0]}, "labels"),
        ({"image": IMAGES[0], "labels": "cat"}, "labels"),
        ({"image": "not-an-image", "labels": LABELS}, "image"),
        ({"inputs": IMAGES[0], "parameters": {}}, "parameters.candidate_labels"),
    ],
)
async def test_bad_classify_requests_are_400s(
    tiny_runtime, tmp_path: Path, body: dict[str, object], param: str
) -> None:
    async with running_app(tiny_runtime, tmp_path, max_labels=10, max_prompts_per_request=100) as (client, _):
        response = await client.post("/v1/classify", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_classify_unknown_model_is_404(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post(
            "/v1/classify", json={"model": "siglip", "image": IMAGES[0], "labels": LABELS}
        )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_classify_agrees_with_embeddings(tiny_runtime, tmp_path: Path) -> None:
    """Scores are softmax(logit_scale * cos) of the same vectors /v1/embeddings returns."""
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        body = (await client.post("/v1/classify", json={"image": IMAGES[2], "labels": LABELS})).json()
        texts = (
            await client.post("/v1/embeddings", json={"input": [f"a photo of a {x}." for x in LABELS]})
        ).json()
        image = (await client.post("/v1/embeddings", json={"input": [{"image": IMAGES[2]}]})).json()
    t = np.array([d["embedding"] for d in texts["data"]])
    i = np.array(image["data"][0]["embedding"])
    logits = tiny_runtime.logit_scale * (t @ i)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = {p["label"]: p["score"] for p in body["data"][0]["predictions"]}
    np.testing.assert_allclose([got[x] for x in LABELS], expected, atol=1e-5)
