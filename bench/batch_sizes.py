"""Seconds per item against batch size, for both towers of ViT-B-32: what `batch_latency_target_ms` trades.

    python bench/batch_sizes.py [--sizes 1,2,4,8,16,32,64] [--rounds 3]

A batch's time bounds how long another account's item can wait for the model (the running batch, then its
own), so the service keeps batches as short as the hardware allows without paying more per item. This prints,
for each batch size, the batch's time and the time per item relative to the best size, for the image tower
(224 px) and the text tower (77 tokens), on this machine's CPU (or GPU with --device cuda). It also counts each
tower's floating-point operations per item (torch.utils.flop_counter, 2 per multiply-add, matmuls and
convolutions) and prints the rate the image tower reaches at each batch size (GFLOP/s).
"""

from __future__ import annotations

import argparse

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode

from common import cpu_description, timed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32").eval().to(args.device)
    pixels = torch.randn(max(sizes), 3, 224, 224, device=args.device)
    tokens = torch.randint(1, 49_000, (max(sizes), 77), device=args.device)
    rows = []
    # Counted with autograd on: under inference_mode nn.MultiheadAttention takes a fused fast path that the
    # counter does not see (its projections would go uncounted); the operations are the same either way.
    with FlopCounterMode(display=False) as image_counter:
        model.encode_image(pixels[:1])
    with FlopCounterMode(display=False) as text_counter:
        model.encode_text(tokens[:1])
    with torch.inference_mode():
        for size in sizes:
            image_s = timed(lambda n=size: model.encode_image(pixels[:n]), args.rounds)
            text_s = timed(lambda n=size: model.encode_text(tokens[:n]), args.rounds)
            rows.append((size, image_s, text_s))
    best_image = min(image_s / size for size, image_s, _ in rows)
    best_text = min(text_s / size for size, _, text_s in rows)
    image_flop = image_counter.get_total_flops()
    text_flop = text_counter.get_total_flops()
    print(f"{cpu_description()}, {torch.get_num_threads()} threads, device {args.device}")
    print(
        f"FLOP per item (counted): image {image_flop / 1e9:.2f} GFLOP (224 px), text {text_flop / 1e9:.2f} GFLOP"
        " (77 tokens)"
    )
    print(
        f"{'batch':>5} {'images: batch':>14} {'per item':>9} {'vs best':>8} {'GFLOP/s':>8}"
        f" {'texts: batch':>13} {'per item':>9} {'vs best':>8}"
    )
    for size, image_s, text_s in rows:
        print(
            f"{size:>5} {image_s * 1000:>11.0f} ms {image_s / size * 1000:>6.1f} ms {image_s / size / best_image:>7.2f}x"
            f" {image_flop * size / image_s / 1e9:>8.1f}"
            f" {text_s * 1000:>10.0f} ms {text_s / size * 1000:>6.1f} ms {text_s / size / best_text:>7.2f}x"
        )


if __name__ == "__main__":
    main()
