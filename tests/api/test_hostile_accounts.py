"""Adversarial tests of accounts and money through the real app (tiny model, SQLite in a temp dir): sign-up
addresses behind proxies, free requests under the rate limit, a cancel in the middle of a charge, a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from clipserve.store.ledger import AdmissionRequest, Admitted, Charge, LedgerStore
from tests.rate_window import assert_retry_after, start_early_in_a_minute
from tests.support import bearer, create_key, running_app

pytestmark = pytest.mark.anyio


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


async def _sign_up(client: Any, forwarded_for: str | None) -> Any:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    return await client.post("/v1/signup", json={"name": "me"}, headers=headers)


# sign-up addresses (issue 10, item 8)


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_configured_proxy(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    # the in-process client connects from 127.0.0.1, as a process on the server's host would
    async with running_app(tiny_runtime, tmp_path, signup_enabled=True, signups_per_address_per_day=1) as (
        client,
        _,
    ):
        assert (await _sign_up(client, "203.0.113.1")).status_code == 200
        for spoofed in ("203.0.113.2", "2001:db8::1", "203.0.113.3, 198.51.100.7", "garbage"):
            _error(await _sign_up(client, spoofed), 429, "rate_limit_exceeded")


async def test_a_configured_proxys_forwarded_for_names_the_client(tiny_runtime: Any, tmp_path: Path) -> None:
    async with running_app(
        tiny_runtime, tmp_path, signup_enabled=True, signups_per_address_per_day=1,
        trusted_proxies=["127.0.0.0/8"],
    ) as (client, _):  # fmt: skip
        assert (await _sign_up(client, "203.0.113.1")).status_code == 200
        assert (await _sign_up(client, "203.0.113.2")).status_code == 200
        _error(await _sign_up(client, "203.0.113.1"), 429, "rate_limit_exceeded")
        # the client may prepend anything; the proxy appends the address it saw, and that one counts
        _error(await _sign_up(client, "198.51.100.9, 203.0.113.2"), 429, "rate_limit_exceeded")


async def test_ipv6_sign_ups_are_counted_per_64(tiny_runtime: Any, tmp_path: Path) -> None:
    async with running_app(
        tiny_runtime, tmp_path, signup_enabled=True, signups_per_address_per_day=1,
        trusted_proxies=["127.0.0.1"],
    ) as (client, _):  # fmt: skip
        assert (await _sign_up(client, "2001:db8:1:2::1")).status_code == 200
        # another address of the same /64 (one customer's LAN hands these out freely)
        _error(await _sign_up(client, "2001:db8:1:2:ffff:ffff:ffff:9"), 429, "rate_limit_exceeded")
        assert (await _sign_up(client, "2001:db8:1:3::1")).status_code == 200


async def test_the_ipv6_prefix_is_a_setting(tiny_runtime: Any, tmp_path: Path) -> None:
    async with running_app(
        tiny_runtime, tmp_path, signup_enabled=True, signups_per_address_per_day=1,
        trusted_proxies=["127.0.0.1"], signup_ipv6_prefix=48,
    ) as (client, _):  # fmt: skip
        assert (await _sign_up(client, "2001:db8:1:2::1")).status_code == 200
        _error(await _sign_up(client, "2001:db8:1:3::1"), 429, "rate_limit_exceeded")


# free requests count against the per-key request rate (issue 10, item 15)


async def test_free_collection_requests_count_against_the_request_rate_limit(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path, credit="0", requests_per_minute=4)
    # no burst pacing (its own tests: test_burst_limits.py): the sliding window alone answers, exactly
    async with running_app(tiny_runtime, tmp_path, rate_limit_burst_requests=0) as (client, _):
        await start_early_in_a_minute()  # the five requests share one wall-clock minute
        for i in range(4):
            created = await client.post("/v1/collections", json={"name": f"c{i}"}, headers=bearer(key))
            assert created.status_code == 200, created.text
            assert created.headers["x-ratelimit-remaining-requests"] == str(3 - i)
        sent_at = time.time()
        refused = await client.post("/v1/collections", json={"name": "c4"}, headers=bearer(key))
        answered_at = time.time()
        error = _error(refused, 429, "rate_limit_exceeded")
        assert error["type"] == "requests"
        assert_retry_after(refused.headers, 4, sent_at, answered_at)  # 15 s into the next minute: 16-75 s
        # every other free route is refused too, before it does any work
        for method, path in (
            ("GET", "/v1/collections"), ("GET", "/v1/collections/c0"), ("DELETE", "/v1/collections/c0"),
            ("GET", "/v1/collections/c0/items/x"), ("DELETE", "/v1/collections/c0/items/x"),
            ("GET", "/v1/key"), ("GET", "/v1/usage"),
        ):  # fmt: skip
            _error(await client.request(method, path, headers=bearer(key)), 429, "rate_limit_exceeded")
    other = create_key(tmp_path, "other", credit="0", requests_per_minute=2)
    async with running_app(tiny_runtime, tmp_path) as (client, _):  # a new key has its own window
        assert (await client.get("/v1/collections", headers=bearer(other))).status_code == 200
        assert (await client.get("/v1/key", headers=bearer(other))).status_code == 200
        _error(await client.get("/v1/collections", headers=bearer(other)), 429, "rate_limit_exceeded")


async def test_vector_adds_and_searches_are_free_but_rate_limited(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path, credit="0", requests_per_minute=3)
    vector = [1.0] + [0.0] * 511
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        headers = bearer(key)
        assert (await client.post("/v1/collections", json={"name": "v"}, headers=headers)).status_code == 200
        added = await client.post(
            "/v1/collections/v/items", json={"items": [{"id": "a", "vector": vector}]}, headers=headers
        )
        assert added.status_code == 200, added.text
        found = await client.post("/v1/collections/v/search", json={"query": {"id": "a"}}, headers=headers)
        assert found.status_code == 200, found.text
        _error(
            await client.post("/v1/collections/v/search", json={"query": {"vector": vector}}, headers=headers),
            429, "rate_limit_exceeded",
        )  # fmt: skip


# a cancel while the charge is being written (issue 10, item 12)


class SettleThatWaits(LedgerStore):
    """The real ledger, whose settle waits at its start until a release has run (or a while has passed), so a
    cancel that arrives during a settle can be made to race it deterministically."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settling = threading.Event()
        self.released = threading.Event()
        self.settled = threading.Event()

    def settle(self, charge: Charge) -> None:
        self.settling.set()
        try:
            # Without the fix the cancelled request releases at once; with it, no release runs before the
            # settle is over, so this wait ends by its timeout.
            self.released.wait(timeout=2.0)
            super().settle(charge)
        finally:
            self.settled.set()

    def release(self, charge_id: str, key_id: int, idempotency_key: str | None) -> None:
        super().release(charge_id, key_id, idempotency_key)
        self.released.set()


