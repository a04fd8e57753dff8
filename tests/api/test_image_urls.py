"""Image URLs are fetched safely: http(s) only, capped, timed out, and never to non-public addresses unless allowed."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from tests.support import encode_image, gradient_image, running_app, vectors

pytestmark = pytest.mark.anyio

PNG = encode_image(gradient_image(), "PNG")


@asynccontextmanager
async def image_host(host: str = "127.0.0.1") -> AsyncIterator[str]:
    """A local web server with good and bad image endpoints; yields its base URL."""

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def huge(_: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: the cap must hold while streaming
        await response.prepare(_)
        for _i in range(64):
            await response.write(b"\0" * 65536)
        return response

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(body=PNG)

    async def text(_: web.Request) -> web.Response:
        return web.Response(text="hello, not an image")

    async def missing(_: web.Request) -> web.Response:
        return web.Response(status=404)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query.get("target", "/cat.png"))

    async def loop(_: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    app = web.Application()
    for path, handler in {
        "/cat.png": image, "/huge.png": huge, "/slow.png": slow, "/text": text, "/missing.png": missing,
        "/redirect": redirect, "/to-other-host": redirect, "/loop": loop,
    }.items():  # fmt: skip
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def url_item(url: str) -> dict[str, object]:
    return {"input": [{"type": "image_url", "image_url": {"url": url}}]}


async def test_loopback_urls_are_refused_by_default(tiny_runtime, tmp_path: Path) -> None:
    async with image_host() as base, running_app(tiny_runtime, tmp_path) as (client, _):
        by_ip = await client.post("/v1/embeddings", json=url_item(f"{base}/cat.png"))
        by_name = await client.post(
            "/v1/embeddings", json=url_item(base.replace("127.0.0.1", "localhost") + "/cat.png")
        )
        metadata = await client.post(
            "/v1/embeddings", json=url_item("http://169.254.169.254/latest/meta-data/")
        )
    for response in (by_ip, by_name, metadata):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "image_fetch_failed"
        assert "not allowed" in response.json()["error"]["message"]


async def test_allowed_networks_are_fetched_and_embedded(tiny_runtime, tmp_path: Path) -> None:
    async with (
        image_host() as base,
        running_app(tiny_runtime, tmp_path, image_fetch_allowed_networks=["127.0.0.1/32"]) as (client, _),
    ):
        fetched = await client.post("/v1/embeddings", json=url_item(f"{base}/cat.png"))
        redirected = await client.post("/v1/embeddings", json=url_item(f"{base}/redirect"))
        inline = await client.post("/v1/embeddings", json={"input": [{"image": _b64(PNG)}]})
    assert fetched.status_code == 200, fetched.text
    np.testing.assert_allclose(vectors(fetched.json()), vectors(inline.json()), atol=1e-6)
    np.testing.assert_allclose(vectors(redirected.json()), vectors(inline.json()), atol=1e-6)


async def test_a_redirect_to_a_forbidden_address_is_refused(tiny_runtime, tmp_path: Path) -> None:
    # Only 127.0.0.2 is allowed; it redirects to 127.0.0.1 (and to localhost), which are not.
    async with (
        image_host("127.0.0.2") as allowed,
        image_host("127.0.0.1") as forbidden,
        running_app(tiny_runtime, tmp_path, image_fetch_allowed_networks=["127.0.0.2/32"]) as (client, _),
    ):
        direct = await client.post("/v1/embeddings", json=url_item(f"{allowed}/cat.png"))
        hop_ip = await client.post(
            "/v1/embeddings", json=url_item(f"{allowed}/to-other-host?target={forbidden}/cat.png")
        )
        hop_name = await client.post(
            "/v1/embeddings",
            json=url_item(
                f"{allowed}/to-other-host?target={forbidden.replace('127.0.0.1', 'localhost')}/cat.png"
            ),
        )
    assert direct.status_code == 200
    for response in (hop_ip, hop_name):
        assert response.status_code == 400
        assert "not allowed" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "fragment", "code"),
    [
        ("/missing.png", "HTTP 404", "image_fetch_failed"),
        ("/text", "could not decode", "invalid_image"),
        ("/loop", "redirects", "image_fetch_failed"),
        ("/huge.png", "limit", "image_too_large"),
        ("/slow.png", "timed out", "image_fetch_failed"),
    ],
)
async def test_bad_urls_are_clear_400s(
    tiny_runtime, tmp_path: Path, path: str, fragment: str, code: str
) -> None:
    async with (
        image_host() as base,
        running_app(
            tiny_runtime,
            tmp_path,
            image_fetch_allowed_networks=["127.0.0.1/32"],
            # short only where the timeout is the point (the slow host answers after 2 s); generous elsewhere,
            # so that a loaded machine cannot turn "too many redirects" into "timed out"
            image_fetch_timeout_s=0.5 if path == "/slow.png" else 30,
            max_image_bytes=1024 * 1024,
        ) as (client, _),
    ):
        response = await client.post("/v1/embeddings", json=url_item(base + path))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert fragment in error["message"]
    assert error["param"] == "input[0]"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
