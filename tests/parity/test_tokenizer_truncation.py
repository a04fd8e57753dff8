"""Our tokenizer (BPE only on the words that reach the context, a byte-bounded cache, n log n merges for long
words) gives exactly open_clip's ids, sot/eot and truncation included, for any text."""

from __future__ import annotations

import html
import random
import string

import open_clip
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clipserve.runtime.tokenizer import ClipTokenizer, merge_symbols

REFERENCE = open_clip.get_tokenizer("ViT-B-32")
OURS = ClipTokenizer(open_clip.get_tokenizer("ViT-B-32"), cache_bytes=64 * 1024)
# Every word through the heap merge, and a cache small enough to evict all the time.
HEAP_ONLY = ClipTokenizer(open_clip.get_tokenizer("ViT-B-32"), cache_bytes=2048, long_word_symbols=0)
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

EMOJI = "😀🐱👍🏽🇫🇷👩‍👩‍👧❤️✨"
CJK = "的一是不了人我在有他这中大来上国个到说们日本語の猫が好きです한국어고양이"
ENTITIES = [
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&#39;",
    "&#x263a;",
    "&amp;amp;",
    "&amp;lt;",
    "&nbsp;",
    "&eacute;",
    "&#10;",
]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2028", "\u3000", "\x0b", "\x0c", " \n\t "]
MOJIBAKE = ["Ã©", "â€™", "Ã¼", "â€œ", "Ã¶", "Ã¤", "ÃŸ", "Ã\xa0", "â€“"]
SPECIAL = ["<start_of_text>", "<end_of_text>", "<END_OF_TEXT>"]


def assert_same(tokenizer: ClipTokenizer, texts: list[str]) -> None:
    expected = REFERENCE(texts)
    got = tokenizer(texts)
    assert got.dtype == expected.dtype == torch.long
    assert torch.equal(got, expected), [t[:80] for t in texts]


def _word(rng: random.Random, alphabet: str, low: int = 1, high: int = 12) -> str:
    return "".join(rng.choices(alphabet, k=rng.randint(low, high)))


def _hostile_text(seed: int, length: int) -> str:
    """Random words from many scripts with entities, mojibake, emoji, specials and whitespace runs between."""
    rng = random.Random(seed)
    alphabets = [string.ascii_letters, string.digits + string.punctuation, CJK, EMOJI, "αβγΣσςДжЁё", "éèüßøñ"]
    parts: list[str] = []
    size = 0
    while size < length:
        kind = rng.random()
        if kind < 0.55:
            part = _word(rng, rng.choice(alphabets))
        elif kind < 0.65:
            part = rng.choice(ENTITIES)
        elif kind < 0.75:
            part = rng.choice(MOJIBAKE) + _word(rng, string.ascii_lowercase)
        elif kind < 0.78:
            part = rng.choice(SPECIAL)
        elif kind < 0.80:
            part = "<b>" + _word(rng, string.ascii_lowercase) + "</b>"
        else:
            part = rng.choice(SPACES)
        parts.append(part)
        size += len(part)
    return "".join(parts)[:length]


@pytest.mark.parametrize("tokenizer", [OURS, HEAP_ONLY], ids=["default", "heap-merge-only"])
@settings(SETTINGS)
@given(texts=st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=4))
@example(texts=["a photo of a cat."])
@example(texts=["Σ", "ΌΣΟΣ ΣΑΣ", "İstanbul ǅ ß ﬁ"])
@example(texts=["&amp;lt;b&amp;gt; &#38;#10; &lt;end_of_text&gt;"])
@example(texts=["\x00\x01 \u200b\ufeff", "\U0001f600" * 50])
def test_random_unicode_texts_match_open_clip(tokenizer: ClipTokenizer, texts: list[str]) -> None:
    assert_same(tokenizer, texts)


