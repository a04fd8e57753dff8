"""Every weights source loads the same numbers: open_clip .bin, the hub cache (offline), a transformers checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from clipserve.runtime.weights import WeightsKind
from tests.support import PHOTO_FILES, TEXTS, photo_path

PATHS = [photo_path(name) for name in PHOTO_FILES]


def runtime_vectors(runtime: ClipRuntime) -> tuple[np.ndarray, np.ndarray]:
    pixels = torch.stack([runtime.preprocess(Image.open(p)) for p in PATHS])
    return runtime.encode_images(pixels), runtime.encode_texts(runtime.tokenize(TEXTS).ids)


def test_open_clip_bin_checkpoint_loads_like_safetensors(
    tmp_path: Path, vit_b32_state_dict, reference
) -> None:
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(vit_b32_state_dict, path)
    runtime = ClipRuntime.load(RuntimeSpec(weights=str(path), device="cpu"))
    images, texts = runtime_vectors(runtime)
    assert runtime.weights.kind is WeightsKind.OPEN_CLIP_FILE
    assert np.abs(images - reference.image_vectors(PATHS)).max() <= 1e-5
    assert np.abs(texts - reference.text_vectors(TEXTS)).max() <= 1e-5


def test_hub_weights_load_offline_from_a_filled_cache(
    tmp_path: Path, vit_b32_safetensors: Path, reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layout huggingface_hub writes; this is how an operator pre-seeds an offline machine."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "models"
    repo = cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "open_clip_model.safetensors").write_bytes(vit_b32_safetensors.read_bytes())
    config = {
        "model_cfg": open_clip.get_model_config("ViT-B-32"),
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
        },
    }
    (snapshot / "open_clip_config.json").write_text(json.dumps(config))

    runtime = ClipRuntime.load(
        RuntimeSpec(weights="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", device="cpu", cache_dir=cache)
    )
    images, texts = runtime_vectors(runtime)
    assert runtime.weights.kind is WeightsKind.HUB
    assert np.abs(images - reference.image_vectors(PATHS)).max() <= 1e-5
    assert np.abs(texts - reference.text_vectors(TEXTS)).max() <= 1e-5


@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_transformers_checkpoint_is_converted_exactly(tmp_path: Path, activation: str) -> None:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(7)
    config = CLIPConfig(
        text_config={"hidden_act": activation, "hidden_size": 512, "intermediate_size": 2048,
                     "num_attention_heads": 8, "num_hidden_layers": 12, "max_position_embeddings": 77},
        vision_config={"hidden_act": activation, "hidden_size": 768, "intermediate_size": 3072,
                       "num_attention_heads": 12, "num_hidden_layers": 12, "patch_size": 32, "image_size": 224},
        projection_dim=512,
    )  # fmt: skip
    hf_model = CLIPModel(config).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").is_file()

    runtime = ClipRuntime.load(RuntimeSpec(weights=str(tmp_path / "hf"), device="cpu"))
    assert runtime.weights.kind is WeightsKind.TRANSFORMERS
    assert runtime.weights.architecture == ("ViT-B-32" if activation == "gelu" else "ViT-B-32-quickgelu")
    images, texts = runtime_vectors(runtime)

    pixels = torch.stack([runtime.preprocess(Image.open(p)) for p in PATHS])
    ids = runtime.tokenize(TEXTS).ids
    with torch.inference_mode():
        want_images = F.normalize(_features(hf_model.get_image_features(pixel_values=pixels)), dim=-1).numpy()
        want_texts = F.normalize(_features(hf_model.get_text_features(input_ids=ids)), dim=-1).numpy()
    assert np.abs(images - want_images).max() <= 1e-5
    assert np.abs(texts - want_texts).max() <= 1e-5
    assert runtime.logit_scale == pytest.approx(float(hf_model.logit_scale.detach().exp()), rel=1e-6)


def _features(output: object) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected features
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]
