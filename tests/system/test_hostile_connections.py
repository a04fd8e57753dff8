"""Slow and idle connections are closed in time, connections are capped, and shutdown answers 503 (issue 10).

Real server processes and raw sockets: the timeouts live in the HTTP protocol (clipserve/server.py), below
anything an in-process client reaches.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support import TINY_CONFIG
from tests.system.conftest import ServerProcess, start_server

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
        time.sleep(0.3)
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    finally:
        server.stop()


class _SlowImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(20)  # the request is still fetching when the shutdown period ends
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_requests_running_when_the_shutdown_period_ends_get_503_with_retry_after(tmp_path: Path) -> None:
    images = ThreadingHTTPServer(("127.0.0.1", 0), _SlowImageHandler)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    server = start_server(
        tmp_path,
        *("--weights", "random", "--architecture", str(TINY_CONFIG), "--graceful-shutdown-s", "1"),
        *("--image-fetch-allow-private", "--image-fetch-timeout-s", "60"),
    )
    url = f"http://127.0.0.1:{images.server_address[1]}/slow.png"
    result: list[httpx.Response] = []
    try:
        request = threading.Thread(
            target=lambda: result.append(
                httpx.post(f"{server.base_url}/v1/embeddings", json={"input": [{"image": url}]}, timeout=60)
            )
        )
        request.start()
        time.sleep(1.5)  # in flight, waiting on the image
        server.stop()
        request.join(GIVE_UP_S)
    finally:
        images.shutdown()
    assert result, "no answer"
    response = result[0]
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "service_unavailable"
    assert "Traceback" not in server.log()
