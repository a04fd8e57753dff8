"""The two per-add limits of collections.md and security.md, through the API: at most
`--max-collection-items-per-request` (256) items per add, and at most the encoder queue's per-account share
(`max_queue_items_per_account`) of texts, and of images, in one add; more is a 400 naming `items`, and nothing of
a refused add is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import data_uri, encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio


def _unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(512)
    return (v / np.linalg.norm(v)).tolist()


async def _count(client: Any) -> int:
    response = await client.get("/v1/collections/c")
    assert response.status_code == 200, response.text
    count: int = response.json()["item_count"]
    return count


async def test_an_add_holds_at_most_256_items(tiny_runtime: Any, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        await client.post("/v1/collections", json={"name": "c"})
        too_many = [{"id": f"v{i}", "vector": _unit(i)} for i in range(257)]
        refused = await client.post("/v1/collections/c/items", json={"items": too_many})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["message"], error["type"], error["param"]) == (
            "at most 256 items per request",
            "invalid_request_error",
            "items",
        )
        assert await _count(client) == 0
        accepted = await client.post("/v1/collections/c/items", json={"items": too_many[:256]})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["errors"] is False
        assert await _count(client) == 256


async def test_an_add_holds_at_most_the_queues_share_of_texts_and_of_images(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    # the share: max(max_queue_items // 2, max_items_per_request) = max(20 // 2, 10) = 10 per queue
    settings = {"max_queue_items": 20, "max_items_per_request": 10}
    image = data_uri(encode_image(gradient_image(32, 24)))
    async with running_app(tiny_runtime, tmp_path, **settings) as (client, app):
        assert app.state.context.settings.queue_items_per_account == 10
        await client.post("/v1/collections", json={"name": "c"})
        texts = [{"id": f"t{i}", "text": f"caption {i}"} for i in range(11)]
        images = [{"id": f"i{i}", "image": image} for i in range(11)]
        for kind, items in (("texts", texts), ("images", images)):
            refused = await client.post("/v1/collections/c/items", json={"items": items})
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["param"] == "items"
            assert (
                error["message"]
                == f"at most 10 {kind} per request on this server (its queue's share per account)"
            )
        assert await _count(client) == 0
        # the share is per queue: 10 texts and 10 images (and vectors, which need no encoder) fit in one add
        mixed = texts[:10] + images[:10] + [{"id": "v", "vector": _unit(0)}]
        accepted = await client.post("/v1/collections/c/items", json={"items": mixed})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["errors"] is False, accepted.text
        assert await _count(client) == 21
