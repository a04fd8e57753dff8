"""The hostile image corpus through decode + preprocess: each gets a typed 400 or valid pixels, in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from clipserve.config import Settings
from clipserve.errors import ClipserveError
from clipserve.runtime.images import decode_image
from tests.hostile_images import INVALID, HostileImage, hostile_images

MAX_PIXELS = Settings.model_fields["max_image_pixels"].default
ASPECT_CAP = Settings.model_fields["max_image_aspect_ratio"].default
TRANSFORM = open_clip.image_transform(224, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)


def decode_and_preprocess(data: bytes) -> torch.Tensor | ClipserveError:
    try:
        image = decode_image(data, max_pixels=MAX_PIXELS, max_aspect_ratio=ASPECT_CAP)
    except ClipserveError as exc:
        return exc
    assert image.mode in ("RGB", "RGBA", "L", "LA")
    return TRANSFORM(image)


@pytest.mark.parametrize("case", hostile_images(), ids=lambda case: case.name)
def test_hostile_image_gets_a_typed_400_or_valid_pixels(case: HostileImage) -> None:
    result = decode_and_preprocess(case.data)
    if isinstance(result, ClipserveError):
        assert (result.status_code, result.code) == (400, case.expected), result.message
    else:
        assert case.expected is None or (case.may_embed and case.expected == INVALID), "decoded"
        assert tuple(result.shape) == (3, 224, 224)
        assert bool(torch.isfinite(result).all())


# Runs in a fresh process so its peak RSS (VmHWM, reset through /proc/self/clear_refs) is this work's alone.
_PEAK_PROBE = textwrap.dedent(
    """
    import io, json, sys
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from PIL import Image
    from clipserve.config import Settings
    from clipserve.errors import ImageAspectRatioError
    from clipserve.runtime.images import decode_image

    cap = Settings().max_image_aspect_ratio
    transform = open_clip.image_transform(224, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)

    def png(w, h):
        buffer = io.BytesIO()
        Image.new("RGB", (w, h), (200, 40, 90)).save(buffer, "PNG")
        return buffer.getvalue()

    def status(key):
        return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) / 1024

    transform(decode_image(png(8, 8), max_pixels=10**8))  # one-off lazy initialisation
    peaks = {}
    for w, h in json.loads(sys.argv[1]):
        open("/proc/self/clear_refs", "w").write("5")
        before = status("VmRSS:")
        try:
            transform(decode_image(png(w, h), max_pixels=10**8, max_aspect_ratio=cap))
        except ImageAspectRatioError:
            pass
        peaks[f"{w}x{h}"] = status("VmHWM:") - before
    print(json.dumps(peaks))
    """
)


def test_thin_images_preprocess_in_bounded_memory() -> None:
    """Inside the cap the resize before the crop is at most cap*224 x 224; beyond it nothing is decoded.

    (Without the cap, a 3000x1 PNG of 90 bytes needed a 672000x224 intermediate: +600 MB.)
    """
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure peak RSS")
    cap = int(ASPECT_CAP)
    shapes = [(cap, 1), (1, cap), (cap * 3, 3), (3, cap * 3), (cap * 224, 224), (1, 1), (3000, 1), (1, 3000)]
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_PROBE, json.dumps(shapes)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    peaks = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(peaks.values()) < 64, peaks  # MiB above the process's RSS before each image; measured ~4
