"""Real server processes on loopback sockets."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support import TINY_CONFIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return int(self.process.wait())


_LISTENING = re.compile(r"Uvicorn running on http://[^\s:]+:(\d+)")


def start_server(data_dir: Path, *args: str, ready_timeout_s: float = 90) -> ServerProcess:
    """`clipserve serve` on a port the kernel picks when the server binds (`--port 0`; read back from its log),
    so no other process can take the port between choosing and binding it; returns once /ready answers 200."""
    return wait_until_serving(launch_server(data_dir, *args), ready_timeout_s)


def launch_server(data_dir: Path, *args: str) -> ServerProcess:
    """`clipserve serve --port 0`, not waited for: its base_url is empty until wait_until_serving has read the
    bound port from its log."""
    log_path = data_dir / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "clipserve", "serve", "--port", "0", "--data-dir", str(data_dir), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env, text=True
    )
    return ServerProcess(process, "", log_path)


def wait_until_serving(launched: ServerProcess, ready_timeout_s: float = 90) -> ServerProcess:
    """Wait for a launched server to log the port it bound, then for /ready to answer 200; the same process
    with its base_url."""
    deadline = time.monotonic() + ready_timeout_s
    server: ServerProcess | None = None
    while time.monotonic() < deadline:
        if launched.process.poll() is not None:
            raise AssertionError(f"server exited early ({launched.process.returncode}):\n{launched.log()}")
        if server is None:
            listening = _LISTENING.search(launched.log())
            if listening is not None:
                server = ServerProcess(
                    launched.process, f"http://127.0.0.1:{listening.group(1)}", launched.log_path
                )
        else:
            try:
                if httpx.get(f"{server.base_url}/ready", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    launched.stop()
    raise AssertionError(f"server not ready in {ready_timeout_s}s:\n{launched.log()}")


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("tiny-server"), "--weights", "random", "--architecture", str(TINY_CONFIG)
    )
    yield server
    server.stop()


HELD_IMAGE_GIVE_UP_S = 60.0  # only for a server that never fetches or a test that never releases


class HeldImages(ThreadingHTTPServer):
    """A loopback image server that holds every GET until released: each arrival shows a request in flight
    inside clipserve (waiting on its image), and the test decides when those requests may finish."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.arrived = threading.Semaphore(0)
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _HeldImageHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/held.png"


class _HeldImageHandler(BaseHTTPRequestHandler):
    server: HeldImages

    def do_GET(self) -> None:
        self.server.arrived.release()
        if not self.server.release.wait(HELD_IMAGE_GIVE_UP_S):
            self.send_error(504)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.server.image)))
        self.end_headers()
        self.wfile.write(self.server.image)

    def log_message(self, format: str, *args: object) -> None:
        pass
