"""Cosine similarity of unit embeddings, as a score: clamped to [-1, 1] (float32 rounding can exceed 1)."""

from __future__ import annotations

import numpy as np


def cosine_scores(source: np.ndarray, others: np.ndarray) -> list[float]:
    """The cosine of `source` ([dim], unit length) with each row of `others` ([n, dim], unit length)."""
    scores = others.astype(np.float64) @ source.astype(np.float64)
    return [float(s) for s in np.clip(scores, -1.0, 1.0)]
