"""What a vector store does for collections; the embedded store and the Milvus store both do exactly this,
checked by one contract test suite (tests/system/test_vector_store_contract.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from clipserve.vectors.filters import Filter

DIMENSIONS = 512


@dataclass(frozen=True)
class StoredItem:
    id: str
    vector: np.ndarray  # float32, L2-normalised, shape (512,)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # cosine similarity
    metadata: dict[str, Any]
    vector: np.ndarray | None = None


class VectorStore(Protocol):
    """Collections are addressed by an internal key (the SQL catalogue maps names and owners to it).
    Every method is synchronous and thread-safe; the service calls them from a thread pool."""

    name: str

    def create_collection(self, key: str) -> None: ...

    def drop_collection(self, key: str) -> None:
        """Drop it and its items; dropping a missing one is harmless (deletes are finished by repeating)."""

    def has_collection(self, key: str) -> bool: ...

    def upsert(self, key: str, items: list[StoredItem]) -> None:
        """All of them or none (one transaction where the backend has them)."""

    def get(self, key: str, ids: list[str]) -> list[StoredItem]:
        """The items that exist, in the order asked."""

    def delete(self, key: str, ids: list[str]) -> int:
        """How many of them existed."""

    def count(self, key: str) -> int: ...

    def search(
        self,
        key: str,
        vector: np.ndarray,
        top_k: int,
        where: Filter | None = None,
        *,
        exclude_id: str | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """The top_k items by cosine similarity that pass the filter, best first."""

    def close(self) -> None: ...
