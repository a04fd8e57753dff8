"""Python clients, each as its docs say to point it at an OpenAI-compatible server (snippets in docs/clients.md)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.clients.conftest import MODEL, TEXTS, as_rows, server_embeddings
from tests.system.conftest import ServerProcess

pytestmark = pytest.mark.clients


def test_openai_sync_default_base64(clip_server: ServerProcess, image_uri: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{clip_server.base_url}/v1", api_key="unused")
    image_part = {"type": "image_url", "image_url": {"url": image_uri}}
    result = client.embeddings.create(model=MODEL, input=[*TEXTS, image_part])  # type: ignore[list-item]
    want = server_embeddings(clip_server, [*TEXTS, {"image": image_uri}])
    np.testing.assert_array_equal(as_rows([row.embedding for row in result.data]), want)
    assert result.usage.prompt_tokens > 0


@pytest.mark.anyio
async def test_openai_async_default_base64(clip_server: ServerProcess) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{clip_server.base_url}/v1", api_key="unused") as client:
        result = await client.embeddings.create(model=MODEL, input=TEXTS)
    np.testing.assert_array_equal(
        as_rows([row.embedding for row in result.data]), server_embeddings(clip_server, TEXTS)
    )


def test_langchain_openai(clip_server: ServerProcess) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=MODEL,
        base_url=f"{clip_server.base_url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,  # else it sends tiktoken ids, which CLIP cannot read
    )
    np.testing.assert_array_equal(
        as_rows(embeddings.embed_documents(TEXTS)), server_embeddings(clip_server, TEXTS)
    )
    # one text alone (a batch of one: float32 sums differ in the last bit between batch sizes)
    np.testing.assert_array_equal(
        as_rows(embeddings.embed_query(TEXTS[0])), server_embeddings(clip_server, TEXTS[:1])[0]
    )


def test_llama_index_openai_embedding(clip_server: ServerProcess) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding

    embed = OpenAIEmbedding(model_name=MODEL, api_base=f"{clip_server.base_url}/v1", api_key="unused")
    np.testing.assert_array_equal(
        as_rows(embed.get_text_embedding_batch(TEXTS)), server_embeddings(clip_server, TEXTS)
    )
    np.testing.assert_array_equal(
        as_rows(embed.get_query_embedding(TEXTS[1])), server_embeddings(clip_server, TEXTS[1:])[0]
    )


def test_llama_index_openai_like_embedding(clip_server: ServerProcess) -> None:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embed = OpenAILikeEmbedding(model_name=MODEL, api_base=f"{clip_server.base_url}/v1", api_key="unused")
    np.testing.assert_array_equal(
        as_rows(embed.get_text_embedding_batch(TEXTS)), server_embeddings(clip_server, TEXTS)
    )


def test_litellm_embedding_texts(clip_server: ServerProcess) -> None:
    import litellm

    result = litellm.embedding(
        model=f"openai/{MODEL}", input=TEXTS, api_base=f"{clip_server.base_url}/v1", api_key="unused"
    )
    np.testing.assert_array_equal(
        as_rows([row["embedding"] for row in result.data]), server_embeddings(clip_server, TEXTS)
    )


def test_litellm_embedding_image_data_uri(clip_server: ServerProcess, image_uri: str) -> None:
    """litellm's multimodal convention: an image is a bare data-URI string in `input`."""
    import litellm

    result = litellm.embedding(
        model=f"openai/{MODEL}", input=[TEXTS[0], image_uri], api_base=f"{clip_server.base_url}/v1",
        api_key="unused",
    )  # fmt: skip
    want = server_embeddings(clip_server, [TEXTS[0], {"image": image_uri}])
    np.testing.assert_array_equal(as_rows([row["embedding"] for row in result.data]), want)


def test_huggingface_zero_shot_image_classification(
    clip_server: ServerProcess,
    image_uri: str,
    tiny_runtime,  # type: ignore[no-untyped-def]
) -> None:
    from huggingface_hub import InferenceClient

    labels = ["cat", "dog", "rocket"]
    image = base64.b64decode(image_uri.split(",", 1)[1])
    client = InferenceClient(model=f"{clip_server.base_url}/v1/classify")
    answer = client.zero_shot_image_classification(image, candidate_labels=labels)
    # the scores from the server's own embeddings: softmax(logit_scale * cos) over the default HF template
    rows = server_embeddings(
        clip_server, [{"image": image_uri}, *[f"This is a photo of {x}." for x in labels]]
    )
    logits = tiny_runtime.logit_scale * (rows[1:].astype(np.float64) @ rows[0].astype(np.float64))
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-want)
    assert [item.label for item in answer] == [labels[i] for i in order]
    assert [item.score for item in answer] == pytest.approx(want[order].tolist(), abs=1e-6)


def test_huggingface_feature_extraction(clip_server: ServerProcess) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=clip_server.base_url)
    np.testing.assert_array_equal(
        as_rows(client.feature_extraction(TEXTS[0])), server_embeddings(clip_server, TEXTS[:1])
    )


def test_huggingface_sentence_similarity(clip_server: ServerProcess) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=clip_server.base_url)
    scores = client.sentence_similarity(TEXTS[0], other_sentences=[TEXTS[1], "a cat", TEXTS[0]])
    rows = server_embeddings(clip_server, [TEXTS[0], TEXTS[1], "a cat", TEXTS[0]]).astype(np.float64)
    assert scores == pytest.approx(np.minimum(rows[1:] @ rows[0], 1.0).tolist(), abs=1e-6)
