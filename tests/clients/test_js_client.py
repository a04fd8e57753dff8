"""The official JS `openai` package under Node, installed from the npm registry (snippet in docs/clients.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.clients.conftest import MODEL, NODE, TEXTS, as_rows, server_embeddings
from tests.system.conftest import ServerProcess

pytestmark = pytest.mark.clients

SCRIPT = """
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.CLIPSERVE_URL + "/v1", apiKey: "unused" });
const result = await client.embeddings.create({
  model: process.env.MODEL,
  input: [...JSON.parse(process.env.TEXTS), { type: "image_url", image_url: { url: process.env.IMAGE } }],
});
console.log(JSON.stringify(result.data.map((row) => row.embedding)));
"""


def test_js_openai_default_base64(js_openai: Path, clip_server: ServerProcess, image_uri: str) -> None:
    script = js_openai / "embed.mjs"
    script.write_text(SCRIPT)
    env = {
        "CLIPSERVE_URL": clip_server.base_url,
        "MODEL": MODEL,
        "TEXTS": json.dumps(TEXTS),
        "IMAGE": image_uri,
    }
    done = subprocess.run(
        [NODE, str(script)], cwd=js_openai, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    want = server_embeddings(clip_server, [*TEXTS, {"image": image_uri}])
    np.testing.assert_array_equal(as_rows(json.loads(done.stdout)), want)
