"""Concurrent requests coalesce into batches, get their own answers, and a full queue answers 503."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from clipserve.api.app import create_app
from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from tests.support import (
    READY_TIMEOUT_S,
    TINY_CONFIG,
    encode_image,
    gradient_image,
    make_settings,
    occupy,
    running_app,
    until,
    vectors,
    wait_until_ready,
)

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


async def test_an_undecodable_image_is_refused_before_it_reaches_a_batch(
    tiny_runtime, tmp_path: Path
) -> None:
    """docs/api.md: a bad item "is rejected before it reaches a batch, so requests batched alongside it are
    unaffected": the model sees exactly the six good images, and their requests get the right answers."""
    good = encode_image(gradient_image(), "PNG")
    corrupt = base64.b64encode(encode_image(gradient_image(), "JPEG")[:300]).decode()
    want = tiny_runtime.encode_images(tiny_runtime.preprocess(decode_image(good, max_pixels=10**8))[None])
    encoded = base64.b64encode(good).decode()
    async with running_app(tiny_runtime, tmp_path, batch_wait_ms=20) as (client, _):
        bodies = [{"input": [{"image": encoded}]}] * 6 + [{"input": [{"image": corrupt}]}]
        responses = await asyncio.gather(*(client.post("/v1/embeddings", json=b) for b in bodies))
        metrics_text = (await client.get("/metrics")).text
    assert [r.status_code for r in responses] == [200] * 6 + [400]
    assert responses[6].json()["error"]["param"] == "input[0]"
    assert metric(metrics_text, "clipserve_items_total", 'queue="images"') == 6
    for response in responses[:6]:
        np.testing.assert_allclose(vectors(response.json()), want, atol=1e-5)


class PoisonedRuntime(ClipRuntime):
    """The tiny model, failing any batch that holds one particular (decodable) image, as a model error would."""

    poison: torch.Tensor
    batch_sizes: list[int]

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        self.batch_sizes.append(len(pixels))
        if any(torch.equal(row, self.poison) for row in pixels):
            raise RuntimeError("the model failed on this image")
        return super().encode_images(pixels)


async def test_an_item_that_fails_inside_a_model_batch_fails_only_its_own_request(
    tiny_runtime, tmp_path: Path
) -> None:
    """docs/operations.md: "If a batch ever fails, its items are retried one by one so one bad item cannot fail
    its neighbours." The poisoned image rides in one model batch with six good ones (the batch is sized to
    hold exactly the seven, and waits for them); the six are answered, correctly, and only it fails."""
    runtime = PoisonedRuntime.load(
        RuntimeSpec(weights="random", architecture=str(TINY_CONFIG), device="cpu", seed=0)
    )
    assert isinstance(runtime, PoisonedRuntime)
    poison_png = encode_image(Image.new("RGB", (64, 64), (255, 0, 255)), "PNG")
    runtime.poison = runtime.preprocess(decode_image(poison_png, max_pixels=10**8))
    runtime.batch_sizes = []
    goods = [encode_image(gradient_image(96, 80, seed=i), "PNG") for i in range(6)]
    want = tiny_runtime.encode_images(
        torch.stack([tiny_runtime.preprocess(decode_image(d, max_pixels=10**8)) for d in goods])
    )
    settings = {"image_batch_size": 7, "batch_wait_ms": 60_000, "batch_latency_target_ms": 0,
                "contended_batch_latency_target_ms": 0}  # fmt: skip
    bodies = [
        {"input": [{"image": base64.b64encode(d).decode()}]} for d in [*goods[:3], poison_png, *goods[3:]]
    ]
    app = create_app(make_settings(tmp_path, **settings), runtime)
    async with app.router.lifespan_context(app):
        # the 500 reaches the client as a real server sends it (running_app's transport re-raises it instead)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
            await wait_until_ready(client, READY_TIMEOUT_S)
            runtime.batch_sizes.clear()  # the warm-up's own pass
            responses = await asyncio.gather(*(client.post("/v1/embeddings", json=b) for b in bodies))
    assert runtime.batch_sizes == [7] + [1] * 7  # together first, then each alone
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 3 + [500] + [200] * 3, [r.text for r in responses]
    assert responses[3].json()["error"]["code"] == "internal_error"
    got = np.stack([vectors(r.json())[0] for i, r in enumerate(responses) if i != 3])
    np.testing.assert_allclose(got, want, atol=1e-5)


async def test_a_full_queue_answers_503_with_retry_after(tiny_runtime, tmp_path: Path) -> None:
    settings = {"max_queue_items": 4, "max_items_per_request": 4, "text_batch_size": 4, "batch_wait_ms": 0}
    async with running_app(tiny_runtime, tmp_path, **settings) as (client, app):
        context = app.state.context
        gate = threading.Event()
        occupy(context.compute_pool, gate, 30)  # the model thread is busy
        running = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": ["a", "b", "c", "d"]}))
        await until(
            lambda: context.compute_pool._work_queue.qsize() == 1, "the batch waits for the model thread"
        )
        assert context.queues.texts.depth == 0
        assert not running.done()
        queued = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": ["e", "f", "g", "h"]}))
        await until(lambda: context.queues.texts.depth == 4)
        refused = await client.post("/v1/embeddings", json={"input": "i"})
        gate.set()
        done = await asyncio.gather(running, queued)
        after = await client.post("/v1/embeddings", json={"input": "i"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    assert refused.json()["error"]["code"] == "server_overloaded"
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200
