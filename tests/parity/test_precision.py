"""bf16 and int8 stay within their accuracy budgets against the fp32 reference (full ViT-B-32 shape)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from tests.support import PHOTO_FILES, TEXTS, photo_path

BUDGETS = {"bf16": 0.999, "int8": 0.99}  # minimum cosine similarity to the fp32 embedding


def photos_and_variants() -> list[Image.Image]:
    images = [Image.open(photo_path(name)) for name in PHOTO_FILES]
    return images + [ImageOps.mirror(i.convert("RGB")).rotate(10) for i in images[:3]]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_precision_stays_within_its_budget(precision: str, vit_b32_safetensors: Path, reference) -> None:
    runtime = ClipRuntime.load(
        RuntimeSpec(weights=str(vit_b32_safetensors), device="cpu", precision=precision)
    )  # type: ignore[arg-type]
    assert runtime.precision == precision
    images = photos_and_variants()
    got_images = runtime.encode_images(torch.stack([runtime.preprocess(i) for i in images]))
    got_texts = runtime.encode_texts(runtime.tokenize(TEXTS).ids)
    with torch.no_grad():
        want_images = torch.nn.functional.normalize(
            reference.model.encode_image(torch.stack([reference.preprocess(i) for i in images])), dim=-1
        ).numpy()
    want_texts = reference.text_vectors(TEXTS)
    image_cosines = (got_images * want_images).sum(axis=1)
    text_cosines = (got_texts * want_texts).sum(axis=1)
    assert image_cosines.min() >= BUDGETS[precision], image_cosines
    assert text_cosines.min() >= BUDGETS[precision], text_cosines
    assert np.allclose(np.linalg.norm(got_images, axis=1), 1.0, atol=1e-5)
    assert runtime.logit_scale == pytest.approx(100.0, rel=1e-5)


def test_auto_picks_bf16_only_with_bf16_hardware() -> None:
    from clipserve.runtime.precision import BF16_CPU_FLAGS, cpu_flags, resolve_precision

    expected = "bf16" if cpu_flags() & BF16_CPU_FLAGS else "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(RuntimeError, match="CPU only"):
        resolve_precision("int8", torch.device("cuda"))
