"""How long a full garbage collection holds the GIL in a loaded server process, with and without the freeze.

    python bench/gc_pause.py [--tiny]

Builds the app as `clipserve serve` does (seeded random ViT-B-32 unless --tiny), then times gc.collect()
before and after runtime/heap.py's freeze_long_lived(), and prints both and their ratio.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

from clipserve.api.app import create_app
from clipserve.cli.model_loading import load_runtime
from clipserve.config import Settings
from clipserve.runtime.heap import freeze_long_lived, unfreeze

TINY = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "clipserve-tiny.json"


def collect_ms(rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of ViT-B-32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        options: dict[str, object] = {"data_dir": Path(tmp), "weights": "random"}
        if args.tiny:
            options["architecture"] = str(TINY)
        settings = Settings(**options)  # type: ignore[arg-type]
        runtime = load_runtime(settings)
        assert runtime is not None
        runtime.warmup()
        create_app(settings, runtime)
        objects = len(gc.get_objects())
        before = collect_ms()
        frozen = freeze_long_lived()
        after = collect_ms()
        unfreeze()
    print(f"objects tracked: {objects:,}; frozen: {frozen:,}")
    print(f"full collection, median of 5: {before:.1f} ms before the freeze, {after:.3f} ms after "
          f"({before / max(after, 1e-6):,.0f}x shorter)")  # fmt: skip


if __name__ == "__main__":
    main()
