"""Texts/s for short, mixed and long text batches: clipserve (fp32) vs the reference open_clip, same weights.

    python bench/text_batches.py [--rounds 3]

clipserve runs the text tower only to each batch's longest prompt and splits a batch that mixes short prompts
with long captions into two length groups; the reference always runs all 77 positions. Same numbers (1e-5).
"""

from __future__ import annotations

import argparse

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from common import timed

SHORT = [f"a photo of a {c}." for c in ("cat", "dog", "rocket", "coffee cup")] * 16
LONG = "a long caption that describes everything in the picture in great detail " * 6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runtime = ClipRuntime.load(RuntimeSpec(weights="random", device="cpu", seed=0))
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32").eval()  # the same seeded random weights as the runtime
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    batches = {
        "64 short prompts": SHORT,
        "63 short + 1 long": [*SHORT[:63], LONG],
        "64 long captions": [LONG] * 64,
    }
    print(f"{'batch':20} {'reference/s':>12} {'clipserve/s':>12} {'ratio':>6} {'max |diff|':>11}")
    for name, texts in batches.items():
        with torch.no_grad():
            want = F.normalize(model.encode_text(tokenizer(texts)), dim=-1).numpy()
            ref = len(texts) / timed(lambda t=texts: model.encode_text(tokenizer(t)), args.rounds)
        got = runtime.encode_texts(runtime.tokenize(texts).ids)
        ours = len(texts) / timed(lambda t=texts: runtime.encode_texts(runtime.tokenize(t).ids), args.rounds)
        print(
            f"{name:20} {ref:>12.1f} {ours:>12.1f} {ours / ref:>5.1f}x {float(np.abs(got - want).max()):>11.1e}"
        )


if __name__ == "__main__":
    main()
