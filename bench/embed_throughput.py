"""Images/s and texts/s of clipserve (fp32, bf16, int8) vs the reference open_clip fp32 pipeline, in one run.

    python bench/embed_throughput.py [--rounds 3] [--precisions fp32,bf16,int8] [--http-seconds 20]

Both sides load one full-size ViT-B-32 checkpoint (seeded random weights written to a temp file; speed does
not depend on the values). Rows:
  image tower        preprocessed pixels -> embeddings, batch 32
  images end-to-end  encoded files (skimage photos) -> decode, preprocess, encode, batch 32
  short texts        8-token prompts, batch 64 (clipserve runs the text tower only to the longest prompt)
Accuracy: the minimum cosine similarity of each mode's embeddings to the reference fp32 embeddings, over the
photos (and variants) and the prompts. HTTP: a real server process per mode, 8 concurrent clients each sending
one 640x480 JPEG per request, for --http-seconds; images/s and p50/p95 latency.
"""

from __future__ import annotations

import argparse
import base64
import io
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from clipserve.config import Settings
from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from common import (
    closed_loop_latencies,
    cpu_description,
    free_port,
    jpeg_640x480,
    timed,
    wait_until_ready,
    write_random_vit_b32,
)
from common import photo_paths as photos

CLASSES = ["cat", "dog", "rocket", "coffee cup", "astronaut", "horse", "camera", "tree"]
PROMPTS = ["a photo of a {}.", "a blurry photo of a {}.", "a drawing of the {}.", "the {} in a video game."]


def http_run(
    weights: Path,
    precision: str,
    jpegs: list[bytes],
    seconds: float,
    clients: int = 8,
    extra: tuple[str, ...] = (),
) -> tuple[float, float, float]:
    """(images/s, p50 ms, p95 ms) of a real server under `clients` concurrent one-image requests."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        command = [sys.executable, "-m", "clipserve", "serve", "--weights", str(weights), "--precision", precision,
                   "--port", str(port), "--data-dir", data_dir, "--log-level", "warning", *extra]  # fmt: skip
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base, server)
            bodies = [
                {"input": [{"image": base64.b64encode(j).decode()}], "encoding_format": "base64"}
                for j in jpegs
            ]
            started = time.perf_counter()
            latencies = closed_loop_latencies(base, bodies, clients, seconds)
            elapsed = time.perf_counter() - started
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    latencies.sort()
    return (
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.95)] * 1000,
    )


def measure_runtime(
    runtime: ClipRuntime, pixels: torch.Tensor, images: list[bytes], texts: list[str], rounds: int
) -> dict[str, float]:
    def end_to_end() -> object:
        decoded = [decode_image(d, max_pixels=40_000_000, draft_min_side=448) for d in images]
        return runtime.encode_images(torch.stack([runtime.preprocess(i) for i in decoded]))

    return {
        "image tower": 32 / timed(lambda: runtime.encode_images(pixels), rounds),
        "images end-to-end": 32 / timed(end_to_end, rounds),
        "short texts": 64 / timed(lambda: runtime.encode_texts(runtime.tokenize(texts).ids), rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--http-seconds", type=float, default=20.0, help="0 skips the HTTP runs")
    args = parser.parse_args()
    precisions = args.precisions.split(",")

    photo_paths = photos()
    files = [p.read_bytes() for p in photo_paths]
    images = [files[i % len(files)] for i in range(32)]
    texts = [PROMPTS[i % len(PROMPTS)].format(CLASSES[i % len(CLASSES)]) for i in range(64)]
    accuracy_images = [Image.open(p) for p in photo_paths] + [
        ImageOps.mirror(Image.open(p).convert("RGB")) for p in photo_paths
    ]

    tmp = tempfile.TemporaryDirectory()
    weights = Path(tmp.name) / "vit-b-32.safetensors"
    write_random_vit_b32(weights)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(weights))
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    pixels = torch.stack([preprocess(Image.open(io.BytesIO(d))) for d in images])
    ids = tokenizer(texts)

    with torch.no_grad():
        ref_acc_images = F.normalize(
            model.encode_image(torch.stack([preprocess(i) for i in accuracy_images])), dim=-1
        ).numpy()
        ref_acc_texts = F.normalize(model.encode_text(ids), dim=-1).numpy()
        ref = {
            "image tower": 32 / timed(lambda: model.encode_image(pixels), args.rounds),
            "images end-to-end": 32
            / timed(
                lambda: model.encode_image(
                    torch.stack([preprocess(Image.open(io.BytesIO(d))) for d in images])
                ),
                args.rounds,
            ),
            "short texts": 64 / timed(lambda: model.encode_text(tokenizer(texts)), args.rounds),
        }

    print(
        f"# {cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} threads, rounds={args.rounds}"
    )
    print(f"{'workload':20} {'mode':>5} {'items/s':>9} {'vs ref':>7} {'min cos':>8}")
    for name, rate in ref.items():
        print(f"{name:20} {'ref':>5} {rate:>9.1f} {1.0:>6.2f}x {1.0:>8.5f}")
    for precision in precisions:
        runtime = ClipRuntime.load(RuntimeSpec(weights=str(weights), device="cpu", precision=precision))
        acc_i = runtime.encode_images(torch.stack([runtime.preprocess(i) for i in accuracy_images]))
        acc_t = runtime.encode_texts(runtime.tokenize(texts).ids)
        cos = min(float((acc_i * ref_acc_images).sum(1).min()), float((acc_t * ref_acc_texts).sum(1).min()))
        rates = measure_runtime(runtime, pixels, images, texts, args.rounds)
        for name, rate in rates.items():
            print(f"{name:20} {precision:>5} {rate:>9.1f} {rate / ref[name]:>6.2f}x {cos:>8.5f}")
    if args.http_seconds > 0:
        jpegs = [jpeg_640x480(p) for p in photo_paths]
        defaults = Settings()  # the servers run with every default but --precision
        print(
            f"\nHTTP end to end: 8 concurrent clients, one 640x480 JPEG per request, {args.http_seconds:g} s;"
            f" server defaults: {defaults.decode_workers} decode threads,"
            f" {defaults.torch_threads or torch.get_num_threads()} torch threads"
        )
        print(f"{'mode':>5} {'images/s':>9} {'vs ref e2e':>11} {'p50 ms':>8} {'p95 ms':>8}")
        for precision in precisions:
            rate, p50, p95 = http_run(weights, precision, jpegs, args.http_seconds)
            print(
                f"{precision:>5} {rate:>9.1f} {rate / ref['images end-to-end']:>10.2f}x {p50:>8.0f} {p95:>8.0f}"
            )
    tmp.cleanup()


if __name__ == "__main__":
    main()
