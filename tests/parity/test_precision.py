"""bf16 and int8 stay within their accuracy budgets against the fp32 reference (full ViT-B-32 shape)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from tests.cpu_features import cpu_flag_names, cpu_has_bf16_matrix_units
from tests.support import PHOTO_FILES, TEXTS, TINY_CONFIG, photo_path

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


def test_auto_picks_bf16_on_this_machine_only_if_it_has_bf16_matrix_units() -> None:
    """The expectation comes from lscpu (tests/cpu_features.py), not from clipserve's own flag check."""
    from clipserve.runtime.precision import resolve_precision

    expected = "bf16" if cpu_has_bf16_matrix_units() else "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == expected
    runtime = ClipRuntime.load(
        RuntimeSpec(weights="random", architecture=str(TINY_CONFIG), device="cpu", precision="auto")
    )
    assert runtime.precision == expected
    assert runtime.encode_texts(runtime.tokenize(["a cat"]).ids).dtype == np.float32


# Flag lines as real CPUs report them (the relevant part): what each must get, per docs/operations.md.
CPUS = {
    "haswell (avx2 only)": ("fpu sse4_2 avx avx2 fma", "fp32"),
    "ice lake (avx512, no bf16)": ("avx2 avx512f avx512bw avx512_vnni avx512_vbmi2", "fp32"),
    "cooper lake / zen 4 (avx512_bf16)": ("avx2 avx512f avx512_vnni avx512_bf16", "bf16"),
    "sapphire rapids (amx)": ("avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8", "bf16"),
    "amx without avx512_bf16 listed": ("avx2 avx512f amx_tile amx_bf16", "bf16"),
    "amx int8 only": ("avx2 avx512f amx_tile amx_int8", "fp32"),
    "no flags readable": ("", "fp32"),
}


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_auto_decision_for_each_kind_of_cpu(cpu: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU cannot be swapped, so its flag set is: each real kind of CPU gets the documented choice."""
    from clipserve.runtime import precision

    flags, expected = CPUS[cpu]
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags.split()))
    assert precision.resolve_precision("auto", torch.device("cpu")) == expected
    assert precision.resolve_precision("auto", torch.device("cuda")) == "bf16"
    for explicit in ("fp32", "bf16", "int8"):
        assert precision.resolve_precision(explicit, torch.device("cpu")) == explicit  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="CPU only"):
        precision.resolve_precision("int8", torch.device("cuda"))


def test_this_machines_flags_are_read_as_lscpu_reads_them() -> None:
    from clipserve.runtime.precision import cpu_flags

    assert set(cpu_flags()) == cpu_flag_names()
