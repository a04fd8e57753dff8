"""Facts about the served model: its names and its card."""

from __future__ import annotations

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

MODEL_CARD = {
    "license": "MIT",
    "task": "zero-shot-image-classification",
    "tasks": ["embeddings", "zero-shot-image-classification", "image-text-retrieval"],
    "architecture": f"OpenCLIP {ARCHITECTURE}",
    "pretrained": PRETRAINED_TAG,
    "training_data": "LAION-2B (English subset of LAION-5B)",
    "embedding_dimensions": 512,
    "context_length": 77,
    "image_size": 224,
    "imagenet_zero_shot_top1": 0.666,
    "source": f"https://huggingface.co/{HUB_ID}",
}


def is_served_model(name: str) -> bool:
    """True when `name` names the served model (case-insensitive)."""
    lowered = name.strip().lower()
    return any(lowered == alias.lower() for alias in MODEL_ALIASES)