@pytest.mark.parametrize("tokenizer", [OURS, HEAP_ONLY], ids=["default", "heap-merge-only"])
@settings(SETTINGS, max_examples=40)
@given(seed=st.integers(0, 2**32), length=st.integers(1, 20_000))
def test_long_hostile_texts_match_open_clip(tokenizer: ClipTokenizer, seed: int, length: int) -> None:
    assert_same(tokenizer, [_hostile_text(seed, length)])


@settings(SETTINGS, max_examples=60)
@given(
    pieces=st.lists(
        st.sampled_from(ENTITIES + SPACES + MOJIBAKE + SPECIAL + [EMOJI, CJK, "cat", "CAT", "<p>", "a&b"]),
        min_size=1,
        max_size=200,
    )
)
def test_entities_mojibake_and_whitespace_runs_match_open_clip(pieces: list[str]) -> None:
    assert_same(
        OURS, ["".join(pieces), html.escape("".join(pieces)), "".join(pieces).encode().decode("latin-1")]
    )


@pytest.mark.parametrize("words", [72, 73, 74, 75, 76, 77, 78, 150])
@pytest.mark.parametrize("tail", ["", " hippopotamus", " 日本語の猫", " " + "x" * 300, "&amp;amp;"])
def test_texts_at_the_context_boundary_match_open_clip(words: int, tail: str) -> None:
    # "cat" is one token: `words` cats make sot + words + eot, so these sit on either side of 77.
    assert_same(OURS, ["cat " * words + tail, ("cat " * words).strip(), "🐱" * words + tail])


@pytest.mark.parametrize("length", [1, 2, 3, 65, 300, 2000])
@pytest.mark.parametrize(
    "alphabet", [string.ascii_lowercase, "ab", "a", "абвгд", CJK, EMOJI, string.punctuation], ids=repr
)
def test_long_words_match_open_clip(length: int, alphabet: str) -> None:
    rng = random.Random(length)
    word = "".join(rng.choices(alphabet, k=length))
    assert_same(OURS, [word, "the " + word, "cat " * 70 + word])


@settings(SETTINGS, max_examples=300)
@given(word=st.text(alphabet=st.sampled_from("aabbeinrst日本🐱é!'"), min_size=1, max_size=120))
def test_heap_merge_is_open_clips_merge_loop(word: str) -> None:
    reference = REFERENCE
    symbols = "".join(reference.byte_encoder[b] for b in word.encode("utf-8"))
    expected = reference.bpe(symbols).split(" ")
    assert merge_symbols([*symbols[:-1], symbols[-1] + "</w>"], reference.bpe_ranks) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a <b> tag\nthen &lt;b&gt; and &amp;amp; on the next line",  # "<" switches HTML unescaping off after it
        "&lt;b&gt; first\nthen a <b> tag\n&amp; last",
        "ΟΔΟΣ\nΣ\nΑΣ ΣΑΣ\n",  # final sigma at line ends
        "Ã©tÃ©\nâ€™s\r\n\n\nÃ¼ber " * 40,  # mojibake lines
        "line\n" * 100 + "&#10;&#10;" + "cat " * 80,
        "\n" * 50 + "cat",
        "x\n",
    ],
)
def test_multi_line_texts_match_open_clip(text: str) -> None:
    assert_same(OURS, [text, text * 30, text.replace("\n", "\r\n")])


def test_only_the_lines_that_reach_the_context_are_cleaned(monkeypatch: pytest.MonkeyPatch) -> None:
    import clipserve.runtime.tokenizer as module

    segments: list[str] = []
    real = module.fix_and_explain

    def counted(segment: str, config: object) -> object:
        segments.append(segment)
        return real(segment, config)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "fix_and_explain", counted)
    text = "Ã©tÃ© â€™s Ã¼ber\n" * 2_000  # 32,000 characters of mojibake lines, 4 tokens a line
    assert_same(OURS, [text])
    assert 15 <= len(segments) <= 25  # ~19 lines give 75 tokens; open_clip cleans all 2,000
