"""Token buckets that pace a key's per-minute allowance (service/burst_limits.py), on a fake clock."""

from __future__ import annotations

import pytest

from clipserve.service import burst_limits
from clipserve.service.burst_limits import BurstLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_sends_its_burst_at_once_then_its_per_minute_rate() -> None:
    clock = Clock()
    limiter = BurstLimiter(clock)
    assert all(limiter.take(1, "requests", 600, 60, 1) is None for _ in range(60))
    refusal = limiter.take(1, "requests", 600, 60, 1)
    assert refusal is not None
    assert refusal.limit == 600
    assert refusal.capacity == 60
    assert refusal.retry_after_s == pytest.approx(0.1)  # one request at 10 a second
    clock.now += 0.1
    assert limiter.take(1, "requests", 600, 60, 1) is None
    assert limiter.take(1, "requests", 600, 60, 1) is not None
    clock.now += 3.0  # 30 more
    assert all(limiter.take(1, "requests", 600, 60, 1) is None for _ in range(30))
    assert limiter.take(1, "requests", 600, 60, 1) is not None


def test_keys_and_limit_names_have_their_own_buckets() -> None:
    limiter = BurstLimiter(Clock())
    assert limiter.take(1, "requests", 60, 2, 2) is None
    assert limiter.take(1, "requests", 60, 2, 1) is not None
    assert limiter.take(2, "requests", 60, 2, 2) is None  # another key
    assert limiter.take(1, "images", 60, 2, 2) is None  # another limit of the same key


def test_a_refusal_spends_nothing() -> None:
    clock = Clock()
    limiter = BurstLimiter(clock)
    assert limiter.take(1, "images", 6000, 100, 60) is None
    refusal = limiter.take(1, "images", 6000, 100, 50)
    assert refusal is not None
    assert refusal.tokens == pytest.approx(40)
    assert refusal.retry_after_s == pytest.approx(0.1)  # 10 more at 100 a second
    assert limiter.take(1, "images", 6000, 100, 40) is None  # the 40 are still there


def test_a_limit_at_or_below_the_burst_is_left_to_its_window() -> None:
    # its window (in the database) refuses with the right Retry-After; a bucket here would answer a shorter one
    limiter = BurstLimiter(Clock())
    assert all(limiter.take(1, "requests", 60, 60, 1) is None for _ in range(1000))
    assert all(limiter.take(2, "requests", 3, 60, 1) is None for _ in range(1000))
    assert limiter.take(3, "requests", 61, 60, 61) is None  # a full bucket passes the largest request
    assert limiter.take(3, "requests", 61, 60, 1) is not None


def test_a_cost_beyond_the_bucket_waits_for_a_full_bucket_and_empties_it() -> None:
    clock = Clock()
    limiter = BurstLimiter(clock)
    assert limiter.take(1, "images", 600, 100, 500) is None  # full bucket: allowed, emptied
    refusal = limiter.take(1, "images", 600, 100, 500)
    assert refusal is not None
    assert refusal.retry_after_s == pytest.approx(10.0)  # until the bucket is full again, not 50 s
    clock.now += 10.0
    assert limiter.take(1, "images", 600, 100, 500) is None


@pytest.mark.parametrize(
    ("per_minute", "burst", "cost"), [(None, 60, 1), (0, 60, 1), (600, 0, 1), (600, 60, 0)]
)
def test_no_limit_no_burst_or_no_cost_always_passes(per_minute: int | None, burst: int, cost: int) -> None:
    limiter = BurstLimiter(Clock())
    assert all(limiter.take(1, "requests", per_minute, burst, cost) is None for _ in range(1000))


def test_buckets_are_bounded_and_a_dropped_bucket_starts_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(burst_limits, "MAX_BUCKETS", 3)
    limiter = BurstLimiter(Clock())
    assert limiter.take(1, "requests", 60, 1, 1) is None
    assert limiter.take(1, "requests", 60, 1, 1) is not None
    for key in (2, 3, 4):  # key 1's bucket is the least recently used, dropped for key 4's
        assert limiter.take(key, "requests", 60, 1, 1) is None
    assert len(limiter._buckets) == 3
    assert limiter.take(1, "requests", 60, 1, 1) is None
