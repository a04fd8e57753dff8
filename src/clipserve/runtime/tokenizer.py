"""open_clip's CLIP tokenizer, with work bounded by what reaches the model and memory bounded by bytes.

open_clip's SimpleTokenizer runs BPE over every word of a text before it keeps the first 77 tokens, caches
every distinct word in a dict that never shrinks, and merges a long word in time quadratic in its length (a
4,000-letter word takes 0.6 s). This wrapper gives exactly the same ids (tests/parity/test_tokenizer_truncation.py
checks it against open_clip bit for bit) while:

- cleaning the text as open_clip's `_clean_lower` does (ftfy, html unescape twice, whitespace, lower case), but
  one ftfy segment (a line) at a time and only until the context is full: ftfy costs up to ~20 us a character
  (a 20,000-character text of short mojibake lines took 394 ms to clean, for the 77 tokens of its first lines);
  then taking words from open_clip's own regex only until the context is full;
- caching word -> ids in an LRU bounded by bytes, in place of open_clip's unbounded dict;
- merging words longer than `long_word_symbols` with a heap (n log n) that applies the merges in the same order
  as open_clip's loop: each pass joins every non-overlapping occurrence of the lowest-ranked pair, left to right.
"""

from __future__ import annotations

import heapq
import html
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from ftfy import TextFixerConfig, fix_and_explain
from open_clip.tokenizer import SimpleTokenizer, _clean_lower

_ENTRY_OVERHEAD = 120  # bytes an OrderedDict entry costs beside its key and value (node, hash slot)


class WordCache:
    """An LRU of word -> token ids, bounded by the bytes its keys and values hold. Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[tuple[int, ...], int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def entry_bytes(word: str, ids: tuple[int, ...]) -> int:
        # ids above 256 are separate int objects (28 bytes each) referenced from the tuple.
        return sys.getsizeof(word) + sys.getsizeof(ids) + 28 * len(ids) + _ENTRY_OVERHEAD

    def get(self, word: str) -> tuple[int, ...] | None:
        with self._lock:
            entry = self._entries.get(word)
            if entry is None:
                return None
            self._entries.move_to_end(word)
            return entry[0]

    def put(self, word: str, ids: tuple[int, ...]) -> None:
        size = self.entry_bytes(word, ids)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(word, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[word] = (ids, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted


class _SpecialTokensOnly(dict[str, str]):
    """open_clip's BPE cache reduced to its special tokens: `bpe` may read it but no longer grows it."""

    def __setitem__(self, key: str, value: str) -> None:
        pass


