"""The sliding-window arithmetic behind x-ratelimit-* headers and Retry-After."""

from __future__ import annotations

import math

import pytest

from clipserve.service.rate_limits import WindowCounts, check, format_duration, load


def test_unlimited_always_allows() -> None:
    outcome = check(None, WindowCounts(10**9, 10**9), 0, 10**9)
    assert outcome.allowed
    assert outcome.limit is None


def test_previous_window_weight_slides_out() -> None:
    counts = WindowCounts(previous=60, current=0)
    assert load(counts, 0) == 60
    assert load(counts, 30) == 30
    assert load(counts, 60) == 0


def test_allowed_request_reports_what_remains() -> None:
    outcome = check(10, WindowCounts(0, 3), 12.0, 1)
    assert outcome.allowed
    assert outcome.remaining == 6
    assert outcome.reset_s == pytest.approx(48 + 60)


def test_refusal_waits_until_the_previous_window_has_slid_out_enough() -> None:
    # limit 10, previous 10, current 0, at 30 s: load 5; asking for 6 needs load <= 4, at 36 s
    outcome = check(10, WindowCounts(10, 0), 30.0, 6)
    assert not outcome.allowed
    assert outcome.retry_after_s == pytest.approx(6.0)
    # and retrying then is allowed
    assert check(10, WindowCounts(10, 0), 36.0, 6).allowed


def test_refusal_when_the_current_window_is_full_waits_into_the_next_one() -> None:
    outcome = check(10, WindowCounts(0, 10), 20.0, 1)
    assert not outcome.allowed
    # next window starts in 40 s; then load = 10 * (1 - t/60) must be <= 9: t = 6 s
    assert outcome.retry_after_s == pytest.approx(46.0)
    assert check(10, WindowCounts(10, 0), 6.0, 1).allowed


def test_a_request_larger_than_the_limit_never_fits() -> None:
    assert check(10, WindowCounts(0, 0), 0, 11).retry_after_s == math.inf


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1, "1s"), (59.2, "1m0s"), (360, "6m0s"), (0, "0ms")]
)
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
