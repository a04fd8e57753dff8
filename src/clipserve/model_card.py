"""Facts about the served model: its names and its card."""

from __future__ import annotations

from dataclasses import dataclass

HUB_ID = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
SHORT_NAME = "CLIP-ViT-B-32-laion2B-s34B-b79K"
DEFAULT_WEIGHTS = f"hf-hub:{HUB_ID}"
ARCHITECTURE = "ViT-B-32"
PRETRAINED_TAG = "laion2b_s34b_b79k"

# Every name a client may send in `model`; all refer to the one served model.
MODEL_ALIASES = frozenset(
    {
        HUB_ID,
        SHORT_NAME,
        DEFAULT_WEIGHTS,
        f"{ARCHITECTURE}/{PRETRAINED_TAG}",
        f"{ARCHITECTURE}:{PRETRAINED_TAG}",
    }
)


@dataclass(frozen=True)
class ModelFacts:
    """The model card, as /v1/models reports it."""

    license: str = "MIT"
    task: str = "zero-shot-image-classification"
    tasks: tuple[str, ...] = ("embeddings", "zero-shot-image-classification", "image-text-retrieval")
    architecture: str = f"OpenCLIP {ARCHITECTURE}"
    pretrained: str = PRETRAINED_TAG
    training_data: str = "LAION-2B (English subset of LAION-5B)"
    embedding_dimensions: int = 512
    context_length: int = 77
    image_size: int = 224
    imagenet_zero_shot_top1: float = 0.666
    source: str = f"https://huggingface.co/{HUB_ID}"


MODEL_FACTS = ModelFacts()


def is_served_model(name: str) -> bool:
    """True when `name` names the served model (case-insensitive)."""
    lowered = name.strip().lower()
    return any(lowered == alias.lower() for alias in MODEL_ALIASES)
