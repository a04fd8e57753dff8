"""Images/s and texts/s: clipserve's runtime vs the reference open_clip pipeline, same weights, same run.

    python bench/embed_throughput.py [--rounds 5] [--image-batch 32] [--text-batch 64]

Both sides load one full-size ViT-B-32 checkpoint (seeded random weights written to a temp file; the
speed of a forward pass does not depend on the values) and process the same inputs: skimage photos as
encoded files (decode + preprocess + encode) and short prompts (tokenize + encode). Prints a table with
the ratio clipserve / reference; ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import open_clip
import skimage
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime, RuntimeSpec

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "horse.png"]
PROMPTS = ["a photo of a {}.", "a blurry photo of a {}.", "a drawing of the {}.", "the {} in a video game."]
CLASSES = ["cat", "dog", "rocket", "coffee cup", "astronaut", "horse", "camera", "tree"]


def cpu_description() -> str:
    """The CPU model and the matrix-unit features that decide which precisions are fast."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), ""
    )
    flags = set(
        next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    )
    features = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{model or platform.machine()} ({', '.join(features) or 'no AVX2'})"


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image-batch", type=int, default=32)
    parser.add_argument("--text-batch", type=int, default=64)
    args = parser.parse_args()

    files = [(Path(skimage.__file__).parent / "data" / name).read_bytes() for name in PHOTOS]
    images = [files[i % len(files)] for i in range(args.image_batch)]
    texts = [PROMPTS[i % len(PROMPTS)].format(CLASSES[i % len(CLASSES)]) for i in range(args.text_batch)]

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vit-b-32.safetensors"
        torch.manual_seed(0)
        save_file(
            {k: v.contiguous() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()},
            str(weights),
        )
        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(weights))
        model.eval()
        tokenizer = open_clip.get_tokenizer("ViT-B-32")
        runtime = ClipRuntime.load(RuntimeSpec(weights=str(weights), device="cpu"))

    @torch.no_grad()
    def reference_images() -> object:
        pixels = torch.stack([preprocess(Image.open(io.BytesIO(d))) for d in images])
        return F.normalize(model.encode_image(pixels), dim=-1)

    @torch.no_grad()
    def reference_texts() -> object:
        return F.normalize(model.encode_text(tokenizer(texts)), dim=-1)

    def clipserve_images() -> object:
        pixels = torch.stack([runtime.preprocess(decode_image(d, max_pixels=40_000_000)) for d in images])
        return runtime.encode_images(pixels)

    def clipserve_texts() -> object:
        return runtime.encode_texts(runtime.tokenize(texts).ids)

    rows = [
        ("images (decode+preprocess+encode)", args.image_batch, reference_images, clipserve_images),
        ("texts (tokenize+encode)", args.text_batch, reference_texts, clipserve_texts),
    ]
    print(f"# {cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"rounds={args.rounds}")  # fmt: skip
    print(f"{'workload':36} {'batch':>5} {'reference/s':>12} {'clipserve/s':>12} {'ratio':>6}")
    for name, batch, reference, ours in rows:
        ref_rate = batch / timed(reference, args.rounds)
        our_rate = batch / timed(ours, args.rounds)
        print(f"{name:36} {batch:>5} {ref_rate:>12.1f} {our_rate:>12.1f} {our_rate / ref_rate:>6.2f}")


if __name__ == "__main__":
    main()
