"""`clipserve keys ...` on the data dir of a running server: the key it prints works at once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from clipserve.cli import main
from tests.support import TINY_CONFIG, bearer
from tests.system.conftest import start_server


def test_keys_commands_work_beside_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server(tmp_path, "--weights", "random", "--architecture", str(TINY_CONFIG))
    data_dir = ["--data-dir", str(tmp_path)]
    try:
        assert main(["keys", "create", "--name", "acme", "--credit", "0.5", *data_dir]) == 0
        key = capsys.readouterr().out.strip()
        assert key.startswith("sk-clip-")
        time.sleep(2.1)  # the server notices its first key within 2 s and turns authentication on
        with httpx.Client(base_url=server.base_url) as http:
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
            time.sleep(5.1)  # key records are cached for 5 s by the server
            response = http.post("/v1/embeddings", json={"input": "a"}, headers=bearer(key))
            assert response.json()["error"]["code"] == "api_key_revoked"
    finally:
        server.stop()
