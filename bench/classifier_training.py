"""Training a custom classifier costs how much CPU, next to embedding its examples? Printed as a ratio.

    python bench/classifier_training.py [--shapes 4x20,10x20,100x20] [--embed-sample 32]

For each shape LABELSxPER_LABEL: that many noisy colour images (one colour per label, seeded) are embedded with a
full-size ViT-B-32 (seeded random weights: speed does not depend on the values) to get realistic features; the
CPU of embedding (decode + preprocess + image tower, process time, all threads) is measured on --embed-sample
images and scaled to the example count. Training is the service's: `fit(..., C=None)` with the default
settings (cross-validation over the 6-value grid when every label has >= 2 examples, then the refit), once on
the real labels and once on shuffled labels (nothing to learn: L-BFGS runs longest, the worst case a hostile
caller can ask for with that many examples). The last column is training CPU / embedding CPU.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipserve.config import Settings
from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from clipserve.service.linear_probe import TrainOptions, fit
from common import cpu_description, write_random_vit_b32


def colour_images(labels: int, per_label: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0, 255, size=(labels, 3))
    images, targets = [], []
    for label in range(labels):
        for _ in range(per_label):
            pixels = colours[label] + rng.uniform(-30, 30, size=3) + rng.normal(0, 25, size=(64, 64, 3))
            buffer = io.BytesIO()
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
            images.append(buffer.getvalue())
            targets.append(label)
    return images, np.asarray(targets)


def embed(runtime: ClipRuntime, images: list[bytes], max_pixels: int) -> np.ndarray:
    out = []
    for start in range(0, len(images), 32):
        batch = [
            runtime.preprocess(decode_image(b, max_pixels=max_pixels)) for b in images[start : start + 32]
        ]
        out.append(runtime.encode_images(torch.stack(batch)))
    return np.concatenate(out).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="4x20,10x20,100x20")
    parser.add_argument("--embed-sample", type=int, default=32)
    args = parser.parse_args()
    settings = Settings()
    options = TrainOptions(
        max_iter=settings.classifier_max_iter,
        cv_folds=settings.classifier_cv_folds,
        default_c=settings.classifier_default_c,
    )
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_random_vit_b32(Path(tmp) / "vit-b-32.safetensors")
        runtime = ClipRuntime.load(RuntimeSpec(weights=str(weights), device="cpu"))
    print(f"CPU: {cpu_description()}; torch threads {torch.get_num_threads()}")
    print(f"settings: max_iter {options.max_iter}, cv_folds {options.cv_folds}, grid {options.c_grid}")
    print(f"{'shape':>9} {'examples':>8} {'embed CPU s':>11} {'labels':>9} {'train CPU s':>11} {'C':>6} "
          f"{'iters':>5} {'train/embed':>11}")  # fmt: skip
    for shape in args.shapes.split(","):
        labels, per_label = (int(part) for part in shape.split("x"))
        images, targets = colour_images(labels, per_label, seed=labels)
        sample = images[: args.embed_sample]
        embed(runtime, sample[:4], settings.max_image_pixels)  # warm-up
        started = time.process_time()
        embed(runtime, sample, settings.max_image_pixels)
        embed_cpu = (time.process_time() - started) * len(images) / len(sample)
        features = embed(runtime, images, settings.max_image_pixels)
        for name, y in (("real", targets), ("shuffled", np.random.default_rng(0).permutation(targets))):
            started = time.process_time()
            probe = fit(features, y, labels, prior=None, C=None, options=options)
            train_cpu = time.process_time() - started
            print(f"{shape:>9} {len(images):>8} {embed_cpu:>11.2f} {name:>9} {train_cpu:>11.2f} "
                  f"{probe.C:>6g} {probe.iterations:>5} {train_cpu / embed_cpu:>11.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
