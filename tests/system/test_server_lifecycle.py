"""Start-up errors, the random-weights warning, --help, and draining on SIGTERM."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from clipserve.config import Settings
from tests.support import encode_image, gradient_image
from tests.system.conftest import ServerProcess, start_server


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
    response = httpx.get(f"{tiny_server.base_url}/v1/models")
    assert response.headers["x-clipserve-weights"].startswith("random")


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    """Full-size model (slow on CPU) so requests are still queued when the signal arrives."""
    server = start_server(tmp_path, "--weights", "random", "--image-batch-size", "4")
    image = base64.b64encode(encode_image(gradient_image(), "JPEG")).decode()
    body = {"input": [{"image": image}] * 6}
    with ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(httpx.post, f"{server.base_url}/v1/embeddings", json=body, timeout=120)
            for _ in range(6)
        ]
        time.sleep(1.0)  # all six are in flight
        started = time.monotonic()
        exit_code = server.stop()
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 6
    assert all(len(r.json()["data"]) == 6 for r in responses)
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is SIGTERM's
    assert exit_code in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 60
    assert "draining" in server.log()
