"""Hostile classify requests and hostile texts through the real runtime: 400s naming the field, bounded work."""

from __future__ import annotations

import base64
import concurrent.futures
import gc
import random
import string
import tracemalloc
from pathlib import Path

import pytest

from tests.support import encode_image, gradient_image, running_app

IMAGE = base64.b64encode(encode_image(gradient_image(seed=0), "PNG")).decode()
LABELS = ["cat", "dog", "rocket"]
BAD_TEMPLATES = ["{}{", "}{}", "{0.__class__}{}", "{!r}{}", "{{}}", "{0}", "{:>99}", "{}{}"]


@pytest.mark.anyio
@pytest.mark.parametrize("template", BAD_TEMPLATES)
async def test_bad_templates_are_400s_naming_the_field_in_both_shapes(
    tiny_runtime, tmp_path: Path, template: str
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        jina = await client.post(
            "/v1/classify", json={"image": IMAGE, "labels": LABELS, "template": template}
        )
        hf = await client.post(
            "/v1/classify",
            json={
                "inputs": IMAGE,
                "parameters": {"candidate_labels": LABELS, "hypothesis_template": template},
            },
        )
    assert jina.status_code == 400, jina.text
    assert jina.json()["error"]["param"] == "template"
    assert hf.status_code == 400, hf.text
    assert hf.json()["error"]["param"] == "parameters.hypothesis_template"


@pytest.mark.anyio
async def test_literal_braces_in_a_template_keep_the_label(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        braces = await client.post(
            "/v1/classify", json={"image": IMAGE, "labels": LABELS, "template": "a {{photo}} of a {}."}
        )
    assert braces.status_code == 200, braces.text
    scores = [p["score"] for p in braces.json()["data"][0]["predictions"]]
    assert len(set(scores)) == len(LABELS)  # the label reached the prompt: labels score differently


@pytest.mark.anyio
async def test_labels_and_templates_over_the_length_limit_are_400s(tiny_runtime, tmp_path: Path) -> None:
    huge = "cat " * 37_500  # 150 KB: 15 s of tokenizing for 8 of them before the limit
    async with running_app(tiny_runtime, tmp_path, max_label_chars=300) as (client, _):
        at_limit = await client.post("/v1/classify", json={"image": IMAGE, "labels": ["dog", "c" * 300]})
        label = await client.post("/v1/classify", json={"image": IMAGE, "labels": ["dog", huge]})
        template = await client.post(
            "/v1/classify", json={"image": IMAGE, "labels": LABELS, "template": "x" * 300 + " {}"}
        )
        hf_label = await client.post(
            "/v1/classify", json={"inputs": IMAGE, "parameters": {"candidate_labels": f"dog, {huge}"}}
        )
        hf_template = await client.post(
            "/v1/classify",
            json={
                "inputs": IMAGE,
                "parameters": {"candidate_labels": LABELS, "hypothesis_template": huge + "{}"},
            },
        )
    assert at_limit.status_code == 200, at_limit.text
    for response, param in [
        (label, "labels[1]"),
        (template, "template"),
        (hf_label, "parameters.candidate_labels[1]"),
        (hf_template, "parameters.hypothesis_template"),
    ]:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param
        assert "limit is 300" in error["message"]


def _random_words(rng: random.Random, chars: int) -> str:
    words = []
    size = 0
    while size < chars:
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10)))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


def test_tokenizing_long_texts_of_new_words_keeps_little_memory(tiny_runtime) -> None:
    rng = random.Random(10)
    texts = [_random_words(rng, 20_000) for _ in range(100)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tokenized = tiny_runtime.tokenize(texts)
        del tokenized
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # open_clip's tokenizer kept every new word for good (~60 MB for such a batch); only the words that reach
    # the context are merged now, and their cache is bounded by bytes.
    assert kept < 8 * 1024 * 1024, kept


def test_one_maximal_word_tokenizes_without_hanging(tiny_runtime) -> None:
    # 20,000 random letters are one regex word: open_clip's merge loop rebuilds the word once per merged pair
    # (41 s here); the heap merge takes well under a second. The timeout is generous on purpose.
    word = "".join(random.Random(3).choices(string.ascii_lowercase, k=20_000))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(tiny_runtime.tokenize, [word])
        counts = future.result(timeout=15).token_counts
    assert counts == [77]
