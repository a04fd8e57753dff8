"""Hostile text against the tokenizer, the prompt cache and the template parser: work and memory stay bounded."""

from __future__ import annotations

import random
import string
from collections.abc import Callable

import numpy as np
import open_clip
import pytest

from clipserve.errors import InvalidRequestError
from clipserve.runtime.tokenizer import ClipTokenizer
from clipserve.service.prompt_cache import CachedPrompt, PromptCache
from clipserve.service.templates import prompts_for, template_set


def random_words(seed: int, chars: int) -> str:
    rng = random.Random(seed)
    words = []
    size = 0
    while size < chars:
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10)))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


class CountingBpe:
    """Counts the words open_clip's own BPE is asked to merge (and still merges them)."""

    def __init__(self, bpe: Callable[[str], str]) -> None:
        self._bpe = bpe
        self.calls = 0

    def __call__(self, word: str) -> str:
        self.calls += 1
        return self._bpe(word)


def test_bpe_runs_only_on_the_words_that_reach_the_context() -> None:
    inner = open_clip.get_tokenizer("ViT-B-32")
    counter = CountingBpe(inner.bpe)
    inner.bpe = counter
    tokenizer = ClipTokenizer(inner, cache_bytes=1 << 20)
    ids = tokenizer([random_words(seed, 20_000) for seed in range(20)])
    assert ids.shape == (20, 77)
    # ~3,000 words a text before; now at most the 75 that fill the context (each word is >= 1 token).
    assert counter.calls <= 20 * 75


def test_word_cache_is_bounded_by_bytes_and_open_clips_cache_stops_growing() -> None:
    inner = open_clip.get_tokenizer("ViT-B-32")
    specials = len(inner.cache)
    tokenizer = ClipTokenizer(inner, cache_bytes=64 * 1024)
    for seed in range(50):
        tokenizer([random_words(seed, 2_000)])
        assert tokenizer.cache.bytes <= 64 * 1024
    assert len(tokenizer.cache) > 100  # it does cache
    assert len(inner.cache) == specials  # open_clip's dict no longer keeps every word


def test_a_cache_entry_larger_than_the_cache_is_not_kept() -> None:
    tokenizer = ClipTokenizer(open_clip.get_tokenizer("ViT-B-32"), cache_bytes=300)
    tokenizer(["supercalifragilistic"])
    assert tokenizer.cache.bytes <= 300


def test_prompt_cache_is_bounded_by_bytes_of_prompts_and_vectors() -> None:
    cache = PromptCache(capacity=50_000, model_id="m", fingerprint="f", max_bytes=1024 * 1024)
    vector = np.zeros(512, np.float32)
    for i in range(1_000):
        cache.put(f"{i} " + "x" * 10_000, CachedPrompt(vector.copy(), 77))  # ~12 KiB an entry
        assert cache.bytes <= 1024 * 1024
    assert 50 <= len(cache) <= 90
    assert cache.get("999 " + "x" * 10_000) is not None  # the most recent stay
    assert cache.get("0 " + "x" * 10_000) is None  # the oldest went


def test_prompt_cache_still_honours_its_entry_count() -> None:
    cache = PromptCache(capacity=3, model_id="m", fingerprint="f", max_bytes=1 << 30)
    for i in range(10):
        cache.put(str(i), CachedPrompt(np.zeros(4, np.float32), 3))
    assert len(cache) == 3


@pytest.mark.parametrize(
    "template", ["{}{", "}{}", "{0.__class__}{}", "{!r}{}", "{{}}", "{0}", "{:>99}", "{}{}", "{a[0]}"]
)
def test_templates_other_than_text_around_one_bare_placeholder_are_refused(template: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        prompts_for(["cat", "dog"], template_set(template, param="parameters.hypothesis_template"))
    assert raised.value.param == "parameters.hypothesis_template"


@pytest.mark.parametrize(
    ("template", "prompt"),
    [
        ("a photo of a {}.", "a photo of a cat."),
        ("{{{}}}", "{cat}"),
        ("a {{photo}} of {}", "a {photo} of cat"),
        ("{}", "cat"),
        ("100% {}", "100% cat"),
    ],
)
def test_literal_braces_are_escaped_and_the_label_is_placed(template: str, prompt: str) -> None:
    assert prompts_for(["cat"], template_set(template)) == [prompt]


def test_a_label_with_braces_is_placed_verbatim() -> None:
    assert prompts_for(["{0.__class__} {}"], template_set("a photo of a {}.")) == [
        "a photo of a {0.__class__} {}."
    ]
