"""Where weights come from: the hub, an open_clip checkpoint, a transformers checkpoint, or seeded random init."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image

from clipserve.errors import WeightsUnavailableError
from clipserve.runtime.transformers_checkpoint import TransformersCheckpoint

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
RANDOM = "random"
OPEN_CLIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

Preprocess = Callable[[Image.Image], torch.Tensor]


class WeightsKind(StrEnum):
    HUB = "hub"
    OPEN_CLIP_FILE = "open_clip_file"
    TRANSFORMERS = "transformers"
    RANDOM = "random"


@dataclass(frozen=True)
class WeightsInfo:
    """What was loaded, for logs, /v1/models and cache keys."""

    kind: WeightsKind
    source: str
    architecture: str
    fingerprint: str

    @property
    def is_random(self) -> bool:
        return self.kind is WeightsKind.RANDOM


@dataclass
class LoadedModel:
    model: open_clip.CLIP
    preprocess: Preprocess
    info: WeightsInfo


def options_message(spec: str, reason: str) -> str:
    return (
        f"could not load weights from {spec!r}: {reason}\n"
        "Options:\n"
        "  --weights hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K   (needs the hub, or a filled model cache)\n"
        "  --weights /path/to/open_clip_model.safetensors            (an open_clip checkpoint, .safetensors or .bin)\n"
        "  --weights /path/to/transformers-dir                       (a transformers CLIPModel: config.json + "
        "model.safetensors)\n"
        "  --weights random                                          (random init: meaningless embeddings, for "
        "offline development)"
    )


def load_model(spec: str, *, architecture: str, cache_dir: Path, seed: int) -> LoadedModel:
    """Build the model from a weights spec; raise WeightsUnavailableError with the options on failure."""
    try:
        architecture = resolve_architecture(architecture)
        if spec == RANDOM:
            return _load_random(architecture, seed)
        if spec.startswith(HUB_PREFIX):
            return _load_hub(spec, cache_dir)
        path = Path(spec).expanduser()
        if not path.exists():
            raise WeightsUnavailableError(f"{path} does not exist")
        checkpoint = TransformersCheckpoint.find(path)
        if checkpoint is not None:
            return _load_transformers(spec, checkpoint)
        if path.is_file() and path.suffix in OPEN_CLIP_SUFFIXES:
            return _load_open_clip_file(spec, path, architecture)
        raise WeightsUnavailableError(
            f"{path} is neither an open_clip checkpoint ({', '.join(OPEN_CLIP_SUFFIXES)}) "
            "nor a transformers CLIP directory"
        )
    except WeightsUnavailableError as exc:
        raise WeightsUnavailableError(options_message(spec, str(exc))) from exc
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise WeightsUnavailableError(options_message(spec, f"{type(exc).__name__}: {exc}")) from exc


def resolve_architecture(architecture: str) -> str:
    """An open_clip architecture name; a path to an open_clip model-config JSON is registered under its stem."""
    if architecture.endswith(".json"):
        path = Path(architecture).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"architecture config {path} does not exist")
        open_clip.add_model_config(path)
        return path.stem
    if architecture not in open_clip.list_models():
        raise WeightsUnavailableError(f"unknown open_clip architecture {architecture!r}")
    return architecture


def file_fingerprint(path: Path) -> str:
    """sha256 of a weight file (first 16 hex digits): identifies the weights in caches."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _create(architecture: str, pretrained: str | None) -> tuple[open_clip.CLIP, Preprocess]:
    # open_clip logs a warning when it builds without weights; ours (for random) is louder and clearer.
    open_clip_logger = logging.getLogger()
    previous = open_clip_logger.level
    open_clip_logger.setLevel(logging.ERROR)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=pretrained)
    finally:
        open_clip_logger.setLevel(previous)
    return model, preprocess


def _load_random(architecture: str, seed: int) -> LoadedModel:
    torch.manual_seed(seed)
    model, preprocess = _create(architecture, None)
    info = WeightsInfo(WeightsKind.RANDOM, RANDOM, architecture, f"random-{architecture}-seed{seed}")
    return LoadedModel(model, preprocess, info)


def _load_open_clip_file(spec: str, path: Path, architecture: str) -> LoadedModel:
    model, preprocess = _create(architecture, str(path))
    info = WeightsInfo(WeightsKind.OPEN_CLIP_FILE, spec, architecture, file_fingerprint(path))
    return LoadedModel(model, preprocess, info)


def _load_hub(spec: str, cache_dir: Path) -> LoadedModel:
    from open_clip.pretrained import download_pretrained_from_hf

    hub_id = spec[len(HUB_PREFIX) :]
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        download_pretrained_from_hf(hub_id, filename="open_clip_config.json", cache_dir=str(cache_dir))
        # safetensors first, then open_clip_pytorch_model.bin: open_clip's own preference.
        checkpoint = Path(download_pretrained_from_hf(hub_id, cache_dir=str(cache_dir)))
    except FileNotFoundError as exc:
        raise WeightsUnavailableError(
            f"not reachable on the hub and not in the model cache {cache_dir} ({_first_line(exc)})"
        ) from exc
    # The snapshot folder holds config and weights side by side: open_clip's local-dir loader reads both,
    # so the hub's preprocessing config applies exactly as with open_clip's own hf-hub loading.
    model, preprocess = _create(f"local-dir:{checkpoint.parent}", None)
    info = WeightsInfo(WeightsKind.HUB, spec, hub_id, file_fingerprint(checkpoint))
    return LoadedModel(model, preprocess, info)


def _load_transformers(spec: str, checkpoint: TransformersCheckpoint) -> LoadedModel:
    architecture = _builtin_architecture_for(checkpoint.open_clip_config())
    model, preprocess = _create(architecture, None)
    state_dict = checkpoint.load_state_dict()
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"transformers checkpoint does not match {architecture}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    info = WeightsInfo(
        WeightsKind.TRANSFORMERS, spec, architecture, file_fingerprint(checkpoint.weights_path)
    )
    return LoadedModel(model, preprocess, info)


def _builtin_architecture_for(cfg: dict[str, Any]) -> str:
    """The open_clip built-in architecture whose shape equals `cfg`."""
    for name in open_clip.list_models():
        builtin = open_clip.get_model_config(name)
        if builtin and _same_shape(builtin, cfg):
            return str(name)
    raise WeightsUnavailableError(f"no open_clip architecture matches the transformers config {cfg}")


def _same_shape(builtin: dict[str, Any], cfg: dict[str, Any]) -> bool:
    vision, text = builtin.get("vision_cfg", {}), builtin.get("text_cfg", {})
    if set(vision) - {"image_size", "layers", "width", "patch_size", "head_width"}:
        return False  # timm towers, custom pooling etc.
    if set(text) - {"context_length", "vocab_size", "width", "heads", "layers"}:
        return False
    wanted_vision = {"head_width": 64, **vision}
    return (
        builtin.get("embed_dim") == cfg["embed_dim"]
        and bool(builtin.get("quick_gelu", False)) == bool(cfg.get("quick_gelu", False))
        and all(wanted_vision.get(k) == v for k, v in cfg["vision_cfg"].items())
        and all(text.get(k) == v for k, v in cfg["text_cfg"].items())
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
