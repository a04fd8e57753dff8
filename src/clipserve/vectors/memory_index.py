"""One collection's vectors in memory: exact search (a matrix product) up to a size, then an IVF index
(FAISS), with deletions as tombstones and periodic rebuilds. Knows nothing of SQL or HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipserve.vectors.base import DIMENSIONS

Accept = Callable[[int], bool]  # row -> passes the filter


@dataclass(frozen=True)
class AnnSettings:
    exact_max_items: int = 100_000  # exact search up to here; an ANN index beyond
    nprobe_fraction: float = 1 / 16  # share of IVF lists visited per query (recall vs speed)
    rebuild_fraction: float = 0.2  # rebuild the ANN index when this share of rows changed since it was built


class MemoryIndex:
    def __init__(self, ann: AnnSettings) -> None:
        self._ann = ann
        self._vectors = np.zeros((0, DIMENSIONS), dtype=np.float32)
        self._size = 0  # rows used, tombstones included
        self._ids: list[str] = []
        self._metadata: list[dict[str, Any]] = []
        self._alive = np.zeros(0, dtype=bool)
        self._row_of: dict[str, int] = {}
        self._ivf: Any = None  # faiss.IndexIVFFlat over rows, or None
        self._changes_since_build = 0

    def __len__(self) -> int:
        return len(self._row_of)

    @property
    def uses_ann(self) -> bool:
        return self._ivf is not None

    def upsert(
        self, ids: list[str], vectors: np.ndarray, metadata: list[dict[str, Any]], *, maintain: bool = True
    ) -> None:
        """Add or replace items; `maintain=False` defers index upkeep (bulk loads call maintain() once)."""
        for item_id in ids:
            self._tombstone(item_id)
        self._reserve(self._size + len(ids))
        start = self._size
        self._vectors[start : start + len(ids)] = vectors
        self._alive[start : start + len(ids)] = True
        assert len(ids) == len(metadata) == len(vectors)
        for offset, item_id in enumerate(ids):
            self._row_of[item_id] = start + offset
        self._ids.extend(ids)
        self._metadata.extend(metadata)
        self._size += len(ids)
        if self._ivf is not None:
            self._ivf.add_with_ids(vectors, np.arange(start, start + len(ids), dtype=np.int64))
        self._changes_since_build += len(ids)
        if maintain:
            self.maintain()

    def delete(self, ids: list[str]) -> None:
        for item_id in ids:
            self._tombstone(item_id)
        self.maintain()

    def search(self, query: np.ndarray, top_k: int, accept: Accept | None) -> list[tuple[int, float]]:
        """(row, score) of the best `top_k` live rows that `accept`, best first."""
        if not self._row_of:
            return []
        if self._ivf is not None:
            found = self._search_ann(query, top_k, accept)
            if found is not None:
                return found
        return self._search_exact(query, top_k, accept)

    def row(self, row: int) -> tuple[str, np.ndarray, dict[str, Any]]:
        return self._ids[row], self._vectors[row], self._metadata[row]

    def row_of(self, item_id: str) -> int | None:
        return self._row_of.get(item_id)

    # internals

    def _tombstone(self, item_id: str) -> None:
        row = self._row_of.pop(item_id, None)
        if row is None:
            return
        self._alive[row] = False
        self._metadata[row] = {}
        if self._ivf is not None:
            self._ivf.remove_ids(np.array([row], dtype=np.int64))
        self._changes_since_build += 1

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._vectors):
            return
        capacity = max(rows, 2 * len(self._vectors), 1024)
        grown = np.zeros((capacity, DIMENSIONS), dtype=np.float32)
        grown[: self._size] = self._vectors[: self._size]
        alive = np.zeros(capacity, dtype=bool)
        alive[: self._size] = self._alive[: self._size]
        self._vectors, self._alive = grown, alive

    def maintain(self) -> None:
        """Compact tombstones and (re)build or drop the ANN index as the collection grows or shrinks."""
        live = len(self._row_of)
        dead = self._size - live
        if dead > max(1024, live):
            self._compact()
        wants_ann = live > self._ann.exact_max_items
        if not wants_ann:
            self._ivf = None
        elif self._ivf is None or self._changes_since_build > self._ann.rebuild_fraction * live:
            self._build_ann()

    def _compact(self) -> None:
        rows = np.flatnonzero(self._alive[: self._size])
        ids = [self._ids[r] for r in rows]
        metadata = [self._metadata[r] for r in rows]
        vectors = self._vectors[rows].copy()
        self._vectors = np.zeros((0, DIMENSIONS), dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._size, self._ids, self._metadata, self._row_of = 0, [], [], {}
        self._ivf = None
        self._reserve(len(ids))
        self._vectors[: len(ids)] = vectors
        self._alive[: len(ids)] = True
        self._ids, self._metadata = ids, metadata
        self._row_of = {item_id: i for i, item_id in enumerate(ids)}
        self._size = len(ids)

    def _build_ann(self) -> None:
        import faiss

        if self._size - len(self._row_of) > 0:
            self._compact()
        live = len(self._row_of)
        lists = int(max(1, min(16_384, 2 * np.sqrt(live), live // 39)))  # FAISS wants >= 39 points per list
        quantizer = faiss.IndexFlatIP(DIMENSIONS)
        ivf = faiss.IndexIVFFlat(quantizer, DIMENSIONS, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = self._vectors[: self._size][
            rng.choice(self._size, min(self._size, 64 * lists), replace=False)
        ]
        ivf.train(sample)
        ivf.add_with_ids(self._vectors[: self._size], np.arange(self._size, dtype=np.int64))
        ivf.nprobe = max(1, int(lists * self._ann.nprobe_fraction))
        self._ivf = ivf
        self._changes_since_build = 0

    def _search_exact(self, query: np.ndarray, top_k: int, accept: Accept | None) -> list[tuple[int, float]]:
        scores = self._vectors[: self._size] @ query
        scores[~self._alive[: self._size]] = -np.inf
        if accept is None:
            k = min(top_k, len(self._row_of))
            best = np.argpartition(-scores, k - 1)[:k]
            best = best[np.argsort(-scores[best], kind="stable")]
            return [(int(r), float(scores[r])) for r in best]
        found: list[tuple[int, float]] = []
        for r in np.argsort(-scores, kind="stable"):
            if scores[r] == -np.inf:
                break
            if accept(int(r)):
                found.append((int(r), float(scores[r])))
                if len(found) == top_k:
                    break
        return found

    def _search_ann(
        self, query: np.ndarray, top_k: int, accept: Accept | None
    ) -> list[tuple[int, float]] | None:
        """IVF results, or None when a filter left too few of them (then exact search answers)."""
        fetch = top_k if accept is None else min(len(self._row_of), max(10 * top_k, 100))
        scores, rows = self._ivf.search(query[None, :], fetch)
        found = [
            (int(r), float(s))
            for r, s in zip(rows[0], scores[0], strict=True)
            if r >= 0 and (accept is None or accept(int(r)))
        ][:top_k]
        if accept is not None and len(found) < top_k:
            return None
        return found
