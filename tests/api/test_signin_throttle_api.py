"""Sign-in throttling and the web sign-up's limits in the real app: two app instances on one database share
the failure counts; a throttled attempt is refused before any password hashing (counted on the real
argon2id hasher); web sign-up and POST /v1/signup share one per-address count."""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from clipserve.errors import (
    AuthenticationError,
    ConflictError,
    PermissionDeniedError,
    RateLimitExceededError,
)
from tests.web_accounts_support import CountingHasher, GatedHasher, web_app

pytestmark = pytest.mark.anyio

ADDRESS = "127.0.0.1/32"
PASSWORD = "correct horse battery"


async def _two_apps(stack: AsyncExitStack, runtime: Any, tmp_path: Path, hasher: CountingHasher) -> list[Any]:
    """Two instances of the app on the same SQLite file (the same data_dir)."""
    apps = []
    for _ in range(2):
        _, app = await stack.enter_async_context(
            web_app(runtime, tmp_path, hasher, signin_failures_per_account=5, signin_failures_per_address=20)
        )
        apps.append(app.state.context.web_accounts)
    return apps


async def test_the_sixth_attempt_for_one_email_is_429_without_hashing(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    hasher = CountingHasher()
    async with AsyncExitStack() as stack:
        first, second = await _two_apps(stack, tiny_runtime, tmp_path, hasher)
        await first.sign_up("ada@example.org", PASSWORD, None, ADDRESS)
        for attempt in range(5):
            with pytest.raises(AuthenticationError):
                await (first if attempt % 2 else second).sign_in("ada@example.org", "wrong guess", ADDRESS)
        before = hasher.calls
        for web in (first, second):
            with pytest.raises(RateLimitExceededError) as caught:
                await web.sign_in("ada@example.org", PASSWORD, ADDRESS)
            assert caught.value.status_code == 429
            assert 1 <= int(caught.value.headers["Retry-After"]) <= 900
        assert hasher.calls == before  # refused before any argon2 work
        # another email from the same address still signs in (20 per address)
        await first.sign_up("bob@example.org", PASSWORD, None, "192.0.2.9/32")
        await second.sign_in("bob@example.org", PASSWORD, ADDRESS)


async def test_the_address_limit_counts_failures_for_every_email(tiny_runtime: Any, tmp_path: Path) -> None:
    hasher = CountingHasher()
    async with AsyncExitStack() as stack:
        first, second = await _two_apps(stack, tiny_runtime, tmp_path, hasher)
        await first.sign_up("ada@example.org", PASSWORD, None, "192.0.2.9/32")
        for attempt in range(20):  # 20 different emails, 4 failures each at most: never the per-email limit
            web = first if attempt % 2 else second
            with pytest.raises(AuthenticationError):
                await web.sign_in(f"guess{attempt % 5}-{attempt // 5}@example.org", "wrong", ADDRESS)
        before = hasher.calls
        with pytest.raises(RateLimitExceededError):
            await first.sign_in("ada@example.org", PASSWORD, ADDRESS)
        assert hasher.calls == before
        await second.sign_in("ada@example.org", PASSWORD, "192.0.2.10/32")  # another network is fine


async def test_web_sign_up_shares_the_address_limit_with_v1_signup(tiny_runtime: Any, tmp_path: Path) -> None:
    async with web_app(tiny_runtime, tmp_path, signups_per_address_per_day=2, signup_credit="0.5") as (
        client,
        app,
    ):
        web = app.state.context.web_accounts
        assert (await client.post("/v1/signup", json={"name": "api"})).status_code == 200
        session, _ = await web.sign_up("ada@example.org", PASSWORD, None, ADDRESS)  # the test client's /32
        assert app.state.context.accounts.get_account(session.account_id).balance_micros == 500_000
        with pytest.raises(RateLimitExceededError):
            await web.sign_up("bob@example.org", PASSWORD, None, ADDRESS)
        refused = await client.post("/v1/signup", json={"name": "api"})
        assert refused.status_code == 429
        assert "Retry-After" in refused.headers


async def test_web_sign_up_is_closed_when_sign_up_is_disabled(tiny_runtime: Any, tmp_path: Path) -> None:
    hasher = CountingHasher()
    async with web_app(tiny_runtime, tmp_path, hasher, signup_enabled=False) as (_client, app):
        with pytest.raises(PermissionDeniedError) as caught:
            await app.state.context.web_accounts.sign_up("ada@example.org", PASSWORD, None, ADDRESS)
        assert caught.value.code == "signup_disabled"
        assert hasher.calls == 0


async def _post_signin(client: Any, email: str, password: str) -> Any:
    form = await client.get("/signin")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None, form.text
    return await client.post(
        "/signin", data={"csrf_token": csrf.group(1), "email": email, "password": password}
    )


async def test_the_sign_in_form_answers_429_with_retry_after_on_the_sixth_attempt(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    hasher = CountingHasher()
    async with web_app(tiny_runtime, tmp_path, hasher) as (client, app):
        await app.state.context.web_accounts.sign_up("ada@example.org", PASSWORD, None, "192.0.2.9/32")
        for _ in range(5):
            assert (await _post_signin(client, "ada@example.org", "wrong guess")).status_code == 401
        before = hasher.calls
        refused = await _post_signin(client, "ada@example.org", PASSWORD)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 900
        assert hasher.calls == before


async def test_a_burst_of_concurrent_guesses_gets_only_the_limit_of_hashes(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    # Each attempt counts as a failure from before its hash, so while the first five are still hashing (held
    # at the gate) the other fifteen are refused: they could all pass a check made before the hash otherwise.
    hasher = GatedHasher()
    settings = {"signin_failures_per_account": 5, "signin_failures_per_address": 100}
    async with web_app(tiny_runtime, tmp_path, hasher, **settings) as (_, app):
        web = app.state.context.web_accounts
        await web.sign_up("ada@example.org", PASSWORD, None, "192.0.2.9/32")
        verified_before = hasher.calls
        guesses = [asyncio.ensure_future(web.sign_in("ada@example.org", "wrong", ADDRESS)) for _ in range(20)]
        refused = 0
        try:
            for finished in asyncio.as_completed(guesses, timeout=30):
                with pytest.raises(RateLimitExceededError):
                    await finished
                refused += 1
                if refused == 15:
                    break
        finally:
            hasher.gate.set()
        outcomes = await asyncio.gather(*guesses, return_exceptions=True)
        assert sum(isinstance(o, RateLimitExceededError) for o in outcomes) == 15
        assert sum(isinstance(o, AuthenticationError) for o in outcomes) == 5
        assert hasher.calls - verified_before == 5


async def test_a_taken_email_at_sign_up_counts_as_a_failed_attempt(tiny_runtime: Any, tmp_path: Path) -> None:
    hasher = CountingHasher()
    settings = {"signin_failures_per_account": 3, "signups_per_address_per_day": 100}
    async with web_app(tiny_runtime, tmp_path, hasher, **settings) as (_, app):
        web = app.state.context.web_accounts
        await web.sign_up("ada@example.org", PASSWORD, None, "192.0.2.9/32")
        for _ in range(3):  # probing whether the email exists, through sign-up
            with pytest.raises(ConflictError):
                await web.sign_up("ada@example.org", PASSWORD, None, ADDRESS)
        before = hasher.calls
        with pytest.raises(RateLimitExceededError):
            await web.sign_up("ada@example.org", PASSWORD, None, ADDRESS)
        assert hasher.calls == before  # refused before hashing