async def test_a_cancel_during_settle_charges_once_and_the_retry_gets_the_stored_answer(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path)
    headers = {**bearer(key), "Idempotency-Key": "cancel-during-settle"}
    body = {"input": ["a photo of a cat", "a dog"]}
    async with running_app(tiny_runtime, tmp_path) as (client, app):
        context = app.state.context
        real = context.ledger
        ledger = SettleThatWaits(real.db, real.clock, real.timeouts, real.instance)
        context.meter.ledger = ledger  # the same database and instance, so the same holds and keys
        request = asyncio.create_task(client.post("/v1/embeddings", json=body, headers=headers))
        assert await asyncio.to_thread(ledger.settling.wait, 60)
        request.cancel()  # as a client disconnect or the end of the shutdown grace period does
        with contextlib.suppress(asyncio.CancelledError):
            await request
        assert await asyncio.to_thread(ledger.settled.wait, 60)
        context.meter.ledger = real
        retry = await client.post("/v1/embeddings", json=body, headers=headers)
        assert retry.status_code == 200, retry.text
        assert retry.headers.get("idempotent-replayed") == "true"
        account_id = (await client.get("/v1/key", headers=bearer(key))).json()["data"]["account_id"]
        charges = real.charges(account_id)
        assert [idempotency_key for _, idempotency_key, _ in charges] == ["cancel-during-settle"]
        audit = real.audit(account_id)
        assert audit.consistent
        assert audit.charged_micros == charges[0][2]
        with real.db.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM holds")).scalar_one() == 0


