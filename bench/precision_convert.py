"""What a precision conversion costs at start, against reading and building the model it converts.

    python bench/precision_convert.py [--rounds 3]

Per round: build a full-size ViT-B-32 from a safetensors checkpoint (seeded random weights; open_clip's
create_model_and_transforms, what loading at start does), then convert it with runtime/precision.py's
apply_precision for each mode. Prints the median seconds of each and the conversion's share of the build, the
figure that decides whether a converted model is worth caching on disk (docs/performance.md, last section).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import open_clip
import torch

from clipserve.runtime.precision import apply_precision
from common import cpu_description, write_random_vit_b32


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precisions", default="int8,bf16")
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    builds: list[float] = []
    conversions: dict[str, list[float]] = {p: [] for p in precisions}
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_random_vit_b32(Path(tmp) / "vit-b-32.safetensors")
        for _ in range(args.rounds + 1):  # the first round warms caches (file pages, imports) and is dropped
            for precision in precisions:
                started = time.perf_counter()
                model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(weights))
                build = time.perf_counter() - started
                started = time.perf_counter()
                apply_precision(model.eval(), precision)  # type: ignore[arg-type]
                conversions[precision].append(time.perf_counter() - started)
                builds.append(build)
    build_s = statistics.median(builds[len(precisions) :])
    print(f"# {cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'step':36} {'median s':>9} {'vs build':>9}")
    print(f"{'build ViT-B-32 from the checkpoint':36} {build_s:>9.2f} {1.0:>8.2f}x")
    for precision, samples in conversions.items():
        convert_s = statistics.median(samples[1:])
        print(
            f"{'apply_precision(model, ' + repr(precision) + ')':36} {convert_s:>9.2f} {convert_s / build_s:>8.2f}x"
        )


if __name__ == "__main__":
    main()
