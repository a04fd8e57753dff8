"""Peak memory and time of decode + preprocess for the worst image shapes the limits allow, against normal photos.

    python bench/image_shapes.py [--rounds 5]

Each shape runs in its own process (a clean baseline): it encodes the image, then times decode_image (the
service's caps: 40 MP, aspect ratio 20, JPEG draft at 448) followed by open_clip's ViT-B-32 eval transform,
and reports the peak RSS above the process's RSS just before (Linux: VmHWM reset through /proc/self/clear_refs).
The "uncapped" rows are what the aspect-ratio cap refuses, run without it to show what it prevents.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time

import numpy as np
from PIL import Image

MAX_PIXELS = 40_000_000
ASPECT_CAP = 20.0
DRAFT_MIN_SIDE = 448

# name: (width, height, format, mode, capped)
SHAPES: dict[str, tuple[int, int, str, str, bool]] = {
    "photo 640x480 JPEG": (640, 480, "JPEG", "RGB", True),
    "photo 4032x3024 JPEG (12 MP)": (4032, 3024, "JPEG", "RGB", True),
    "1x1 PNG (upscaled)": (1, 1, "PNG", "RGB", True),
    "20x1 PNG (at the cap, upscaled)": (20, 1, "PNG", "RGB", True),
    "1x20 PNG (at the cap, upscaled)": (1, 20, "PNG", "RGB", True),
    "4480x224 PNG (at the cap)": (4480, 224, "PNG", "RGB", True),
    "28280x1414 PNG (at the cap, 40 MP)": (28_280, 1414, "PNG", "RGB", True),
    "6324x6324 PNG (40 MP)": (6324, 6324, "PNG", "RGB", True),
    "6324x6324 PNG RGBA (40 MP)": (6324, 6324, "PNG", "RGBA", True),
    "6324x6324 PNG 16-bit gray (40 MP)": (6324, 6324, "PNG", "I;16", True),
    "28280x1414 JPEG (at the cap, 40 MP)": (28_280, 1414, "JPEG", "RGB", True),
    "3000x1 PNG, uncapped (now refused)": (3000, 1, "PNG", "RGB", False),
    "1x3000 PNG, uncapped (now refused)": (1, 3000, "PNG", "RGB", False),
}


def make_image(width: int, height: int, fmt: str, mode: str) -> bytes:
    """A smooth gradient with a little noise (compresses like a photo, not like a flat colour)."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    if mode == "I;16":
        image = Image.fromarray(((x * 0.5 + y * 0.5) * 65535).astype(np.uint16))
    else:
        channels = [x + 0 * y, y + 0 * x, (x + y) / 2] + ([np.ones_like(x + y)] if mode == "RGBA" else [])
        image = Image.fromarray((np.stack(channels, axis=2) * 255).astype(np.uint8), mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
    return buffer.getvalue()


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(key))
    return int(line.split()[1]) / 1024


def measure_one(name: str, rounds: int) -> dict[str, float]:
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from clipserve.runtime.images import decode_image

    width, height, fmt, mode, capped = SHAPES[name]
    transform = open_clip.image_transform(
        224, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD
    )
    data = make_image(width, height, fmt, mode)
    transform(decode_image(make_image(8, 8, "PNG", "RGB"), max_pixels=MAX_PIXELS))  # one-off lazy init
    times, peaks = [], []
    for _ in range(rounds):
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the peak RSS to the current RSS
        before = _status_mib("VmRSS:")
        started = time.perf_counter()
        image = decode_image(
            data,
            max_pixels=MAX_PIXELS,
            max_aspect_ratio=ASPECT_CAP if capped else None,
            draft_min_side=DRAFT_MIN_SIDE,
        )
        pixels = transform(image)
        times.append(time.perf_counter() - started)
        peaks.append(_status_mib("VmHWM:") - before)
        assert tuple(pixels.shape) == (3, 224, 224)
        del image, pixels
    return {
        "bytes": len(data),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_mib": max(peaks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.rounds)))
        return
    print(
        f"{'shape':40s} {'file bytes':>10s} {'median ms':>10s} {'min ms':>8s} {'peak RSS above start':>21s}"
    )
    for name in SHAPES:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--rounds", str(args.rounds)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{name:40s} {row['bytes']:>10,d} {row['median_s'] * 1000:>10.1f} {row['min_s'] * 1000:>8.1f} "
            f"{row['peak_mib']:>17.1f} MiB"
        )


if __name__ == "__main__":
    main()
