"""Evaluation metrics, computed as CLIP_benchmark computes them (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def topk_accuracy(scores: np.ndarray, targets: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Fraction of rows whose target is among the k highest scores."""
    ranked = np.argsort(-scores, axis=1, kind="stable")
    return {k: float((ranked[:, :k] == targets[:, None]).any(axis=1).mean()) for k in ks}


def per_class_recall(predictions: np.ndarray, targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Top-1 recall of each class (NaN for a class with no samples)."""
    recall = np.full(n_classes, np.nan)
    for c in range(n_classes):
        members = targets == c
        if members.any():
            recall[c] = float((predictions[members] == c).mean())
    return recall


def retrieval_recall(
    text_vectors: np.ndarray, image_vectors: np.ndarray, caption_image: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """image->text and text->image recall@k: a query counts when any of its positives is in its top k."""
    scores = text_vectors @ image_vectors.T  # [texts, images]
    positive = np.zeros_like(scores, dtype=bool)
    positive[np.arange(len(caption_image)), caption_image] = True
    out = {}
    images_for_text = np.argsort(-scores, axis=1, kind="stable")
    texts_for_image = np.argsort(-scores.T, axis=1, kind="stable")
    for k in ks:
        # CLIP_benchmark's names: image retrieval = text query -> images; text retrieval = image query -> texts
        hits_t2i = np.take_along_axis(positive, images_for_text[:, :k], axis=1).any(axis=1)
        hits_i2t = np.take_along_axis(positive.T, texts_for_image[:, :k], axis=1).any(axis=1)
        out[f"image_retrieval_recall@{k}"] = float(hits_t2i.mean())
        out[f"text_retrieval_recall@{k}"] = float(hits_i2t.mean())
    return out
