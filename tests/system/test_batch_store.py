"""The Batch API store (migration 0006) on SQLite and a real PostgreSQL: files and batches are private to their
account, lines are leased (and a lease that runs out frees them), a line is answered and charged exactly
once (racing answers too), a cancel stops answers and charges at once, and finalizing is leased and done once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from clipserve.errors import BatchQuotaError, ConflictError, InvalidRequestError, NotFoundError
from clipserve.service.batch_files import FileStorage, delete_expired_files
from clipserve.store.accounts import AccountStore
from clipserve.store.batch_records import LineError, NewLine
from clipserve.store.batches import BatchStore, line_charge_id
from clipserve.store.database import Database
from clipserve.store.ledger import AdmissionRequest, Charge, LedgerStore
from clipserve.store.schema import ledger


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 29, 12, 0, 5, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database: Database, clock: FakeClock) -> BatchStore:
    return BatchStore(database, clock)


def _account(database: Database, credit: int = 1_000_000) -> tuple[int, int]:
    account, key, _ = AccountStore(database).issue_key("batcher", credit)
    return account.id, key.id


def _lines(n: int) -> list[NewLine]:
    return [NewLine(i, f"req-{i}", '{"input": "a cat"}') for i in range(1, n + 1)]


def _batch(store: BatchStore, clock: FakeClock, account_id: int | None, key_id: int | None, n: int) -> str:
    record = store.create_batch(
        account_id, key_id, "file-x", "/v1/embeddings", {"k": "v"}, n, clock() + timedelta(hours=24),
        lines=_lines(n),
    )  # fmt: skip
    assert (record.status, record.total, record.completed, record.failed) == ("in_progress", n, 0, 0)
    return record.id


def _charge(account_id: int, key_id: int, batch_id: str, line: int, cost: int) -> Charge:
    return Charge(
        charge_id=line_charge_id(batch_id, line), request_id=f"req_{line}", account_id=account_id, key_id=key_id,
        endpoint="batch:/v1/embeddings", images=0, tokens=3, cost_micros=cost,
    )  # fmt: skip


def _charges(database: Database) -> list[tuple[str, int]]:
    with database.read() as conn:
        rows = conn.execute(
            select(ledger.c.charge_id, ledger.c.amount_micros).where(ledger.c.kind == "charge")
        ).all()
    return sorted((str(charge_id), -int(amount)) for charge_id, amount in rows)


def test_files_belong_to_their_account_and_list_newest_first(
    store: BatchStore, database: Database, clock: FakeClock
) -> None:
    mine, _ = _account(database)
    theirs, _ = _account(database)
    ids = []
    for n in range(3):
        ids.append(store.create_file(mine, f"in{n}.jsonl", "batch", 10 + n, f"key{n}").id)
        clock.advance(1)
    assert all(i.startswith("file-") and len(i) == 29 for i in ids)
    other = store.create_file(theirs, "theirs.jsonl", "batch", 5, "keyT")
    local = store.create_file(None, "local.jsonl", "batch", 5, "keyL")
    assert store.get_file(mine, ids[1]).filename == "in1.jsonl"
    for account, file_id in ((theirs, ids[0]), (mine, other.id), (None, ids[0]), (mine, local.id)):
        with pytest.raises(NotFoundError):
            store.get_file(account, file_id)
        with pytest.raises(NotFoundError):
            store.delete_file(account, file_id)
    first = store.list_files(mine, None, 2)
    assert ([f.id for f in first.items], first.has_more) == ([ids[2], ids[1]], True)
    rest = store.list_files(mine, ids[1], 2)
    assert ([f.id for f in rest.items], rest.has_more) == ([ids[0]], False)
    assert [f.id for f in store.list_files(None, None, 10).items] == [local.id]
    with pytest.raises(InvalidRequestError):
        store.list_files(mine, other.id, 2)  # another account's id is no cursor
    assert store.delete_file(mine, ids[0]).storage_key == "key0"
    with pytest.raises(NotFoundError):
        store.get_file(mine, ids[0])


def test_a_failed_batch_keeps_its_line_errors_and_has_no_work(store: BatchStore, clock: FakeClock) -> None:
    errors = [
        LineError("invalid_json", "line 2 is not JSON", None, 2),
        LineError("duplicate_custom_id", "dup", "custom_id", 3),
    ]
    record = store.create_batch(
        None, None, "file-x", "/v1/rank", None, 3, clock() + timedelta(hours=24), errors=errors
    )
    assert (record.status, record.failed_at, record.in_progress_at, record.total) == (
        "failed",
        clock(),
        None,
        0,
    )
    assert store.get_batch(None, record.id).errors == errors
    assert store.claim_work("i1", 60, 10) is None
    with pytest.raises(ConflictError):
        store.request_cancel(None, record.id)


def test_claims_are_leased_disjoint_and_free_again_when_the_lease_runs_out(
    store: BatchStore, database: Database, clock: FakeClock
) -> None:
    account, key = _account(database)
    batch_id = _batch(store, clock, account, key, 5)
    first = store.claim_work("i1", 30, 3)
    second = store.claim_work("i2", 30, 3)
    assert first is not None
    assert second is not None
    assert [c.line for c in first] == [1, 2, 3]
    assert [c.line for c in second] == [4, 5]
    assert (first[0].url, first[0].custom_id, first[0].account_id, first[0].key_id) == (
        "/v1/embeddings", "req-1", account, key,
    )  # fmt: skip
    assert store.claim_work("i3", 30, 3) is None
    assert store.answer_line(batch_id, 4, '{"line": 4}', 200, None)
    assert store.renew("i1", batch_id, [1, 2], 60) == 2
    assert store.renew("i3", batch_id, [3], 60) == 0  # not its claim
    clock.advance(31)  # i1's line 3 and i2's line 5 ran out; lines 1 and 2 were renewed
    again = store.claim_work("i3", 30, 10)
    assert again is not None
    assert [c.line for c in again] == [3, 5]
    assert store.get_batch(account, batch_id).completed == 1
    with pytest.raises(NotFoundError):
        store.get_batch(None, batch_id)


def test_release_gives_back_only_this_instances_unanswered_lines(
    store: BatchStore, database: Database, clock: FakeClock
) -> None:
    account, key = _account(database)
    batch_id = _batch(store, clock, account, key, 6)
    mine = store.claim_work("i1", 3600, 3)
    theirs = store.claim_work("i2", 3600, 3)
    assert mine is not None
    assert theirs is not None
    assert store.answer_line(batch_id, 1, '{"line": 1}', 200, None)
    assert store.release("i1") == 2  # lines 2 and 3; line 1 is answered
    assert store.release("i1") == 0
    again = store.claim_work("i3", 30, 10)
    assert again is not None
    assert [c.line for c in again] == [2, 3]  # i2's lines 4-6 are still i2's
    assert store.renew("i1", batch_id, [2, 3], 60) == 0  # no longer i1's


def test_a_line_is_answered_and_charged_once(store: BatchStore, database: Database, clock: FakeClock) -> None:
    account, key = _account(database, credit=1000)
    batch_id = _batch(store, clock, account, key, 3)
    assert store.answer_line(batch_id, 1, '{"a": 1}', 200, _charge(account, key, batch_id, 1, 70))
    assert not store.answer_line(batch_id, 1, '{"a": 2}', 200, _charge(account, key, batch_id, 1, 70))
    assert store.answer_line(batch_id, 2, '{"e": 1}', 400, None)
    with pytest.raises(ValueError, match="charge id"):
        store.answer_line(batch_id, 3, "{}", 200, _charge(account, key, "batch_other", 3, 70))
    assert _charges(database) == [(line_charge_id(batch_id, 1), 70)]
    assert AccountStore(database).get_account(account).balance_micros == 930
    assert LedgerStore(database).audit(account).consistent
    record = store.get_batch(account, batch_id)
    assert (record.completed, record.failed) == (1, 1)
    assert [(a.line, a.status_code, a.result_json, a.succeeded) for a in store.answers(batch_id)] == [
        (1, 200, '{"a": 1}', True), (2, 400, '{"e": 1}', False),
    ]  # fmt: skip
    assert store.answer_line(batch_id, 3, '{"q": 1}', None, None)  # no response (insufficient_quota)
    assert [a.line for a in store.answers(batch_id, succeeded=True)] == [1]
    assert [a.line for a in store.answers(batch_id, succeeded=False)] == [2, 3]


def test_racing_answers_to_one_line_charge_once(
    store: BatchStore, database: Database, clock: FakeClock
) -> None:
    account, key = _account(database, credit=10_000)
    batch_id = _batch(store, clock, account, key, 4)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(
            pool.map(
                lambda i: store.answer_line(
                    batch_id, 1 + i % 4, "{}", 200, _charge(account, key, batch_id, 1 + i % 4, 5)
                ),
                range(32),
            )
        )
    assert outcomes.count(True) == 4
    assert _charges(database) == sorted((line_charge_id(batch_id, n), 5) for n in range(1, 5))
    assert AccountStore(database).get_account(account).balance_micros == 10_000 - 20
    assert store.get_batch(account, batch_id).completed == 4


def test_racing_claims_never_share_a_line(store: BatchStore, database: Database, clock: FakeClock) -> None:
    _batch(store, clock, None, None, 60)
    with ThreadPoolExecutor(6) as pool:
        claims = list(pool.map(lambda i: store.claim_work(f"i{i}", 30, 5), range(12)))
    lines = [c.line for claim in claims if claim is not None for c in claim]
    assert sorted(lines) == list(range(1, 61))


def test_cancel_stops_answers_and_charges_at_once(
    store: BatchStore, database: Database, clock: FakeClock
) -> None:
    account, key = _account(database)
    batch_id = _batch(store, clock, account, key, 3)
    claim = store.claim_work("i1", 30, 3)
    assert claim is not None
    assert store.answer_line(batch_id, 1, "{}", 200, _charge(account, key, batch_id, 1, 9))
    with pytest.raises(NotFoundError):
        store.request_cancel(None, batch_id)
    cancelling = store.request_cancel(account, batch_id)
    assert (cancelling.status, cancelling.cancelling_at) == ("cancelling", clock())
    assert store.request_cancel(account, batch_id).status == "cancelling"
    assert not store.answer_line(batch_id, 2, "{}", 200, _charge(account, key, batch_id, 2, 9))
    assert _charges(database) == [(line_charge_id(batch_id, 1), 9)]
    clock.advance(100)
    assert store.claim_work("i2", 30, 3) is None
    leased = store.claim_finalize("i1", 30)
    assert leased is not None
    assert (leased.id, leased.finalize_to) == (batch_id, "cancelled")
    assert store.finalize(batch_id, "file-out", None, "cancelled", finalizer="i1")
    done = store.get_batch(account, batch_id)
    assert (done.status, done.cancelled_at, done.output_file_id, done.completed) == (
        "cancelled",
        clock(),
        "file-out",
        1,
    )
    assert store.request_cancel(account, batch_id).status == "cancelled"  # harmless again
    with pytest.raises(ConflictError):
        store.request_cancel(None, _finished(store, clock))


def _finished(store: BatchStore, clock: FakeClock) -> str:
    batch_id = _batch(store, clock, None, None, 1)
    assert store.answer_line(batch_id, 1, "{}", 200, None)
    assert store.claim_finalize("f", 30) is not None
    assert store.finalize(batch_id, "file-o", None, "completed", finalizer="f")
    return batch_id


def test_a_fully_answered_batch_is_finalized_once_under_a_lease(store: BatchStore, clock: FakeClock) -> None:
    batch_id = _batch(store, clock, None, None, 2)
    assert store.answer_line(batch_id, 1, "{}", 200, None)
    assert store.claim_finalize("i1", 30) is None  # line 2 is open
    assert store.answer_line(batch_id, 2, "{}", 500, None)
    leased = store.claim_finalize("i1", 30)
    assert leased is not None
    assert (leased.status, leased.finalize_to, leased.finalizing_at) == (
        "finalizing",
        "completed",
        clock(),
    )
    assert store.claim_finalize("i2", 30) is None  # i1 holds it
    clock.advance(31)  # i1 died: its lease ran out
    again = store.claim_finalize("i2", 30)
    assert again is not None
    assert again.id == batch_id
    assert store.finalize(batch_id, "file-o", "file-e", "completed", finalizer="i2")
    assert not store.finalize(batch_id, "file-o2", "file-e2", "completed", finalizer="i2")
    done = store.get_batch(None, batch_id)
    assert (done.status, done.completed_at, done.output_file_id, done.error_file_id) == (
        "completed", clock(), "file-o", "file-e",
    )  # fmt: skip
    assert (done.completed, done.failed) == (1, 1)


def test_a_renewed_finalize_lease_is_kept_and_a_lost_one_cannot_finalize(
    store: BatchStore, clock: FakeClock
) -> None:
    batch_id = _batch(store, clock, None, None, 1)
    assert store.answer_line(batch_id, 1, "{}", 200, None)
    assert store.claim_finalize("i1", 30) is not None
    clock.advance(20)
    assert store.renew_finalize("i1", batch_id, 30)  # writing a large file: the lease runs 30 s from now
    clock.advance(20)
    assert store.claim_finalize("i2", 30) is None  # still i1's
    assert not store.renew_finalize("i2", batch_id, 30)
    clock.advance(31)  # i1 stalled past its lease: i2 takes the batch over
    assert store.claim_finalize("i2", 30) is not None
    assert not store.renew_finalize("i1", batch_id, 30)
    assert not store.finalize(batch_id, "file-o1", None, "completed", finalizer="i1")
    assert store.finalize(batch_id, "file-o2", None, "completed", finalizer="i2")
    assert store.get_batch(None, batch_id).output_file_id == "file-o2"


def test_a_batch_past_its_window_expires_with_its_partial_results(
    store: BatchStore, clock: FakeClock
) -> None:
    batch_id = _batch(store, clock, None, None, 3)
    assert store.answer_line(batch_id, 1, "{}", 200, None)
    assert store.expire_due() == []
    clock.advance(24 * 3600)
    assert store.claim_work("i1", 30, 3) is None
    assert store.expire_due() == [batch_id]
    assert not store.answer_line(batch_id, 2, "{}", 200, None)
    leased = store.claim_finalize("i1", 30)
    assert leased is not None
    assert (leased.status, leased.finalize_to) == ("finalizing", "expired")
    assert store.finalize(batch_id, "file-o", None, "expired", finalizer="i1")
    done = store.get_batch(None, batch_id)
    assert (done.status, done.expired_at, done.completed) == ("expired", clock(), 1)
    assert [a.line for a in store.answers(batch_id)] == [1]


def test_files_past_their_retention_are_deleted_bytes_and_row(
    store: BatchStore, clock: FakeClock, tmp_path: Path
) -> None:
    storage = FileStorage(str(tmp_path / "files"))
    for name, keep_s in (("file-old", 10), ("file-new", 100), ("file-forever", None)):
        storage.write_bytes(name, b"{}\n")
        expires = None if keep_s is None else clock() + timedelta(seconds=keep_s)
        store.create_file(None, f"{name}.jsonl", "batch", 3, name, expires_at=expires, file_id=name)
    clock.advance(50)
    assert delete_expired_files(store, storage) == 1
    assert sorted(f.id for f in store.list_files(None, None, 10).items) == ["file-forever", "file-new"]
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["file-forever", "file-new"]
    clock.advance(1000)
    assert delete_expired_files(store, storage) == 1
    assert [f.id for f in store.list_files(None, None, 10).items] == ["file-forever"]


def test_an_accounts_file_bytes_quota_holds_under_concurrent_uploads(
    store: BatchStore, database: Database
) -> None:
    mine, _ = _account(database)
    theirs, _ = _account(database)
    store.create_file(theirs, "t.jsonl", "batch", 900, "t", max_account_bytes=1000)  # another account's bytes
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(
            pool.map(
                lambda i: _try(
                    lambda: store.create_file(
                        mine, f"{i}.jsonl", "batch", 100, f"k{i}", max_account_bytes=1000
                    )
                ),
                range(16),
            )
        )
    assert outcomes.count("ok") == 10
    assert set(outcomes) == {"ok", "file_storage_quota_exceeded"}
    assert sum(f.bytes for f in store.list_files(mine, None, 100).items) == 1000


def test_an_account_runs_at_most_its_quota_of_batches(store: BatchStore, clock: FakeClock) -> None:
    def create(account: int | None) -> str:
        return _try(
            lambda: store.create_batch(
                account, None, "file-x", "/v1/rank", None, 1, clock() + timedelta(hours=1), lines=_lines(1),
                max_active=2,
            )
        )  # fmt: skip

    assert [create(None) for _ in range(3)] == ["ok", "ok", "batch_quota_exceeded"]
    running = [b.id for b in store.list_batches(None, None, 10).items]
    store.request_cancel(None, running[0])
    assert create(None) == "batch_quota_exceeded"  # cancelling still runs until it is finalized
    assert store.claim_finalize("i", 30) is not None
    assert store.finalize(running[0], None, None, "cancelled", finalizer="i")
    assert create(None) == "ok"


def _try(call: Any) -> str:
    try:
        call()
    except BatchQuotaError as exc:
        return str(exc.code)
    return "ok"


def test_the_credit_a_batch_line_sees_is_the_balance_less_the_ledgers_holds(database: Database) -> None:
    """Batch lines check credit against what online requests in flight hold too (on any live instance)."""
    account, key = _account(database, credit=1000)
    ledger = LedgerStore(database)
    assert ledger.available_micros(account) == 1000
    ledger.admit(AdmissionRequest("req-online", account, key, 300, 0, None, None))
    assert ledger.available_micros(account) == 700
    assert LedgerStore(database).available_micros(account) == 700  # another instance sees the hold
    ledger.release("req-online", key, None)
    assert ledger.available_micros(account) == 1000