async def test_a_request_cancelled_after_its_charge_committed_still_gets_its_answer(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    # No Idempotency-Key: a 503 "retry" here (what the cancel used to give) would be paid for a second time.
    key = create_key(tmp_path)
    body = {"input": ["a photo of a cat", "a dog"]}
    async with running_app(tiny_runtime, tmp_path) as (client, app):
        context = app.state.context
        real = context.ledger
        ledger = SettleThatWaits(real.db, real.clock, real.timeouts, real.instance)
        context.meter.ledger = ledger
        request = asyncio.create_task(client.post("/v1/embeddings", json=body, headers=bearer(key)))
        assert await asyncio.to_thread(ledger.settling.wait, 60)
        request.cancel()  # as uvicorn does to what still runs when the shutdown grace period ends
        response = await request
        context.meter.ledger = real
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 2
        expected = await client.post("/v1/embeddings", json=body, headers=bearer(key))
        for got, want in zip(response.json()["data"], expected.json()["data"], strict=True):
            assert got["embedding"] == pytest.approx(want["embedding"], abs=1e-5)
        account_id = (await client.get("/v1/key", headers=bearer(key))).json()["data"]["account_id"]
        charges = real.charges(account_id)
        assert len(charges) == 2  # the cancelled request once, the comparison once
        assert charges[0][0] == response.headers["x-request-id"]
        assert int(response.headers["x-request-cost-micros"]) == charges[0][2]
        assert real.audit(account_id).consistent


class AdmitThatWaits(LedgerStore):
    """The real ledger, whose admission waits at its start until told to go on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admitting = threading.Event()
        self.proceed = threading.Event()
        self.admitted = threading.Event()

    def admit(self, request: AdmissionRequest) -> Admitted:
        self.admitting.set()
        try:
            assert self.proceed.wait(timeout=60)
            return super().admit(request)
        finally:
            self.admitted.set()


async def test_a_cancel_during_admission_leaves_no_hold_and_no_pending_key(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path)
    headers = {**bearer(key), "Idempotency-Key": "cancel-during-admit"}
    body = {"input": "a photo of a cat"}
    async with running_app(tiny_runtime, tmp_path) as (client, app):
        context = app.state.context
        real = context.ledger
        ledger = AdmitThatWaits(real.db, real.clock, real.timeouts, real.instance)
        context.meter.ledger = ledger
        request = asyncio.create_task(client.post("/v1/embeddings", json=body, headers=headers))
        assert await asyncio.to_thread(ledger.admitting.wait, 60)
        request.cancel()
        ledger.proceed.set()  # the admission commits a hold and a pending key after its request is gone
        with contextlib.suppress(asyncio.CancelledError):
            await request
        assert await asyncio.to_thread(ledger.admitted.wait, 60)
        context.meter.ledger = real
        with real.db.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM holds")).scalar_one() == 0
        retry = await client.post("/v1/embeddings", json=body, headers=headers)  # not 409 "still running"
        assert retry.status_code == 200, retry.text


# a full disk (issue 10, item 16)


async def test_a_full_database_answers_503_storage_full_never_500(tiny_runtime: Any, tmp_path: Path) -> None:
    key = create_key(tmp_path, credit="10")
    async with running_app(tiny_runtime, tmp_path, rate_limit_requests_per_minute=0) as (client, app):
        database = app.state.context.database

        # SQLite's own cap on the file's pages: a write that needs one more page fails with SQLITE_FULL, the
        # error a full disk gives
        @event.listens_for(database.engine, "connect")
        def _cap(dbapi_connection: Any, _record: Any) -> None:
            pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
            dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

        database.engine.dispose()
        statuses: dict[int, int] = {}
        for i in range(300):
            response = await client.post(
                "/v1/embeddings", json={"input": f"text number {i} " * 8}, headers=bearer(key)
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code != 200:
                error = _error(response, 503, "storage_full")
                assert error["type"] == "server_error"
                assert "full" in error["message"]
                # docs/accounts.md: storage_full answers Retry-After: 30
                assert response.headers["retry-after"] == "30"
                break
        assert 503 in statuses, statuses
        created = await client.post(
            "/v1/collections", json={"name": "x" * 100, "description": "y" * 900}, headers=bearer(key)
        )
        assert created.status_code in (200, 503), created.text
        # reads still work, and the money still adds up
        status = await client.get("/v1/key", headers=bearer(key))
        assert status.status_code == 200, status.text
        assert app.state.context.ledger.audit(status.json()["data"]["account_id"]).consistent
