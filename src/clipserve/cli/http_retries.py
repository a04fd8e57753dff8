"""The HTTP commands' patience: a busy or restarting server is waited out, not taken for an answer."""

from __future__ import annotations

import time
from typing import Any

import httpx
from tqdm import tqdm

RETRY_CAP_S = 60.0


def request_with_retries(
    http: httpx.Client, method: str, path: str, *, attempts: int = 8, **kwargs: Any
) -> httpx.Response:
    """`http.request(method, path, **kwargs)`, retried on 429 and 503 (after their Retry-After, at most a
    minute) and, for reads, on a refused or dropped connection (a server restarting); the last answer is
    returned (or the last connection error raised) when `attempts` run out."""
    for _ in range(attempts - 1):
        try:
            response = http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            if method != "GET":
                raise
            tqdm.write(f"server unreachable ({exc.__class__.__name__}); retrying in 1 s")
            time.sleep(1.0)
            continue
        retryable = response.status_code == 503 or (
            response.status_code == 429 and response.headers.get("x-should-retry") != "false"
        )
        if not retryable:
            return response
        delay = float(response.headers.get("retry-after", "1"))
        tqdm.write(f"server busy ({response.status_code}); retrying in {delay:.0f} s")
        time.sleep(min(delay, RETRY_CAP_S))
    return http.request(method, path, **kwargs)
