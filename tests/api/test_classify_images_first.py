"""A classify request checks its images before its prompts reach the text encoder (issue 11, item 10): an image
that fails to fetch or decode answers 400 with no prompt encoded (before: all 160 prompts of an 80-template
request were encoded, unbilled, for an answer that was already an error)."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.support import encode_image, gradient_image, running_app, until

pytestmark = pytest.mark.anyio

NOT_AN_IMAGE = base64.b64encode(b"GIF89a but not really an image at all" * 8).decode()
LABELS = ["cat", "dog"]  # x the 80 'openai-imagenet' templates = 160 prompts
PROMPTS = 160


async def _texts_encoded(client: httpx.AsyncClient) -> float:
    """clipserve_items_total{queue="texts"} from /metrics: texts the model has encoded so far."""
    metrics = (await client.get("/metrics")).text
    match = re.search(r'^clipserve_items_total\{queue="texts"\} (\S+)$', metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_an_undecodable_image_costs_no_prompt_encoding(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        before = await _texts_encoded(client)
        response = await client.post(
            "/v1/classify", json={"image": NOT_AN_IMAGE, "labels": LABELS, "template": "openai-imagenet"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "image"
        assert await _texts_encoded(client) == before
        # The same request with a good image encodes all 160 prompts (the counter does count them).
        good = base64.b64encode(encode_image(gradient_image(), "PNG")).decode()
        ok = await client.post(
            "/v1/classify", json={"image": good, "labels": LABELS, "template": "openai-imagenet"}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["usage"]["cached_tokens"] == 0  # the failed request left nothing in the prompt cache
        assert await _texts_encoded(client) == before + PROMPTS


@asynccontextmanager
async def _missing_image_host(answer_when: Callable[[], bool]) -> AsyncIterator[str]:
    """A loopback host whose one image is a 404, sent only once `answer_when()` holds."""

    async def missing(_: web.Request) -> web.Response:
        await until(answer_when)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/cat.png", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_image_that_fails_to_fetch_costs_no_prompt_encoding(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path, image_fetch_allow_private=True) as (client, app):
        texts = app.state.context.queues.texts
        before = await _texts_encoded(client)
        # The 404 comes only once the prompts were admitted to the text queue (and, before the fix, tokenized
        # and handed on to the model while the fetch was still pending).
        async with _missing_image_host(lambda: texts.depth == PROMPTS) as host:
            response = await client.post(
                "/v1/classify",
                json={"image": f"{host}/cat.png", "labels": LABELS, "template": "openai-imagenet"},
            )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "image_fetch_failed"
        assert await _texts_encoded(client) == before
        assert texts.depth == 0  # the prompts' admission was released with the request
