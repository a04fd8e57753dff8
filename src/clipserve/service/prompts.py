"""Embed prompt texts through the prompt cache; misses go through the normal batched text path."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from clipserve.service.embeddings import EmbeddingService
from clipserve.service.inputs import TextItem
from clipserve.service.prompt_cache import CachedPrompt, PromptCache


@dataclass(frozen=True)
class PromptVectors:
    vectors: np.ndarray  # [n, dim], one per prompt, in order
    tokens_encoded: int  # tokens the text encoder ran on for this call
    tokens_cached: int  # tokens served from the cache
    cache_hits: int


class PromptEncoder:
    def __init__(self, embeddings: EmbeddingService, cache: PromptCache, chunk_size: int) -> None:
        self._embeddings = embeddings
        self._cache = cache
        self._chunk_size = chunk_size  # at most one request's worth of queue slots at a time

    @property
    def cache(self) -> PromptCache:
        return self._cache

    async def encode(
        self, prompts: list[str], *, account: str, after: asyncio.Event | None = None
    ) -> PromptVectors:
        """The prompts' vectors; cache misses go to the text queue as `account`'s items, in its share.

        Misses are admitted to the queue at once (a full queue refuses now), but reach the model only once
        `after` is set.
        """
        found: dict[str, CachedPrompt] = {}
        missing: list[str] = []
        for prompt in dict.fromkeys(prompts):  # unique, in order
            entry = self._cache.get(prompt)
            if entry is None:
                missing.append(prompt)
            else:
                found[prompt] = entry
        hits = len(found)
        tokens_cached = sum(e.tokens for e in found.values())
        tokens_encoded = 0
        for start in range(0, len(missing), self._chunk_size):
            chunk = missing[start : start + self._chunk_size]
            result = await self._embeddings.embed(
                [TextItem(p, "labels") for p in chunk],
                account=account,  # the caller's share of the text queue, not one share for every account
                texts_after=after,
            )
            counts = result.token_counts
            for prompt, vector, tokens in zip(chunk, result.vectors, counts, strict=True):
                # a copy: a row view would keep the whole batch's array alive behind the cache's byte count
                entry = CachedPrompt(vector.copy(), tokens)
                found[prompt] = entry
                self._cache.put(prompt, entry)
            tokens_encoded += sum(counts)
        vectors = np.stack([found[p].vector for p in prompts]) if prompts else np.empty((0, 0), np.float32)
        return PromptVectors(vectors, tokens_encoded, tokens_cached, hits)
