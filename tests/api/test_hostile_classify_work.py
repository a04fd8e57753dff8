"""Classify's work belongs to its caller (issue 10, items 3 and 4): prompts count against the calling account's
share of the text queue, not one tenant shared by every account, and a request that fails stops its other work
(images are not fetched, decoded and queued for an answer nobody will read)."""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path
from typing import Any

import pytest

from clipserve.errors import InvalidRequestError
from clipserve.runtime.model import TokenizedTexts
from tests.support import bearer, create_key, encode_image, gradient_image, occupy, running_app, until

pytestmark = pytest.mark.anyio

IMAGE = base64.b64encode(encode_image(gradient_image(64, 48, seed=3), "PNG")).decode()
TEMPLATE = "a photo of a {}."  # one prompt per label
# Queues of 8 texts, 4 per account: one request of 4 texts fills an account's share.
SMALL_QUEUES: dict[str, Any] = {
    "max_queue_items": 8,
    "max_queue_items_per_account": 4,
    "max_items_per_request": 4,
    "max_classify_images": 4,
    "text_batch_size": 4,
    "image_batch_size": 4,
    "batch_wait_ms": 0,
}


async def test_one_accounts_prompts_do_not_use_up_another_accounts_share_of_the_text_queue(
    tiny_runtime, tmp_path: Path
) -> None:
    first, second = create_key(tmp_path, "first"), create_key(tmp_path, "second")
    async with running_app(tiny_runtime, tmp_path, **SMALL_QUEUES) as (client, app):
        queues = app.state.context.queues
        gate = threading.Event()
        occupy(app.state.context.compute_pool, gate, 30)  # the model thread is busy
        try:
            # Texts and an image handed to the blocked model thread: what comes next waits in the queues.
            busy = asyncio.ensure_future(
                client.post(
                    "/v1/embeddings", json={"input": ["w", "x", "y", {"image": IMAGE}]}, headers=bearer(first)
                )
            )
            pool = app.state.context.compute_pool
            await until(lambda: pool._work_queue.qsize() == 2, "a text and an image batch wait for the model")
            assert (queues.texts.depth, queues.images.depth) == (0, 0)
            assert not busy.done()
            # The first account's classify holds its whole share of the text queue with new prompts ...
            holder = asyncio.ensure_future(
                client.post(
                    "/v1/classify",
                    json={"image": IMAGE, "labels": ["cat", "dog", "bird", "fish"], "template": TEMPLATE},
                    headers=bearer(first),
                )
            )
            await until(lambda: queues.texts.depth == 4)
            # ... and the second account's classify with new prompts still gets its own share.
            other = asyncio.ensure_future(
                client.post(
                    "/v1/classify",
                    json={"image": IMAGE, "labels": ["car", "boat"], "template": TEMPLATE},
                    headers=bearer(second),
                )
            )
            await until(lambda: other.done() or queues.texts.depth == 6)
            assert not other.done(), other.result().text  # queued, not refused
        finally:
            gate.set()
        responses = await asyncio.gather(busy, holder, other)
    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    assert {p["label"] for p in responses[2].json()["data"][0]["predictions"]} == {"car", "boat"}


async def test_a_classify_whose_prompts_are_refused_leaves_no_image_work_behind(
    tiny_runtime, tmp_path: Path
) -> None:
    keys = [create_key(tmp_path, name) for name in ("caller", "busy-1", "busy-2")]
    caller, busy_1, busy_2 = keys
    async with running_app(tiny_runtime, tmp_path, **SMALL_QUEUES) as (client, app):
        queues = app.state.context.queues
        gate = threading.Event()
        occupy(app.state.context.compute_pool, gate, 30)
        try:
            busy = [
                asyncio.ensure_future(
                    client.post(
                        "/v1/embeddings", json={"input": ["w", {"image": IMAGE}]}, headers=bearer(busy_1)
                    )
                )
            ]
            pool = app.state.context.compute_pool
            await until(
                lambda: pool._work_queue.qsize() == 2, "both batchers wait for the blocked model thread"
            )
            assert (queues.texts.depth, queues.images.depth) == (0, 0)
            decoded_before = queues.decoded.in_use
            for key in (busy_1, busy_2):  # the text queue is full: 8 of 8
                busy.append(
                    asyncio.ensure_future(
                        client.post(
                            "/v1/embeddings", json={"input": ["a", "b", "c", "d"]}, headers=bearer(key)
                        )
                    )
                )
            await until(lambda: queues.texts.depth == 8)
            refused = await client.post(
                "/v1/classify",
                json={"input": [{"image": IMAGE}] * 4, "labels": ["cat", "dog"], "template": TEMPLATE},
                headers=bearer(caller),
            )
            assert refused.status_code == 503, refused.text
            # Its images are not decoded and queued for nobody while the model is busy: nothing is held.
            await until(lambda: queues.images.depth == 0 and queues.decoded.in_use == decoded_before)
            await asyncio.sleep(0.2)
            assert queues.images.depth == 0
            assert queues.decoded.in_use == decoded_before
        finally:
            gate.set()
        assert [r.status_code for r in await asyncio.gather(*busy)] == [200, 200, 200]


async def test_an_embedding_whose_text_fails_to_tokenize_stops_its_images(
    tiny_runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenize = tiny_runtime.tokenize

    def failing_tokenize(texts: list[str]) -> TokenizedTexts:
        if "poison" in texts:  # a tokenizer failure, raised as the service raises one
            raise InvalidRequestError("this text cannot be tokenized", param="input")
        result: TokenizedTexts = tokenize(texts)
        return result

    monkeypatch.setattr(tiny_runtime, "tokenize", failing_tokenize)
    async with running_app(tiny_runtime, tmp_path, **SMALL_QUEUES) as (client, app):
        queues = app.state.context.queues
        gate = threading.Event()
        occupy(app.state.context.compute_pool, gate, 120)
        try:
            busy = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": [{"image": IMAGE}]}))
            await until(lambda: queues.decoded.in_use == 1)
            pool = app.state.context.compute_pool
            await until(
                lambda: pool._work_queue.qsize() == 1, "the image batch waits for the blocked model thread"
            )
            decoded_before = queues.decoded.in_use
            # Before: the 400 came only once every image had been decoded and encoded (here: never, while
            # the model is busy); now it comes at once and the images' decode slots are freed. (An image that
            # was queued before the text failed keeps its queue place, skipped, until the batcher reaches it.)
            failing = asyncio.ensure_future(
                client.post("/v1/embeddings", json={"input": [{"image": IMAGE}] * 3 + ["poison"]})
            )
            done, _ = await asyncio.wait([failing], timeout=60)  # the model stays busy for 120 s
            assert done, "no answer while the model is busy: the request waited for its images"
            assert failing.result().status_code == 400, failing.result().text
            assert queues.decoded.in_use == decoded_before
        finally:
            gate.set()
        assert (await busy).status_code == 200
        await failing
