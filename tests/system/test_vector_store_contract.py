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


# --- hostile ids, text and values: every store must mean the same thing (issue 10, items 5, 6, 7, 11) ---

HOSTILE_IDS = [
    "zz'] or pk not in ['",  # once deleted every item of a Milvus collection
    'zz"] or pk not in ["',
    "it's",
    'say "hi"',
    "back\\slash",
    "trailing\\",
    "\\'",
    "{p0}",
    "Zürich",
    "café",
    "東京/駅",
    "emoji 🚀✨",
    "e\u0301",  # a combining accent, kept as sent
    "é" * 128,  # 256 bytes of UTF-8: the longest id
]


def test_hostile_ids_address_exactly_their_own_item(store: VectorStore) -> None:
    vectors = _unit(np.random.default_rng(1), len(HOSTILE_IDS) + 3)
    store.create_collection("c_ids")
    plain = ["a", "b", "c"]
    ids = HOSTILE_IDS + plain
    store.upsert("c_ids", [StoredItem(item_id, vectors[i], {"i": i}) for i, item_id in enumerate(ids)])
    assert store.count("c_ids") == len(ids)
    assert [item.id for item in store.get("c_ids", list(reversed(ids)))] == list(reversed(ids))
    for i, item_id in enumerate(HOSTILE_IDS):
        [item] = store.get("c_ids", [item_id])
        assert (item.id, item.metadata) == (item_id, {"i": i})
        hits = store.search("c_ids", vectors[i], 3, exclude_id=item_id)
        assert item_id not in [hit.id for hit in hits]
        assert len(hits) == 3
    remaining = len(ids)
    for item_id in HOSTILE_IDS:
        assert store.delete("c_ids", [item_id]) == 1, item_id
        remaining -= 1
        assert store.count("c_ids") == remaining, item_id
        assert store.get("c_ids", [item_id]) == []
    assert sorted(item.id for item in store.get("c_ids", plain)) == plain


TEXTS = ["Zürich", "café", "東京", "🚀", "it's", 'a "quote"', "back\\slash", "line\nbreak", "tab\there", ""]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"city": "Zürich"}, ["Zürich"]),
        ({"city": "café"}, ["café"]),
        ({"city": "東京"}, ["東京"]),
        ({"city": {"$in": ["🚀", "it's", 'a "quote"']}}, ["🚀", "it's", 'a "quote"']),
        ({"city": "back\\slash"}, ["back\\slash"]),
        ({"city": "line\nbreak"}, ["line\nbreak"]),
        ({"city": "tab\there"}, ["tab\there"]),
        ({"city": ""}, [""]),
        ({"city": "zz'] or pk not in ['"}, []),
        ({"city": '" or metadata["n"] >= 0 or "'}, []),
        ({"city": {"$ne": "café"}}, [t for t in TEXTS if t != "café"]),
        ({"city": {"$nin": ["Zürich", "东京", "🚀"]}}, [t for t in TEXTS if t not in ("Zürich", "🚀")]),
        ({"city": {"$gt": "z"}}, ["東京", "🚀"]),  # code point order on every backend
    ],
)
def test_non_ascii_and_quotes_in_filters_mean_the_same_on_every_backend(
    store: VectorStore, raw: dict[str, object], expected: list[str]
) -> None:
    vectors = _unit(np.random.default_rng(2), len(TEXTS))
    store.create_collection("c_text")
    store.upsert(
        "c_text", [StoredItem(f"t{i}", vectors[i], {"city": text, "n": i}) for i, text in enumerate(TEXTS)]
    )
    hits = store.search("c_text", vectors[0], len(TEXTS), parse_filter(raw))
    assert sorted(hit.metadata["city"] for hit in hits) == sorted(expected)


def _nested(depth: int) -> dict[str, object]:
    metadata: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        metadata = {"d": metadata}
    return metadata


def test_metadata_every_backend_keeps_exactly(store: VectorStore) -> None:
    from clipserve.vectors.values import MAX_METADATA_DEPTH

    vector = _unit(np.random.default_rng(3), 1)[0]
    metadata = {
        "big": 2**63 - 1, "small": -(2**63), "pi": 3.141592653589793, "tiny": 5e-324, "huge": 1.7e308,
        "text": "Zürich café 東京 🚀 \"'\\\n", "none": None, "flag": False, "list": [1, "two", [3.5, {"k": []}]],
        "deep": _nested(MAX_METADATA_DEPTH - 1),
    }  # fmt: skip
    store.create_collection("c_meta")
    store.upsert("c_meta", [StoredItem("m", vector, metadata)])
    assert store.get("c_meta", ["m"])[0].metadata == metadata
    [hit] = store.search("c_meta", vector, 1, parse_filter({"big": 2**63 - 1, "small": {"$lt": 0}}))
    assert hit.metadata == metadata


@pytest.mark.parametrize(
    ("item_id", "metadata", "param"),
    [
        ("nan", {"x": float("nan")}, "items[1].metadata.x"),
        ("inf", {"x": [float("inf")]}, "items[1].metadata.x[0]"),
        ("big", {"x": 2**63}, "items[1].metadata.x"),
        ("small", {"x": {"y": -(2**63) - 1}}, "items[1].metadata.x.y"),
        ("deep", _nested(33), None),
        ("surrogate", {"x": "\ud800"}, "items[1].metadata.x"),
        ("surrogate-key", {"\udfff": 1}, "items[1].metadata"),
        ("new\nline", {}, "items[1].id"),
        ("tab\tid", {}, "items[1].id"),
        ("del\x7f", {}, "items[1].id"),
        ("\ud800", {}, "items[1].id"),
        ("é" * 128 + "x", {}, "items[1].id"),
        ("", {}, "items[1].id"),
    ],
)
def test_values_some_backend_cannot_keep_are_refused_by_all_and_nothing_is_written(
    store: VectorStore, item_id: str, metadata: dict[str, object], param: str | None
) -> None:
    from clipserve.errors import InvalidRequestError

    vectors = _unit(np.random.default_rng(4), 2)
    store.create_collection("c_bad")
    with pytest.raises(InvalidRequestError) as refused:
        store.upsert(
            "c_bad", [StoredItem("fine", vectors[0], {"ok": 1}), StoredItem(item_id, vectors[1], metadata)]
        )
    if param is not None:
        assert refused.value.param == param
    assert store.count("c_bad") == 0


def test_dropping_is_repeatable_so_interrupted_deletes_can_be_finished(
    filled: tuple[VectorStore, np.ndarray],
) -> None:
    store, _ = filled
    assert store.has_collection("c_test")
    store.drop_collection("c_test")
    assert not store.has_collection("c_test")
    store.drop_collection("c_test")  # a second finisher (another replica, a restart) is harmless
    assert not store.has_collection("c_test")
    assert not store.has_collection("c_never_created")
