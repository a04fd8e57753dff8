"""Slow and idle connections are closed in time, connections are capped, and shutdown answers 503 (issue 10).

Real server processes and raw sockets: the timeouts live in the HTTP protocol (clipserve/server.py), below
anything an in-process client reaches.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from clipserve.api.app import create_app
from clipserve.server import GuardedHttpProtocol
from tests.api.test_hostile_accounts import SettleThatWaits
from tests.support import TINY_CONFIG, bearer, create_key, make_settings, wait_for
from tests.system.conftest import HeldImages, ServerProcess, start_server

# Generous: each bound only proves "closed by the server", against "open until the test gives up".
GIVE_UP_S = 30.0


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("strict-server"),
        *("--weights", "random", "--architecture", str(TINY_CONFIG)),
        *("--http-header-timeout-s", "2", "--http-body-idle-timeout-s", "2", "--http-body-timeout-s", "4"),
        *("--http-max-connections", "40"),
    )
    yield server
    server.stop()


def _connect(server: ServerProcess) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=GIVE_UP_S)
    sock.settimeout(0.2)
    return sock


def _trickle_until_closed(sock: socket.socket, payload: bytes, every_s: float = 0.3) -> tuple[float, bytes]:
    """Send one byte every `every_s` until the server closes; returns (seconds it took, what came back)."""
    started = time.monotonic()
    received = b""
    for byte in payload:
        if time.monotonic() - started > GIVE_UP_S:
            break
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # reset: the server closed it
            return time.monotonic() - started, received
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            time.sleep(max(0.0, every_s - 0.2))
            continue
        except OSError:
            return time.monotonic() - started, received
        received += chunk
        if not chunk:
            return time.monotonic() - started, received
    raise AssertionError(f"still open after {time.monotonic() - started:.0f}s")


def test_a_client_trickling_its_headers_is_closed_while_others_are_served(
    strict_server: ServerProcess,
) -> None:
    request = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: a\r\n" * 1000
    served: list[int] = []

    def normal_client() -> None:
        with httpx.Client(base_url=strict_server.base_url, timeout=10) as client:
            for _ in range(5):
                served.append(client.post("/v1/embeddings", json={"input": "a cat"}).status_code)
                time.sleep(0.2)

    with _connect(strict_server) as sock:
        thread = threading.Thread(target=normal_client)
        thread.start()
        took, answer = _trickle_until_closed(sock, request)
        thread.join()
    assert took < GIVE_UP_S
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code": "header_timeout"' in answer
    assert served == [200] * 5


def test_blank_lines_between_requests_do_not_keep_a_connection_open(strict_server: ServerProcess) -> None:
    # After a complete request the parser skips blank lines without starting a new one, and every byte cancels
    # uvicorn's keep-alive timer: "\r\n" every second held the connection (and its descriptor) forever.
    served: list[int] = []

    def normal_client() -> None:
        with httpx.Client(base_url=strict_server.base_url, timeout=10) as client:
            for _ in range(5):
                served.append(client.post("/v1/embeddings", json={"input": "a cat"}).status_code)
                time.sleep(0.5)

    with _connect(strict_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while True:  # the whole answer: until nothing more comes for a moment
            try:
                first += sock.recv(4096)
            except TimeoutError:
                if b"\r\n\r\n" in first:
                    break
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        thread = threading.Thread(target=normal_client)
        thread.start()
        took, answer = _trickle_until_closed(sock, b"\r\n" * 100, every_s=1.0)
        thread.join()
    assert took < GIVE_UP_S
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert served == [200] * 5


def test_an_idle_connection_that_never_sends_is_closed(strict_server: ServerProcess) -> None:
    with _connect(strict_server) as sock:
        sock.settimeout(GIVE_UP_S)
        started = time.monotonic()
        answer = sock.recv(4096)
        assert sock.recv(4096) == b""  # then closed
    assert time.monotonic() - started < GIVE_UP_S
    assert answer.startswith(b"HTTP/1.1 408")


def test_a_client_trickling_its_body_is_closed(strict_server: ServerProcess) -> None:
    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    with _connect(strict_server) as sock:
        sock.sendall(head)
        took, _ = _trickle_until_closed(sock, b'{"input": "' + b"a" * 9000, every_s=0.5)
    assert took < GIVE_UP_S


def test_connections_beyond_the_cap_get_503_at_once(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, "--weights", "random", "--architecture", str(TINY_CONFIG), "--http-max-connections", "3"
    )
    try:
        held = [_connect(server) for _ in range(3)]
        time.sleep(0.3)
        with _connect(server) as extra:
            extra.settimeout(GIVE_UP_S)
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"Retry-After: 1" in answer
        for sock in held:
            sock.close()
        # the server frees a slot once it has seen the close
        wait_for(
            lambda: httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200,
            "/health answers 200 after the held connections closed",
        )
    finally:
        server.stop()


def test_requests_running_when_the_shutdown_period_ends_get_503_with_retry_after(tmp_path: Path) -> None:
    images = HeldImages(b"never sent")  # the request is still fetching when the shutdown period ends
    threading.Thread(target=images.serve_forever, daemon=True).start()
    server = start_server(
        tmp_path,
        *("--weights", "random", "--architecture", str(TINY_CONFIG), "--graceful-shutdown-s", "1"),
        *("--image-fetch-allow-private", "--image-fetch-timeout-s", "60"),
    )
    url = images.url
    result: list[httpx.Response] = []
    try:
        request = threading.Thread(
            target=lambda: result.append(
                httpx.post(f"{server.base_url}/v1/embeddings", json={"input": [{"image": url}]}, timeout=60)
            )
        )
        request.start()
        assert images.arrived.acquire(timeout=GIVE_UP_S), "the request never fetched its image"  # in flight
        server.stop()
        request.join(GIVE_UP_S)
    finally:
        images.release.set()
        images.shutdown()
    assert result, "no answer"
    response = result[0]
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "service_unavailable"
    assert "Traceback" not in server.log()


def test_a_request_charged_when_the_shutdown_period_ends_gets_its_answer_not_503(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    # uvicorn's own cancel at the end of the grace period, on a real socket, arriving while the charge is being
    # written: the charge commits, so the answer must go out (a 503 "retry" would be paid twice without an
    # Idempotency-Key). In-process uvicorn (as `clipserve serve` runs it) so that the settle can be held.
    key = create_key(tmp_path)
    settings = make_settings(tmp_path, graceful_shutdown_s=1)
    app = create_app(settings, tiny_runtime)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, lifespan="on",
        timeout_graceful_shutdown=1, http=GuardedHttpProtocol.configured(settings),
    )  # fmt: skip
    server = uvicorn.Server(config)
    serving = threading.Thread(target=lambda: asyncio.run(server.serve()))
    serving.start()
    try:
        deadline = time.monotonic() + GIVE_UP_S
        while not server.started and serving.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        context = app.state.context
        real = context.ledger
        ledger = SettleThatWaits(real.db, real.clock, real.timeouts, real.instance)  # settles after ~2 s
        context.meter.ledger = ledger
        result: list[httpx.Response] = []
        body = {"input": ["a photo of a cat", "a dog"]}
        url = f"http://127.0.0.1:{port}/v1/embeddings"
        request = threading.Thread(
            target=lambda: result.append(httpx.post(url, json=body, headers=bearer(key), timeout=GIVE_UP_S))
        )
        request.start()
        assert ledger.settling.wait(GIVE_UP_S)
        server.should_exit = True  # SIGTERM; the grace period (1 s) ends while the settle still runs
        request.join(GIVE_UP_S)
        assert result, "no answer"
        response = result[0]
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 2
        charges = real.charges()
        assert [request_id for request_id, _, _ in charges] == [response.headers["x-request-id"]]
    finally:
        server.should_exit = True
        serving.join(GIVE_UP_S)
