"""huggingface_hub's InferenceClient, unchanged, against a real server over a socket: zero-shot image
classification (/v1/classify), feature extraction and sentence similarity (/, /embed, /similarity)."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient

from tests.support import encode_image, gradient_image
from tests.system.conftest import ServerProcess

LABELS = ["cat", "dog", "rocket"]


def test_zero_shot_image_classification_with_the_hf_client(tiny_server: ServerProcess) -> None:
    image = encode_image(gradient_image(), "PNG")
    client = InferenceClient(model=f"{tiny_server.base_url}/v1/classify")
    outputs = client.zero_shot_image_classification(image, candidate_labels=LABELS)
    assert sorted(o.label for o in outputs) == sorted(LABELS)
    scores = [o.score for o in outputs]
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(scores) - 1.0) < 1e-5
    # The same as the Jina shape with the transformers pipeline's default template.
    jina = httpx.post(
        f"{tiny_server.base_url}/v1/classify",
        json={
            "image": base64.b64encode(image).decode(),
            "labels": LABELS,
            "template": "This is a photo of {}.",
        },
        timeout=60,
    ).json()
    assert [(o.label, round(o.score, 6)) for o in outputs] == [
        (p["label"], round(p["score"], 6)) for p in jina["data"][0]["predictions"]
    ]


TEXTS = ["a photo of a cat", "a diagram of a rocket", "coffee"]


def _embeddings(base_url: str, inputs: list[str]) -> np.ndarray:
    body = httpx.post(f"{base_url}/v1/embeddings", json={"input": inputs}, timeout=60).json()
    return np.asarray([row["embedding"] for row in body["data"]], dtype=np.float32)


def test_feature_extraction_with_the_hf_client(tiny_server: ServerProcess) -> None:
    reference = _embeddings(tiny_server.base_url, TEXTS)
    # The two ways the client is pointed at a server: base_url (the server's root) or model=<URL>.
    for client in (
        InferenceClient(base_url=tiny_server.base_url),
        InferenceClient(model=f"{tiny_server.base_url}/embed"),
    ):
        np.testing.assert_array_equal(client.feature_extraction(TEXTS, normalize=True), reference)


def test_sentence_similarity_with_the_hf_client(tiny_server: ServerProcess) -> None:
    reference = _embeddings(tiny_server.base_url, TEXTS)
    expected = (reference.astype(np.float64) @ reference[0].astype(np.float64)).tolist()
    for client in (
        InferenceClient(base_url=tiny_server.base_url),
        InferenceClient(model=f"{tiny_server.base_url}/similarity"),
    ):
        scores = client.sentence_similarity(TEXTS[0], other_sentences=TEXTS)
        assert scores == pytest.approx(expected, abs=1e-6)
