"""Tokenizing hostile texts: open_clip's tokenizer vs clipserve's (same ids), time and memory kept.

    python bench/tokenize_hostile.py [--batches 3]

Each tokenizer runs in its own process, on `--batches` batches of 100 texts of 20,000 characters of random words
(new words every batch, as an attacker would send), then on one 20,000-letter word and on classify prompt sets.
RSS growth is the resident memory the process keeps after the batches (the tokenizer's caches).
After the table, clipserve-only lines: one 20,000-letter Cyrillic word (40,000 byte symbols; open_clip's own
tokenizer would take minutes on it, so it is not run there), and, for 20,000-character texts of four shapes,
open_clip's text cleaning of the whole text against clipserve's whole tokenizer call (which cleans only the
lines that reach the context).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import string
import time
from typing import Any

WORD_LETTERS = string.ascii_lowercase  # one regex word; open_clip merges it pass by pass over the whole word


def random_words(rng: random.Random, chars: int) -> str:
    words, size = [], 0
    while size < chars:
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10)))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6


def run(which: str, batches: int, long_word_chars: int) -> dict[str, Any]:
    import open_clip

    from clipserve.runtime.tokenizer import ClipTokenizer

    tokenizer: Any = open_clip.get_tokenizer("ViT-B-32")
    if which == "clipserve":
        tokenizer = ClipTokenizer(tokenizer, cache_bytes=16 * 1024 * 1024)
    rng = random.Random(0)
    tokenizer(["warm up"])
    start_rss = rss_mb()
    seconds = []
    for _ in range(batches):
        texts = [random_words(rng, 20_000) for _ in range(100)]
        started = time.perf_counter()
        tokenizer(texts)
        seconds.append(time.perf_counter() - started)
        del texts
    out: dict[str, Any] = {"batch_s": seconds, "rss_growth_mb": rss_mb() - start_rss}
    word = "".join(rng.choices(WORD_LETTERS, k=long_word_chars))
    started = time.perf_counter()
    tokenizer([word])
    out["long_word_s"] = time.perf_counter() - started
    worst = [random_words(rng, 300) + " " + random_words(rng, 300) for _ in range(1000)]  # 1000 labels x 600
    normal = [f"a photo of a {label}." for label in ("cat", "dog", "rocket", "coffee cup", "bird", "car")]
    old_attack = [random_words(rng, 150_000) for _ in range(8)]  # 8 labels of 150 KB (refused now)
    if which == "clipserve":
        mixed = "".join(rng.choices(["é", "ж", "東", "😀", "ا", "ñ", " ", "a", "&amp;", "Ã©"], k=20_000))[
            :20_000
        ]
        cleaning = {  # 20,000 characters each; ftfy works line by line, and mojibake makes it work hard
            "ASCII words, one line": random_words(rng, 20_000),
            "mixed scripts, one line": mixed,
            "6,667 short ASCII lines": "ab\n" * 6_667,
            "6,667 short mojibake lines": "Ã©\n" * 6_667,
        }
        out["clean_s"] = {}
        for name, text in cleaning.items():
            # open_clip's clean_fn on the whole text (what open_clip runs) vs the cleaning clipserve's tokenizer
            # does for the words that reach the context (clean_words, read until 77 tokens)
            reference = open_clip.tokenizer._clean_lower
            reference(text)  # warm-up
            started = time.perf_counter()
            reference(text)
            whole = time.perf_counter() - started
            started = time.perf_counter()
            tokenizer([text])
            out["clean_s"][name] = (whole, time.perf_counter() - started)
        cyrillic = "".join(rng.choices("абвгдежзийклмнопрстуфхцчшщъыьэюя", k=long_word_chars))
        started = time.perf_counter()
        tokenizer([cyrillic])
        out["cyrillic_word_s"] = time.perf_counter() - started
    for name, prompts in (
        ("worst_classify_s", worst),
        ("normal_classify_s", normal),
        ("old_attack_s", old_attack),
    ):
        started = time.perf_counter()
        tokenizer(prompts)
        out[name] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--long-word-chars", type=int, default=20_000)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    results = {}
    for which in ("open_clip", "clipserve"):
        with context.Pool(1) as pool:
            results[which] = pool.apply(run, (which, args.batches, args.long_word_chars))
    ref, ours = results["open_clip"], results["clipserve"]
    print(f"{'measure':46} {'open_clip':>10} {'clipserve':>10} {'ratio':>7}")
    rows = [
        ("100 texts x 20,000 chars of new words (s, mean)", sum(ref["batch_s"]) / args.batches,
         sum(ours["batch_s"]) / args.batches),
        (f"RSS kept after {args.batches} such batches (MB)", ref["rss_growth_mb"], ours["rss_growth_mb"]),
        (f"one {args.long_word_chars:,}-letter word (s)", ref["long_word_s"], ours["long_word_s"]),
        ("1000 prompts of 600 chars: worst classify (s)", ref["worst_classify_s"], ours["worst_classify_s"]),
        ("6 short prompts: a normal classify (s)", ref["normal_classify_s"], ours["normal_classify_s"]),
        ("8 labels of 150 KB (now refused; s)", ref["old_attack_s"], ours["old_attack_s"]),
    ]  # fmt: skip
    for name, a, b in rows:
        ratio = f"{a / b:7.1f}" if b > 0 else "      -"
        print(f"{name:46} {a:10.3f} {b:10.3f} {ratio}")
    print(
        f"\nclipserve only: one {args.long_word_chars:,}-letter Cyrillic word {ours['cyrillic_word_s']:.3f} s"
    )
    print(
        "one 20,000-character text: open_clip's clean_fn on the whole text vs clipserve's whole tokenizer call "
        "(cleaning only the lines that reach 77 tokens):"
    )
    for name, (whole, ours_s) in ours["clean_s"].items():
        print(f"  {name:28} clean_fn {whole * 1000:8.1f} ms   clipserve tokenize {ours_s * 1000:8.1f} ms   "
              f"{whole / max(ours_s, 1e-9):7.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
