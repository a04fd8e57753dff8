"""Claims of docs/accounts.md and api.md proven through HTTP: billing usage, the 409 of a running Idempotency-Key,
--idempotency-ttl-s, --credit-hold-s, --auth on before any key, and how sign-ups count client addresses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from clipserve.store.accounts import utc_now
from tests.support import bearer, create_key, data_uri, encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio

PNG = encode_image(gradient_image(64, 48))
IMAGE = data_uri(PNG)
IMAGE_MICROS = 47  # $0.047 per 1000 images


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    return error


class GatedImageHost:
    """A loopback image server whose /gated.png answers only when the test says so."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.base_url = ""

    async def gated(self, _: web.Request) -> web.Response:
        self.arrived.set()
        await self.release.wait()
        return web.Response(body=PNG, content_type="image/png")

    @property
    def item(self) -> dict[str, Any]:
        return {"input": [{"type": "image_url", "image_url": {"url": f"{self.base_url}/gated.png"}}]}


@asynccontextmanager
async def gated_image_host() -> AsyncIterator[GatedImageHost]:
    host = GatedImageHost()
    app = web.Application()
    app.router.add_get("/gated.png", host.gated)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    host.base_url = f"http://127.0.0.1:{port}"
    try:
        yield host
    finally:
        host.release.set()
        await runner.cleanup()


def _shift_ledger_clock(app: Any) -> Callable[[float], None]:
    """Stop the ledger store's clock (its injected clock: holds, idempotency records and rate windows all read
    it) at now; only the test moves it, so how long the requests take in real time does not matter. Returns the
    function that moves it forward."""
    stopped_at = utc_now()
    offset = [timedelta(0)]
    app.state.context.ledger.clock = lambda: stopped_at + offset[0]

    def advance(seconds: float) -> None:
        offset[0] += timedelta(seconds=seconds)

    return advance


async def test_billing_usage_is_openais_former_shape_in_cents(tiny_runtime: Any, tmp_path: Path) -> None:
    first = create_key(tmp_path, "first")
    second = create_key(tmp_path, "second")
    admin = create_key(tmp_path, "root", credit="0", is_admin=True)
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        day = datetime.now(UTC).date()
        sent = [
            ("/v1/embeddings", first, {"input": [{"image": IMAGE}] * 2}),  # 2 images: 94 micros
            ("/v1/embeddings", second, {"input": [{"image": IMAGE}]}),  # 47 micros
            ("/v1/classify", first, {"image": IMAGE, "labels": ["cat", "dog"]}),  # 47 + the prompts' tokens
        ]
        costs: dict[str, int] = {}
        for path, key, body in sent:
            response = await client.post(path, json=body, headers=bearer(key))
            assert response.status_code == 200, response.text
            costs[path] = costs.get(path, 0) + int(response.headers["x-request-cost-micros"])
        tokens = response.json()["usage"]["prompt_tokens"]
        assert costs["/v1/embeddings"] == 3 * IMAGE_MICROS  # hand arithmetic for the image-only requests
        assert costs["/v1/classify"] == IMAGE_MICROS + -(
            -tokens * 10_000 // 1_000_000
        )  # $0.01/1M, rounded up
        billing = await client.get("/v1/dashboard/billing/usage", headers=bearer(admin))
        assert datetime.now(UTC).date() == day, "the test ran across midnight UTC; run it again"
    assert billing.status_code == 200, billing.text
    midnight = int(datetime.combine(day, time(), UTC).timestamp())
    assert billing.json() == {
        "object": "list",
        "daily_costs": [
            {
                "timestamp": midnight,
                "line_items": [
                    {"name": "/v1/classify", "cost": costs["/v1/classify"] / 10_000},
                    {"name": "/v1/embeddings", "cost": 141 / 10_000},  # cents: 141 micro-dollars
                ],
            }
        ],
        "total_usage": (141 + costs["/v1/classify"]) / 10_000,
    }


async def test_a_retry_while_the_first_request_runs_is_a_409_with_retry_after_1(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path)
    headers = {**bearer(key), "Idempotency-Key": "in-flight-1"}
    async with (
        gated_image_host() as host,
        running_app(tiny_runtime, tmp_path, image_fetch_allowed_networks=["127.0.0.1/32"]) as (client, _),
    ):
        first = asyncio.create_task(client.post("/v1/embeddings", json=host.item, headers=headers))
        try:
            await asyncio.wait_for(host.arrived.wait(), 60)  # admitted: its image is being fetched
            retry = await client.post("/v1/embeddings", json=host.item, headers=headers)
            error = _error(retry, 409, "idempotency_key_in_use")
            assert error["type"] == "invalid_request_error"
            assert retry.headers["retry-after"] == "1"
        finally:
            host.release.set()  # a failure must not leave the app draining a request that never ends
        answered = await first
        assert answered.status_code == 200, answered.text
        again = await client.post("/v1/embeddings", json=host.item, headers=headers)
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == answered.content


async def test_answers_are_replayed_for_idempotency_ttl_s_and_not_after(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path)
    headers = {**bearer(key), "Idempotency-Key": "ttl-1"}
    body = {"input": [{"image": IMAGE}]}
    async with running_app(tiny_runtime, tmp_path, idempotency_ttl_s=5.0) as (client, app):
        advance = _shift_ledger_clock(app)
        first = await client.post("/v1/embeddings", json=body, headers=headers)
        assert first.status_code == 200, first.text
        advance(4.5)  # inside the 5 s
        before = await client.post("/v1/embeddings", json=body, headers=headers)
        assert before.headers.get("idempotent-replayed") == "true"
        assert before.content == first.content
        advance(1.0)  # 5.5 s after the first answer: forgotten
        after = await client.post("/v1/embeddings", json=body, headers=headers)
        assert after.status_code == 200, after.text
        assert "idempotent-replayed" not in after.headers
        assert int(after.headers["x-request-cost-micros"]) == IMAGE_MICROS  # run and charged again
        status = (await client.get("/v1/key", headers=bearer(key))).json()["data"]
    assert status["usage_micros"] == 2 * IMAGE_MICROS


