"""Full ViT-B-32 models with seeded random weights, written to disk and loaded back through real code paths."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from clipserve.runtime.model import ClipRuntime, RuntimeSpec


@dataclass
class Reference:
    """The reference pipeline: open_clip's own model, eval transform and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any

    @torch.inference_mode()
    def image_vectors(self, paths: list[Path]) -> np.ndarray:
        pixels = torch.stack([self.preprocess(Image.open(p)) for p in paths])
        return F.normalize(self.model.encode_image(pixels), dim=-1).numpy()

    @torch.inference_mode()
    def text_vectors(self, texts: list[str]) -> np.ndarray:
        return F.normalize(self.model.encode_text(self.tokenizer(texts)), dim=-1).numpy()


@pytest.fixture(scope="session")
def vit_b32_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(1234)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))  # as in the trained checkpoint
    return {k: v.contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def vit_b32_safetensors(tmp_path_factory: pytest.TempPathFactory, vit_b32_state_dict) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("weights") / "open_clip_model.safetensors"
    save_file(vit_b32_state_dict, str(path))
    return path


@pytest.fixture(scope="session")
def reference(vit_b32_safetensors: Path) -> Reference:
    model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained=str(vit_b32_safetensors)
    )
    return Reference(model.eval(), preprocess, open_clip.get_tokenizer("ViT-B-32"))


@pytest.fixture(scope="session")
def vit_runtime(vit_b32_safetensors: Path) -> ClipRuntime:
    return ClipRuntime.load(RuntimeSpec(weights=str(vit_b32_safetensors), device="cpu"))
