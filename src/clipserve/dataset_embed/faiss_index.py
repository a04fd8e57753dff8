"""A FAISS index over an output folder's committed image embeddings, sized to the data, with its measured recall.

Exact (IndexFlatIP) below `exact_below` vectors; at and above, IVF-PQ: nlist ~ 4*sqrt(n) (a power of two, at
least 39 training vectors per list), PQ with dim/8 sub-quantizers of 8 bits (64x8 for 512-d), trained on a
seeded sample of up to max(39*nlist, 100k) vectors, holding ALL n vectors. recall@10 is measured on held-out
queries (dataset vectors outside the training sample) against an exact search; nprobe is chosen on a second,
disjoint set of tuning queries, so the reported recall is not the one it was tuned on.

Vector ids are row numbers over the committed shards in file-name order (img_emb_10 before img_emb_2), the
order in which clip-retrieval's tools read img_emb/ and metadata/, so its back end finds each id's metadata.
Streams shard by shard: memory holds the index, one shard, the queries and the training sample.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipserve.dataset_embed.output import committed_shards

K = 10
PQ_BITS = 8
MIN_PER_LIST = 39  # FAISS's k-means wants at least 39 training points per centroid
MIN_PQ_TRAIN = MIN_PER_LIST * (1 << PQ_BITS)  # ... and so does each 256-centroid PQ codebook
MAX_TRAIN = 100_000
SCORE_TIE = 1e-5  # a found vector scoring within this of the exact 10th best counts as a hit (duplicates tie)
TUNE_QUERIES = 250  # nprobe is chosen on these (besides the held-out queries); each costs an exact scan
SATURATED = 0.005  # stop doubling nprobe once recall@10 gains less than this


class IndexBuildError(ValueError):
    """No index can be built (no committed embeddings)."""


@dataclass(frozen=True)
class IndexReport:
    kind: str  # "flat" (exact) or "ivfpq"
    vectors: int
    recall_at_10: float
    path: Path  # index/image.index
    queries: int = 0
    nlist: int | None = None
    nprobe: int | None = None

    def line(self) -> str:
        """One printable line: what was built, over how many vectors, and its recall@10."""
        shape = f" (nlist {self.nlist}, nprobe {self.nprobe})" if self.kind == "ivfpq" else ""
        return (
            f"index: {self.kind}{shape} over {self.vectors:,} vectors, recall@10 {self.recall_at_10:.3f} "
            f"on {self.queries:,} held-out queries -> {self.path}"
        )


class _Shards:
    """The committed img_emb files in file-name order, read as float32 rows by global row number."""

    def __init__(self, output: Path) -> None:
        numbers = sorted(committed_shards(output), key=lambda n: f"img_emb_{n}.npy")
        self.paths = [output / "img_emb" / f"img_emb_{n}.npy" for n in numbers]
        shapes = [np.load(p, mmap_mode="r").shape for p in self.paths]
        self.dim = next((s[1] for s in shapes if len(s) == 2 and s[0] > 0), 0)
        self.offsets = np.cumsum([0] + [s[0] for s in shapes])
        self.total = int(self.offsets[-1])

    def blocks(self) -> Any:
        for path in self.paths:
            block = np.load(path, mmap_mode="r")
            if len(block):
                yield np.ascontiguousarray(block, dtype=np.float32)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.dim), np.float32)
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for s in np.unique(shard_of):
            where = np.nonzero(shard_of == s)[0]
            block = np.load(self.paths[s], mmap_mode="r")
            out[where] = block[rows[where] - self.offsets[s]]
        return out


def build_index(output: Path, exact_below: int, *, queries: int = 1000, seed: int = 0) -> IndexReport:
    """Build index/image.index and index/index_info.json over `output`'s committed img_emb; measure recall@10."""
    import faiss

    shards = _Shards(output)
    n = shards.total
    if n == 0:
        raise IndexBuildError(f"{output} has no committed image embeddings to index")
    held = max(1, min(queries, n // 10))
    tuning = min(held, TUNE_QUERIES)
    rng = np.random.default_rng(seed)
    nlist = _nlist(n, n - held - tuning)
    train_size = min(n - held - tuning, max(nlist * MIN_PER_LIST, MAX_TRAIN))
    approximate = n >= exact_below and train_size >= MIN_PQ_TRAIN and shards.dim > 0
    picked = rng.choice(n, size=held + tuning + (train_size if approximate else 0), replace=False)
    query_rows, tune_rows = np.sort(picked[:held]), np.sort(picked[held : held + tuning])
    probe_rows = np.concatenate([query_rows, tune_rows]) if approximate else query_rows
    probes = shards.rows(probe_rows)
    index: Any
    if approximate:
        m = _pq_subquantizers(shards.dim)
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(shards.dim), shards.dim, nlist, m, PQ_BITS, faiss.METRIC_INNER_PRODUCT
        )
        index.train(shards.rows(np.sort(picked[held + tuning :])))
    else:
        index = faiss.IndexFlatIP(shards.dim)
    truth = _ExactTopK(probes)
    for block in shards.blocks():
        index.add(block)
        truth.add(block)
    kth = truth.kth()
    nprobe = None
    if approximate:
        tune = slice(held, held + tuning)
        nprobe = _choose_nprobe(index, probes[tune], kth[tune], shards, nlist)
        index.nprobe = nprobe
    found = index.search(probes[:held], min(K, n))[1]
    recall = _recall(probes[:held], found, kth[:held], shards)
    info = {
        "kind": "ivfpq" if approximate else "flat",
        "n": n,
        "dim": shards.dim,
        "metric": "inner_product",
        "nlist": nlist if approximate else None,
        "nprobe": nprobe,
        "pq": {"m": _pq_subquantizers(shards.dim), "nbits": PQ_BITS} if approximate else None,
        "recall_at_10": recall,
        "queries": held,
        "query_rows": [int(r) for r in query_rows],
        "seed": seed,
        "shards": [p.name for p in shards.paths],
    }
    path = _save(output / "index", index, info)
    return IndexReport(str(info["kind"]), n, recall, path, held, nlist if approximate else None, nprobe)


def _save(folder: Path, index: Any, info: dict[str, Any]) -> Path:
    """index/image.index and index/index_info.json, each written to a temp name and renamed into place."""
    import faiss

    folder.mkdir(exist_ok=True)
    path = folder / "image.index"
    faiss.write_index(index, str(folder / ".image.index.tmp"))
    (folder / ".index_info.json.tmp").write_text(json.dumps(info, indent=1) + "\n")
    os.replace(folder / ".image.index.tmp", path)
    os.replace(folder / ".index_info.json.tmp", folder / "index_info.json")
    return path


def _nlist(n: int, trainable: int) -> int:
    """The power of two nearest 4*sqrt(n), with at least MIN_PER_LIST trainable vectors per list."""
    wanted = 1 << max(0, round(math.log2(4 * math.sqrt(n))))
    ceiling = max(1, trainable // MIN_PER_LIST)
    return max(1, min(wanted, 1 << (ceiling.bit_length() - 1)))


def _pq_subquantizers(dim: int) -> int:
    """dim/8 sub-vectors of 8 dimensions (64 for 512-d); the largest divisor of dim up to dim/8 otherwise."""
    return next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)


class _ExactTopK:
    """The exact K-th best inner product of some queries over vectors seen block by block."""

    def __init__(self, queries: np.ndarray) -> None:
        self.queries = queries
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)

    def add(self, block: np.ndarray) -> None:
        scores = np.concatenate([self.scores, self.queries @ block.T], axis=1)
        keep = min(K, scores.shape[1])
        self.scores = -np.partition(-scores, keep - 1, axis=1)[:, :keep]

    def kth(self) -> np.ndarray:
        kth: np.ndarray = self.scores.min(axis=1)
        return kth


def _recall(queries: np.ndarray, found: np.ndarray, kth: np.ndarray, shards: _Shards) -> float:
    """Mean over queries of the share of the exact top-K that the index found (ties with the K-th count)."""
    k = found.shape[1]
    valid = found >= 0
    vectors = shards.rows(np.where(valid, found, 0).reshape(-1)).reshape(len(queries), k, -1)
    scores = np.einsum("qkd,qd->qk", vectors, queries)
    hits = (valid & (scores >= kth[:, None] - SCORE_TIE)).sum(axis=1)
    return float(np.minimum(hits, k).mean() / k)


def _choose_nprobe(index: Any, tune: np.ndarray, kth: np.ndarray, shards: _Shards, nlist: int) -> int:
    """The smallest power of two after which doubling nprobe gains less than SATURATED recall@10."""
    nprobe, recall = 1, -1.0
    while True:
        index.nprobe = nprobe
        now = _recall(tune, index.search(tune, K)[1], kth, shards)
        if now - recall < SATURATED and recall >= 0:
            return nprobe // 2
        if nprobe >= nlist:
            return nprobe
        nprobe, recall = nprobe * 2, now
