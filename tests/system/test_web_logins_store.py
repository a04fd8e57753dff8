"""Web logins and sessions on SQLite and a real PostgreSQL (migration 0004): argon2id hashes, session tokens
stored only as SHA-256, idle and absolute expiry, sign-out, throttling shared by two instances, and web
sign-up sharing /v1/signup's per-address count."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, select

from clipserve.errors import (
    AuthenticationError,
    ConflictError,
    PermissionDeniedError,
    RateLimitExceededError,
)
from clipserve.service.passwords import argon2id_hasher
from clipserve.service.signin_throttle import ThrottleLimits
from clipserve.service.web_accounts import SignupPolicy, WebAccounts
from clipserve.store.accounts import AccountStore
from clipserve.store.database import Database
from clipserve.store.schema import api_keys, logins, web_sessions
from clipserve.store.web_sessions import SessionLifetimes
from tests.web_accounts_support import CountingHasher, web_accounts_on

ADDRESS = "203.0.113.7/32"
PASSWORD = "correct horse battery"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 29, 12, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def _web(database: Database, clock: FakeClock, pool: ThreadPoolExecutor, **kwargs: object) -> WebAccounts:
    return web_accounts_on(database, clock, pool=pool, **kwargs)  # type: ignore[arg-type]


def test_migration_0004_creates_the_web_tables(database: Database) -> None:
    tables = set(inspect(database.engine).get_table_names())
    assert {"logins", "web_sessions", "signin_failures"} <= tables
    columns = {c["name"] for c in inspect(database.engine).get_columns("api_keys")}
    assert "is_console" in columns


def test_sign_up_stores_an_argon2id_hash_and_a_console_key(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    web = _web(database, clock, pool)
    session, _ = asyncio.run(web.sign_up(" Ada@Example.ORG ", PASSWORD, "Ada", ADDRESS))
    assert session.email == "ada@example.org"
    with database.read() as conn:
        stored = conn.execute(select(logins.c.password_hash)).scalar_one()
        keys = conn.execute(select(api_keys).where(api_keys.c.account_id == session.account_id)).all()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert [(k.name, k.is_console) for k in keys] == [("console", True)]
    account = AccountStore(database).get_account(session.account_id)
    assert account.balance_micros == 1_000_000  # the policy's free credit


def test_each_sign_in_issues_a_new_token_stored_only_as_its_sha256(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    web = _web(database, clock, pool)
    _, first = asyncio.run(web.sign_up("a@example.org", PASSWORD, None, ADDRESS))
    _, second = asyncio.run(web.sign_in("a@example.org", PASSWORD, ADDRESS))
    _, third = asyncio.run(web.sign_in("a@example.org", PASSWORD, ADDRESS))
    assert len({first, second, third}) == 3
    with database.read() as conn:
        rows = conn.execute(select(web_sessions)).mappings().all()
    assert {bytes(r["id_sha256"]) for r in rows} == {
        hashlib.sha256(t.encode()).digest() for t in (first, second, third)
    }
    for row in rows:  # no column holds a usable token
        assert not any(t in str(value) for t in (first, second, third) for value in row.values())
    for token in (first, second, third):
        assert asyncio.run(web.resolve(token)) is not None


def test_sessions_end_after_the_idle_time_and_the_absolute_age(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    web = _web(database, clock, pool, lifetimes=SessionLifetimes(idle_s=3600, max_age_s=5 * 3600))
    _, idle = asyncio.run(web.sign_up("b@example.org", PASSWORD, None, ADDRESS))
    _, busy = asyncio.run(web.sign_in("b@example.org", PASSWORD, ADDRESS))
    for _ in range(5):  # `busy` is used every 50 minutes: never idle an hour
        clock.advance(50 * 60)
        assert asyncio.run(web.resolve(busy)) is not None
    assert asyncio.run(web.resolve(idle)) is None  # unused for 250 minutes > 1 hour idle
    clock.advance(55 * 60)  # 305 minutes after sign-in: past the 5-hour absolute age, only 55 minutes idle
    assert asyncio.run(web.resolve(busy)) is None


def test_an_idle_session_just_inside_the_limit_lives(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    web = _web(database, clock, pool, lifetimes=SessionLifetimes(idle_s=3600, max_age_s=86_400))
    _, token = asyncio.run(web.sign_up("c@example.org", PASSWORD, None, ADDRESS))
    clock.advance(3599)
    assert asyncio.run(web.resolve(token)) is not None
    clock.advance(3599)  # last seen was moved forward by the previous resolve
    assert asyncio.run(web.resolve(token)) is not None
    clock.advance(3600)
    assert asyncio.run(web.resolve(token)) is None


def test_sign_out_deletes_the_session_row(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    web = _web(database, clock, pool)
    session, token = asyncio.run(web.sign_up("d@example.org", PASSWORD, None, ADDRESS))
    assert web.sessions.count(session.account_id) == 1
    asyncio.run(web.sign_out(token))
    assert web.sessions.count(session.account_id) == 0
    assert asyncio.run(web.resolve(token)) is None


def test_wrong_password_and_unknown_email_fail_alike_and_both_cost_a_verify(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    hasher = CountingHasher()
    web = _web(database, clock, pool, hasher=hasher)
    asyncio.run(web.sign_up("e@example.org", PASSWORD, None, ADDRESS))
    with pytest.raises(AuthenticationError):  # makes the dummy hash once (not counted below)
        asyncio.run(web.sign_in("nobody@example.org", "warm the dummy hash", ADDRESS))
    messages = []
    for email, password in (("e@example.org", "wrong password"), ("nobody@example.org", PASSWORD)):
        before = hasher.calls
        with pytest.raises(AuthenticationError) as caught:
            asyncio.run(web.sign_in(email, password, ADDRESS))
        assert hasher.calls - before == 1  # one argon2 verify each: unknown emails are not cheaper
        messages.append(caught.value.message)
    assert messages == ["Incorrect email or password."] * 2


def test_throttling_is_shared_by_two_instances_and_refuses_before_hashing(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    hasher = CountingHasher()
    limits = ThrottleLimits(per_account=5, per_address=8, window_s=900)
    first = _web(database, clock, pool, hasher=hasher, limits=limits)
    second = _web(database, clock, pool, hasher=hasher, limits=limits)
    asyncio.run(first.sign_up("f@example.org", PASSWORD, None, ADDRESS))
    for attempt in range(5):  # alternate instances: the count lives in the shared database
        web = first if attempt % 2 == 0 else second
        clock.advance(10)
        with pytest.raises(AuthenticationError):
            asyncio.run(web.sign_in("f@example.org", "wrong", ADDRESS))
    before = hasher.calls
    with pytest.raises(RateLimitExceededError) as caught:
        asyncio.run(second.sign_in("f@example.org", PASSWORD, ADDRESS))  # even the right password
    assert hasher.calls == before
    # the first failure was at +10 s, now is +50 s: it leaves the 900 s window in 860 s
    assert caught.value.headers["Retry-After"] == "860"
    clock.advance(861)
    _, token = asyncio.run(first.sign_in("f@example.org", PASSWORD, ADDRESS))
    assert token


def test_per_address_throttle_counts_every_email(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    hasher = CountingHasher()
    limits = ThrottleLimits(per_account=5, per_address=3, window_s=900)
    first = _web(database, clock, pool, hasher=hasher, limits=limits)
    second = _web(database, clock, pool, hasher=hasher, limits=limits)
    asyncio.run(first.sign_up("g@example.org", PASSWORD, None, ADDRESS))
    for i, web in enumerate((first, second, first)):
        with pytest.raises(AuthenticationError):
            asyncio.run(web.sign_in(f"guess{i}@example.org", "wrong", ADDRESS))
    before = hasher.calls
    with pytest.raises(RateLimitExceededError):
        asyncio.run(second.sign_in("g@example.org", PASSWORD, ADDRESS))
    assert hasher.calls == before
    # another network is not throttled
    asyncio.run(second.sign_in("g@example.org", PASSWORD, "198.51.100.1/32"))


def test_web_sign_up_shares_the_per_address_count_with_v1_signup(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    web = _web(
        database, clock, pool,
        policy=SignupPolicy(enabled=True, credit_micros=500_000, per_address_per_day=2),
    )  # fmt: skip
    AccountStore(database, clock).sign_up(ADDRESS, "api", 500_000, 2)  # what POST /v1/signup does
    asyncio.run(web.sign_up("h@example.org", PASSWORD, None, ADDRESS))
    with pytest.raises(RateLimitExceededError):
        asyncio.run(web.sign_up("i@example.org", PASSWORD, None, ADDRESS))
    with pytest.raises(RateLimitExceededError):
        AccountStore(database, clock).sign_up(ADDRESS, "api", 500_000, 2)


def test_duplicate_email_and_closed_sign_up_are_refused(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    web = _web(database, clock, pool)
    asyncio.run(web.sign_up("j@example.org", PASSWORD, None, ADDRESS))
    with pytest.raises(ConflictError) as caught:
        asyncio.run(web.sign_up("J@example.org", "another password", None, "198.51.100.2/32"))
    assert caught.value.message == "cannot sign up with this email"
    closed = _web(
        database, clock, pool, policy=SignupPolicy(enabled=False, credit_micros=0, per_address_per_day=3)
    )
    with pytest.raises(PermissionDeniedError):
        asyncio.run(closed.sign_up("k@example.org", PASSWORD, None, ADDRESS))


def test_a_sign_in_upgrades_a_hash_made_with_lower_costs(
    database: Database, clock: FakeClock, pool: ThreadPoolExecutor
) -> None:
    old = _web(database, clock, pool, hasher=argon2id_hasher(1, 8192, 1))
    asyncio.run(old.sign_up("m@example.org", PASSWORD, None, ADDRESS))
    new = _web(database, clock, pool, hasher=argon2id_hasher(2, 8192, 1))
    asyncio.run(new.sign_in("m@example.org", PASSWORD, ADDRESS))
    with database.read() as conn:
        stored = conn.execute(select(logins.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$v=19$m=8192,t=2,p=1$")
    asyncio.run(new.sign_in("m@example.org", PASSWORD, ADDRESS))  # and it still verifies
