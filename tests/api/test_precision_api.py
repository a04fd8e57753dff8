"""Every precision mode loads, is applied, and serves through the app within its documented distance to fp32."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from clipserve.runtime.weights import resolve_architecture
from tests.cpu_features import cpu_has_bf16_matrix_units
from tests.support import TINY_CONFIG, data_uri, encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio

# docs/operations.md, "Precision": the minimum cosine to the fp32 embedding each mode is held to.
BUDGETS = {"bf16": 0.999, "int8": 0.99}
FP32_PARITY = 1e-5  # fp32: "the reference pipeline's numbers (parity within 1e-5)"
TEXTS = ["a cat", "a photo of a dog", "a rocket on the launch pad"]
IMAGES = [gradient_image(seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def references() -> dict[str, Any]:
    """open_clip's own tiny model (seeded as the runtime seeds it), converted here as the docs describe each
    mode: bf16 = the whole model in bfloat16; int8 = torch's dynamic quantization of every Linear."""
    name = resolve_architecture(str(TINY_CONFIG))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        int8 = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    models = {"fp32": model, "bf16": copy.deepcopy(model).to(torch.bfloat16), "int8": int8}
    pixels = torch.stack([preprocess(image) for image in IMAGES])
    out: dict[str, Any] = {}
    with torch.no_grad():
        for mode, converted in models.items():
            dtype = torch.bfloat16 if mode == "bf16" else torch.float32
            # one image per forward pass, as the app runs them here (int8 scales activations per batch)
            out[f"{mode} images"] = np.concatenate(
                [
                    F.normalize(converted.encode_image(p[None].to(dtype)).float(), dim=-1).numpy()
                    for p in pixels
                ]
            )
        tokens = open_clip.get_tokenizer(name)(TEXTS)
        out["fp32 texts"] = F.normalize(model.encode_text(tokens), dim=-1).numpy()
    return out


def expected_mode(choice: str) -> str:
    if choice != "auto":
        return choice
    return "bf16" if cpu_has_bf16_matrix_units() else "fp32"  # lscpu, not clipserve's own check


def is_bf16_output(vector: np.ndarray) -> bool:
    """True when `vector` is a bfloat16 feature vector normalised in float32: some scale c makes every c * v_i a
    bfloat16 number (8 significant bits). A float32 or int8 pipeline's output has no such scale."""
    k = int(np.argmax(np.abs(vector)))
    for mantissa in range(
        128, 256
    ):  # the largest feature is mantissa * 2^e; the power of two does not matter
        scaled = vector.astype(np.float64) * (mantissa / abs(float(vector[k])))
        rounded = torch.from_numpy(scaled).to(torch.bfloat16).double().numpy()
        if np.allclose(scaled, rounded, rtol=1e-5, atol=1e-30):
            return True
    return False


@pytest.mark.parametrize("choice", ["fp32", "bf16", "int8", "auto"])
async def test_each_precision_is_applied_and_stays_within_its_budget(
    choice: str, references: dict[str, Any], tmp_path: Path
) -> None:
    mode = expected_mode(choice)
    runtime = ClipRuntime.load(
        RuntimeSpec(weights="random", architecture=str(TINY_CONFIG), device="cpu", precision=choice)  # type: ignore[arg-type]
    )
    images = [{"image": data_uri(encode_image(image, "PNG"))} for image in IMAGES]
    async with running_app(runtime, tmp_path, image_batch_size=1) as (client, _):
        embedded = await client.post(
            "/v1/embeddings", json={"input": [*TEXTS, *images], "encoding_format": "base64"}
        )
        classified = await client.post("/v1/classify", json={"input": images[:1], "labels": ["cat", "dog"]})
    assert embedded.status_code == 200, embedded.text
    assert classified.status_code == 200, classified.text
    got = vectors(embedded.json())
    got_texts, got_images = got[: len(TEXTS)], got[len(TEXTS) :]
    fp32 = np.concatenate([references["fp32 texts"], references["fp32 images"]])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    # Applied: the images are exactly what open_clip's model gives when converted to that mode.
    np.testing.assert_allclose(got_images, references[f"{mode} images"], atol=1e-6)
    others = [m for m in ("fp32", "bf16", "int8") if m != mode]
    for other in others:  # and the modes are far enough apart for that to tell them apart
        assert np.abs(got_images - references[f"{other} images"]).max() > 1e-4, other
    assert all(is_bf16_output(v) == (mode == "bf16") for v in got), "bf16 output grid"

    cosines = (got * fp32).sum(axis=1)
    if mode == "fp32":
        assert np.abs(got - fp32).max() <= FP32_PARITY
    else:
        assert cosines.min() >= BUDGETS[mode], cosines
        assert np.abs(got_texts - references["fp32 texts"]).max() > 1e-4  # the text tower was converted too
