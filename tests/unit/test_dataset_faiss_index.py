"""embed-dataset --index: an exact index below the threshold, IVF-PQ at and above it, and its reported recall@10.

Output folders are written with OutputDir from seeded random unit vectors (no Ray, no model). The recall the
builder reports is recomputed here independently: the saved index read back with faiss.read_index, the
held-out query rows from index_info.json, the exact top 10 by a full numpy product over the stored files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from clipserve.config import Settings
from clipserve.dataset_embed.faiss_index import IndexBuildError, build_index
from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.output import open_output
from clipserve.dataset_embed.records import EmbeddedChunk, InputShard, RawChunk

SEED = 20261129


@pytest.fixture(autouse=True)
def one_faiss_thread() -> Iterator[None]:
    """The test machine's 2 cores are shared: FAISS's OpenMP threads spin-wait and run 5x slower there."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered_unit_vectors(
    n: int, dim: int, seed: int, clusters: int = 200, intrinsic: int = 32
) -> np.ndarray:
    """Unit vectors around `clusters` centres, each cluster spread over its own low-dimensional subspace (the
    shape of image embeddings: topics, and variation within a topic along few directions)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) / np.sqrt(dim)
    bases = rng.standard_normal((clusters, intrinsic, dim)).astype(np.float32) / np.sqrt(dim * intrinsic)
    which = rng.integers(0, clusters, n)
    spread = np.einsum("ni,nid->nd", rng.standard_normal((n, intrinsic)).astype(np.float32), bases[which])
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (0.02 / np.sqrt(dim))
    vectors = centres[which] + 0.6 * spread + noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def write_output(root: Path, vectors: np.ndarray, shards: int) -> None:
    """Commit `vectors` as `shards` consecutive shards (float16, the default) through OutputDir."""
    out = open_output(
        EmbedJob(settings=Settings(), input="/data", output=root, text=False), {"fingerprint": "f"}
    )
    for index, rows in enumerate(np.array_split(vectors, shards)):
        keys = [f"{index}-{i}" for i in range(len(rows))]
        n = len(keys)
        raw = RawChunk(index, 0, True, "/data", keys, keys, [None] * n, [{}] * n, [None] * n, [None] * n)
        out.write_shard(InputShard(index, "folder", "/data"), [EmbeddedChunk(raw, [None] * n, rows, None)])


def stored_in_file_order(root: Path) -> np.ndarray:
    """The committed img_emb files concatenated in file-name order (how clip-retrieval's tools read them)."""
    paths = sorted((root / "img_emb").glob("img_emb_*.npy"), key=lambda p: p.name)
    return np.concatenate([np.load(p) for p in paths]).astype(np.float32)


def independent_recall(
    index: object, data: np.ndarray, query_rows: list[int], k: int = 10
) -> tuple[float, float]:
    """(recall@k counting a found vector that ties the exact k-th score within 1e-5 as a hit, the builder's
    definition; plain |found & exact top k| / k), from a full numpy product."""
    queries = data[query_rows]
    found = index.search(queries, k)[1]  # type: ignore[attr-defined]
    scores = queries @ data.T
    truth = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    kth = np.take_along_axis(scores, truth[:, -1:], axis=1)
    tied = np.take_along_axis(scores, found, axis=1) >= kth - 1e-5
    plain = [len(set(f) & set(t)) / k for f, t in zip(found.tolist(), truth.tolist(), strict=True)]
    return float(tied.sum(axis=1).mean() / k), float(np.mean(plain))


def test_below_the_threshold_the_index_is_exact(tmp_path: Path) -> None:
    data = clustered_unit_vectors(3000, 64, SEED)
    write_output(tmp_path, data, shards=3)
    report = build_index(tmp_path, exact_below=100_000, queries=1000, seed=1)
    info = json.loads((tmp_path / "index/index_info.json").read_text())
    print(report.line())

    assert (report.kind, report.vectors, report.recall_at_10, report.queries) == ("flat", 3000, 1.0, 300)
    assert report.path == tmp_path / "index/image.index"
    assert {k: info[k] for k in ("kind", "n", "nlist", "nprobe", "recall_at_10", "queries")} == {
        "kind": "flat", "n": 3000, "nlist": None, "nprobe": None, "recall_at_10": 1.0, "queries": 300
    }  # fmt: skip
    index = faiss.read_index(str(report.path))
    assert isinstance(index, faiss.IndexFlatIP)
    assert index.ntotal == 3000
    stored = stored_in_file_order(tmp_path)
    assert independent_recall(index, stored, info["query_rows"]) == (1.0, 1.0)
    assert "flat over 3,000 vectors, recall@10 1.000 on 300 held-out queries" in report.line()


def test_index_ids_are_rows_in_file_name_order(tmp_path: Path) -> None:
    data = clustered_unit_vectors(120, 8, SEED)
    write_output(tmp_path, data, shards=12)  # img_emb_10 and _11 sort before img_emb_2
    build_index(tmp_path, exact_below=1000)
    index = faiss.read_index(str(tmp_path / "index/image.index"))
    stored = index.reconstruct_n(0, index.ntotal)
    by_number = np.concatenate([np.load(tmp_path / f"img_emb/img_emb_{n}.npy") for n in range(12)])
    by_name = np.concatenate(
        [np.load(tmp_path / f"img_emb/img_emb_{n}.npy") for n in sorted(range(12), key=str)]
    )
    assert np.array_equal(stored, by_name.astype(np.float32))
    assert not np.array_equal(stored, by_number.astype(np.float32))


def test_at_the_threshold_the_index_is_ivf_pq_with_its_recall_measured(tmp_path: Path) -> None:
    n, dim = 20_000, 512
    data = clustered_unit_vectors(n, dim, SEED)
    write_output(tmp_path, data, shards=4)
    report = build_index(tmp_path, exact_below=n, queries=1000, seed=SEED)
    info = json.loads((tmp_path / "index/index_info.json").read_text())
    index = faiss.read_index(str(report.path))
    stored = stored_in_file_order(tmp_path)

    recomputed, plain = independent_recall(index, stored, info["query_rows"])  # the saved index, saved nprobe
    index.nprobe = index.nlist
    every_list = independent_recall(index, stored, info["query_rows"])[0]
    print(
        f"seed {SEED}: {report.line()}; recomputed {recomputed:.4f} (plain {plain:.4f}); nprobe=nlist {every_list:.4f}"
    )

    assert report.kind == "ivfpq"
    assert isinstance(index, faiss.IndexIVFPQ)
    assert (index.ntotal, index.d, index.nlist, index.pq.M, index.pq.nbits) == (n, dim, 256, 64, 8)
    assert {k: info[k] for k in ("kind", "n", "nlist", "queries")} == {
        "kind": "ivfpq", "n": n, "nlist": 256, "queries": 1000
    }  # fmt: skip
    assert info["nprobe"] == report.nprobe
    assert len(set(info["query_rows"])) == 1000
    assert report.recall_at_10 == info["recall_at_10"] == pytest.approx(recomputed, abs=1e-12)
    assert plain == pytest.approx(recomputed, abs=0.002)  # ties within 1e-5 (float16 storage) are rare
    # PQ 64x8 (8 dimensions per byte) without re-ranking loses neighbours whose scores differ by less than
    # its quantisation error: 0.77 here, and a wrong index (ids shifted, an unprobed list) falls far below
    assert report.recall_at_10 >= 0.6
    # nprobe was chosen where probing more lists stops paying: within 0.02 of probing every list
    assert report.recall_at_10 >= every_list - 0.02
    assert report.nprobe is not None
    assert report.nprobe < index.nlist


def test_above_the_threshold_too_few_vectors_to_train_pq_fall_back_to_exact(tmp_path: Path) -> None:
    data = clustered_unit_vectors(2000, 32, SEED)
    write_output(tmp_path, data, shards=2)
    report = build_index(tmp_path, exact_below=100, queries=50)
    assert (report.kind, report.recall_at_10, report.queries) == ("flat", 1.0, 50)


def test_an_output_without_committed_shards_is_refused(tmp_path: Path) -> None:
    write_output(tmp_path, np.zeros((0, 8), np.float32), shards=1)
    (tmp_path / "_committed/0.json").unlink()
    with pytest.raises(IndexBuildError, match="no committed image embeddings"):
        build_index(tmp_path, exact_below=10)


@pytest.mark.parametrize(
    ("n", "nlist"),
    [
        (1_000_000, 4096),  # 4*sqrt(n) = 4000 -> 4096 (2^12); 998,750 / 39 allows 25,608
        (100_000, 1024),  # 4*316 = 1265 -> 1024 (2^10 is nearer than 2^11 in log scale)
        (20_000, 256),  # 4*141 = 566 -> 512, but 18,750 trainable / 39 = 480 lists at most -> 256
        (5_000, 64),  # 4*71 = 283 -> 256, but 4,250 / 39 = 108 -> 64
    ],
)
def test_nlist_is_the_power_of_two_nearest_four_sqrt_n_with_39_training_vectors_per_list(
    n: int, nlist: int
) -> None:
    from clipserve.dataset_embed.faiss_index import _nlist, _pq_subquantizers

    held = min(1000, n // 10)
    assert _nlist(n, n - held - min(held, 250)) == nlist  # held-out and tuning queries are not trained on
    assert [_pq_subquantizers(d) for d in (512, 768, 1024, 100, 7)] == [64, 96, 128, 10, 1]
