"""The real `clipserve serve` command refuses to serve without authentication on a non-loopback address
(docs/accounts.md, "Local mode and when authentication is on"), and serves there with --allow-unauthenticated."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import TINY_CONFIG, create_key
from tests.system.conftest import free_port, start_server

MODEL = ("--weights", "random", "--architecture", str(TINY_CONFIG))
HOW_TO_FIX = (
    "Create a key with `clipserve keys create --name NAME --credit DOLLARS` (or --auth on), bind to 127.0.0.1, "
    "or pass --allow-unauthenticated if this network is trusted."
)
# uvicorn's line once its socket listens (the allowed case below shows that it is logged)
LISTENING = "Uvicorn running on http://0.0.0.0:"


def _serve(data_dir: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "clipserve", "serve", "--host", "0.0.0.0", "--port", str(port),
        "--data-dir", str(data_dir), *MODEL, *args,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def _nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize(
    ("auth", "with_key", "why"),
    [
        ("auto", False, "no API key exists yet (--auth auto)"),
        ("off", True, "--auth off"),  # off means off, keys or not
    ],
)
def test_serve_on_a_public_address_without_authentication_is_refused(
    tmp_path: Path, auth: str, with_key: bool, why: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if with_key:
        create_key(data_dir)
    port = free_port()
    result = _serve(data_dir, port, "--auth", auth)
    assert result.returncode == 2, result.stderr
    expected = f"clipserve: error: refusing to serve on 0.0.0.0 without authentication: {why}. {HOW_TO_FIX}"
    assert expected in result.stderr.splitlines(), result.stderr
    assert LISTENING not in result.stderr + result.stdout
    assert _nothing_listens(port)


def test_serve_on_a_public_address_with_allow_unauthenticated_serves_without_keys(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", "--host", "0.0.0.0", "--allow-unauthenticated", *MODEL)
    try:
        log = server.log()
        assert LISTENING in log, log
        assert "authentication OFF (--auth auto; no API key exists yet)" in log, log
        response = httpx.post(f"{server.base_url}/v1/embeddings", json={"input": "a cat"}, timeout=30)
        assert response.status_code == 200, response.text  # no key asked for, none charged
    finally:
        exit_code = server.stop()
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is SIGTERM's
    assert exit_code in (0, -signal.SIGTERM), server.log()
    assert "Application shutdown complete." in server.log()
