"""Prices and cost: integer micro-dollars, computed with Decimal, rounded up once per request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from clipserve.service.inputs import ImageItem, InputItem, TextItem

MICROS_PER_DOLLAR = 1_000_000
CONTEXT_LENGTH = 77


def text_token_bound(text: str) -> int:
    """At least the tokens the text encodes to (BPE gives at most one token per UTF-8 byte; x2 covers case
    folding that grows a character), plus start and end, capped by the context."""
    return min(CONTEXT_LENGTH, 2 * len(text.encode("utf-8")) + 2)


def usage_bound(items: Sequence[InputItem]) -> Usage:
    """The most a list of items can cost, known before any work is done."""
    return Usage(
        images=sum(isinstance(item, ImageItem) for item in items),
        tokens=sum(text_token_bound(item.text) for item in items if isinstance(item, TextItem)),
    )


def dollars_to_micros(dollars: Decimal | str | int) -> int:
    """Exact conversion; amounts finer than a micro-dollar are refused rather than rounded silently."""
    value = Decimal(dollars) * MICROS_PER_DOLLAR
    if value != value.to_integral_value():
        raise ValueError(f"{dollars} dollars is not a whole number of micro-dollars")
    return int(value)


def micros_to_dollars(micros: int) -> Decimal:
    return Decimal(micros) / MICROS_PER_DOLLAR


@dataclass(frozen=True)
class Usage:
    """What one request encoded: the basis of its price."""

    images: int = 0
    tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prompt cache (already counted in tokens)


@dataclass(frozen=True)
class PriceTable:
    per_1k_images: Decimal  # dollars
    per_1m_tokens: Decimal  # dollars
    charge_cached_tokens: bool = True

    def billable_tokens(self, usage: Usage) -> int:
        return usage.tokens if self.charge_cached_tokens else usage.tokens - usage.cached_tokens

    def cost_micros(self, usage: Usage) -> int:
        """The request's price, rounded up to the next micro-dollar (at most $1 per million requests)."""
        exact = (
            Decimal(usage.images) * self.per_1k_images * MICROS_PER_DOLLAR / 1000
            + Decimal(self.billable_tokens(usage)) * self.per_1m_tokens
        )
        return int(exact.to_integral_value(rounding=ROUND_CEILING))
