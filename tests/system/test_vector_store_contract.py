"""One contract, two vector stores: the embedded one (SQL rows + in-memory index, on SQLite and Postgres)
and Milvus (Milvus Lite, the same client code that talks to a Milvus server)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clipserve.store.database import Database
from clipserve.vectors.base import StoredItem, VectorStore
from clipserve.vectors.embedded import EmbeddedVectorStore
from clipserve.vectors.filters import parse_filter


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 512)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(params=["embedded-sqlite", "embedded-postgres", "milvus-lite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "milvus-lite":
        from clipserve.vectors.milvus import MilvusVectorStore

        milvus = MilvusVectorStore(str(tmp_path / "milvus.db"))
        yield milvus
        milvus.close()
        return
    if request.param == "embedded-sqlite":
        url = f"sqlite:///{tmp_path / 'clipserve.db'}"
    else:
        from tests.postgres_server import fresh_database

        url = fresh_database(request.getfixturevalue("postgres_admin_url"), f"vectors_{tmp_path.name[-20:]}")
    database = Database(url)
    database.migrate()
    yield EmbeddedVectorStore(database)
    database.close()


@pytest.fixture
def filled(store: VectorStore) -> tuple[VectorStore, np.ndarray]:
    vectors = _unit(np.random.default_rng(0), 50)
    store.create_collection("c_test")
    store.upsert(
        "c_test",
        [
            StoredItem(
                f"item-{i}", vectors[i], {"n": i, "colour": "red" if i % 2 else "blue", "tags": {"k": i % 5}}
            )
            for i in range(50)
        ],
    )
    return store, vectors


def test_upsert_get_and_count(filled: tuple[VectorStore, np.ndarray]) -> None:
    store, vectors = filled
    assert store.count("c_test") == 50
    got = store.get("c_test", ["item-3", "missing", "item-7"])
    assert [item.id for item in got] == ["item-3", "item-7"]
    np.testing.assert_allclose(got[0].vector, vectors[3], atol=1e-6)
    assert got[0].metadata == {"n": 3, "colour": "red", "tags": {"k": 3}}


def test_upsert_replaces_by_id(filled: tuple[VectorStore, np.ndarray]) -> None:
    store, vectors = filled
    store.upsert("c_test", [StoredItem("item-3", vectors[9], {"n": 300})])
    assert store.count("c_test") == 50
    item = store.get("c_test", ["item-3"])[0]
    assert item.metadata == {"n": 300}
    np.testing.assert_allclose(item.vector, vectors[9], atol=1e-6)


def test_delete_reports_what_existed(filled: tuple[VectorStore, np.ndarray]) -> None:
    store, vectors = filled
    assert store.delete("c_test", ["item-1", "item-2", "nope"]) == 2
    assert store.count("c_test") == 48
    assert store.get("c_test", ["item-1"]) == []
    assert all(hit.id != "item-1" for hit in store.search("c_test", vectors[1], 50))


def test_search_ranks_by_cosine(filled: tuple[VectorStore, np.ndarray]) -> None:
    store, vectors = filled
    hits = store.search("c_test", vectors[7], 5)
    expected = np.argsort(-(vectors @ vectors[7]))[:5]
    assert [hit.id for hit in hits] == [f"item-{i}" for i in expected]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_search_can_exclude_the_query_item_and_return_vectors(filled: tuple[VectorStore, np.ndarray]) -> None:
    store, vectors = filled
    hits = store.search("c_test", vectors[7], 3, exclude_id="item-7", with_vectors=True)
    assert "item-7" not in [hit.id for hit in hits]
    assert hits[0].vector is not None
    np.testing.assert_allclose(hits[0].vector, vectors[int(hits[0].id.split("-")[1])], atol=1e-6)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"colour": "red"}, lambda n: n % 2 == 1),
        ({"n": {"$gte": 10, "$lt": 20}}, lambda n: 10 <= n < 20),
        ({"colour": "blue", "n": {"$gt": 40}}, lambda n: n % 2 == 0 and n > 40),
        ({"$or": [{"n": {"$lt": 3}}, {"n": {"$gt": 46}}]}, lambda n: n < 3 or n > 46),
        ({"n": {"$in": [1, 2, 3, 44]}}, lambda n: n in (1, 2, 3, 44)),
        ({"n": {"$nin": [1, 2, 3]}, "colour": {"$ne": "red"}}, lambda n: n not in (1, 2, 3) and n % 2 == 0),
        ({"tags.k": 2}, lambda n: n % 5 == 2),
        ({"$and": [{"tags.k": {"$lte": 1}}, {"colour": "red"}]}, lambda n: n % 5 <= 1 and n % 2 == 1),
    ],
)
def test_filters_mean_the_same_on_every_backend(
    filled: tuple[VectorStore, np.ndarray], raw: dict[str, object], expected: object
) -> None:
    store, vectors = filled
    hits = store.search("c_test", vectors[0], 50, parse_filter(raw))
    assert callable(expected)
    assert sorted(hit.metadata["n"] for hit in hits) == [n for n in range(50) if expected(n)]


def test_collections_are_separate_and_dropping_one_removes_its_items(
    filled: tuple[VectorStore, np.ndarray],
) -> None:
    store, vectors = filled
    store.create_collection("c_other")
    store.upsert("c_other", [StoredItem("x", vectors[0], {})])
    assert store.count("c_other") == 1
    assert [hit.id for hit in store.search("c_other", vectors[0], 5)] == ["x"]
    store.drop_collection("c_other")
    store.create_collection("c_other")
    assert store.count("c_other") == 0
    assert store.count("c_test") == 50


def test_concurrent_upserts_of_the_same_ids_all_succeed(filled: tuple[VectorStore, np.ndarray]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store, vectors = filled

    def write(round_: int) -> None:
        store.upsert("c_test", [StoredItem(f"item-{i}", vectors[i], {"round": round_}) for i in range(20)])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(8)))
    assert store.count("c_test") == 50
    assert {item.metadata["round"] for item in store.get("c_test", [f"item-{i}" for i in range(20)])} <= set(
        range(8)
    )
