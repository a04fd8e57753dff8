"""What a probe sees while a real `clipserve serve` drains after SIGTERM, and the exit status (operations.md,
Shutdown; api.md, /ready). A request is held in flight by a loopback image host that answers only when the test
lets it; SIGTERM arrives; once uvicorn has closed its listening socket (its "Waiting for connections to close" log
line), a new connection to /ready is refused, while the held request still runs and the process is alive. The
request then finishes with a 200, and the process exits by SIGTERM (uvicorn re-raises the signal)."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import TINY_CONFIG, encode_image, gradient_image
from tests.system.conftest import HeldImages, ServerProcess, start_server

GIVE_UP_S = 60.0  # only for a server that never does what the test waits for
CLOSED_LISTENER = "Waiting for connections to close"  # uvicorn logs it after closing its listening sockets


def _wait_for_log(server: ServerProcess, line: str) -> None:
    deadline = time.monotonic() + GIVE_UP_S
    while line not in server.log():
        assert server.process.poll() is None, f"the server exited before logging {line!r}:\n{server.log()}"
        assert time.monotonic() < deadline, f"no {line!r} in the log:\n{server.log()}"
        time.sleep(0.02)


def test_during_the_drain_ready_probes_are_refused_and_the_exit_is_by_sigterm(tmp_path: Path) -> None:
    image = HeldImages(encode_image(gradient_image(64, 48)))
    threading.Thread(target=image.serve_forever, daemon=True).start()
    server = start_server(
        tmp_path,
        *("--weights", "random", "--architecture", str(TINY_CONFIG)),
        *("--image-fetch-allow-private", "--image-fetch-timeout-s", "120"),
    )
    body = {"input": [{"image": image.url}]}
    try:
        assert httpx.get(f"{server.base_url}/ready", timeout=GIVE_UP_S).status_code == 200
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                httpx.post, f"{server.base_url}/v1/embeddings", json=body, timeout=GIVE_UP_S * 2
            )
            assert image.arrived.acquire(timeout=GIVE_UP_S), (
                "the request never fetched its image"
            )  # it is in flight
            server.process.send_signal(signal.SIGTERM)
            _wait_for_log(server, CLOSED_LISTENER)
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{server.base_url}/ready", timeout=GIVE_UP_S)
            assert server.process.poll() is None  # still draining
            assert not held.done()  # the request is still running (its image is held)
            image.release.set()
            response = held.result()
        exit_code = server.process.wait(GIVE_UP_S)
    finally:
        image.release.set()
        image.shutdown()
        server.stop()
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1
    assert exit_code == -signal.SIGTERM, f"exit status {exit_code}:\n{server.log()}"
    log = server.log()
    assert log.index(CLOSED_LISTENER) < log.index("draining") < log.index("stopped")
