"""Adversarial collection inputs through the real app, every test on the embedded store and on Milvus Lite
(issue 10: items 5, 7, 11, the collection quotas of 15, and the interrupted delete of 18). Never a 500; what
one store accepts the other accepts too."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from tests.support import (
    bearer,
    create_key,
    data_uri,
    encode_image,
    gradient_image,
    occupy,
    running_app,
    until,
)

pytestmark = pytest.mark.anyio


def _unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(512)
    return (v / np.linalg.norm(v)).tolist()


def _image(seed: int) -> str:
    return data_uri(encode_image(gradient_image(64, 48, seed=seed)))


def _item_url(name: str, item_id: str) -> str:
    return f"/v1/collections/{name}/items/{quote(item_id, safe='/')}"


@pytest.fixture(params=["embedded", "milvus-lite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return {} if request.param == "embedded" else {"vector_url": str(tmp_path / "milvus.db")}


async def test_an_id_built_to_inject_deletes_only_itself(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    hostile = ["zz'] or pk not in ['", 'zz"] or pk not in ["', "it's", "back\\slash"]
    async with running_app(tiny_runtime, tmp_path, **backend) as (client, _):
        await client.post("/v1/collections", json={"name": "c"})
        items = [{"id": i, "vector": _unit(n)} for n, i in enumerate(["a", "b", *hostile])]
        added = await client.post("/v1/collections/c/items", json={"items": items})
        assert added.json()["errors"] is False, added.text
        for left, item_id in enumerate(hostile, start=1):
            deleted = await client.delete(_item_url("c", item_id))
            assert deleted.status_code == 200, (item_id, deleted.text)
            assert (await client.get(_item_url("c", item_id))).status_code == 404
            count = (await client.get("/v1/collections/c")).json()["item_count"]
            assert count == 2 + len(hostile) - left, item_id
        assert (await client.get("/v1/collections/c/items/a")).status_code == 200


async def test_non_ascii_ids_metadata_and_filters_work_alike(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    cities = ["Zürich", "café", "東京", "🚀 launch", "Ελλάδα"]
    async with running_app(tiny_runtime, tmp_path, **backend) as (client, _):
        await client.post("/v1/collections", json={"name": "c"})
        items = [
            {"id": city, "vector": _unit(n), "metadata": {"city": city}} for n, city in enumerate(cities)
        ]
        assert (await client.post("/v1/collections/c/items", json={"items": items})).json()["errors"] is False
        for n, city in enumerate(cities):
            item = await client.get(_item_url("c", city))
            assert item.status_code == 200, (city, item.text)
            assert item.json()["metadata"] == {"city": city}
            found = await client.post(
                "/v1/collections/c/search",
                json={"query": {"vector": _unit(n)}, "top_k": 5, "filter": {"city": city}},
            )
            assert found.status_code == 200, (city, found.text)
            assert [hit["id"] for hit in found.json()["results"]] == [city]
            by_id = await client.post("/v1/collections/c/search", json={"query": {"id": city}, "top_k": 5})
            assert by_id.status_code == 200
            assert city not in [hit["id"] for hit in by_id.json()["results"]]
        some = await client.post(
            "/v1/collections/c/search",
            json={"query": {"vector": _unit(0)}, "top_k": 5, "filter": {"city": {"$in": ["café", "東京"]}}},
        )
        assert sorted(hit["id"] for hit in some.json()["results"]) == ["café", "東京"]
        assert (await client.delete(_item_url("c", "café"))).status_code == 200


def _nested(depth: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {"leaf": True}
    for _ in range(depth - 1):
        metadata = {"d": metadata}
    return metadata


async def test_metadata_no_store_keeps_exactly_fails_its_item_alone(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with running_app(tiny_runtime, tmp_path, **backend) as (client, _):
        await client.post("/v1/collections", json={"name": "c"})
        items = [
            {"id": "ok", "vector": _unit(0), "metadata": {"n": 2**63 - 1, "deep": _nested(15)}},
            {"id": "too-big", "vector": _unit(1), "metadata": {"n": 2**64}},
            {"id": "too-small", "vector": _unit(2), "metadata": {"n": [-(2**63) - 1]}},
            {"id": "too-deep", "vector": _unit(3), "metadata": _nested(17)},
        ]
        # NaN and Infinity are not JSON, but Python's parser reads them: send them as a careless client would
        careless = [*items, {"id": "nan", "vector": _unit(5), "metadata": {"x": "NAN"}},
                    {"id": "inf", "vector": _unit(6), "metadata": {"x": ["INF"]}}]  # fmt: skip
        body = json.dumps({"items": careless}).replace('"NAN"', "NaN").replace('"INF"', "-Infinity")
        response = await client.post(
            "/v1/collections/c/items", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:  # the body parser let NaN through: each item fails alone
            rows = {row["id"]: row for row in response.json()["data"]}
            assert rows["ok"]["status"] == "ok"
            for bad in ("nan", "inf", "too-big", "too-small", "too-deep"):
                assert rows[bad]["status"] == "error", bad
                assert rows[bad]["error"]["param"].startswith(f"items[{rows[bad]['index']}].metadata"), bad
        clean = await client.post("/v1/collections/c/items", json={"items": items})
        assert clean.status_code == 200, clean.text
        rows = {row["id"]: row for row in clean.json()["data"]}
        assert [rows[i]["status"] for i in ("ok", "too-big", "too-small", "too-deep")] == [
            "ok", "error", "error", "error"
        ], rows  # fmt: skip
        assert rows["too-deep"]["error"]["message"] == "metadata may be nested at most 16 levels deep"
        # 260 levels once made every later GET and search of the collection a 500
        poison = await client.post(
            "/v1/collections/c/items",
            json={"items": [{"id": "poison", "vector": _unit(4), "metadata": _nested(260)}]},
        )
        assert poison.status_code in (200, 400), poison.text  # the body parser may refuse it whole
        if poison.status_code == 200:
            assert poison.json()["data"][0]["status"] == "error"
        for bad in ("nan", "inf", "too-big", "too-small", "too-deep", "poison"):
            assert (await client.get(f"/v1/collections/c/items/{bad}")).status_code == 404
        item = await client.get("/v1/collections/c/items/ok")
        assert item.status_code == 200
        assert item.json()["metadata"] == {"n": 2**63 - 1, "deep": _nested(15)}
        found = await client.post("/v1/collections/c/search", json={"query": {"vector": _unit(0)}})
        assert found.status_code == 200
        assert [hit["id"] for hit in found.json()["results"]] == ["ok"]


async def test_names_and_ids_are_held_to_one_rule_in_bodies_and_paths(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with running_app(tiny_runtime, tmp_path, **backend) as (client, _):
        for name in ("a" * 128 + "\n", "a" * 129, "c\n", "c\x00", ".hidden", "", "Zürich"):
            created = await client.post("/v1/collections", json={"name": name})
            assert created.status_code == 400, (name, created.text)
            assert created.json()["error"]["param"] == "name"
        assert (await client.post("/v1/collections", json={"name": "a" * 128})).status_code == 200
        assert (await client.get("/v1/collections")).json()["data"][0]["name"] == "a" * 128
        await client.post("/v1/collections", json={"name": "c"})
        for path in ("/v1/collections/c%0A", "/v1/collections/" + "a" * 129, "/v1/collections/c%0A/items/x"):
            response = await client.get(path)
            assert response.status_code == 400, (path, response.text)
        for method in ("get", "delete"):
            response = await client.request(method, "/v1/collections/c%0A")
            assert response.status_code == 400, (method, response.text)

        bad_ids = [
            "new\nline",
            "ret\rurn",
            "tab\there",
            "nul\x00",
            "esc\x1b[0m",
            "del\x7f",
            "é" * 128 + "x",
            "",
        ]
        items = [{"id": i, "vector": _unit(n)} for n, i in enumerate(bad_ids)]
        items.append({"id": "é" * 128, "vector": _unit(99)})  # 256 bytes: the longest id
        response = await client.post("/v1/collections/c/items", json={"items": items})
        assert response.status_code == 200, response.text
        statuses = [row["status"] for row in response.json()["data"]]
        assert statuses == ["error"] * len(bad_ids) + ["ok"]
        assert all(
            row["error"]["param"] == f"items[{n}].id" for n, row in enumerate(response.json()["data"][:-1])
        )
        assert (await client.get(_item_url("c", "é" * 128))).status_code == 200
        for path_id in ("tab%09here", "esc%1B", "x" * 257):
            for method in ("get", "delete"):
                response = await client.request(method, f"/v1/collections/c/items/{path_id}")
                assert response.status_code == 400, (method, path_id, response.text)
                assert response.json()["error"]["param"] == "item_id"
        # the router's `path` pattern stops at a newline, so this one never reaches a route: still a 4xx
        newline = await client.get("/v1/collections/c/items/new%0Aline")
        assert newline.status_code in (400, 404), newline.text
        assert newline.json()["error"]["type"] == "invalid_request_error"
        search = await client.post("/v1/collections/c/search", json={"query": {"id": "new\nline"}})
        assert search.status_code == 400
        assert search.json()["error"]["param"] == "query.id"
        bad_field = await client.post(
            "/v1/collections/c/search", json={"query": {"vector": _unit(1)}, "filter": {"city\n": "x"}}
        )
        assert bad_field.status_code == 400, bad_field.text


async def test_accounts_have_collection_and_item_quotas(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    quotas = {"max_collections_per_account": 2, "max_collection_items_per_account": 5}
    async with running_app(tiny_runtime, tmp_path, **backend, **quotas) as (client, _):
        assert (await client.post("/v1/collections", json={"name": "one"})).status_code == 200
        assert (await client.post("/v1/collections", json={"name": "two"})).status_code == 200
        third = await client.post("/v1/collections", json={"name": "three"})
        assert third.status_code == 400, third.text
        assert third.json()["error"]["code"] == "collection_quota_exceeded"
        assert (await client.delete("/v1/collections/two")).status_code == 200
        assert (await client.post("/v1/collections", json={"name": "three"})).status_code == 200

        def add(name: str, ids: list[str]) -> Any:
            items = [{"id": i, "vector": _unit(n)} for n, i in enumerate(ids)]
            return client.post(f"/v1/collections/{name}/items", json={"items": items})

        assert (await add("one", ["a", "b", "c"])).json()["errors"] is False
        assert (await add("three", ["a"])).json()["errors"] is False  # ids count per collection
        over = await add("three", ["x", "y"])
        assert over.status_code == 400, over.text
        assert over.json()["error"]["code"] == "item_quota_exceeded"
        assert (await client.get("/v1/collections/three")).json()["item_count"] == 1
        replaced = await add("one", ["a", "b", "c", "d"])  # three replacements and one new item: fits
        assert replaced.json()["errors"] is False, replaced.text
        assert (await add("three", ["z"])).status_code == 400
        assert (await client.delete("/v1/collections/one/items/a")).status_code == 200
        assert (await add("three", ["z"])).json()["errors"] is False


class _CrashingDrop:
    """The real store, except that dropping a collection fails, as a crash right after the catalogue step
    would leave it (or a store that cannot drop it); records which drops were tried."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.tried: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def drop_collection(self, key: str) -> None:
        self.tried.append(key)
        raise RuntimeError("crashed between the catalogue and the store")


