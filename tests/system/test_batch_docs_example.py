"""docs/batch.md's openai-client example, run as written against a served tiny model: its vectors are the ones
/v1/embeddings answers for the same inputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from tests.support import encode_image, gradient_image
from tests.system.conftest import ServerProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "batch.md"
GIVE_UP_S = 300


def example_code() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    assert len(blocks) == 1, f"docs/batch.md should hold exactly one python block, not {len(blocks)}"
    return str(blocks[0])


def test_the_documented_example_runs_and_matches_the_online_endpoint(
    tiny_server: ServerProcess, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        (photos / f"photo{seed}.jpg").write_bytes(encode_image(gradient_image(64, 48, seed=seed), "JPEG"))
    (tmp_path / "example.py").write_text(example_code())
    env = {**os.environ, "CLIPSERVE_URL": tiny_server.base_url, "CLIPSERVE_API_KEY": "unused"}
    run = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=GIVE_UP_S,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "completed" in run.stdout
    vectors = json.loads((tmp_path / "embeddings.json").read_text())
    # what the example sent: every photo, and the captions it names (read back from requests.jsonl)
    sent = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert {line["custom_id"] for line in sent} == set(vectors)
    assert {f"photos/photo{seed}.jpg" for seed in range(3)} <= set(vectors)
    with httpx.Client(base_url=tiny_server.base_url, timeout=GIVE_UP_S) as http:
        for line in sent:
            online = http.post("/v1/embeddings", json=line["body"])
            assert online.status_code == 200, online.text
            np.testing.assert_allclose(
                vectors[line["custom_id"]], online.json()["data"][0]["embedding"], atol=1e-5
            )
