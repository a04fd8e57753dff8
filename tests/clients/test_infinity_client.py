"""infinity-client (Infinity's official Python client) against the real server.

It pins httpx<0.28, which the project's own environment does not (openai and the server use 0.28), so it runs in
a virtual environment of its own, made by this test from the package registry, and talks to the server from a
small script whose JSON output the test checks against the server's own /v1/embeddings numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from tests.clients.conftest import TEXTS, server_embeddings
from tests.system.conftest import ServerProcess

INFINITY_CLIENT = "infinity_client>=0.0.70,<0.1"

SCRIPT = r"""
import json, sys
from infinity_client import Client
from infinity_client.api.default import embeddings, models, rerank
from infinity_client.models import OpenAIEmbeddingInputImage, OpenAIEmbeddingInputText, RerankInput

base_url, texts, image = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
client = Client(base_url=base_url, timeout=60)
out = {}
text = embeddings.sync(client=client, body=OpenAIEmbeddingInputText(input_=texts))
out["texts"] = [row.embedding for row in sorted(text.data, key=lambda row: row.index)]
picture = embeddings.sync(client=client, body=OpenAIEmbeddingInputImage(input_=[image]))
out["image"] = [row.embedding for row in picture.data]
ranked = rerank.sync(client=client, body=RerankInput(query=texts[0], documents=texts, return_documents=True))
out["rerank"] = [[r.index, r.relevance_score, r.document] for r in ranked.results]
listed = models.sync(client=client)
out["models"] = [m.id for m in listed.data]
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def infinity_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with infinity-client installed (from the package registry), apart from the project's."""
    home = tmp_path_factory.mktemp("infinity-client")
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", INFINITY_CLIENT],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return python


def test_infinity_client_embeds_texts_and_images_and_reranks(
    clip_server: ServerProcess, image_uri: str, infinity_python: Path
) -> None:
    done = subprocess.run(
        [str(infinity_python), "-c", SCRIPT, clip_server.base_url, json.dumps(TEXTS), image_uri],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    # the client sends dimensions: 0, model "default/not-specified", and modality "image" with bare strings
    np.testing.assert_array_equal(np.asarray(out["texts"], np.float32), server_embeddings(clip_server, TEXTS))
    np.testing.assert_array_equal(
        np.asarray(out["image"], np.float32), server_embeddings(clip_server, [{"image": image_uri}])
    )
    rows = server_embeddings(clip_server, TEXTS).astype(np.float64)
    cosines = np.minimum(rows @ rows[0], 1.0)
    order = np.argsort(-cosines)
    assert [r[0] for r in out["rerank"]] == order.tolist()
    assert [r[1] for r in out["rerank"]] == pytest.approx(cosines[order].tolist(), abs=1e-6)
    assert [r[2] for r in out["rerank"]] == [TEXTS[i] for i in order]  # Infinity's plain-string documents
    assert out["models"]
    assert sys.version_info >= (3, 11)
