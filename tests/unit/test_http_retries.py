"""The CLI's retries: 429/503 are waited out, a restarting server is waited out for reads, the last answer wins."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from clipserve.cli import http_retries
from clipserve.cli.http_retries import request_with_retries


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(http_retries.time, "sleep", slept.append)
    return slept


def _client(answers: list[Callable[[httpx.Request], httpx.Response]]) -> tuple[httpx.Client, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return answers[min(len(seen), len(answers)) - 1](request)

    return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://clipserve.test"), seen


def _status(code: int, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _request: httpx.Response(code, headers=headers)


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_busy_answers_are_retried_after_their_retry_after(no_sleep: list[float]) -> None:
    client, seen = _client([_status(503, **{"retry-after": "2"}), _status(429), _status(200)])
    assert request_with_retries(client, "POST", "/v1/batches").status_code == 200
    assert seen == ["POST"] * 3
    assert no_sleep == [2.0, 1.0]  # Retry-After, then the default second


def test_the_last_answer_is_returned_when_attempts_run_out(no_sleep: list[float]) -> None:
    client, seen = _client([_status(503, **{"retry-after": "999"})])
    assert request_with_retries(client, "GET", "/v1/batches/b", attempts=3).status_code == 503
    assert len(seen) == 3
    assert no_sleep == [http_retries.RETRY_CAP_S] * 2  # capped, and no wait after the last attempt


def test_a_429_that_says_do_not_retry_is_returned_at_once() -> None:
    client, seen = _client([_status(429, **{"x-should-retry": "false"}), _status(200)])
    assert request_with_retries(client, "POST", "/v1/files").status_code == 429
    assert len(seen) == 1


def test_reads_ride_out_a_restarting_server_but_writes_are_not_repeated() -> None:
    client, seen = _client([_unreachable, _unreachable, _status(200)])
    assert request_with_retries(client, "GET", "/v1/batches/b").status_code == 200
    assert len(seen) == 3
    client, seen = _client([_unreachable, _status(200)])
    with pytest.raises(httpx.ConnectError):
        request_with_retries(client, "POST", "/v1/batches")
    assert len(seen) == 1
    client, seen = _client([_unreachable])
    with pytest.raises(httpx.ConnectError):  # out of attempts: the last error
        request_with_retries(client, "GET", "/v1/batches/b", attempts=2)
    assert len(seen) == 2
