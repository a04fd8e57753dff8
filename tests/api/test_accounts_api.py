"""Keys, charging, limits and idempotency through the real app (tiny model, SQLite in a temp dir)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.rate_window import assert_retry_after, start_early_in_a_minute
from tests.support import bearer, create_key, data_uri, encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio

IMAGE = data_uri(encode_image(gradient_image(64, 48)))


async def _key_status(client: Any, key: str) -> dict[str, Any]:
    response = await client.get("/v1/key", headers=bearer(key))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _assert_openai_error(response: Any, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


async def test_missing_malformed_wrong_revoked_and_expired_keys_get_401(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    good = create_key(tmp_path)
    expired = create_key(tmp_path, "old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    revoked = create_key(tmp_path, "gone")
    wrong_secret = good[:-4] + ("aaaa" if not good.endswith("aaaa") else "bbbb")
    wrong_prefix = "sk-clip-" + "Z" * 12 + good[-32:]
    async with running_app(tiny_runtime, tmp_path) as (client, app):
        accounts = app.state.context.accounts
        accounts.revoke_key(accounts.find_key(revoked[8:20]).id)
        body = {"input": "a cat"}
        cases = {
            "missing": ({}, "missing_api_key"),
            "malformed": ({"Authorization": "Bearer sk-abc"}, "invalid_api_key"),
            "not bearer": ({"Authorization": f"Basic {good}"}, "invalid_api_key"),
            "wrong secret": (bearer(wrong_secret), "invalid_api_key"),
            "wrong prefix": (bearer(wrong_prefix), "invalid_api_key"),
            "revoked": (bearer(revoked), "api_key_revoked"),
            "expired": (bearer(expired), "api_key_expired"),
        }
        for name, (headers, code) in cases.items():
            response = await client.post("/v1/embeddings", json=body, headers=headers)
            error = _assert_openai_error(response, 401, code)
            assert error["type"] == "invalid_request_error", name
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.post("/v1/embeddings", json=body, headers=bearer(good))).status_code == 200
        # ops routes stay open for probes and scrapers
        for path in ("/health", "/ready", "/metrics"):
            assert (await client.get(path)).status_code == 200


async def test_each_request_is_charged_its_exact_cost(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path, credit="1")
    async with running_app(tiny_runtime, tmp_path) as (client, app):
        response = await client.post(
            "/v1/embeddings", json={"input": [{"image": IMAGE}, {"image": IMAGE}, "a photo of a cat"]},
            headers=bearer(key),
        )  # fmt: skip
        assert response.status_code == 200, response.text
        tokens = response.json()["usage"]["prompt_tokens"]
        expected = 2 * 47 + -(-tokens * 10_000 // 1_000_000)  # $0.047/1k images, $0.01/1M tokens, rounded up
        assert int(response.headers["x-request-cost-micros"]) == expected
        status = await _key_status(client, key)
        assert status["usage_micros"] == expected
        assert status["limit_remaining_micros"] == 1_000_000 - expected
        assert status["limit_micros"] == 1_000_000
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()
        assert usage["data"][0]["endpoint"] == "/v1/embeddings"
        assert (usage["data"][0]["requests"], usage["data"][0]["images"]) == (1, 2)
        assert usage["total_cost_micros"] == expected
        audit = app.state.context.ledger.audit(status["account_id"])
        assert audit.consistent


async def test_a_failed_request_costs_nothing_and_holds_nothing(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path, credit="0.000047")  # exactly one image
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        bad = await client.post(
            "/v1/embeddings", json={"input": [{"image": "data:image/png;base64,AAAA"}]}, headers=bearer(key)
        )
        assert bad.status_code == 400
        assert (await _key_status(client, key))["usage_micros"] == 0
        good = await client.post("/v1/embeddings", json={"input": [{"image": IMAGE}]}, headers=bearer(key))
        assert good.status_code == 200, good.text
        assert (await _key_status(client, key))["limit_remaining_micros"] == 0


async def test_insufficient_credit_is_429_insufficient_quota_and_not_retryable(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path, credit="0.0001")
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post(
            "/v1/embeddings", json={"input": [{"image": IMAGE}] * 3}, headers=bearer(key)
        )
        error = _assert_openai_error(response, 429, "insufficient_quota")
        assert error["type"] == "insufficient_quota"
        assert response.headers["x-should-retry"] == "false"
        assert (await _key_status(client, key))["usage_micros"] == 0


async def test_rate_limit_headers_and_429_when_exceeded(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path, requests_per_minute=2, images_per_minute=5)
    # no burst pacing (its own tests: test_burst_limits.py): the sliding window alone answers, exactly
    async with running_app(tiny_runtime, tmp_path, rate_limit_burst_requests=0) as (client, _):
        await start_early_in_a_minute()  # the three requests share one wall-clock minute
        first = await client.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key))
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-limit-images"] == "5"
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        failed = await client.post(
            "/v1/embeddings", json={"input": [{"image": "data:image/png;base64,AAAA"}]}, headers=bearer(key)
        )
        assert failed.status_code == 400
        assert failed.headers["x-ratelimit-remaining-requests"] == "0"  # errors carry the headers too
        sent_at = time.time()
        refused = await client.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key))
        answered_at = time.time()
        error = _assert_openai_error(refused, 429, "rate_limit_exceeded")
        assert error["type"] == "requests"
        assert_retry_after(refused.headers, 2, sent_at, answered_at)  # 30 s into the next minute: 61-90 s
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    other = create_key(tmp_path, "big", images_per_minute=2)
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        too_big = await client.post(
            "/v1/embeddings", json={"input": [{"image": IMAGE}] * 3}, headers=bearer(other)
        )
        assert _assert_openai_error(too_big, 429, "rate_limit_exceeded")["type"] == "images"
        assert too_big.headers["x-should-retry"] == "false"


async def test_idempotency_key_answers_a_retry_once_and_charges_once(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path)
    headers = {**bearer(key), "Idempotency-Key": "embed-42"}
    body = {"input": [{"image": IMAGE}, "a dog"]}
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        first = await client.post("/v1/embeddings", json=body, headers=headers)
        second = await client.post("/v1/embeddings", json=body, headers=headers)
        assert first.status_code == second.status_code == 200
        assert second.content == first.content
        assert second.headers["idempotent-replayed"] == "true"
        status = await _key_status(client, key)
        assert status["usage_micros"] == int(first.headers["x-request-cost-micros"])
        different = await client.post("/v1/embeddings", json={"input": "another"}, headers=headers)
        _assert_openai_error(different, 400, "idempotency_key_reused")
        bad = await client.post(
            "/v1/embeddings", json=body, headers={**bearer(key), "Idempotency-Key": "x" * 300}
        )
        _assert_openai_error(bad, 400, None)


async def test_classify_and_rank_are_charged_by_what_they_encode(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path)
    async with running_app(tiny_runtime, tmp_path, charge_cached_prompts=False) as (client, _):
        body = {"input": [{"image": IMAGE}], "labels": ["cat", "dog"]}
        first = await client.post("/v1/classify", json=body, headers=bearer(key))
        cached = await client.post("/v1/classify", json=body, headers=bearer(key))
        assert first.status_code == cached.status_code == 200
        tokens = first.json()["usage"]["prompt_tokens"]
        assert int(first.headers["x-request-cost-micros"]) == 47 + -(-tokens * 10_000 // 1_000_000)
        assert int(cached.headers["x-request-cost-micros"]) == 47  # prompts from the cache are free here
        rank = await client.post(
            "/v1/rank", json={"query": "a cat", "documents": [{"image": IMAGE}, {"image": IMAGE}]},
            headers=bearer(key),
        )  # fmt: skip
        assert rank.status_code == 200
        # two images at 47 and the query's 4 tokens (start, "a", "cat", end) at 0.01 each, rounded up once
        assert rank.json()["usage"]["prompt_tokens"] == 4
        assert int(rank.headers["x-request-cost-micros"]) == 2 * 47 + 1


async def test_admin_routes_need_an_admin_key(tiny_runtime: Any, tmp_path: Path) -> None:
    user = create_key(tmp_path, "user")
    admin = create_key(tmp_path, "root", credit="0", is_admin=True)
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        for method, path in (("GET", "/v1/admin/accounts"), ("POST", "/v1/admin/keys"), ("GET", "/v1/admin/keys"),
                             ("DELETE", "/v1/admin/keys/1"), ("GET", "/v1/dashboard/billing/usage")):  # fmt: skip
            response = await client.request(method, path, headers=bearer(user), json={"name": "x"})
            _assert_openai_error(response, 403, "permission_denied")
        created = await client.post(
            "/v1/admin/keys", json={"name": "new customer", "credit": "2.50"}, headers=bearer(admin)
        )
        assert created.status_code == 200, created.text
        new_key = created.json()["key"]
        assert created.json()["account"]["balance_micros"] == 2_500_000
        assert (await _key_status(client, new_key))["limit_remaining"] == 2.5
        account_id = created.json()["account"]["id"]
        granted = await client.post(f"/v1/admin/accounts/{account_id}/grants", json={"credit": "0.5"},
                                    headers=bearer(admin))  # fmt: skip
        assert granted.json()["balance_micros"] == 3_000_000
        listing = await client.get("/v1/admin/keys", headers=bearer(admin))
        assert new_key not in listing.text
        assert new_key[20:] not in listing.text  # no part of any secret
        key_id = created.json()["key_info"]["id"]
        revoked = await client.delete(f"/v1/admin/keys/{key_id}", headers=bearer(admin))
        assert revoked.json()["status"] == "revoked"
        _assert_openai_error(await client.get("/v1/key", headers=bearer(new_key)), 401, "api_key_revoked")
        other = await client.get(f"/v1/usage?account_id={account_id}", headers=bearer(user))
        _assert_openai_error(other, 403, "permission_denied")
        billing = await client.get("/v1/dashboard/billing/usage", headers=bearer(admin))
        assert billing.json()["object"] == "list"


async def test_signup_is_off_by_default_and_limited_per_address_when_on(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        _assert_openai_error(await client.post("/v1/signup", json={"name": "me"}), 404, "signup_disabled")
    async with running_app(
        tiny_runtime, tmp_path, signup_enabled=True, signup_credit="0.25", signups_per_address_per_day=2
    ) as (client, _):
        keys = []
        for i in range(2):
            response = await client.post("/v1/signup", json={"name": f"me{i}"})
            assert response.status_code == 200, response.text
            keys.append(response.json()["key"])
        refused = await client.post("/v1/signup", json={"name": "again"})
        _assert_openai_error(refused, 429, "rate_limit_exceeded")
        assert (await _key_status(client, keys[0]))["limit_remaining_micros"] == 250_000
        # the first key turned authentication on (auth auto)
        assert (await client.post("/v1/embeddings", json={"input": "a"})).status_code == 401


async def test_local_mode_has_no_key_and_turns_auth_on_when_one_is_created(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        assert (await client.post("/v1/embeddings", json={"input": "a"})).status_code == 200
        _assert_openai_error(await client.get("/v1/key"), 400, "auth_disabled")
        key = create_key(tmp_path)  # e.g. `clipserve keys create` while the server runs
        # the app looks for a first key every 2 s: wait until it has seen this one (give up after 30 s)
        deadline = time.monotonic() + 30
        while (await client.get("/v1/key")).status_code != 401:
            assert time.monotonic() < deadline, "authentication never turned on"
            await asyncio.sleep(0.05)
        assert (await client.post("/v1/embeddings", json={"input": "a"})).status_code == 401
        assert (
            await client.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key))
        ).status_code == 200


async def test_keys_never_appear_in_logs(
    tiny_runtime: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = create_key(tmp_path)
    wrong = key[:-1] + ("x" if key[-1] != "x" else "y")
    caplog.set_level(logging.DEBUG)
    async with running_app(tiny_runtime, tmp_path, log_level="debug") as (client, _):
        await client.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key))
        await client.post("/v1/embeddings", json={"input": "a"}, headers=bearer(wrong))
        await client.post("/v1/embeddings", json={"input": [{"image": "data:,bad"}]}, headers=bearer(key))
    logged = "\n".join(record.getMessage() + str(record.args) for record in caplog.records)
    assert caplog.records
    for secret in (key, wrong, key[20:], wrong[20:]):
        assert secret not in logged
