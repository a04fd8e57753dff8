"""Two processes on one data dir (one SQLite database): a real server process and an in-process app, both
with --exact-search-max-items at its floor so a 1,200-item collection is searched by the IVF index. Each
sees the other's adds and deletes at its next search (every write bumps the collection's version; a search
that finds its loaded index stale reloads it from the rows), with answers equal to exact search computed
here with NumPy over the vectors sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.test_collections_ivf import Truth, cluster_vectors, normalise
from tests.support import TINY_CONFIG, running_app
from tests.system.conftest import start_server

pytestmark = pytest.mark.anyio

SEED = 23
EXACT_MAX = 1_000
CLUSTERS, MEMBERS, SCATTERED, TOP_K = 10, 10, 1_100, 10


async def _add(client: httpx.AsyncClient, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 250):
        response = await client.post("/v1/collections/c/items", json={"items": items[start : start + 250]})
        assert response.status_code == 200, response.text
        assert response.json()["errors"] is False, response.text


async def _delete(client: httpx.AsyncClient, truth: Truth, ids: list[str]) -> None:
    for item_id in ids:
        assert (await client.delete(f"/v1/collections/c/items/{item_id}")).status_code == 200
        del truth.vectors[item_id], truth.metadata[item_id]


async def _search(
    client: httpx.AsyncClient, query: np.ndarray, top_k: int = TOP_K
) -> list[tuple[str, float]]:
    body = {"query": {"vector": query.tolist()}, "top_k": top_k}
    response = await client.post("/v1/collections/c/search", json=body)
    assert response.status_code == 200, response.text
    return [(r["id"], r["score"]) for r in response.json()["results"]]


def _assert_exact(got: list[tuple[str, float]], want: list[tuple[str, float]], context: str) -> None:
    assert [i for i, _ in got] == [i for i, _ in want], f"{context} (seed {SEED})"
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5), f"{context} (seed {SEED})"


async def test_a_second_process_sees_the_writes_of_the_first(tiny_runtime: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(SEED)
    truth = Truth()
    centres = normalise(rng.standard_normal((CLUSTERS + 1, 512)))
    scattered = normalise(rng.standard_normal((SCATTERED, 512)))
    items = [truth.put(f"s{n}", v, {"n": n}) for n, v in enumerate(scattered)]
    for c in range(CLUSTERS):
        members = cluster_vectors(rng, centres[c], MEMBERS, spread=0.3)
        items += [truth.put(f"c{c}-{m}", v, {"cluster": c, "m": m}) for m, v in enumerate(members)]
    queries = [cluster_vectors(rng, centres[c], 1, spread=0.1)[0] for c in range(CLUSTERS + 1)]
    randoms = normalise(rng.standard_normal((10, 512)))

    server = start_server(
        tmp_path, "--weights", "random", "--architecture", str(TINY_CONFIG),
        "--exact-search-max-items", str(EXACT_MAX),
    )  # fmt: skip
    try:
        async with (
            running_app(tiny_runtime, tmp_path, exact_search_max_items=EXACT_MAX) as (local, app),
            httpx.AsyncClient(base_url=server.base_url, timeout=60) as remote,
        ):
            # the in-process app writes and searches first (its index loads now)
            assert (await local.post("/v1/collections", json={"name": "c"})).status_code == 200
            await _add(local, items)
            for c in range(CLUSTERS):
                _assert_exact(await _search(local, queries[c]), truth.exact(queries[c], TOP_K), f"local {c}")
            [record] = app.state.context.collections._catalogue.list_for("local")
            assert app.state.context.vectors.uses_ann(record.store_key)

            # the server process loads the same rows: the same answers, from an IVF index as well (its random
            # queries get the very answers of the local IVF, which are not the exact ones)
            for c in range(CLUSTERS):
                _assert_exact(
                    await _search(remote, queries[c]), truth.exact(queries[c], TOP_K), f"remote {c}"
                )
            recalls = []
            for query in randoms:
                got = await _search(remote, query)
                assert [i for i, _ in got] == [i for i, _ in await _search(local, query)]
                recalls.append(len({i for i, _ in got} & {i for i, _ in truth.exact(query, TOP_K)}) / TOP_K)
            assert np.mean(recalls) < 0.5, recalls

            # the server writes: a new cluster, cluster 2's best three deleted; the app sees it at once
            fresh = cluster_vectors(rng, centres[CLUSTERS], MEMBERS, spread=0.3)
            await _add(
                remote, [truth.put(f"c{CLUSTERS}-{m}", v, {"cluster": CLUSTERS}) for m, v in enumerate(fresh)]
            )
            await _delete(remote, truth, [i for i, _ in truth.exact(queries[2], 3)])
            _assert_exact(await _search(local, queries[2], 7), truth.exact(queries[2], 7), "local sees 2")
            want = truth.exact(queries[CLUSTERS], TOP_K)
            _assert_exact(await _search(local, queries[CLUSTERS]), want, "local sees the new cluster")

            # the app writes: cluster 5 deleted, an item replaced into cluster 7; the server sees it at once
            await _delete(local, truth, [f"c5-{m}" for m in range(MEMBERS)])
            moved = cluster_vectors(rng, centres[7], 1, spread=0.02)[0]
            await _add(local, [truth.put("s3", moved, {"cluster": 7})])
            got = await _search(remote, queries[5])
            assert not {f"c5-{m}" for m in range(MEMBERS)} & {i for i, _ in got}
            got = await _search(remote, queries[7], MEMBERS + 1)
            assert "s3" in [i for i, _ in got]
            _assert_exact(got, truth.exact(queries[7], MEMBERS + 1), "remote sees 7")
            count = (await remote.get("/v1/collections/c")).json()["item_count"]
            assert count == len(truth.vectors) == SCATTERED + CLUSTERS * MEMBERS + MEMBERS - 3 - MEMBERS
    finally:
        server.stop()
