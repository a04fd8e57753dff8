"""What /v1/rank and the rerank routes mean: order documents (texts and/or images) by cosine similarity to a query."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipserve.errors import InvalidRequestError
from clipserve.service.embeddings import EmbeddingService, RequestTimings
from clipserve.service.inputs import InputItem


@dataclass(frozen=True)
class RankedDocument:
    index: int
    relevance_score: float


@dataclass(frozen=True)
class RankResult:
    results: list[RankedDocument]  # best first
    text_tokens: int
    image_count: int
    timings: RequestTimings


class RankService:
    def __init__(self, embeddings: EmbeddingService, max_documents: int) -> None:
        self._embeddings = embeddings
        self._max_documents = max_documents

    async def rank(
        self, query: InputItem, documents: list[InputItem], top_n: int | None, account: str
    ) -> RankResult:
        if not documents:
            raise InvalidRequestError("documents must not be empty", param="documents")
        if len(documents) > self._max_documents:
            raise InvalidRequestError(
                f"at most {self._max_documents} documents per request", param="documents"
            )
        if top_n is not None and top_n < 1:
            raise InvalidRequestError("top_n must be at least 1", param="top_n")
        embedded = await self._embeddings.embed([query, *documents], account=account)
        # float32 rounding puts a vector's cosine with itself at 1.0000002: a cosine never leaves [-1, 1]
        scores = np.clip(embedded.vectors[1:] @ embedded.vectors[0], -1.0, 1.0)
        order = np.argsort(-scores, kind="stable")[: top_n or len(documents)]
        return RankResult(
            results=[RankedDocument(int(i), float(scores[i])) for i in order],
            text_tokens=embedded.text_tokens,
            image_count=embedded.image_count,
            timings=embedded.timings,
        )