def merge_symbols(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """open_clip's BPE merge loop in n log n: passes by rank, each joining every non-overlapping occurrence of
    that pair from left to right (what `SimpleTokenizer.bpe` does by rebuilding the word each pass)."""
    n = len(symbols)
    sym: list[str | None] = list(symbols)
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap: list[tuple[int, int]] = []  # (rank, left position); stale entries are skipped when popped
    for i in range(n - 1):
        rank = ranks.get((symbols[i], symbols[i + 1]))
        if rank is not None:
            heap.append((rank, i))
    heapq.heapify(heap)

    def rank_at(i: int) -> int | None:
        j = nxt[i]
        left, right = sym[i], sym[j] if j >= 0 else None
        if left is None or right is None:
            return None
        return ranks.get((left, right))

    while heap:
        rank, first = heapq.heappop(heap)
        if rank_at(first) != rank:
            continue
        positions = [first]
        while heap and heap[0][0] == rank:
            positions.append(heapq.heappop(heap)[1])
        positions.sort()  # nodes keep their starting index, so index order is word order
        for i in positions:
            if rank_at(i) != rank:  # consumed by the previous (overlapping) merge of this pass
                continue
            j = nxt[i]
            sym[i] = f"{sym[i]}{sym[j]}"
            sym[j] = None
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prv[nxt[j]] = i
            for left in (prv[i], i):
                if left >= 0 and (new_rank := rank_at(left)) is not None:
                    heapq.heappush(heap, (new_rank, left))
    return [s for s in sym if s is not None]


class ClipTokenizer:
    """Callable like open_clip's tokenizer: list of texts -> [n, context_length] int64 ids, the same ids."""

    def __init__(self, inner: Any, *, cache_bytes: int, long_word_symbols: int = 64) -> None:
        self._inner = inner
        self.context_length: int = int(getattr(inner, "context_length", None) or 77)
        self.bounded = _is_plain_clip_tokenizer(inner)
        self.cache = WordCache(cache_bytes)
        self._long_word_symbols = long_word_symbols
        if self.bounded:
            tokenizer: SimpleTokenizer = inner
            tokenizer.cache = _SpecialTokensOnly(tokenizer.cache)
            self._byte_encoder: dict[int, str] = tokenizer.byte_encoder
            self._encoder: dict[str, int] = tokenizer.encoder
            self._ranks: dict[tuple[str, str], int] = tokenizer.bpe_ranks
            self._specials: dict[str, str] = dict(tokenizer.cache)

    def __call__(self, texts: list[str], context_length: int | None = None) -> torch.Tensor:
        context_length = context_length or self.context_length
        if not self.bounded:
            ids: torch.Tensor = self._inner(texts, context_length=context_length)
            return ids
        inner: SimpleTokenizer = self._inner
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [inner.sot_token_id, *self.encode_prefix(text, context_length - 2), inner.eot_token_id]
            result[row, : len(tokens)] = torch.tensor(tokens)
        return result

    def encode_prefix(self, text: str, limit: int) -> list[int]:
        """The first `limit` BPE ids of open_clip's `encode(text)`, BPE run only on the words they come from.

        open_clip truncates [sot] + encode(text) + [eot] to the context and puts eot last, which is the same as
        [sot] + encode(text)[:context - 2] + [eot]."""
        ids: list[int] = []
        for word in self._words(text):
            ids.extend(self._word_ids(word))
            if len(ids) >= limit:
                break
        return ids[:limit]

    def _words(self, text: str) -> Iterator[str]:
        pattern = self._inner.pat
        for cleaned in clean_words(text):
            for match in pattern.finditer(cleaned):
                yield "".join(self._byte_encoder[b] for b in match.group().encode("utf-8"))

    def _word_ids(self, word: str) -> tuple[int, ...]:
        cached = self.cache.get(word)
        if cached is not None:
            return cached
        if word in self._specials:
            return (self._encoder[self._specials[word]],)
        if len(word) > self._long_word_symbols:  # not cached: one such word would evict many short ones
            symbols = merge_symbols([*word[:-1], word[-1] + "</w>"], self._ranks)
            return tuple(self._encoder[s] for s in symbols)
        ids = tuple(self._encoder[s] for s in self._inner.bpe(word).split(" "))
        self.cache.put(word, ids)
        return ids


def clean_words(text: str) -> Iterator[str]:
    """The words of open_clip's `_clean_lower(text)` (what its regex then splits), cleaned as they are read.

    `_clean_lower` is `" ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split()).lower()`, and
    ftfy.fix_text fixes the text in independent segments (lines, each with its newline; or every
    `max_decode_length` characters), switching HTML unescaping off for the rest once a segment holds a "<".
    This runs the same loop, one segment at a time. It is exact because nothing crosses a segment's end: the
    newline ends every HTML entity and every word, `str.lower` looks across no whitespace (final sigma), and
    the tokenizer's regex matches no whitespace, so splitting each segment's words is splitting the whole's.
    A text longer than one forced segment is cleaned whole (there an entity could straddle the cut).
    """
    config = TextFixerConfig(explain=False)
    if len(text) > config.max_decode_length:
        yield from _clean_lower(text).split()
        return
    position = 0
    while position < len(text):
        end = text.find("\n", position) + 1 or len(text)
        segment = text[position:end]
        if config.unescape_html == "auto" and "<" in segment:
            config = config._replace(unescape_html=False)
        fixed, _ = fix_and_explain(segment, config)
        for word in html.unescape(html.unescape(fixed)).split():
            yield word.lower()
        position = end


def _is_plain_clip_tokenizer(tokenizer: Any) -> bool:
    """open_clip's BPE tokenizer with its default cleaning and plain truncation (what CLIP models use)."""
    return (
        type(tokenizer) is SimpleTokenizer
        and tokenizer.reduction_fn is None
        and getattr(tokenizer.clean_fn, "__name__", "") == "_clean_lower"
    )
