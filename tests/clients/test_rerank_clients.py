"""litellm's rerank providers, each posting to the path and shape its own convention uses."""

from __future__ import annotations

import numpy as np
import pytest

from tests.clients.conftest import MODEL, server_embeddings
from tests.system.conftest import ServerProcess

pytestmark = pytest.mark.clients

QUERY = "a cat"
DOCUMENTS = ["a dog on a sofa", "a cat", "a photo of a cat", "a rocket"]


VLLM_DOCUMENT = pytest.mark.xfail(
    strict=True,
    reason="/rerank answers Infinity's plain-string document; litellm's hosted_vllm/ reads vLLM's "
    "{'text': ...} and crashes ('str' object has no attribute 'get')",
)


@pytest.mark.parametrize(
    ("provider", "return_documents"),
    [
        ("jina_ai", True),
        ("cohere", True),
        ("infinity", True),
        ("hosted_vllm", False),
        pytest.param("hosted_vllm", True, marks=VLLM_DOCUMENT),
    ],
)
def test_litellm_rerank(clip_server: ServerProcess, provider: str, return_documents: bool) -> None:
    import litellm

    result = litellm.rerank(
        model=f"{provider}/{MODEL}", query=QUERY, documents=DOCUMENTS, top_n=3,
        return_documents=return_documents, api_base=clip_server.base_url, api_key="unused",
    )  # fmt: skip
    # the scores are the cosines of the server's own embeddings, never above 1 ("a cat" against itself)
    rows = server_embeddings(clip_server, [QUERY, *DOCUMENTS]).astype(np.float64)
    cosines = np.minimum(rows[1:] @ rows[0], 1.0)
    order = np.argsort(-cosines)[:3]
    got = result.results
    assert [r["index"] for r in got] == order.tolist()
    assert [r["relevance_score"] for r in got] == pytest.approx(cosines[order].tolist(), abs=1e-6)
    assert got[0]["relevance_score"] <= 1.0
    if return_documents:
        assert [r["document"]["text"] for r in got] == [DOCUMENTS[i] for i in order]
    else:
        assert all(r.get("document") is None for r in got)
