"""The client compatibility matrix: real client libraries against one real server process (tiny model).

Every row compares what a client returns with the server's own /v1/embeddings answer for the same input,
fetched here with plain HTTP (float format), so a client that silently embeds the wrong thing fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import TINY_CONFIG, data_uri, encode_image, gradient_image
from tests.system.conftest import ServerProcess, start_server

# litellm fetches its model price map from GitHub at import unless told to use the copy it ships: offline that is
# three failing attempts with back-off on every import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "CLIP-ViT-B-32-laion2B-s34B-b79K"
TEXTS = ["a photo of a cat", "a dog on a sofa"]
NODE = "/usr/bin/node"
JS_OPENAI = "openai@^6"  # the official JS client, from the npm registry


@pytest.fixture(scope="session")
def clip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("clients-server"), "--weights", "random", "--architecture", str(TINY_CONFIG)
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def image_uri() -> str:
    """A real PNG as a data URI (every client can carry a string)."""
    return data_uri(encode_image(gradient_image(64, 48, seed=3)))


def server_embeddings(server: ServerProcess, items: list[Any]) -> np.ndarray:
    """The server's own answer for these input items, as float32 rows, in order."""
    response = httpx.post(
        f"{server.base_url}/v1/embeddings",
        json={"model": MODEL, "input": items, "encoding_format": "float"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    rows = sorted(response.json()["data"], key=lambda row: row["index"])
    return np.asarray([row["embedding"] for row in rows], dtype=np.float32)


def as_rows(vectors: Any) -> np.ndarray:
    return np.asarray(vectors, dtype=np.float32)


@pytest.fixture(scope="session")
def js_openai(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the official `openai` npm package installed from the registry."""
    npm = shutil.which("npm")
    assert npm is not None, "the clients group needs npm (and Node 20 at /usr/bin/node)"
    assert Path(NODE).exists(), "the clients group needs Node 20 at /usr/bin/node"
    folder = tmp_path_factory.mktemp("js-openai")
    (folder / "package.json").write_text('{"name": "clipserve-clients", "private": true, "type": "module"}')
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", JS_OPENAI],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder
