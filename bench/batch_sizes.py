"""Seconds per item against batch size, for both towers of ViT-B-32: what `batch_latency_target_ms` trades.

    python bench/batch_sizes.py [--sizes 1,2,4,8,16,32,64] [--rounds 3]

A batch's time bounds how long another account's item can wait for the model (the running batch, then its
own), so the service keeps batches as short as the hardware allows without paying more per item. This prints,
for each batch size, the batch's time and the time per item relative to the best size, for the image tower
(224 px) and the text tower (77 tokens), on this machine's CPU (or GPU with --device cuda).
"""

from __future__ import annotations

import argparse

import open_clip
import torch

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
    with torch.inference_mode():
        for size in sizes:
            image_s = timed(lambda n=size: model.encode_image(pixels[:n]), args.rounds)
            text_s = timed(lambda n=size: model.encode_text(tokens[:n]), args.rounds)
            rows.append((size, image_s, text_s))
    best_image = min(image_s / size for size, image_s, _ in rows)
    best_text = min(text_s / size for size, _, text_s in rows)
    print(f"{cpu_description()}, {torch.get_num_threads()} threads, device {args.device}")
    print(
        f"{'batch':>5} {'images: batch':>14} {'per item':>9} {'vs best':>8} {'texts: batch':>13} {'per item':>9} {'vs best':>8}"
    )
    for size, image_s, text_s in rows:
        print(
            f"{size:>5} {image_s * 1000:>11.0f} ms {image_s / size * 1000:>6.1f} ms {image_s / size / best_image:>7.2f}x"
            f" {text_s * 1000:>10.0f} ms {text_s / size * 1000:>6.1f} ms {text_s / size / best_text:>7.2f}x"
        )


if __name__ == "__main__":
    main()
