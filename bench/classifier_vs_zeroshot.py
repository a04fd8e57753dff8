"""Classify with a custom classifier vs zero-shot with cached prompts: same images, same labels, server time.

    python bench/classifier_vs_zeroshot.py [--labels 10,100] [--images 8] [--rounds 5]

Both go through the HTTP app in-process (ASGI transport, so the time is the server's): zero-shot is timed after a
first request filled the prompt cache (only the images are encoded), the classifier (created with the zero-shot
prior and a few examples) reads its weights from the database and encodes only the images. Same full-size
ViT-B-32 weights (seeded random). The ratio is classifier time / zero-shot time (1.0 = same speed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from clipserve.api.app import create_app
from clipserve.config import Settings
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from common import ready_app_client, write_random_vit_b32


def _images(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        pixels = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        out.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return out


async def _median_s(client: httpx.AsyncClient, body: dict[str, Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = await client.post("/v1/classify", json=body)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] == 0  # zero-shot: served from the prompt cache
    return statistics.median(times)


async def measure(
    runtime: ClipRuntime, labels: list[str], images: list[str], rounds: int
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp), weights="random", classifier_max_labels=max(100, len(labels)),
            freeze_startup_heap=False,
        )  # fmt: skip
        async with ready_app_client(create_app(settings, runtime)) as client:
            examples = [
                {"input": image, "label": labels[i % len(labels)]} for i, image in enumerate(_images(4, 1))
            ]
            created = await client.post(
                "/v1/classifiers", json={"name": "bench", "labels": labels, "examples": examples}
            )
            assert created.status_code == 200, created.text
            zero_shot = {"input": images, "labels": labels}
            assert (await client.post("/v1/classify", json=zero_shot)).status_code == 200  # fills the cache
            with_classifier = {"input": images, "classifier": created.json()["id"]}
            assert (await client.post("/v1/classify", json=with_classifier)).status_code == 200  # warm
            # interleaved rounds, so drift (thermal, other load) hits both alike
            zs, clf = [], []
            for _ in range(rounds):
                zs.append(await _median_s(client, zero_shot, 1))
                clf.append(await _median_s(client, with_classifier, 1))
            return statistics.median(zs), statistics.median(clf)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", default="10,100", help="comma-separated label counts")
    parser.add_argument("--images", type=int, default=8, help="images per request")
    parser.add_argument("--rounds", type=int, default=5, help="timed requests of each kind (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vit-b-32.safetensors"
        write_random_vit_b32(weights)
        runtime = ClipRuntime.load(RuntimeSpec(weights=str(weights), device="cpu"))
    images = _images(args.images, 0)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} images per request")
    print(f"{'labels':>6} {'zero-shot cached s':>19} {'classifier s':>13} {'ratio':>7}")
    for count in (int(c) for c in args.labels.split(",")):
        labels = [f"class {i}" for i in range(count)]
        zero_shot, classifier = asyncio.run(measure(runtime, labels, images, args.rounds))
        print(f"{count:>6} {zero_shot:>19.3f} {classifier:>13.3f} {classifier / zero_shot:>6.2f}x")


if __name__ == "__main__":
    main()
