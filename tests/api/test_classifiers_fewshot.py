"""The few-shot proof on a dataset made here: classes that differ visually (noisy images of four colours) are
separated by a classifier trained on 5 and on 20 examples per class far better than zero-shot on the same (random)
weights, which is near chance. Seeded; the seed and the accuracies are in the failure message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.support import data_uri, encode_image, running_app

pytestmark = pytest.mark.anyio

SEED = 15
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200), "yellow": (220, 210, 40)}
TRAIN_PER_CLASS = 20
TEST_PER_CLASS = 25
MARGIN = 0.30  # few-shot accuracy must beat zero-shot's by at least 30 points


def _dataset(rng: np.random.Generator, per_class: int) -> list[tuple[str, str]]:
    """(image data URI, label): each image its class colour, shifted per image, with per-pixel noise."""
    out = []
    for label, colour in COLOURS.items():
        for _ in range(per_class):
            base = np.asarray(colour, dtype=np.float64) + rng.uniform(-30, 30, size=3)
            pixels = base + rng.normal(0, 25, size=(48, 48, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            out.append((data_uri(encode_image(image)), label))
    return out


async def _accuracy(client: Any, test: list[tuple[str, str]], **how: Any) -> float:
    predicted = []
    for start in range(0, len(test), 50):  # max_classify_images is 64
        chunk = [image for image, _ in test[start : start + 50]]
        answer = await client.post("/v1/classify", json={"input": chunk, **how})
        assert answer.status_code == 200, answer.text
        predicted += [row["prediction"] for row in answer.json()["data"]]
    return float(np.mean([p == label for p, (_, label) in zip(predicted, test, strict=True)]))


async def test_few_shot_beats_zero_shot_on_visually_distinct_classes(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    rng = np.random.default_rng(SEED)
    train, test = _dataset(rng, TRAIN_PER_CLASS), _dataset(rng, TEST_PER_CLASS)
    labels = list(COLOURS)
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        zero_shot = await _accuracy(client, test, labels=labels)
        results = {}
        for shots in (5, 20):
            chosen = [pair for label in labels for pair in [p for p in train if p[1] == label][:shots]]
            created = await client.post(
                "/v1/classifiers",
                json={
                    "name": f"{shots}-shot",
                    "labels": labels,
                    "examples": [{"input": image, "label": label} for image, label in chosen],
                },
            )
            assert created.status_code == 200, created.text
            assert created.json()["examples_per_label"] == dict.fromkeys(labels, shots)
            assert created.json()["cv_accuracy"] is not None  # >= 2 per class: C chosen by cross-validation
            results[shots] = await _accuracy(client, test, classifier=created.json()["id"])
    summary = f"seed {SEED}: zero-shot {zero_shot:.2f}, 5-shot {results[5]:.2f}, 20-shot {results[20]:.2f}"
    print(summary)
    assert zero_shot <= 0.5, summary  # random weights: the label words mean nothing to the model
    assert results[5] >= zero_shot + MARGIN, summary
    assert results[20] >= zero_shot + MARGIN, summary
