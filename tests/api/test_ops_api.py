"""Health, readiness, metrics and the model card."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from clipserve.api.app import create_app
from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from tests.support import (
    READY_TIMEOUT_S,
    TINY_CONFIG,
    data_uri,
    encode_image,
    gradient_image,
    make_settings,
    running_app,
    until,
    vectors,
    wait_until_ready,
)

pytestmark = pytest.mark.anyio


async def test_ready_turns_on_only_after_warm_up(tiny_runtime, tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path), tiny_runtime)
    async with app.router.lifespan_context(app):
        context = app.state.context
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            await until(lambda: context.ready, "the warm-up finished", READY_TIMEOUT_S)
            ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}
    # After shutdown the app reports not ready (a load balancer stops sending traffic while it drains).
    assert context.ready is False


class HeldWarmupRuntime(ClipRuntime):
    """The tiny model whose real warm-up waits until the test releases it."""

    warming: threading.Event
    release: threading.Event

    def warmup(self) -> None:
        self.warming.set()
        assert self.release.wait(60), "the test never released the warm-up"
        super().warmup()


def held_warmup_runtime() -> HeldWarmupRuntime:
    runtime = HeldWarmupRuntime.load(
        RuntimeSpec(weights="random", architecture=str(TINY_CONFIG), device="cpu", seed=0)
    )
    assert isinstance(runtime, HeldWarmupRuntime)
    runtime.warming, runtime.release = threading.Event(), threading.Event()
    return runtime


async def test_not_ready_while_the_real_warm_up_runs_and_requests_wait_for_it(
    tiny_runtime, tmp_path: Path
) -> None:
    """/ready is 503 while the lifespan's own warm-up runs; a model request sent meanwhile is accepted, waits
    behind the warm-up on the model thread, and is answered (200, the right vectors) once it is done."""
    runtime = held_warmup_runtime()
    image = encode_image(gradient_image(seed=3))
    want = np.concatenate([
        tiny_runtime.encode_texts(tiny_runtime.tokenize(["a cat"]).ids),
        tiny_runtime.encode_images(tiny_runtime.preprocess(decode_image(image, max_pixels=10**8))[None]),
    ])  # fmt: skip
    app = create_app(make_settings(tmp_path), runtime)
    async with app.router.lifespan_context(app):
        context = app.state.context
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
                assert await asyncio.to_thread(runtime.warming.wait, 30), "the lifespan never began warming"
                not_ready = await client.get("/ready")
                alive = await client.get("/health")
                gauge = (await client.get("/metrics")).text
                body = {"input": ["a cat", {"image": data_uri(image)}], "encoding_format": "base64"}
                waiting = asyncio.ensure_future(client.post("/v1/embeddings", json=body))
                # both items are handed to the model thread, which the warm-up still holds
                await until(lambda: context.compute_pool._work_queue.qsize() == 2, "both batches wait")
                assert not waiting.done()
                still_not_ready = await client.get("/ready")
                runtime.release.set()
                answered = await waiting
                await until(lambda: context.ready, "the warm-up finished")
                ready = await client.get("/ready")
        finally:
            runtime.release.set()  # never leave the lifespan's shutdown waiting on a held warm-up
    assert not_ready.status_code == still_not_ready.status_code == 503
    assert not_ready.json() == {"status": "not_ready"}
    assert alive.status_code == 200
    assert "clipserve_ready 0.0" in gauge
    assert answered.status_code == 200, answered.text
    np.testing.assert_allclose(vectors(answered.json()), want, atol=1e-5)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_the_test_helper_fails_clearly_when_ready_never_comes(tmp_path: Path) -> None:
    """running_app's wait (tests/support.py) fails, naming /ready's answer, rather than carrying on."""
    runtime = held_warmup_runtime()
    app = create_app(make_settings(tmp_path), runtime)
    async with app.router.lifespan_context(app):
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                with pytest.raises(AssertionError, match=r"never became ready: /ready still answered 503"):
                    await wait_until_ready(client, timeout_s=0.2)
        finally:
            runtime.release.set()


async def test_metrics_expose_requests_latency_batches_queues_and_throughput(
    tiny_runtime, tmp_path: Path
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        await client.post("/v1/embeddings", json={"input": ["a", "b"]})
        await client.post("/v1/embeddings", json={"input": ""})
        response = await client.get("/metrics")
    text = response.text
    assert response.headers["content-type"].startswith("text/plain")
    for line in (
        'clipserve_requests_total{endpoint="/v1/embeddings",method="POST",status="200"} 1.0',
        'clipserve_requests_total{endpoint="/v1/embeddings",method="POST",status="400"} 1.0',
        'clipserve_batch_size_sum{queue="texts"} 2.0',
        'clipserve_items_total{queue="texts"} 2.0',
        'clipserve_queue_depth{queue="images"} 0.0',
        "clipserve_ready 1.0",
    ):
        assert line in text
    for name in (
        "clipserve_request_duration_seconds_bucket",
        "clipserve_batch_compute_seconds_bucket",
        "clipserve_queue_wait_seconds_bucket",
        "clipserve_decode_seconds_bucket",
        'clipserve_items_per_second{queue="texts"}',
    ):
        assert name in text


async def test_models_lists_the_served_model_with_its_card(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        listing = (await client.get("/v1/models")).json()
        by_short = (await client.get("/v1/models/CLIP-ViT-B-32-laion2B-s34B-b79K")).json()
        by_hub = (await client.get("/v1/models/laion/CLIP-ViT-B-32-laion2B-s34B-b79K")).json()
    (model,) = listing["data"]
    assert listing["object"] == "list"
    assert model["id"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert model["object"] == "model"
    assert model["license"] == "MIT"
    assert model["task"] == "zero-shot-image-classification"
    assert model["embedding_dimensions"] == 512
    assert model["imagenet_zero_shot_top1"] == pytest.approx(0.666)
    assert model["weights"]["random"] is True
    assert "CLIP-ViT-B-32-laion2B-s34B-b79K" in model["aliases"]
    assert by_short == by_hub == model
