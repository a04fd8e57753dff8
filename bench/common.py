"""What the bench scripts share: the timing loop, the seeded full-size checkpoint, the photos, the CPU line.

Scripts run as `python bench/NAME.py`, so this folder is on sys.path and they import from here directly.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import open_clip
import skimage
import torch
from safetensors.torch import save_file

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "horse.png"]


def photo_paths(names: list[str] = PHOTOS) -> list[Path]:
    return [Path(skimage.__file__).parent / "data" / name for name in names]


def write_random_vit_b32(path: Path, seed: int = 0) -> Path:
    """A full-size ViT-B-32 open_clip checkpoint with seeded random weights (speed does not depend on values)."""
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}
    save_file(state, str(path))
    return path


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


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
