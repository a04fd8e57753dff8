"""Claims of docs/api.md proven through HTTP: model names, and multi_label's cosine scores."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio

HUB_ID = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
# api.md: "`laion/CLIP-ViT-B-32-laion2B-s34B-b79K`, `CLIP-ViT-B-32-laion2B-s34B-b79K`, `hf-hub:laion/...`,
# `ViT-B-32/laion2b_s34b_b79k` (case-insensitive)"
ACCEPTED = [
    "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "HF-HUB:LAION/CLIP-VIT-B-32-LAION2B-S34B-B79K",
    "hf-hub:laion/clip-vit-b-32-laion2b-s34b-b79k",
    "LAION/CLIP-VIT-B-32-LAION2B-S34B-B79K",
    "laion/clip-vit-b-32-laion2b-s34b-b79k",
    "clip-vit-b-32-laion2b-s34b-b79k",
    "CLIP-VIT-B-32-LAION2B-S34B-B79K",
    "vit-b-32/LAION2B_S34B_B79K",
    "VIT-B-32/laion2b_s34b_b79k",
]
# near misses: another hub id, the hub prefix without the owner, a different tag
REFUSED = [
    "hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    "hf-hub:CLIP-ViT-B-32-laion2B-s34B-b79K",
    "ViT-B-32/openai",
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K-x",
]
IMAGE = base64.b64encode(encode_image(gradient_image(seed=7), "PNG")).decode()
LABELS = ["cat", "dog", "rocket", "coffee", "a red car"]


async def test_model_names_are_case_insensitive_and_the_hf_hub_form_is_accepted(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        for name in ACCEPTED:
            for path, body in (
                ("/v1/embeddings", {"input": "x", "model": name}),
                ("/v1/classify", {"image": IMAGE, "labels": ["a", "b"], "model": name}),
                ("/v1/rank", {"query": "x", "documents": ["a", "b"], "model": name}),
            ):
                response = await client.post(path, json=body)
                assert response.status_code == 200, (name, path, response.text)
                if path == "/v1/embeddings":
                    assert response.json()["model"] == HUB_ID, name
        for name in REFUSED:
            response = await client.post("/v1/embeddings", json={"input": "x", "model": name})
            assert response.status_code == 404, (name, response.text)
            assert response.json()["error"]["code"] == "model_not_found"
            assert response.json()["error"]["param"] == "model"


async def test_multi_label_scores_are_the_cosines_of_the_embeddings(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    """api.md: `multi_label` gives "independent cosine scores per label (no softmax)": each score is the cosine
    of the image's and the prompt's /v1/embeddings vectors, whatever the other labels are."""
    template = "a photo of a {}."
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        multi = await client.post(
            "/v1/classify", json={"image": IMAGE, "labels": LABELS, "template": template, "multi_label": True}
        )
        assert multi.status_code == 200, multi.text
        # independent: one label alone gets the score it has among the others
        alone = await client.post(
            "/v1/classify",
            json={"image": IMAGE, "labels": [LABELS[2]], "template": template, "multi_label": True},
        )
        assert alone.status_code == 200, alone.text
        texts = (
            await client.post("/v1/embeddings", json={"input": [template.format(x) for x in LABELS]})
        ).json()
        image = (await client.post("/v1/embeddings", json={"input": [{"image": IMAGE}]})).json()
    text_vectors = np.array([d["embedding"] for d in sorted(texts["data"], key=lambda d: d["index"])])
    image_vector = np.array(image["data"][0]["embedding"])
    cosines = text_vectors @ image_vector  # both unit vectors (test_embeddings_api proves the norm)
    predictions = multi.json()["data"][0]["predictions"]
    got = {p["label"]: p["score"] for p in predictions}
    assert set(got) == set(LABELS)
    np.testing.assert_allclose([got[x] for x in LABELS], cosines, atol=1e-5)
    assert [p["label"] for p in predictions] == [LABELS[i] for i in np.argsort(-cosines, kind="stable")]
    (only,) = alone.json()["data"][0]["predictions"]
    assert only["label"] == LABELS[2]
    assert only["score"] == pytest.approx(float(cosines[2]), abs=1e-5)
