"""The embedded store's IVF path through the real app: with --exact-search-max-items lowered to its floor
(1,000), a collection past it is searched by the FAISS IVF index. For queries whose neighbours are clear (a
tight cluster of items around the query) the answers equal exact search computed here with NumPy over the
vectors sent; adds, replacements and deletes show at once, and after the rebuild that enough changes cause.
The cross-process reload is in tests/system/test_collections_two_processes.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import running_app

pytestmark = pytest.mark.anyio

SEED = 17
EXACT_MAX = 1_000  # the setting's floor
CLUSTERS, MEMBERS, SCATTERED = 10, 10, 1_100  # 1,200 items: past EXACT_MAX, so the IVF index answers
TOP_K = 10


def normalise(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


class Truth:
    """What the collection holds, as sent; the exact ranking is computed from it, never from the server."""

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        self.metadata: dict[str, dict[str, Any]] = {}

    def put(self, item_id: str, vector: np.ndarray, metadata: dict[str, Any]) -> dict[str, Any]:
        self.vectors[item_id], self.metadata[item_id] = vector, metadata
        return {"id": item_id, "vector": vector.tolist(), "metadata": metadata}

    def exact(self, query: np.ndarray, top_k: int, cluster: int | None = None) -> list[tuple[str, float]]:
        ids = [i for i in self.vectors if cluster is None or self.metadata[i].get("cluster") == cluster]
        matrix = np.stack([self.vectors[i] for i in ids]).astype(np.float64)
        scores = matrix @ query.astype(np.float64)
        return [(ids[r], float(scores[r])) for r in np.argsort(-scores, kind="stable")[:top_k]]


def cluster_vectors(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float) -> np.ndarray:
    """`n` unit vectors around `centre` (cosine about 1/sqrt(1 + spread**2) to it)."""
    noise = rng.standard_normal((n, 512)) / np.sqrt(512)
    return normalise(centre[None, :] + spread * noise)


async def _add(client: Any, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 250):
        response = await client.post("/v1/collections/c/items", json={"items": items[start : start + 250]})
        assert response.status_code == 200, response.text
        assert response.json()["errors"] is False, response.text


async def _search(client: Any, query: np.ndarray, top_k: int, **extra: Any) -> list[tuple[str, float]]:
    body = {"query": {"vector": query.tolist()}, "top_k": top_k, **extra}
    response = await client.post("/v1/collections/c/search", json=body)
    assert response.status_code == 200, response.text
    return [(r["id"], r["score"]) for r in response.json()["results"]]


def _assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]], context: str) -> None:
    assert [i for i, _ in got] == [i for i, _ in want], f"{context} (seed {SEED})"
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5), f"{context} (seed {SEED})"


async def test_ivf_answers_equal_exact_search_and_follow_adds_deletes_and_rebuilds(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    rng = np.random.default_rng(SEED)
    truth = Truth()
    centres = normalise(rng.standard_normal((CLUSTERS + 1, 512)))  # the last one: a cluster added later
    items = [
        truth.put(f"s{n}", v, {"n": n})
        for n, v in enumerate(normalise(rng.standard_normal((SCATTERED, 512))))
    ]
    for c in range(CLUSTERS):
        members = cluster_vectors(rng, centres[c], MEMBERS, spread=0.3)
        items += [truth.put(f"c{c}-{m}", v, {"cluster": c, "m": m}) for m, v in enumerate(members)]

    def query_near(c: int) -> np.ndarray:
        return cluster_vectors(rng, centres[c], 1, spread=0.1)[0]

    async with running_app(tiny_runtime, tmp_path, exact_search_max_items=EXACT_MAX) as (client, app):
        assert (await client.post("/v1/collections", json={"name": "c"})).status_code == 200
        await _add(client, items)
        store = app.state.context.vectors
        [record] = app.state.context.collections._catalogue.list_for("local")

        def ivf() -> Any:  # the FAISS index now loaded for the collection (its identity shows a rebuild)
            return store._loaded[record.store_key].index._ivf

        # clear neighbours: each cluster's query finds exactly its members, in the exact order and scores
        for c in range(CLUSTERS):
            query = query_near(c)
            _assert_same(await _search(client, query, TOP_K), truth.exact(query, TOP_K), f"cluster {c}")
        assert store.uses_ann(record.store_key)  # the searches above were the IVF's, not the exact scan
        # ... and the IVF really is approximate here: for random queries it misses most exact neighbours
        recalls = []
        for _ in range(20):
            query = normalise(rng.standard_normal(512))
            got = {i for i, _ in await _search(client, query, TOP_K)}
            recalls.append(len(got & {i for i, _ in truth.exact(query, TOP_K)}) / TOP_K)
        assert np.mean(recalls) < 0.5, recalls
        # a filter: IVF candidates filtered, equal to exact search over the items that pass
        query = query_near(4)
        got = await _search(client, query, 5, filter={"cluster": 4, "m": {"$gte": 3}})
        want = [(i, s) for i, s in truth.exact(query, TOP_K, cluster=4) if truth.metadata[i]["m"] >= 3][:5]
        _assert_same(got, want, "filtered")

        # small changes (no rebuild): delete cluster 0's two best, add three closer ones, move a scattered
        # item into cluster 3 by upsert; the next searches see all of it
        built = ivf()
        query0 = query_near(0)
        gone = [i for i, _ in truth.exact(query0, 2)]
        for item_id in gone:
            assert (await client.delete(f"/v1/collections/c/items/{item_id}")).status_code == 200
            del truth.vectors[item_id], truth.metadata[item_id]
        closer = cluster_vectors(rng, centres[0], 3, spread=0.05)
        moved = cluster_vectors(rng, centres[3], 1, spread=0.05)[0]
        await _add(
            client,
            [truth.put(f"c0-new{m}", v, {"cluster": 0, "m": 100 + m}) for m, v in enumerate(closer)]
            + [truth.put("s7", moved, {"cluster": 3, "m": 100})],
        )
        assert ivf() is built
        got = await _search(client, query0, TOP_K)
        assert not set(gone) & {i for i, _ in got}
        assert {"c0-new0", "c0-new1", "c0-new2"} <= {i for i, _ in got[:3]}
        _assert_same(got, truth.exact(query0, TOP_K), "cluster 0 after small changes")
        query3 = query_near(3)
        got = await _search(client, query3, TOP_K + 1)
        assert "s7" in [i for i, _ in got]
        _assert_same(got, truth.exact(query3, TOP_K + 1), "cluster 3 after a replacement")

        # changes past the rebuild fraction (20% of the rows): a new cluster, 290 more scattered items, and
        # 60 scattered items and cluster 9 deleted
        fresh = cluster_vectors(rng, centres[CLUSTERS], MEMBERS, spread=0.3)
        more = normalise(rng.standard_normal((290, 512)))
        await _add(
            client,
            [truth.put(f"c{CLUSTERS}-{m}", v, {"cluster": CLUSTERS, "m": m}) for m, v in enumerate(fresh)]
            + [truth.put(f"t{n}", v, {"n": n}) for n, v in enumerate(more)],
        )
        deleted = [f"s{n}" for n in range(100, 160)] + [f"c9-{m}" for m in range(MEMBERS)]
        for item_id in deleted:
            assert (await client.delete(f"/v1/collections/c/items/{item_id}")).status_code == 200
            del truth.vectors[item_id], truth.metadata[item_id]
        assert ivf() is not built  # rebuilt
        assert store.uses_ann(record.store_key)
        assert (await client.get("/v1/collections/c")).json()["item_count"] == len(truth.vectors)
        for c in range(CLUSTERS + 1):
            if c == 9:
                continue
            query = query_near(c)
            _assert_same(
                await _search(client, query, TOP_K), truth.exact(query, TOP_K), f"cluster {c} rebuilt"
            )
        got = await _search(client, query_near(9), TOP_K)
        assert not {f"c9-{m}" for m in range(MEMBERS)} & {i for i, _ in got}
