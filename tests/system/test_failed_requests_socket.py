"""A client that hangs up, over a real TCP socket to a real `clipserve serve` process (tiny model, SQLite):
before its body has arrived it costs nothing; once the server has read it, it runs and is charged once (the
work is done; uvicorn does not cancel a request whose client went away)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support import (
    TINY_CONFIG,
    bearer,
    data_uri,
    encode_image,
    gradient_image,
    ledger_of,
    open_accounts,
)
from tests.system.conftest import ServerProcess, start_server

IMAGE_MICROS = 47  # $0.047 per 1,000 images
IMAGES = 8


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str, list[tuple[int, str]]]]:
    """A server with two accounts of 8 images' credit each (created before it starts, so auth is on)."""
    data_dir = tmp_path_factory.mktemp("hang-up")
    url = f"sqlite:///{data_dir / 'clipserve.db'}"
    accounts = open_accounts(url, [IMAGES * IMAGE_MICROS, IMAGES * IMAGE_MICROS])
    server = start_server(data_dir, "--weights", "random", "--architecture", str(TINY_CONFIG))
    yield server, url, accounts
    server.stop()


def _body() -> bytes:
    images = [{"image": data_uri(encode_image(gradient_image(96, 72, seed=i)))} for i in range(IMAGES)]
    return json.dumps({"input": images}).encode()


def _head(server: ServerProcess, key: str, length: int) -> bytes:
    host = server.base_url.removeprefix("http://")
    return (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _connect(server: ServerProcess) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _requests_answered(server: ServerProcess, status: int) -> float:
    """clipserve_requests_total for POST /v1/embeddings with this status (the middleware counts each request
    once it has finished, answered or not)."""
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for line in metrics.splitlines():
        labels = ('endpoint="/v1/embeddings"', 'method="POST"', f'status="{status}"')
        if line.startswith("clipserve_requests_total{") and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _money(url: str, account_id: int) -> tuple[int, list[tuple[str | None, str | None, int]], int]:
    """(balance, ledger charges, the account's open holds), read from the server's database."""
    ledger: Any = ledger_of(url)
    try:
        audit = ledger.audit(account_id)
        assert audit.consistent, audit
        with ledger.db.read() as conn:
            holds = conn.execute(
                text("SELECT count(*) FROM holds WHERE account_id = :a"), {"a": account_id}
            ).scalar_one()
        return audit.balance_micros, ledger.charges(account_id), int(holds)
    finally:
        ledger.db.close()


def test_a_client_that_hangs_up_before_its_body_arrives_is_charged_nothing(
    served: tuple[ServerProcess, str, list[tuple[int, str]]],
) -> None:
    server, url, ((account_id, key), _) = served
    body = _body()
    before = _requests_answered(server, 400)
    with _connect(server) as sock:
        sock.sendall(_head(server, key, len(body)) + body[: len(body) // 2])
        sock.shutdown(socket.SHUT_WR)  # the client is gone half-way through its body
    _wait_for(lambda: _requests_answered(server, 400) == before + 1, "the server to finish the request")
    assert _money(url, account_id) == (IMAGES * IMAGE_MICROS, [], 0)
    # the whole credit is still there: the same request, sent whole, is answered and charged all of it
    answer = httpx.post(
        f"{server.base_url}/v1/embeddings",
        content=body,
        headers={**bearer(key), "Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert int(answer.headers["x-request-cost-micros"]) == IMAGES * IMAGE_MICROS
    assert _money(url, account_id) == (0, [(answer.headers["x-request-id"], None, IMAGES * IMAGE_MICROS)], 0)


def test_a_client_that_hangs_up_after_the_server_read_its_request_is_charged_once(
    served: tuple[ServerProcess, str, list[tuple[int, str]]],
) -> None:
    server, url, (_, (account_id, key)) = served
    body = _body()
    with _connect(server) as sock:
        sock.sendall(_head(server, key, len(body)) + body)
        # admitted (its hold is written only after its body was read), or already charged
        _wait_for(lambda: _money(url, account_id)[1:] != ([], 0), "the request to be admitted")
    # the socket is closed: nobody will read the answer
    _wait_for(lambda: _money(url, account_id)[2] == 0, "the request to finish")
    balance, charges, _ = _money(url, account_id)
    assert [cost for _, _, cost in charges] == [IMAGES * IMAGE_MICROS]
    assert balance == 0
    assert "Traceback" not in server.log()