async def test_a_hold_stops_counting_after_credit_hold_s(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path, credit="0.000047")  # exactly one image
    async with (
        gated_image_host() as host,
        running_app(
            tiny_runtime, tmp_path, credit_hold_s=5.0, image_fetch_allowed_networks=["127.0.0.1/32"]
        ) as (client, app),
    ):
        advance = _shift_ledger_clock(app)
        held = asyncio.create_task(client.post("/v1/embeddings", json=host.item, headers=bearer(key)))
        try:
            await asyncio.wait_for(host.arrived.wait(), 60)  # admitted: it holds the account's 47 micros
            body = {"input": [{"image": IMAGE}]}
            refused = await client.post("/v1/embeddings", json=body, headers=bearer(key))
            _error(refused, 429, "insufficient_quota")
            advance(4.5)  # the hold is 5 s: still held
            refused = await client.post("/v1/embeddings", json=body, headers=bearer(key))
            _error(refused, 429, "insufficient_quota")
            advance(1.0)  # 5.5 s: the hold no longer counts
            freed = await client.post("/v1/embeddings", json=body, headers=bearer(key))
            assert freed.status_code == 200, freed.text
        finally:
            host.release.set()  # a failure must not leave the app draining a request that never ends
        # once admitted, a request is charged when it succeeds, even past its hold (the hold only reserves)
        assert (await held).status_code == 200


async def test_auth_on_refuses_every_api_request_before_any_key_exists(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    requests = [
        ("POST", "/v1/embeddings", {"input": "a"}),
        ("POST", "/v1/classify", {"image": IMAGE, "labels": ["a", "b"]}),
        ("POST", "/v1/rank", {"query": "a", "documents": ["a", "b"]}),
        ("GET", "/v1/models", None),
        ("GET", "/v1/key", None),
        ("GET", "/v1/usage", None),
        ("GET", "/v1/collections", None),
        ("POST", "/v1/collections", {"name": "c"}),
        ("GET", "/v1/admin/accounts", None),
        ("GET", "/v1/dashboard/billing/usage", None),
    ]
    async with running_app(tiny_runtime, tmp_path, auth="on") as (client, app):
        assert app.state.context.accounts.list_accounts() == []
        for method, path, body in requests:
            for headers, code in (
                ({}, "missing_api_key"),
                (bearer("sk-clip-" + "A" * 44), "invalid_api_key"),
            ):
                response = await client.request(method, path, json=body, headers=headers)
                _error(response, 401, code)
                assert response.headers["www-authenticate"].startswith("Bearer"), path
        # probes and the scraper stay open (as with keys: test_accounts_api)
        for path in ("/health", "/ready", "/metrics"):
            assert (await client.get(path)).status_code == 200, path


async def _sign_up(app: Any, host: str, name: str) -> httpx.Response:
    """POST /v1/signup from a client at `host` (the connecting peer's address the ASGI scope carries)."""
    transport = httpx.ASGITransport(app=app, client=(host, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url="http://clipserve.test") as client:
        return await client.post("/v1/signup", json={"name": name})


async def test_an_ipv4_mapped_address_signs_up_as_its_ipv4_address(tiny_runtime: Any, tmp_path: Path) -> None:
    settings = {"signup_enabled": True, "signups_per_address_per_day": 1}
    async with running_app(tiny_runtime, tmp_path, **settings) as (_, app):
        assert (await _sign_up(app, "203.0.113.7", "a")).status_code == 200
        _error(await _sign_up(app, "::ffff:203.0.113.7", "b"), 429, "rate_limit_exceeded")
        _error(await _sign_up(app, "::ffff:cb00:7107", "c"), 429, "rate_limit_exceeded")  # the same, in hex
        # the default prefix is 32: the neighbour is another client
        assert (await _sign_up(app, "203.0.113.8", "d")).status_code == 200
        # and mapped first, plain second: the same count
        assert (await _sign_up(app, "::ffff:198.51.100.20", "e")).status_code == 200
        _error(await _sign_up(app, "198.51.100.20", "f"), 429, "rate_limit_exceeded")


async def test_signup_ipv4_prefix_counts_a_whole_network(tiny_runtime: Any, tmp_path: Path) -> None:
    settings = {"signup_enabled": True, "signups_per_address_per_day": 2, "signup_ipv4_prefix": 24}
    async with running_app(tiny_runtime, tmp_path, **settings) as (_, app):
        assert (await _sign_up(app, "198.51.100.1", "a")).status_code == 200
        assert (await _sign_up(app, "198.51.100.254", "b")).status_code == 200
        _error(await _sign_up(app, "198.51.100.77", "c"), 429, "rate_limit_exceeded")  # third in the /24
        _error(await _sign_up(app, "::ffff:198.51.100.9", "d"), 429, "rate_limit_exceeded")
        assert (await _sign_up(app, "198.51.101.1", "e")).status_code == 200  # the next /24
        assert (await _sign_up(app, "198.51.99.255", "f")).status_code == 200  # the one before
