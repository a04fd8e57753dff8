"""Thread and batch settings under HTTP load: images/s and latency of a real server for each setting.

    python bench/http_tuning.py [--precision int8] [--seconds 15]

8 concurrent clients, one 640x480 JPEG per request (as in embed_throughput.py's HTTP section). Each row starts
a server with exactly the flags its label names (every row passes --decode-workers and --torch-threads, so a
row does not change meaning when a default does); the row whose flags equal this machine's defaults is marked
"(default)". Ratios are to the first row, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from clipserve.config import Settings
from common import jpeg_640x480, photo_paths, write_random_vit_b32
from embed_throughput import http_run


def settings_rows(cores: int) -> list[tuple[str, tuple[str, ...]]]:
    """(label, flags): decode threads and torch threads always explicit, so each label is what runs."""
    half = max(1, cores // 2)
    rows: list[tuple[str, tuple[str, ...]]] = []
    for decode, torch_threads in ((cores, cores), (half, cores), (cores, half)):
        rows.append(
            (
                f"decode {decode}, torch {torch_threads}",
                ("--decode-workers", str(decode), "--torch-threads", str(torch_threads)),
            )
        )
    rows.append(
        (
            f"decode {half}, torch {cores}, batch 8, wait 20 ms",
            ("--decode-workers", str(half), "--torch-threads", str(cores),
             "--image-batch-size", "8", "--batch-wait-ms", "20"),
        )
    )  # fmt: skip
    return list(dict.fromkeys(rows))  # on 1 core the first rows coincide


def is_default(flags: tuple[str, ...], cores: int) -> bool:
    """True when the flags name exactly what `clipserve serve` would use here without them."""
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    defaults = Settings()
    return given == {
        "--decode-workers": str(defaults.decode_workers),
        "--torch-threads": str(defaults.torch_threads or cores),
    }


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
        cores = os.cpu_count() or 1
        print(
            f"# {cores} cores, precision {args.precision}, 8 clients, 640x480 JPEGs, {args.seconds:g} s per row"
        )
        print(f"{'setting':44} {'images/s':>9} {'vs row 1':>9} {'p50 ms':>8} {'p95 ms':>8}")
        first = 0.0
        for name, flags in settings_rows(cores):
            rate, p50, p95 = http_run(weights, args.precision, jpegs, args.seconds, extra=flags)
            first = first or rate
            label = f"{name} (default)" if is_default(flags, cores) else name
            print(f"{label:44} {rate:>9.1f} {rate / first:>8.2f}x {p50:>8.0f} {p95:>8.0f}")


if __name__ == "__main__":
    main()
