"""Prices in integer micro-dollars: exact for images, rounded up once per request for tokens."""

from __future__ import annotations

from decimal import Decimal

import pytest

from clipserve.service.inputs import ImageItem, TextItem
from clipserve.service.pricing import PriceTable, Usage, dollars_to_micros, text_token_bound, usage_bound

DEFAULT = PriceTable(Decimal("0.047"), Decimal("0.01"))


def test_default_prices_are_47_micro_dollars_per_image() -> None:
    assert DEFAULT.cost_micros(Usage(images=1)) == 47
    assert DEFAULT.cost_micros(Usage(images=1000)) == 47_000  # $0.047 per 1k


def test_tokens_round_up_to_the_next_micro_dollar_per_request() -> None:
    assert DEFAULT.cost_micros(Usage(tokens=1_000_000)) == 10_000  # $0.01 per 1M
    assert DEFAULT.cost_micros(Usage(tokens=1)) == 1
    assert DEFAULT.cost_micros(Usage(images=2, tokens=150)) == 94 + 2
    assert DEFAULT.cost_micros(Usage()) == 0


def test_cached_prompts_are_charged_or_not_as_configured() -> None:
    usage = Usage(tokens=300_000, cached_tokens=200_000)
    assert DEFAULT.cost_micros(usage) == 3_000
    free_cache = PriceTable(Decimal("0.047"), Decimal("0.01"), charge_cached_tokens=False)
    assert free_cache.cost_micros(usage) == 1_000


def test_dollars_convert_exactly_or_not_at_all() -> None:
    assert dollars_to_micros("5") == 5_000_000
    assert dollars_to_micros("0.000001") == 1
    assert dollars_to_micros(Decimal("0.1")) == 100_000
    with pytest.raises(ValueError, match="micro-dollars"):
        dollars_to_micros("0.0000001")


@pytest.mark.parametrize(
    "text",
    ["", "x", "a photo of a cat", "İSTANBUL ǅ ﬃ", "emoji 🐱🐶 and ünïcödé", "&amp;&lt;html&gt;", "日本語のテキスト",
     "word " * 100, "a\u0301" * 30],
)  # fmt: skip
def test_the_admission_bound_is_never_below_the_tokens_charged(text: str) -> None:
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    ids = tokenizer([text])[0]
    used = int((ids != 0).sum())
    assert text_token_bound(text) >= used


def test_usage_bound_counts_images_and_bounds_tokens() -> None:
    items = [ImageItem("data:x"), TextItem("a cat"), TextItem("word " * 100)]
    bound = usage_bound(items)
    assert bound.images == 1
    assert bound.tokens == text_token_bound("a cat") + 77
