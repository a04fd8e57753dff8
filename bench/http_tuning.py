"""Thread and batch settings under HTTP load: images/s and latency of a real server for each setting.

    python bench/http_tuning.py [--precision int8] [--seconds 15]

8 concurrent clients, one 640x480 JPEG per request (as in embed_throughput.py's HTTP section). Each row starts
a server with the listed flags; compare rows with each other (and with embed_throughput.py's reference rate).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import photo_paths, write_random_vit_b32
from embed_throughput import http_run, jpeg_640x480

SETTINGS = [
    ("decode 2, torch 2 (default)", ()),
    ("decode 1, torch 2", ("--decode-workers", "1")),
    ("decode 2, torch 1", ("--torch-threads", "1")),
    (
        "decode 1, batch 8, wait 20 ms",
        ("--decode-workers", "1", "--image-batch-size", "8", "--batch-wait-ms", "20"),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    jpegs = [jpeg_640x480(p) for p in photo_paths()]
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vit-b-32.safetensors"
        write_random_vit_b32(weights)
        print(f"# precision {args.precision}, 8 clients, 640x480 JPEGs, {args.seconds:g} s per row")
        print(f"{'setting':32} {'images/s':>9} {'p50 ms':>8} {'p95 ms':>8}")
        for name, flags in SETTINGS:
            rate, p50, p95 = http_run(weights, args.precision, jpegs, args.seconds, extra=flags)
            print(f"{name:32} {rate:>9.1f} {p50:>8.0f} {p95:>8.0f}")


if __name__ == "__main__":
    main()
