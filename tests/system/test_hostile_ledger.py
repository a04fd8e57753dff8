"""Adversarial tests of the ledger store and the real server: forwarded addresses, instance identity across
containers, and a full disk (SQLite and a real PostgreSQL server)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg.errors
import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from clipserve.errors import InsufficientQuotaError, StorageFullError
from clipserve.store.accounts import AccountStore
from clipserve.store.database import Database, is_storage_full
from clipserve.store.instances import Instance
from clipserve.store.ledger import AdmissionRequest, LedgerStore
from tests.support import TINY_CONFIG
from tests.system.conftest import start_server

_NOW = datetime(2026, 11, 29, 12, 0, 5, tzinfo=UTC)


def _clock() -> datetime:
    return _NOW


def _admission(account_id: int, key_id: int, charge_id: str, estimate: int) -> AdmissionRequest:
    return AdmissionRequest(
        charge_id=charge_id, account_id=account_id, key_id=key_id, estimate_micros=estimate, images=1,
        requests_per_minute=None, images_per_minute=None,
    )  # fmt: skip


# sign-up behind (or without) a proxy, on a real server (issue 10, item 8)


def test_a_real_server_ignores_forwarded_for_from_loopback_unless_told_to_trust_it(tmp_path: Path) -> None:
    """uvicorn's default believes X-Forwarded-For from 127.0.0.1: every spoofed header was a new address."""
    common = ("--weights", "random", "--architecture", str(TINY_CONFIG), "--signup-enabled",
              "--signups-per-address-per-day", "1")  # fmt: skip
    server = start_server(tmp_path / "direct", *common)
    try:
        url = f"{server.base_url}/v1/signup"
        first = httpx.post(url, json={"name": "a"}, headers={"X-Forwarded-For": "203.0.113.1"}, timeout=30)
        assert first.status_code == 200, first.text
        spoofed = httpx.post(url, json={"name": "b"}, headers={"X-Forwarded-For": "203.0.113.2"}, timeout=30)
        assert spoofed.status_code == 429, spoofed.text
        assert spoofed.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        server.stop()
    server = start_server(tmp_path / "proxied", *common, "--trusted-proxies", "127.0.0.1")
    try:
        url = f"{server.base_url}/v1/signup"
        for client, expected in (("2001:db8::1", 200), ("2001:db8::2", 429), ("203.0.113.2", 200)):
            answer = httpx.post(url, json={"name": "c"}, headers={"X-Forwarded-For": client}, timeout=30)
            assert answer.status_code == expected, (client, answer.text)
    finally:
        server.stop()


# instance identity (issue 10, item 18)


def test_two_instances_with_the_same_hostname_and_pid_see_each_others_holds(database: Database) -> None:
    """Two containers sharing a data dir may both be "web-1", pid 1; neither may think the other dead."""
    accounts = AccountStore(database, _clock)
    account, key, _ = accounts.open_account("twins", 100)
    # the same process (same pid namespace, same pid start time) ...
    first = LedgerStore(database, _clock, instance=Instance(hostname="web-1", pid=1))
    second = LedgerStore(database, _clock, instance=Instance(hostname="web-1", pid=1))
    first.admit(_admission(account.id, key.id, "chg_first", 100))
    with pytest.raises(InsufficientQuotaError):
        second.admit(_admission(account.id, key.id, "chg_second", 1))
    # ... and two containers: the same hostname and pid, other pid namespaces
    other = LedgerStore(
        database, _clock, instance=Instance(hostname="web-1", pid=1, pid_scope="boot/pid:[1]")
    )
    with pytest.raises(InsufficientQuotaError):
        other.admit(_admission(account.id, key.id, "chg_other", 1))
    first.release("chg_first", key.id, None)
    other.admit(_admission(account.id, key.id, "chg_other", 100))
    later = LedgerStore(database, _clock, instance=first.instance)  # `first`'s live set is cached a second
    with pytest.raises(InsufficientQuotaError):
        later.admit(_admission(account.id, key.id, "chg_first_again", 1))


def test_a_reused_pid_does_not_keep_a_dead_instances_holds(database: Database) -> None:
    """Same pid namespace, the pid alive, but another process now (it started at another time): dead."""
    accounts = AccountStore(database, _clock)
    account, key, _ = accounts.open_account("reuse", 100)
    me = Instance()
    assert me.pid_scope is not None  # Linux: /proc tells where pids mean something
    assert me.pid_started is not None
    gone = LedgerStore(database, _clock, instance=Instance(pid=os.getpid(), pid_started=me.pid_started - 1))
    gone.admit(_admission(account.id, key.id, "chg_gone", 100))
    LedgerStore(database, _clock, instance=me).admit(_admission(account.id, key.id, "chg_me", 100))


# a full disk (issue 10, item 16)


def _cap_sqlite_at_its_current_size(database: Database) -> None:
    @event.listens_for(database.engine, "connect")
    def _cap(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    database.engine.dispose()


def test_a_full_sqlite_database_raises_storage_full_and_keeps_the_books(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'full.db'}")
    database.migrate()
    try:
        accounts = AccountStore(database, _clock)
        account, _, _ = accounts.open_account("full", 1_000_000)
        _cap_sqlite_at_its_current_size(database)

        def fill() -> None:
            for i in range(10_000):  # each account row takes room; one of them needs a new page
                accounts.create_account("x" * 200 + str(i))

        with pytest.raises(StorageFullError) as raised:
            fill()
        assert raised.value.status_code == 503
        assert raised.value.code == "storage_full"
        assert raised.value.headers["Retry-After"] == "30"
        assert LedgerStore(database, _clock).audit(account.id).consistent
        assert accounts.get_account(account.id).balance_micros == 1_000_000  # reads still work
    finally:
        database.close()


def test_postgres_disk_full_is_storage_full() -> None:
    """What psycopg raises for SQLSTATE 53100 ("could not extend file ... No space left on device")."""
    disk_full = psycopg.errors.DiskFull("could not extend file: No space left on device")
    assert disk_full.sqlstate == "53100"
    assert is_storage_full(OperationalError("INSERT ...", {}, disk_full))
    assert not is_storage_full(OperationalError("SELECT ...", {}, psycopg.errors.QueryCanceled("timeout")))
