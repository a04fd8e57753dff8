"""Health, readiness, metrics and the model card."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from clipserve.api.app import create_app
from tests.support import make_settings, running_app

pytestmark = pytest.mark.anyio


async def test_ready_turns_on_only_after_warm_up(tiny_runtime, tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path), tiny_runtime)
    async with app.router.lifespan_context(app):
        context = app.state.context
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            for _ in range(500):
                if context.ready:
                    break
                await asyncio.sleep(0.01)
            ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}
    # After shutdown the app reports not ready (a load balancer stops sending traffic while it drains).
    assert context.ready is False


async def test_not_ready_while_warming(tiny_runtime, tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path), tiny_runtime)
    gate = threading.Event()
    async with app.router.lifespan_context(app):
        context = app.state.context
        context.ready = False
        context.compute_pool.submit(gate.wait, 5)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            not_ready = await client.get("/ready")
            alive = await client.get("/health")
        gate.set()
    assert not_ready.status_code == 503
    assert alive.status_code == 200


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