async def test_a_delete_interrupted_before_the_store_drop_is_finished_later(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with running_app(tiny_runtime, tmp_path, **backend) as (client, app):
        service = app.state.context.collections
        await client.post("/v1/collections", json={"name": "c"})
        items = [{"id": f"i{n}", "vector": _unit(n)} for n in range(3)]
        await client.post("/v1/collections/c/items", json={"items": items})
        [record] = service._catalogue.list_for("local")
        real = service.vectors
        service.vectors = crashing = _CrashingDrop(real)
        try:
            try:
                response = await client.delete("/v1/collections/c")
                assert response.status_code == 500
            except RuntimeError:
                pass  # the transport re-raised the app's error: the "crash"
            assert crashing.tried == [record.store_key]
            # a pending delete the store cannot finish costs other callers nothing: no store round trip
            for name in ("d", "e"):
                assert (await client.post("/v1/collections", json={"name": name})).status_code == 200
            assert (await client.post("/v1/collections", json={"name": "c"})).status_code == 200
            assert (await client.get("/v1/collections/e")).status_code == 200
            assert crashing.tried == [record.store_key]
        finally:
            service.vectors = real
        assert (await client.delete("/v1/collections/c")).status_code == 200
        assert (await client.get("/v1/collections/c")).status_code == 404  # gone for the caller at once
        assert real.has_collection(record.store_key)  # its items still stored: the orphan of issue 10
        assert real.count(record.store_key) == 3
        assert service._catalogue.pending_deletes() != []

    async with running_app(tiny_runtime, tmp_path, **backend) as (client, app):  # a restart
        service = app.state.context.collections
        assert not service.vectors.has_collection(record.store_key)  # finished at startup
        assert service._catalogue.pending_deletes() == []
        recreated = await client.post("/v1/collections", json={"name": "c"})  # the name is free again
        assert recreated.status_code == 200, recreated.text
        assert recreated.json()["item_count"] == 0


async def test_the_periodic_sweep_finishes_pending_deletes(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with running_app(tiny_runtime, tmp_path, **backend) as (client, app):
        service = app.state.context.collections
        await client.post("/v1/collections", json={"name": "c"})
        [record] = service._catalogue.list_for("local")
        await asyncio.get_running_loop().run_in_executor(None, service._catalogue.mark_deleting, record)
        assert service.vectors.has_collection(record.store_key)
        sweep = asyncio.ensure_future(service.sweep_pending_deletes(interval_s=0.01))
        try:
            # the sweep's last step is deleting the row (after the store's drop): wait for that, not the drop
            await until(lambda: service._catalogue.pending_deletes() == [])
        finally:
            sweep.cancel()
        assert not service.vectors.has_collection(record.store_key)


async def test_an_add_is_admitted_whole_or_refused_whole(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    """A full image queue refuses the whole add (503 + Retry-After) before anything is embedded, stored or
    charged; once each item took its own queue slot, and the items that found one were stored and charged."""
    key = create_key(tmp_path)
    auth = bearer(key)
    settings = {"max_queue_items": 4, "max_items_per_request": 4, "batch_wait_ms": 0}
    async with running_app(tiny_runtime, tmp_path, **backend, **settings) as (client, app):
        context = app.state.context
        assert (await client.post("/v1/collections", json={"name": "c"}, headers=auth)).status_code == 200
        gate = threading.Event()
        occupy(context.compute_pool, gate, 20)  # the model thread is busy
        try:
            first = asyncio.ensure_future(
                client.post("/v1/embeddings", json={"input": [{"image": _image(0)}]}, headers=auth)
            )
            await until(lambda: context.queues.images.depth == 0 and context.queues.images.queued_bytes > 0)
            # that image is in the batch waiting for the model thread: the batcher takes no more for now
            queued = asyncio.ensure_future(
                client.post(
                    "/v1/embeddings", json={"input": [{"image": _image(n)} for n in (1, 2, 3)]}, headers=auth
                )
            )
            await until(lambda: context.queues.images.depth == 3)
            items = [{"id": f"i{n}", "image": _image(10 + n)} for n in range(2)]  # 3 + 2 > 4
            refused = await client.post("/v1/collections/c/items", json={"items": items}, headers=auth)
        finally:
            gate.set()
        assert [r.status_code for r in await asyncio.gather(first, queued)] == [200, 200]
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"].isdigit()
        assert refused.json()["error"]["code"] == "server_overloaded"
        assert (await client.get("/v1/collections/c", headers=auth)).json()["item_count"] == 0
        usage = (await client.get("/v1/usage", headers=auth)).json()["data"]
        assert "/v1/collections/{name}/items" not in [row["endpoint"] for row in usage]
        again = await client.post("/v1/collections/c/items", json={"items": items}, headers=auth)
        assert again.status_code == 200, again.text
        assert again.json()["errors"] is False
        assert int(again.headers["x-request-cost-micros"]) == 2 * 47


async def test_an_add_of_good_and_bad_images_stores_the_good_ones(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    """One admission for the add, and each bad input still fails only its own item (and is free)."""
    key = create_key(tmp_path)
    auth = bearer(key)
    thin = data_uri(encode_image(gradient_image(400, 4, seed=1)))  # aspect ratio 100
    async with running_app(tiny_runtime, tmp_path, **backend) as (client, _):
        await client.post("/v1/collections", json={"name": "c"}, headers=auth)
        items = [
            {"id": "good0", "image": _image(0)},
            {"id": "broken", "image": "data:image/png;base64,AAAA"},
            {"id": "text", "text": "a photo of a cat"},
            {"id": "thin", "image": thin},
            {"id": "private", "image": "http://127.0.0.1:9/cat.png"},
            {"id": "vector", "vector": _unit(1)},
            {"id": "good1", "image": _image(1)},
        ]
        response = await client.post("/v1/collections/c/items", json={"items": items}, headers=auth)
        assert response.status_code == 200, response.text
        rows = response.json()["data"]
        assert [(row["id"], row["status"]) for row in rows] == [
            ("good0", "ok"), ("broken", "error"), ("text", "ok"), ("thin", "error"), ("private", "error"),
            ("vector", "ok"), ("good1", "ok"),
        ]  # fmt: skip
        errors = {row["id"]: row["error"] for row in rows if row["status"] == "error"}
        assert errors["broken"]["code"] == "invalid_image"
        assert errors["thin"]["code"] == "image_aspect_ratio"
        assert errors["private"]["code"] == "image_fetch_failed"
        for row in rows:
            if row["status"] == "error":
                assert row["error"]["param"] == f"items[{row['index']}]", row
                assert row["error"]["message"].startswith(f"items[{row['index']}]: "), row
        usage = response.json()["usage"]
        assert usage["image_count"] == 2
        assert usage["prompt_tokens"] > 0
        assert (await client.get("/v1/collections/c", headers=auth)).json()["item_count"] == 4
        stored = await client.get("/v1/collections/c/items/good1?include_vector=true", headers=auth)
        alone = await client.post("/v1/embeddings", json={"input": [{"image": _image(1)}]}, headers=auth)
        np.testing.assert_allclose(stored.json()["vector"], alone.json()["data"][0]["embedding"], atol=1e-5)


async def test_concurrent_creates_cannot_pass_the_collection_quota(
    tiny_runtime: Any, tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with running_app(tiny_runtime, tmp_path, **backend, max_collections_per_account=2) as (client, _):
        created = await asyncio.gather(
            *(client.post("/v1/collections", json={"name": f"c{n}"}) for n in range(12))
        )
        codes = sorted(r.status_code for r in created)
        assert codes == [200] * 2 + [400] * 10, [r.text for r in created]
        assert all(
            r.json()["error"]["code"] == "collection_quota_exceeded" for r in created if r.status_code == 400
        )
        assert len((await client.get("/v1/collections")).json()["data"]) == 2
