"""A flood from a key over its request rate is refused from memory, not with a database transaction each."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from clipserve.errors import RateLimitExceededError
from clipserve.service.refused_keys import RefusedKeys
from tests.support import bearer, create_key, data_uri, encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio


async def test_a_key_over_its_request_rate_is_refused_without_touching_the_ledger(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path, credit="1", requests_per_minute=2)
    async with running_app(tiny_runtime, tmp_path, rate_limited_answer_delay_s=0) as (client, app):
        ledger = app.state.context.ledger
        calls = {"admit": 0, "admit_free": 0}
        for name in calls:
            real = getattr(ledger, name)

            def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
                calls[_name] += 1
                return _real(*args)

            setattr(ledger, name, counted)
        answers = [
            await client.post("/v1/embeddings", json={"input": "a cat"}, headers=bearer(key))
            for _ in range(2)
        ]
        assert [r.status_code for r in answers] == [200, 200]
        refused = [
            await client.post("/v1/embeddings", json={"input": "a cat"}, headers=bearer(key))
            for _ in range(20)
        ]
        refused.append(await client.get("/v1/collections", headers=bearer(key)))  # a free route too
    assert {r.status_code for r in refused} == {429}
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)
    assert all(1 <= int(r.headers["retry-after"]) <= 120 for r in refused)  # two one-minute windows
    # two admitted, one refused by the ledger's window (a limit below the burst has no bucket), the rest from
    # memory
    assert calls == {"admit": 3, "admit_free": 0}


def test_refused_keys_remember_only_request_rate_refusals_until_their_retry_after() -> None:
    refused = RefusedKeys()
    refused.remember(1, RateLimitExceededError("images", limit_name="images", retry_after_s=30))
    refused.remember(2, RateLimitExceededError("never", limit_name="requests", retry_after_s=float("inf")))
    refused.remember(3, RateLimitExceededError("soon", limit_name="requests", retry_after_s=0.0))
    refused.check(1)  # an image refusal does not refuse requests without images
    refused.check(2)
    refused.check(3)  # expired at once
    refused.remember(4, RateLimitExceededError("slow down", limit_name="requests", retry_after_s=30))
    with pytest.raises(RateLimitExceededError, match="slow down") as raised:
        refused.check(4)
    assert 29 < raised.value.retry_after_s <= 30


async def test_a_refused_keys_next_bodies_are_not_even_read(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path, credit="1", requests_per_minute=1)
    read: list[int] = []

    async def body() -> Any:
        for _ in range(64):
            read.append(1)
            yield b" " * 1024
        yield b'{"input": "a cat"}'

    async with running_app(tiny_runtime, tmp_path) as (client, _):
        headers = {**bearer(key), "Content-Type": "application/json"}
        assert (
            await client.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key))
        ).status_code == 200
        assert (
            await client.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key))
        ).status_code == 429
        refused = await client.post("/v1/embeddings", content=body(), headers=headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(read) <= 1  # refused from memory before its body was read


async def test_known_refusals_are_answered_after_the_tarpit_delay_up_to_a_bound() -> None:
    import asyncio

    refused = RefusedKeys(delay_s=0.2, max_delayed=1)
    refused.remember(7, RateLimitExceededError("slow down", limit_name="requests", retry_after_s=30))
    finished: list[str] = []

    async def ask(name: str) -> None:
        with pytest.raises(RateLimitExceededError):
            await refused.refuse(7)
        finished.append(name)

    await asyncio.gather(ask("delayed"), ask("beyond the bound"))
    assert finished == ["beyond the bound", "delayed"]  # the second one was not held: the bound was taken
    await refused.refuse(8)  # a key not refused passes at once


async def test_a_key_sends_its_burst_at_once_and_then_only_at_its_rate(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    # 6 a minute (one per 10 s once the burst is spent): slow enough that no token comes back while the test runs
    key = create_key(tmp_path, name="bursty", credit="1", requests_per_minute=6)
    other = create_key(tmp_path, name="other", credit="1", images_per_minute=4)
    image = data_uri(encode_image(gradient_image(32, 32)))
    async with running_app(
        tiny_runtime, tmp_path, rate_limit_burst_requests=5, rate_limit_burst_images=3,
        rate_limited_answer_delay_s=0,
    ) as (client, app):  # fmt: skip
        # the buckets' clock stands still: no token comes back however slow the test
        stopped_at = time.monotonic()
        app.state.context.meter._bursts._clock = lambda: stopped_at
        created = [
            await client.post("/v1/collections", json={"name": f"c{i}"}, headers=bearer(key))
            for i in range(5)
        ]
        assert [r.status_code for r in created] == [200] * 5
        refused = await client.post("/v1/collections", json={"name": "c5"}, headers=bearer(key))
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert "may send 5 requests at once and then 6 per minute" in error["message"]
        assert refused.headers["retry-after"] == "10"  # one request at one per 10 s
        assert refused.headers["x-ratelimit-limit-requests"] == "6"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        # remembered like any request-rate refusal: a paid route is refused too, until the Retry-After
        paid = await client.post("/v1/embeddings", json={"input": "a cat"}, headers=bearer(key))
        assert paid.status_code == 429
        # another key is not paced by this one's burst; its images have their own bucket
        two = {"input": [{"image": image}, {"image": image}]}
        assert (await client.post("/v1/embeddings", json=two, headers=bearer(other))).status_code == 200
        images = await client.post("/v1/embeddings", json=two, headers=bearer(other))
        assert images.status_code == 429
        assert "may send 3 images at once and then 4 per minute" in images.json()["error"]["message"]
        assert images.headers["x-ratelimit-remaining-images"] == "1"
        # an image refusal does not refuse the key's requests without images
        text = await client.post("/v1/embeddings", json={"input": "a cat"}, headers=bearer(other))
        assert text.status_code == 200
