"""Latency of classifying one image against 10 and 1000 labels: clipserve cold and cached vs the reference.

    python bench/classify_latency.py [--labels 10,1000] [--rounds 5]

The reference is open_clip's zero-shot recipe as people run it: build_zero_shot_classifier (encode every prompt)
then encode the image, on every call. clipserve is measured through its HTTP app (in-process ASGI transport):
"cold" is the first request for a label set (prompts encoded, then cached), "cached" a repeat (prompts from the
LRU cache, only the image is encoded). Same full-size ViT-B-32 weights on both sides (seeded random).
--no-truncate-text runs clipserve's text tower over all 77 positions, as before text truncation existed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path

import open_clip
import skimage
import torch
import torch.nn.functional as F
from PIL import Image

from clipserve.api.app import create_app
from clipserve.config import Settings
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from common import ready_app_client, write_random_vit_b32

TEMPLATE = "a photo of a {}."


async def clipserve_timings(
    runtime: ClipRuntime, image: bytes, labels: list[str], rounds: int
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp), weights="random", max_labels=5000), runtime)
        async with ready_app_client(app) as client:
            body = {"image": base64.b64encode(image).decode(), "labels": labels, "template": TEMPLATE}
            started = time.perf_counter()
            response = await client.post("/v1/classify", json=body)
            cold = time.perf_counter() - started
            assert response.status_code == 200, response.text
            cached = []
            for _ in range(rounds):
                started = time.perf_counter()
                response = await client.post("/v1/classify", json=body)
                cached.append(time.perf_counter() - started)
            assert response.json()["usage"]["prompt_tokens"] == 0  # really served from the cache
    return cold, statistics.median(cached)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", default="10,1000", help="comma-separated label counts")
    parser.add_argument("--rounds", type=int, default=5, help="cached repeats (median reported)")
    parser.add_argument(
        "--no-truncate-text", action="store_true", help="clipserve runs the text tower over all 77 positions"
    )
    args = parser.parse_args()
    image_path = Path(skimage.__file__).parent / "data" / "chelsea.png"
    image = image_path.read_bytes()

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vit-b-32.safetensors"
        write_random_vit_b32(weights)
        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(weights))
        model.eval()
        tokenizer = open_clip.get_tokenizer("ViT-B-32")
        runtime = ClipRuntime.load(
            RuntimeSpec(weights=str(weights), device="cpu", truncate_text=not args.no_truncate_text)
        )

    def reference(labels: list[str]) -> float:
        started = time.perf_counter()
        with torch.no_grad():
            classifier = open_clip.build_zero_shot_classifier(model, tokenizer, labels, [TEMPLATE])
            features = F.normalize(
                model.encode_image(preprocess(Image.open(image_path)).unsqueeze(0)), dim=-1
            )
            (model.logit_scale.exp() * features @ classifier).softmax(dim=-1)
        return time.perf_counter() - started

    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads; one image, template {TEMPLATE!r}; "
        f"text truncation {'off' if args.no_truncate_text else 'on'}"
    )
    print(
        f"{'labels':>6} {'reference s':>12} {'cold s':>8} {'cached s':>9} {'cold ratio':>11} {'cached ratio':>13}"
    )
    names = list(dict.fromkeys(open_clip.IMAGENET_CLASSNAMES))  # the list repeats two names
    for count in (int(c) for c in args.labels.split(",")):
        labels = [
            names[i % len(names)] + ("" if i < len(names) else f" {i // len(names)}") for i in range(count)
        ]
        reference(labels[:2])  # warm-up
        ref = reference(labels)
        cold, cached = asyncio.run(clipserve_timings(runtime, image, labels, args.rounds))
        print(
            f"{count:>6} {ref:>12.3f} {cold:>8.3f} {cached:>9.3f} {ref / cold:>10.2f}x {ref / cached:>12.1f}x"
        )


if __name__ == "__main__":
    main()
