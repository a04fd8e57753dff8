"""Fair sharing (issue 10, item 4): one account's slow image URLs, big requests or failed fetches never starve
another account, and the image queue is bounded in bytes as well as items. Also (item 13): image URLs whose
host is an IPv6 literal carrying a non-public IPv4 address, or a special IPv6 range, are refused."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from tests.support import bearer, create_key, encode_image, gradient_image, occupy, running_app, until

pytestmark = pytest.mark.anyio

PNG = encode_image(gradient_image(32, 32))
PER_ACCOUNT = 4


@dataclass
class SlowHost:
    """A loopback image host that counts open requests per account (the first path segment)."""

    base: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    open_now: Counter[str] = field(default_factory=Counter)
    most_open: Counter[str] = field(default_factory=Counter)
    served: Counter[str] = field(default_factory=Counter)


@asynccontextmanager
async def slow_host() -> AsyncIterator[SlowHost]:
    host = SlowHost()

    async def hang(request: web.Request) -> web.Response:
        """Answers only once the test releases it: an attacker's slow URL."""
        account = request.match_info["account"]
        host.open_now[account] += 1
        host.most_open[account] = max(host.most_open[account], host.open_now[account])
        try:
            await host.release.wait()
            host.served[account] += 1
            return web.Response(body=PNG, content_type="image/png")
        finally:
            host.open_now[account] -= 1

    async def quick(request: web.Request) -> web.Response:
        account = request.match_info["account"]
        host.served[account] += 1
        return web.Response(body=PNG, content_type="image/png")

    async def missing(_: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{account}/slow/{n}.png", hang)
    app.router.add_get("/{account}/quick.png", quick)
    app.router.add_get("/{account}/missing/{n}.png", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    host.base = f"http://127.0.0.1:{port}"
    try:
        yield host
    finally:
        host.release.set()
        await runner.cleanup()


def image_urls(urls: list[str]) -> dict[str, Any]:
    return {"input": [{"type": "image_url", "image_url": {"url": url}} for url in urls]}


async def test_an_account_with_200_slow_urls_does_not_delay_another_accounts_image(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    attacker, victim = create_key(tmp_path, "attacker"), create_key(tmp_path, "victim")
    async with (
        slow_host() as host,
        running_app(
            tiny_runtime, tmp_path,
            image_fetch_allowed_networks=["127.0.0.1/32"], image_fetch_concurrency=PER_ACCOUNT,
        ) as (client, _),
    ):  # fmt: skip
        created = await client.post("/v1/collections", json={"name": "loot"}, headers=bearer(attacker))
        assert created.status_code == 200, created.text
        # One account, many requests: a collection add of 200 slow URLs and three embeddings requests.
        add = asyncio.ensure_future(
            client.post(
                "/v1/collections/loot/items",
                json={"items": [{"image": f"{host.base}/attacker/slow/{i}.png"} for i in range(200)]},
                headers=bearer(attacker),
            )
        )
        embeds = [
            asyncio.ensure_future(
                client.post(
                    "/v1/embeddings",
                    json=image_urls([f"{host.base}/attacker/slow/{r}-{i}.png" for i in range(20)]),
                    headers=bearer(attacker),
                )
            )
            for r in range(3)
        ]
        await until(lambda: host.open_now["attacker"] >= PER_ACCOUNT)
        await asyncio.sleep(0.2)  # room for any fetch beyond the account's share to open

        async with asyncio.timeout(30):  # "doesn't hang": the victim's own fetch answers at once
            answer = await client.post(
                "/v1/embeddings", json=image_urls([f"{host.base}/victim/quick.png"]), headers=bearer(victim)
            )
        # Before the fix the victim waited for the attacker's fetches to time out, then finished with them.
        assert not add.done()
        assert not any(e.done() for e in embeds)
        assert answer.status_code == 200, answer.text
        assert host.open_now["attacker"] == PER_ACCOUNT

        host.release.set()
        responses = await asyncio.gather(add, *embeds)
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert host.served["attacker"] == 260
    assert host.most_open["attacker"] == PER_ACCOUNT  # across all the account's requests, never more


async def test_failed_fetches_count_against_the_images_rate_limit(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path, images_per_minute=5)
    async with (
        slow_host() as host,
        running_app(tiny_runtime, tmp_path, image_fetch_allowed_networks=["127.0.0.1/32"]) as (client, _),
    ):
        urls = [f"{host.base}/attacker/missing/{i}.png" for i in range(3)]
        failed = await client.post("/v1/embeddings", json=image_urls(urls), headers=bearer(key))
        assert failed.status_code == 400
        assert failed.json()["error"]["code"] == "image_fetch_failed"
        assert failed.headers["x-ratelimit-remaining-images"] == "2"
        refused = await client.post("/v1/embeddings", json=image_urls(urls), headers=bearer(key))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["type"] == "images"
        # A collection add whose fetches fail still used its images too.
        other = create_key(tmp_path, "other", images_per_minute=5)
        await client.post("/v1/collections", json={"name": "c"}, headers=bearer(other))
        items = {"items": [{"image": url} for url in urls]}
        added = await client.post("/v1/collections/c/items", json=items, headers=bearer(other))
        assert added.status_code == 200
        assert added.json()["errors"] is True
        again = await client.post("/v1/collections/c/items", json=items, headers=bearer(other))
        assert again.status_code == 429, again.text


def _noise_png(seed: int, side: int = 96) -> bytes:
    """An image that compresses badly, so a few of them make a large request."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    return encode_image(Image.fromarray(pixels, "RGB"))


async def test_the_image_queue_is_bounded_in_bytes_and_refuses_with_503(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    mib = 1 << 20
    images = [_noise_png(i) for i in range(48)]  # ~28 KB each, ~1.3 MB in all
    body = {"input": [{"image": base64.b64encode(png).decode()} for png in images]}
    async with running_app(
        tiny_runtime, tmp_path,
        max_request_bytes=2 * mib, max_queue_bytes=2 * mib, image_decode_ahead=1, batch_wait_ms=20.0,
    ) as (client, app):  # fmt: skip
        queue = app.state.context.queues.images
        model_free = threading.Event()
        occupy(app.state.context.compute_pool, model_free)  # the queue cannot drain before the second request
        try:
            first = asyncio.ensure_future(client.post("/v1/embeddings", json=body))
            await until(lambda: queue.queued_bytes > mib)
            second = await client.post("/v1/embeddings", json=body)
        finally:
            model_free.set()
        assert second.status_code == 503, second.text
        assert second.json()["error"]["message"].startswith("the images queue is full")
        assert second.headers["retry-after"] == "1"  # a full queue frees within a batch: retry in a second
        assert (await first).status_code == 200  # the admitted request is not stalled
        assert queue.queued_bytes == 0
        again = await client.post("/v1/embeddings", json=body)
        assert again.status_code == 200


async def test_decoded_images_waiting_for_the_model_stay_bounded(tiny_runtime: Any, tmp_path: Path) -> None:
    # 512 tiny images used to become 512 decoded tensors (602 KB each) before the first batch ran.
    tiny = base64.b64encode(encode_image(gradient_image(8, 8))).decode()
    async with running_app(tiny_runtime, tmp_path) as (client, app):
        queue = app.state.context.queues.images
        most_waiting = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal most_waiting
            while not done.is_set():
                most_waiting = max(most_waiting, len(queue._pending))
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        response = await client.post("/v1/embeddings", json={"input": [{"image": tiny}] * 512})
        done.set()
        await watcher
    assert response.status_code == 200
    assert 0 < most_waiting <= 64  # one account's half of the default image_decode_ahead (128)


@pytest.mark.parametrize(
    "host",
    [
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254 (cloud metadata)
        "[64:ff9b:1::a9fe:a9fe]",  # local-use NAT64
        "[::a9fe:a9fe]",  # IPv4-compatible
        "[::ffff:a9fe:a9fe]",  # IPv4-mapped
        "[::ffff:0:a9fe:a9fe]",  # IPv4-translated
        "[2002:a9fe:a9fe::1]",  # 6to4
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",  # Teredo
        "[fec0::1]",  # site-local
    ],
)
async def test_ipv6_literals_reaching_non_public_addresses_are_refused(
    host: str, tiny_runtime: Any, tmp_path: Path
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", json=image_urls([f"http://{host}/latest/meta-data/"]))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "image_fetch_failed"
    assert "not allowed" in error["message"]
