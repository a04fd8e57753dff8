"""Sliding-window rate limits (the weighted two-window approximation), as pure arithmetic.

Counts live in one-minute windows; the load at a moment is the current window's count plus the previous
window's count weighted by how much of it still overlaps the last 60 seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True)
class WindowCounts:
    previous: int
    current: int


@dataclass(frozen=True)
class LimitCheck:
    """The outcome of asking for `cost` units against a per-minute `limit` (None: unlimited)."""

    limit: int | None
    allowed: bool
    remaining: int
    reset_s: float  # until the window is back to full capacity
    retry_after_s: float  # until `cost` would fit (inf if it never can)


def load(counts: WindowCounts, elapsed_s: float) -> float:
    return counts.previous * (1 - elapsed_s / WINDOW_S) + counts.current


def check(limit: int | None, counts: WindowCounts, elapsed_s: float, cost: int) -> LimitCheck:
    if limit is None:
        return LimitCheck(None, True, 0, 0.0, 0.0)
    used = load(counts, elapsed_s)
    allowed = used + cost <= limit
    after = used + cost if allowed else used
    return LimitCheck(
        limit=limit,
        allowed=allowed,
        remaining=max(0, math.floor(limit - after)),
        reset_s=_reset_s(counts, elapsed_s, cost if allowed else 0),
        retry_after_s=0.0 if allowed else _retry_after_s(limit, counts, elapsed_s, cost),
    )


def _reset_s(counts: WindowCounts, elapsed_s: float, added: int) -> float:
    if counts.current + added > 0:
        return (WINDOW_S - elapsed_s) + WINDOW_S  # the current window stops counting a minute after it ends
    if counts.previous > 0:
        return WINDOW_S - elapsed_s
    return 0.0


def _retry_after_s(limit: int, counts: WindowCounts, elapsed_s: float, cost: int) -> float:
    if cost > limit:
        return math.inf
    room = limit - cost - counts.current
    if room >= 0:
        # within this window, once enough of the previous one has slid out
        if counts.previous == 0:
            return 0.0
        needed = WINDOW_S * (1 - room / counts.previous) - elapsed_s
        return min(max(0.0, needed), WINDOW_S - elapsed_s)
    # in the next window, the current one becomes the previous one
    needed_next = WINDOW_S * (1 - (limit - cost) / counts.current) if counts.current else 0.0
    return (WINDOW_S - elapsed_s) + max(0.0, needed_next)


def format_duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* style: '20ms', '1s', '6m0s'."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rate_limit_headers(requests: LimitCheck, images: LimitCheck) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, for requests and (our second unit) images."""
    headers: dict[str, str] = {}
    for name, outcome in (("requests", requests), ("images", images)):
        if outcome.limit is None:
            continue
        headers[f"x-ratelimit-limit-{name}"] = str(outcome.limit)
        headers[f"x-ratelimit-remaining-{name}"] = str(outcome.remaining)
        headers[f"x-ratelimit-reset-{name}"] = format_duration(outcome.reset_s)
    return headers
