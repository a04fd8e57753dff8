"""operations.md: environment proxies are ignored by the URL fetcher (a proxy would fetch on the server's behalf,
past the address checks). HTTP(S)_PROXY and ALL_PROXY point at a loopback listener that records every connection;
an image URL on a loopback image host is fetched directly, and the proxy sees nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_image_urls import PNG, image_host, url_item
from tests.support import data_uri, running_app, vectors

pytestmark = pytest.mark.anyio


async def test_environment_proxies_are_not_used(
    tiny_runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connections: list[tuple[str, int]] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername"))
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(record, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        async with (
            image_host() as base,
            running_app(tiny_runtime, tmp_path, image_fetch_allowed_networks=["127.0.0.1/32"]) as (client, _),
        ):
            fetched = await client.post("/v1/embeddings", json=url_item(f"{base}/cat.png"))
            inline = await client.post("/v1/embeddings", json={"input": [{"image": data_uri(PNG)}]})
    finally:
        proxy.close()
        await proxy.wait_closed()
    assert fetched.status_code == 200, fetched.text
    assert connections == []
    assert (vectors(fetched.json()) == vectors(inline.json())).all()  # the image host's bytes, not a proxy's
