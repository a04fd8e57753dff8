"""`clipserve eval retrieval`: image->text and text->image recall@1/5/10, as CLIP_benchmark computes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from clipserve.eval.datasets import RetrievalDataset
from clipserve.eval.embedders import Embedder
from clipserve.eval.metrics import retrieval_recall

RECALL_AT = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalReport:
    images: int
    captions: int
    recall: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "captions": self.captions, **self.recall}

    def table(self) -> str:
        lines = [
            f"{self.images} images, {self.captions} captions",
            f"{'direction':<16} " + " ".join(f"{'R@' + str(k):>7}" for k in RECALL_AT),
        ]
        for label, key in (("image -> text", "text_retrieval"), ("text -> image", "image_retrieval")):
            lines.append(
                f"{label:<16} " + " ".join(f"{self.recall[f'{key}_recall@{k}']:>7.2%}" for k in RECALL_AT)
            )
        return "\n".join(lines)


def evaluate_retrieval(dataset: RetrievalDataset, embedder: Embedder) -> RetrievalReport:
    images = embedder.embed_images(dataset.images)
    texts = embedder.embed_texts(dataset.captions)
    recall = retrieval_recall(texts, images, np.asarray(dataset.caption_image), RECALL_AT)
    return RetrievalReport(len(dataset.images), len(dataset.captions), recall)
