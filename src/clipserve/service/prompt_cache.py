"""A bounded LRU of prompt embeddings, so a repeated label set costs no text-encoder time."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CachedPrompt:
    vector: np.ndarray
    tokens: int


class PromptCache:
    """Keyed by (model, weights fingerprint, prompt text). Used from the event loop only, so no lock."""

    def __init__(self, capacity: int, model_id: str, fingerprint: str) -> None:
        self.capacity = capacity
        self._namespace = (model_id, fingerprint)
        self._entries: OrderedDict[tuple[str, str, str], CachedPrompt] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, prompt: str) -> CachedPrompt | None:
        key = (*self._namespace, prompt)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, prompt: str, entry: CachedPrompt) -> None:
        if self.capacity <= 0:
            return
        key = (*self._namespace, prompt)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
