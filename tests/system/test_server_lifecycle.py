"""Start-up errors, the random-weights warning, --help, and draining on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from clipserve.config import Settings
from tests.support import TINY_CONFIG, encode_image, gradient_image
from tests.system.conftest import HeldImages, ServerProcess, start_server

GIVE_UP_S = 60.0  # generous: only for a server that never does what the test waits for


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipserve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_offline_with_nothing_cached_exits_with_one_clear_message(tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "could not load weights from 'hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K'" in result.stderr
    for option in ("--weights hf-hub:", "--weights /path/to/open_clip_model.safetensors", "--weights random"):
        assert option in result.stderr


def test_a_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path), "--weights", str(tmp_path / "nope.safetensors"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "99999", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "port" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_documents_every_setting_and_its_env_var() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in text
        assert f"CLIPSERVE_{name.upper()}" in text


def test_random_weights_warn_loudly(tiny_server: ServerProcess) -> None:
    assert "RANDOM WEIGHTS" in tiny_server.log()
    response = httpx.get(f"{tiny_server.base_url}/v1/models", timeout=60)
    assert response.headers["x-clipserve-weights"].startswith("random")


def _refuses_connections(server: ServerProcess) -> bool:
    try:
        httpx.get(f"{server.base_url}/health", timeout=GIVE_UP_S)
    except httpx.ConnectError:
        return True
    return False


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    """Six requests held in flight (each waiting on an image the test serves) when SIGTERM arrives: the server
    stops accepting connections, and once the images come, all six are answered in full before it exits."""
    images = HeldImages(encode_image(gradient_image(64, 48)))
    threading.Thread(target=images.serve_forever, daemon=True).start()
    server = start_server(
        tmp_path,
        *("--weights", "random", "--architecture", str(TINY_CONFIG), "--image-batch-size", "4"),
        *("--image-fetch-allow-private", "--image-fetch-timeout-s", "120"),
    )
    bodies = [{"input": [{"image": f"{images.url}?request={i}"}, f"caption {i}", "a", "b"]} for i in range(6)]
    url = f"{server.base_url}/v1/embeddings"
    try:
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(httpx.post, url, json=body, timeout=GIVE_UP_S * 2) for body in bodies]
            for _ in range(6):  # every request has reached its image fetch: all six are in flight
                assert images.arrived.acquire(timeout=GIVE_UP_S), "a request never fetched its image"
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + GIVE_UP_S
            while not _refuses_connections(server):  # shutting down: the listening socket is closed
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                time.sleep(0.05)
            assert server.process.poll() is None
            assert not any(f.done() for f in futures)  # the six are still held, so still in flight
            images.release.set()
            responses = [f.result() for f in futures]
        exit_code = server.process.wait(GIVE_UP_S)
    finally:
        images.release.set()
        images.shutdown()
        server.stop()
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert all(len(r.json()["data"]) == 4 for r in responses)
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is SIGTERM's
    assert exit_code in (0, -signal.SIGTERM)
    assert "draining" in server.log()
