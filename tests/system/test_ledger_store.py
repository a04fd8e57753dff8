"""The ledger store's contract, on SQLite and on a real PostgreSQL server: money is never lost, made up or
double-counted, under concurrency too."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from clipserve.errors import (
    IdempotencyConflictError,
    IdempotencyMismatchError,
    InsufficientQuotaError,
    RateLimitExceededError,
)
from clipserve.store.accounts import AccountStore
from clipserve.store.database import Database
from clipserve.store.ledger import AdmissionRequest, Charge, LedgerStore, LedgerTimeouts, StoredResponse
from clipserve.store.records import KeyOptions

_ids = itertools.count()


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 29, 12, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _admission(account_id: int, key_id: int, estimate: int, **extra: object) -> AdmissionRequest:
    values: dict[str, object] = {
        "charge_id": f"chg_{next(_ids)}", "account_id": account_id, "key_id": key_id,
        "estimate_micros": estimate, "images": 1, "requests_per_minute": None, "images_per_minute": None,
    }  # fmt: skip
    values.update(extra)
    return AdmissionRequest(**values)  # type: ignore[arg-type]


def _charge(admission: AdmissionRequest, cost: int, response: StoredResponse | None = None) -> Charge:
    return Charge(
        charge_id=admission.charge_id, request_id=f"req_{admission.charge_id}", account_id=admission.account_id,
        key_id=admission.key_id, endpoint="/v1/embeddings", images=admission.images, tokens=3,
        cost_micros=cost, idempotency_key=admission.idempotency_key, response=response,
    )  # fmt: skip


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stores(database: Database, clock: FakeClock) -> tuple[AccountStore, LedgerStore]:
    return AccountStore(database, clock), LedgerStore(database, clock, LedgerTimeouts(hold_s=60))


def test_grants_and_charges_keep_balance_equal_to_the_ledger(
    stores: tuple[AccountStore, LedgerStore],
) -> None:
    accounts, ledger = stores
    account, key, _ = accounts.open_account("alice", 1_000)
    accounts.grant(account.id, 500, "top-up")
    admission = _admission(account.id, key.id, 300)
    ledger.admit(admission)
    ledger.settle(_charge(admission, 250))
    audit = ledger.audit(account.id)
    assert audit.consistent
    assert (audit.granted_micros, audit.charged_micros, audit.balance_micros) == (1_500, 250, 1_250)


def test_admission_needs_credit_beyond_what_running_requests_hold(
    stores: tuple[AccountStore, LedgerStore],
) -> None:
    accounts, ledger = stores
    account, key, _ = accounts.open_account("bob", 100)
    ledger.admit(_admission(account.id, key.id, 60))
    with pytest.raises(InsufficientQuotaError):
        ledger.admit(_admission(account.id, key.id, 60))  # 100 - 60 held < 60
    ledger.admit(_admission(account.id, key.id, 40))


def test_a_released_request_costs_nothing_and_frees_its_hold(
    stores: tuple[AccountStore, LedgerStore],
) -> None:
    accounts, ledger = stores
    account, key, _ = accounts.open_account("carol", 100)
    first = _admission(account.id, key.id, 100)
    ledger.admit(first)
    ledger.release(first.charge_id, key.id, None)
    ledger.admit(_admission(account.id, key.id, 100))
    assert ledger.audit(account.id).charged_micros == 0


def test_a_charge_cannot_be_settled_twice(stores: tuple[AccountStore, LedgerStore]) -> None:
    accounts, ledger = stores
    account, key, _ = accounts.open_account("dan", 100)
    admission = _admission(account.id, key.id, 10)
    ledger.admit(admission)
    ledger.settle(_charge(admission, 10))
    with pytest.raises(IntegrityError):
        ledger.settle(_charge(admission, 10))
    audit = ledger.audit(account.id)
    assert audit.consistent
    assert audit.charged_micros == 10


def test_holds_of_a_crashed_process_stop_counting_after_their_timeout(
    stores: tuple[AccountStore, LedgerStore], clock: FakeClock
) -> None:
    accounts, ledger = stores
    account, key, _ = accounts.open_account("erin", 100)
    ledger.admit(_admission(account.id, key.id, 100))  # never settled nor released: the process "died"
    with pytest.raises(InsufficientQuotaError):
        ledger.admit(_admission(account.id, key.id, 1))
    clock.advance(61)
    ledger.admit(_admission(account.id, key.id, 100))


def test_idempotency_key_replays_the_first_answer_and_refuses_a_different_body(
    stores: tuple[AccountStore, LedgerStore],
) -> None:
    accounts, ledger = stores
    account, key, _ = accounts.open_account("fay", 1_000)
    first = _admission(account.id, key.id, 10, idempotency_key="k1", fingerprint="f1")
    ledger.admit(first)
    with pytest.raises(IdempotencyConflictError):  # the first is still running
        ledger.admit(_admission(account.id, key.id, 10, idempotency_key="k1", fingerprint="f1"))
    ledger.settle(_charge(first, 10, StoredResponse(200, "application/json", b'{"answer": 1}')))
    again = ledger.admit(_admission(account.id, key.id, 10, idempotency_key="k1", fingerprint="f1"))
    assert again.replay == StoredResponse(200, "application/json", b'{"answer": 1}')
    with pytest.raises(IdempotencyMismatchError):
        ledger.admit(_admission(account.id, key.id, 10, idempotency_key="k1", fingerprint="other"))
    assert ledger.audit(account.id).charged_micros == 10  # charged once


def test_a_failed_request_frees_its_idempotency_key(stores: tuple[AccountStore, LedgerStore]) -> None:
    accounts, ledger = stores
    account, key, _ = accounts.open_account("gus", 1_000)
    first = _admission(account.id, key.id, 10, idempotency_key="k", fingerprint="f")
    ledger.admit(first)
    ledger.release(first.charge_id, key.id, "k")
    assert (
        ledger.admit(_admission(account.id, key.id, 10, idempotency_key="k", fingerprint="f")).replay is None
    )


def test_rate_limits_count_requests_and_images_per_key(
    stores: tuple[AccountStore, LedgerStore], clock: FakeClock
) -> None:
    accounts, ledger = stores
    account, key, _ = accounts.open_account("hal", 10_000)
    for _ in range(3):
        admitted = ledger.admit(_admission(account.id, key.id, 1, requests_per_minute=3))
    assert admitted.requests.remaining == 0
    with pytest.raises(RateLimitExceededError) as refused:
        ledger.admit(_admission(account.id, key.id, 1, requests_per_minute=3))
    assert refused.value.error_type == "requests"
    assert 0 < refused.value.retry_after_s <= 120
    with pytest.raises(RateLimitExceededError) as too_many_images:
        ledger.admit(_admission(account.id, key.id, 1, images=11, images_per_minute=10))
    assert too_many_images.value.error_type == "images"
    clock.advance(120)
    ledger.admit(_admission(account.id, key.id, 1, requests_per_minute=3))


def test_usage_is_summed_per_day_and_endpoint(
    stores: tuple[AccountStore, LedgerStore], clock: FakeClock
) -> None:
    accounts, ledger = stores
    account, key, _ = accounts.open_account("ivy", 10_000)
    for cost in (5, 7):
        admission = _admission(account.id, key.id, cost)
        ledger.admit(admission)
        ledger.settle(_charge(admission, cost))
    clock.advance(86_400)
    admission = _admission(account.id, key.id, 11)
    ledger.admit(admission)
    ledger.settle(_charge(admission, 11))
    rows = ledger.usage(account.id, clock.now.date() - timedelta(days=1), clock.now.date())
    assert [(r.requests, r.images, r.tokens, r.cost_micros) for r in rows] == [(2, 2, 6, 12), (1, 1, 3, 11)]


def test_revoked_and_expired_keys_do_not_count_as_usable(
    stores: tuple[AccountStore, LedgerStore], clock: FakeClock
) -> None:
    accounts, _ = stores
    assert not accounts.has_usable_keys()
    account, _, _ = accounts.open_account("jo", 0, KeyOptions(expires_at=clock.now + timedelta(hours=1)))
    assert accounts.has_usable_keys()
    clock.advance(3_601)
    assert not accounts.has_usable_keys()
    other, _ = accounts.create_key(account.id, "second")
    accounts.revoke_key(other.id)
    assert not accounts.has_usable_keys()


def test_sign_up_is_limited_per_address(stores: tuple[AccountStore, LedgerStore]) -> None:
    accounts, ledger = stores
    for i in range(2):
        account, _, plaintext = accounts.sign_up("10.0.0.1", f"user{i}", 1_000_000, per_address_per_day=2)
        assert plaintext.startswith("sk-clip-")
        assert ledger.audit(account.id).balance_micros == 1_000_000
    with pytest.raises(RateLimitExceededError):
        accounts.sign_up("10.0.0.1", "user3", 1_000_000, per_address_per_day=2)
    accounts.sign_up("10.0.0.2", "other", 1_000_000, per_address_per_day=2)


def test_concurrent_requests_never_overdraw_and_keep_every_balance_exact(
    stores: tuple[AccountStore, LedgerStore],
) -> None:
    """200 requests from 20 keys at once; half the accounts run out of credit part-way."""
    accounts, ledger = stores
    cost = 47
    credits = [cost * (5 if i % 2 else 20) + 13 for i in range(20)]  # odd accounts afford 5 of their 10
    opened = [accounts.open_account(f"acct{i}", credit) for i, credit in enumerate(credits)]
    jobs = [(account.id, key.id) for account, key, _ in opened for _ in range(10)]

    def run(job: tuple[int, int]) -> bool:
        admission = _admission(job[0], job[1], cost)
        try:
            ledger.admit(admission)
        except InsufficientQuotaError:
            return False
        ledger.settle(_charge(admission, cost))
        return True

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(run, jobs))
    for i, (account, _, _) in enumerate(opened):
        served = sum(outcomes[i * 10 : (i + 1) * 10])
        assert served == min(10, credits[i] // cost)
        audit = ledger.audit(account.id)
        assert audit.consistent, audit
        assert audit.balance_micros == credits[i] - served * cost >= 0


def test_holds_of_a_process_that_stopped_heartbeating_stop_counting(
    database: Database, clock: FakeClock
) -> None:
    from clipserve.store.instances import Instance

    accounts = AccountStore(database, clock)
    # pid 1 is alive, so only the missed heartbeats can tell that this one is gone
    crashed = LedgerStore(database, clock, LedgerTimeouts(instance_liveness_s=30), Instance(pid=1))
    survivor = LedgerStore(database, clock, LedgerTimeouts(instance_liveness_s=30))
    account, key, _ = accounts.open_account("kim", 100)
    crashed.admit(_admission(account.id, key.id, 100))
    with pytest.raises(InsufficientQuotaError):
        survivor.admit(_admission(account.id, key.id, 1))
    clock.advance(31)  # `crashed` never heartbeats again
    survivor.heartbeat()
    survivor.admit(_admission(account.id, key.id, 100))


def test_on_sqlite_a_dead_pid_frees_its_holds_and_idempotency_keys_at_once(
    database: Database, clock: FakeClock
) -> None:
    import subprocess
    import sys

    from clipserve.store.instances import Instance

    if not database.is_sqlite:
        pytest.skip("pids only mean something on one host (SQLite)")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that is gone
    accounts = AccountStore(database, clock)
    dead = LedgerStore(database, clock, instance=Instance(pid=child.pid))
    restarted = LedgerStore(database, clock)
    account, key, _ = accounts.open_account("lee", 100)
    dead.admit(_admission(account.id, key.id, 100, idempotency_key="k", fingerprint="f"))
    again = restarted.admit(_admission(account.id, key.id, 100, idempotency_key="k", fingerprint="f"))
    assert again.replay is None  # taken over, not "still running"


def test_concurrent_sign_ups_from_one_address_respect_the_limit(
    stores: tuple[AccountStore, LedgerStore],
) -> None:
    accounts, _ = stores

    def attempt(i: int) -> bool:
        try:
            accounts.sign_up("10.9.9.9", f"racer{i}", 1_000, per_address_per_day=3)
        except RateLimitExceededError:
            return False
        return True

    with ThreadPoolExecutor(10) as pool:
        assert sum(pool.map(attempt, range(10))) == 3


def test_a_replica_that_started_a_moment_ago_has_its_holds_counted_at_once(
    database: Database, clock: FakeClock
) -> None:
    # Replica A reads which instances are dead (and caches it for a second); replica B starts after that read and
    # holds most of the credit. A's next admission, within the same second, must still see B's hold: it once kept
    # a list of the *live* instances, which B was not on yet, and let three replicas overdraw an account (found
    # by tests/system/test_postgres_replicas.py under load).
    accounts = AccountStore(database, clock)
    first = LedgerStore(database, clock)
    account, key, _ = accounts.open_account("rae", 100)
    first.admit(_admission(account.id, key.id, 10))  # A has read the instances (cached for a second)
    second = LedgerStore(database, clock)  # B starts now: a new instance A has not seen
    second.admit(_admission(account.id, key.id, 80))
    with pytest.raises(InsufficientQuotaError):
        first.admit(_admission(account.id, key.id, 20))  # 10 + 80 held: 10 left, not 90
    first.purge_expired()  # nor may A's clean-up delete B's hold as if its process were dead
    with pytest.raises(InsufficientQuotaError):
        second.admit(_admission(account.id, key.id, 20))
