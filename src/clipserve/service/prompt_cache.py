"""A bounded LRU of prompt embeddings, so a repeated label set costs no text-encoder time.

Bounded by entries and by bytes (prompt strings + vectors): labels are user strings, so a count alone would not
bound memory.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

_ENTRY_OVERHEAD = 200  # bytes per entry beside the prompt and the vector: key tuple, dataclass, dict slot


@dataclass(frozen=True)
class CachedPrompt:
    vector: np.ndarray
    tokens: int


def entry_bytes(prompt: str, entry: CachedPrompt) -> int:
    """Memory one cached prompt holds: the string, the vector's data and a fixed overhead."""
    return sys.getsizeof(prompt) + entry.vector.nbytes + _ENTRY_OVERHEAD


class PromptCache:
    """Keyed by (model, weights fingerprint, prompt text). Used from the event loop only, so no lock."""

    def __init__(self, capacity: int, model_id: str, fingerprint: str, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._namespace = (model_id, fingerprint)
        self._entries: OrderedDict[tuple[str, str, str], tuple[CachedPrompt, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, prompt: str) -> CachedPrompt | None:
        key = (*self._namespace, prompt)
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found[0]

    def put(self, prompt: str, entry: CachedPrompt) -> None:
        size = entry_bytes(prompt, entry)
        if self.capacity <= 0 or (self.max_bytes is not None and size > self.max_bytes):
            return
        key = (*self._namespace, prompt)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (entry, size)
        self.bytes += size
        while len(self._entries) > self.capacity or (
            self.max_bytes is not None and self.bytes > self.max_bytes
        ):
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
