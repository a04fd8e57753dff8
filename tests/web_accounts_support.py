"""Helpers for the web sign-in tests: cheap argon2id, a hasher that counts its work, WebAccounts on a given
database and clock, and the real app with a cheap hasher."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
from argon2 import PasswordHasher

from clipserve.api.app import create_app
from clipserve.api.session_cookies import CSRF_HEADER, SESSION_COOKIE
from clipserve.runtime.model import ClipRuntime
from clipserve.service.passwords import PasswordHashing, argon2id_hasher
from clipserve.service.signin_throttle import SigninThrottle, ThrottleLimits
from clipserve.service.web_accounts import SignupPolicy, WebAccounts, WebSession
from clipserve.store.accounts import AccountStore, Clock
from clipserve.store.database import Database
from clipserve.store.logins import LoginStore
from clipserve.store.web_sessions import SessionLifetimes, WebSessionStore
from tests.support import make_settings, wait_until_ready

CHEAP = {"time_cost": 1, "memory_kib": 8192, "parallelism": 1}  # tests only; the defaults are RFC 9106's
ORIGIN = "http://clipserve.test"


class CountingHasher(PasswordHasher):
    """The real argon2id hasher, counting every hash and verify it performs."""

    def __init__(self) -> None:
        cheap = argon2id_hasher(CHEAP["time_cost"], CHEAP["memory_kib"], CHEAP["parallelism"])
        super().__init__(
            time_cost=cheap.time_cost, memory_cost=cheap.memory_cost, parallelism=cheap.parallelism,
            hash_len=cheap.hash_len, salt_len=cheap.salt_len, type=cheap.type,
        )  # fmt: skip
        self.calls = 0
        self._lock = threading.Lock()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._lock:
            self.calls += 1
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self._lock:
            self.calls += 1
        return super().verify(hash, password)


class GatedHasher(CountingHasher):
    """A counting hasher whose verify waits for `gate`: the attempts already hashing stay in flight while the
    test watches what the others get."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self._lock:
            self.calls += 1
        assert self.gate.wait(60), "the test never opened the gate"
        return PasswordHasher.verify(self, hash, password)


def web_accounts_on(
    database: Database,
    clock: Clock,
    *,
    hasher: PasswordHasher | None = None,
    limits: ThrottleLimits | None = None,
    policy: SignupPolicy | None = None,
    lifetimes: SessionLifetimes | None = None,
    pool: ThreadPoolExecutor,
) -> WebAccounts:
    """WebAccounts as the app builds it, on `database` with an injectable clock."""
    accounts = AccountStore(database, clock)
    logins = LoginStore(accounts)
    return WebAccounts(
        logins,
        WebSessionStore(database, lifetimes or SessionLifetimes(28_800, 604_800), clock),
        PasswordHashing(hasher or CountingHasher(), 2, 64),
        SigninThrottle(logins, limits or ThrottleLimits()),
        policy or SignupPolicy(enabled=True, credit_micros=1_000_000, per_address_per_day=3),
        pool,
    )


@asynccontextmanager
async def web_app(
    runtime: ClipRuntime,
    tmp_path: Path,
    hasher: PasswordHasher | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The real app (lifespan included), open sign-up with $1 by default, a cheap or counting hasher."""
    values: dict[str, Any] = {"signup_enabled": True, "signup_credit": "1"}
    values.update(overrides)
    app = create_app(make_settings(tmp_path, **values), runtime, password_hasher=hasher or CountingHasher())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, timeout=60) as client:
            await wait_until_ready(client, 60.0)
            yield client, app


def session_headers(token: str, session: WebSession | None, **extra: str) -> dict[str, str]:
    """What a signed-in page's fetch sends: the cookie, and the CSRF token when `session` is given."""
    headers = {"Cookie": f"{SESSION_COOKIE}={token}"}
    if session is not None:
        headers[CSRF_HEADER] = session.csrf_token
    headers.update(extra)
    return headers
