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


@dataclass(frozen=True)
class RetrievalRecall:
    """Zero-shot retrieval recall@k on one benchmark (fractions, as published)."""

    benchmark: str
    direction: str  # "image retrieval" (text -> image) or "text retrieval" (image -> text)
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float


# Source: open_clip's published table docs/openclip_retrieval_results.csv (row "ViT-B-32,laion2b_s34b_b79k"),
# made with LAION's CLIP_benchmark, which the model card's Evaluation section points to for results beyond
# ImageNet. Flickr30k and MSCOCO (5k test) zero-shot retrieval.
RETRIEVAL_RECALL: tuple[RetrievalRecall, ...] = (
    RetrievalRecall("MSCOCO", "image retrieval", 0.3934, 0.6543, 0.7561),
    RetrievalRecall("MSCOCO", "text retrieval", 0.5632, 0.7984, 0.8712),
    RetrievalRecall("Flickr30k", "image retrieval", 0.6678, 0.8838, 0.9310),
    RetrievalRecall("Flickr30k", "text retrieval", 0.8410, 0.9620, 0.9830),
)
RETRIEVAL_SOURCE = "https://github.com/mlfoundations/open_clip/blob/main/docs/openclip_retrieval_results.csv"

# The model card's "Out-of-Scope Use" section (it repeats OpenAI's CLIP card), shortened without changing its sense.
INTENDED_USE = (
    "LAION's model card describes this model as a research output for research communities. Any deployed "
    "use case of the model, commercial or not, is out of scope per the card, and non-deployed uses such as "
    "image search in a constrained environment are not recommended without thorough in-domain testing with "
    "a specific, fixed class taxonomy. Surveillance and facial recognition are always out of scope, and "
    "since the model was trained and evaluated on English only, its use should be limited to English."
)
