"""`clipserve keys ...` on the data dir of a running server: the key it prints works at once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from clipserve.cli import main
from tests.support import TINY_CONFIG, bearer
from tests.system.conftest import start_server

# The server looks for a first key every 2 s and caches key records for 5 s; the test waits for each change to
# show (moving on as soon as it does) and gives up after this, generous for a loaded machine.
GIVE_UP_S = 30.0


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GIVE_UP_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not seen within {GIVE_UP_S} s"
        time.sleep(0.05)


def test_keys_commands_work_beside_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server(tmp_path, "--weights", "random", "--architecture", str(TINY_CONFIG))
    data_dir = ["--data-dir", str(tmp_path)]
    try:
        assert main(["keys", "create", "--name", "acme", "--credit", "0.5", *data_dir]) == 0
        key = capsys.readouterr().out.strip()
        assert key.startswith("sk-clip-")
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            # the server notices its first key (it looks every 2 s) and turns authentication on
            _wait_for(lambda: http.get("/v1/key").status_code == 401, "authentication turned on")
            assert http.post("/v1/embeddings", json={"input": "a"}).status_code == 401
            assert http.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key)).status_code == 200
            assert main(["keys", "grant", "--account", "1", "--credit", "1.25", *data_dir]) == 0
            assert http.get("/v1/key", headers=bearer(key)).json()["data"]["limit_micros"] == 1_750_000
            capsys.readouterr()
            assert main(["keys", "list", "--json", *data_dir]) == 0
            listed = json.loads(capsys.readouterr().out)
            assert [row["status"] for row in listed] == ["active"]
            assert key[20:] not in json.dumps(listed)
            assert main(["keys", "audit", *data_dir]) == 0
            assert main(["keys", "revoke", listed[0]["label"], *data_dir]) == 0
            # key records are cached for 5 s by the server: the revocation shows once the cached record expires
            _wait_for(lambda: http.get("/v1/key", headers=bearer(key)).status_code == 401, "revocation")
            response = http.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key))
            assert response.json()["error"]["code"] == "api_key_revoked"
    finally:
        server.stop()
