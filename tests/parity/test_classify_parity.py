"""/v1/classify and /v1/rank scores equal open_clip's zero-shot computation on the same weights (1e-5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip import build_zero_shot_classifier

from tests.support import PHOTO_FILES, data_uri, photo_path, running_app

pytestmark = pytest.mark.anyio

NAMES = list(PHOTO_FILES)
LABELS = ["astronaut", "cat", "cup of coffee", "rocket"]


def reference_probabilities(reference, templates, labels: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        classifier = build_zero_shot_classifier(
            reference.model, reference.tokenizer, labels, templates, num_classes_per_batch=None
        )
        images = torch.from_numpy(reference.image_vectors([photo_path(n) for n in NAMES]))
        logits = reference.model.logit_scale.exp() * images @ classifier
        return logits.softmax(dim=-1).numpy()


def as_matrix(body: dict, labels: list[str]) -> np.ndarray:  # type: ignore[type-arg]
    rows = []
    for entry in sorted(body["data"], key=lambda e: e["index"]):
        scores = {p["label"]: p["score"] for p in entry["predictions"]}
        rows.append([scores[label] for label in labels])
    return np.array(rows)


@pytest.mark.parametrize(
    ("template", "labels"),
    [
        ("a photo of a {}.", LABELS),
        ("openai-imagenet", LABELS[:2]),
    ],  # 2 labels x 80 prompts keeps the CPU run short
)
async def test_classify_scores_match_open_clip(
    vit_runtime, reference, tmp_path: Path, template, labels
) -> None:  # type: ignore[no-untyped-def]
    images = [{"image": data_uri(photo_path(n).read_bytes())} for n in NAMES]
    async with running_app(vit_runtime, tmp_path) as (client, _):
        body = (
            await client.post("/v1/classify", json={"input": images, "labels": labels, "template": template})
        ).json()
    templates = open_clip.OPENAI_IMAGENET_TEMPLATES if template == "openai-imagenet" else (template,)
    want = reference_probabilities(reference, templates, labels)
    got = as_matrix(body, labels)
    assert np.abs(got - want).max() <= 1e-5
    assert body["usage"]["prompt_tokens"] > 0


async def test_rank_order_and_scores_match_open_clip(vit_runtime, reference, tmp_path: Path) -> None:
    paths = [photo_path(n) for n in NAMES]
    query = "a photo of a cat lying down"
    async with running_app(vit_runtime, tmp_path) as (client, _):
        body = (
            await client.post(
                "/v1/rank",
                json={"query": query, "documents": [{"image": data_uri(p.read_bytes())} for p in paths]},
            )
        ).json()
    cosines = reference.image_vectors(paths) @ reference.text_vectors([query])[0]
    order = np.argsort(-cosines, kind="stable")
    assert [r["index"] for r in body["results"]] == order.tolist()
    assert np.abs(np.array([r["relevance_score"] for r in body["results"]]) - cosines[order]).max() <= 1e-5
