"""The sliding-minute rate limit (docs/accounts.md) worked out by hand, for exact Retry-After expectations."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping


async def start_early_in_a_minute(needed_s: float = 10.0) -> None:
    """Wait, if need be, for the next wall-clock minute, so the next `needed_s` seconds fall in one window."""
    left = 60 - time.time() % 60
    if left < needed_s:
        await asyncio.sleep(left + 0.05)


def retry_after_bounds(limit: int, sent_at: float, answered_at: float) -> tuple[float, float]:
    """Seconds until one more request fits, after `limit` requests in this minute and none the minute before,
    for a refusal computed between `sent_at` and `answered_at` (wall clock).

    The load is this minute's count plus the previous minute's weighted by (1 - t/60), t the seconds into the
    minute. Nothing fits until the minute ends (load = limit); t seconds into the next one the load is
    limit * (1 - t/60), and one more fits once that is at most limit - 1: t = 60 / limit. So the wait is
    (60 - seconds into this minute) + 60 / limit."""
    assert int(sent_at // 60) == int(answered_at // 60), "the refusal straddled a minute"

    def wait(at: float) -> float:
        return (60 - at % 60) + 60 / limit

    return wait(answered_at), wait(sent_at)


def assert_retry_after(headers: Mapping[str, str], limit: int, sent_at: float, answered_at: float) -> None:
    """Retry-After (whole seconds, rounded up) and retry-after-ms match the hand-computed wait."""
    low, high = retry_after_bounds(limit, sent_at, answered_at)
    assert int(low * 1000) <= int(headers["retry-after-ms"]) <= int(high * 1000), (headers, low, high)
    assert math.ceil(low) <= int(headers["retry-after"]) <= math.ceil(high), (headers, low, high)
