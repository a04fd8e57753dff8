"""Concurrent requests coalesce into batches, get their own answers, and a full queue answers 503."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from clipserve.runtime.images import decode_image
from tests.support import encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio


def metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{name}{{{labels}}} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in /metrics"
    return float(match.group(1))


async def test_32_concurrent_clients_get_correct_distinct_answers(tiny_runtime, tmp_path: Path) -> None:
    images = [encode_image(gradient_image(160, 120, seed=i), "PNG") for i in range(16)]
    texts = [f"caption number {i} about a {['cat', 'dog'][i % 2]}" for i in range(16)]
    expected_images = tiny_runtime.encode_images(
        torch.stack([tiny_runtime.preprocess(decode_image(d, max_pixels=10**8)) for d in images])
    )
    expected_texts = tiny_runtime.encode_texts(tiny_runtime.tokenize(texts).ids)

    async with running_app(tiny_runtime, tmp_path, batch_wait_ms=20) as (client, _):
        requests = [{"input": [{"image": base64.b64encode(d).decode()}]} for d in images]
        requests += [{"input": t, "encoding_format": "base64"} for t in texts]
        responses = await asyncio.gather(*(client.post("/v1/embeddings", json=r) for r in requests))
        metrics_text = (await client.get("/metrics")).text

    assert all(r.status_code == 200 for r in responses)
    got = np.stack([vectors(r.json())[0] for r in responses])
    want = np.concatenate([expected_images, expected_texts])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert len({v.tobytes() for v in got}) == 32  # distinct answers
    for queue in ("images", "texts"):
        batches = metric(metrics_text, "clipserve_batch_size_count", f'queue="{queue}"')
        items = metric(metrics_text, "clipserve_batch_size_sum", f'queue="{queue}"')
        assert items == 16
        assert batches < 16, f"{queue}: no batching happened"


async def test_a_bad_request_does_not_affect_the_others_batched_with_it(tiny_runtime, tmp_path: Path) -> None:
    good = base64.b64encode(encode_image(gradient_image(), "PNG")).decode()
    corrupt = base64.b64encode(encode_image(gradient_image(), "JPEG")[:300]).decode()
    async with running_app(tiny_runtime, tmp_path, batch_wait_ms=20) as (client, _):
        bodies = [{"input": [{"image": good}, "text"]}] * 6 + [{"input": [{"image": corrupt}]}]
        responses = await asyncio.gather(*(client.post("/v1/embeddings", json=b) for b in bodies))
    assert [r.status_code for r in responses] == [200] * 6 + [400]
    first = vectors(responses[0].json())
    for response in responses[1:6]:
        np.testing.assert_allclose(vectors(response.json()), first, atol=1e-6)  # batch size may differ


async def test_a_full_queue_answers_503_with_retry_after(tiny_runtime, tmp_path: Path) -> None:
    settings = {"max_queue_items": 4, "max_items_per_request": 4, "text_batch_size": 4, "batch_wait_ms": 0}
    async with running_app(tiny_runtime, tmp_path, **settings) as (client, app):
        context = app.state.context
        gate = threading.Event()
        context.compute_pool.submit(gate.wait, 10)  # the model thread is busy
        running = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": ["a", "b", "c", "d"]}))
        await asyncio.sleep(0.3)  # admitted, tokenized, and handed to the blocked model thread
        assert context.queues.texts.depth == 0
        assert not running.done()
        queued = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": ["e", "f", "g", "h"]}))
        await _until(lambda: context.queues.texts.depth == 4)
        refused = await client.post("/v1/embeddings", json={"input": "i"})
        gate.set()
        done = await asyncio.gather(running, queued)
        after = await client.post("/v1/embeddings", json={"input": "i"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    assert refused.json()["error"]["code"] == "server_overloaded"
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200


async def _until(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")
