"""Decode + preprocess time of camera-sized JPEGs: exact full-size decode vs DCT-domain draft, and what it changes.

    python bench/jpeg_decode.py [--rounds 5]

Makes 4032x3024 (12 MP) JPEGs from the skimage photos, then times decode_image + open_clip's transform per
image on both paths, and compares the resulting pixels (max abs difference after normalisation) and the
full-size ViT-B-32 embeddings (cosine; seeded random weights) of the draft path against the exact one.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
import skimage
import torch
from PIL import Image

from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime, RuntimeSpec

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]


def camera_jpeg(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC).save(
        buffer, "JPEG", quality=92
    )
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runtime = ClipRuntime.load(RuntimeSpec(weights="random", device="cpu"))
    jpegs = [camera_jpeg(Path(skimage.__file__).parent / "data" / name) for name in PHOTOS]

    def pixels(draft: int | None) -> list[torch.Tensor]:
        return [
            runtime.preprocess(decode_image(j, max_pixels=40_000_000, draft_min_side=draft)) for j in jpegs
        ]

    timings = {}
    for label, draft in (("exact", None), ("draft", 448)):
        pixels(draft)
        samples = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            pixels(draft)
            samples.append((time.perf_counter() - started) / len(jpegs))
        timings[label] = statistics.median(samples)
    exact, drafted = pixels(None), pixels(448)
    max_pixel_diff = max(float((a - b).abs().max()) for a, b in zip(exact, drafted, strict=True))
    cos = (runtime.encode_images(torch.stack(exact)) * runtime.encode_images(torch.stack(drafted))).sum(
        axis=1
    )
    print(f"12 MP JPEG, decode + preprocess per image: exact {timings['exact'] * 1000:.0f} ms, "
          f"draft {timings['draft'] * 1000:.0f} ms ({timings['exact'] / timings['draft']:.1f}x faster)")  # fmt: skip
    print(f"draft vs exact: max |pixel diff| {max_pixel_diff:.3f} (normalised units), "
          f"embedding cosine min {float(np.min(cos)):.5f} mean {float(np.mean(cos)):.5f}")  # fmt: skip


if __name__ == "__main__":
    main()
