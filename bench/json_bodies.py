"""What parsing, checking and validating a request body costs, against a plain json.loads of the same bytes.

    python bench/json_bodies.py [--rounds 20]

Bodies (docs/security.md, "Request bodies" and "Protocol edge"):
  16 KiB of texts          {"input": [short prompts...]} at json_inline_parse_bytes (parsed on the event loop)
  64 KiB of texts          the same shape, 64 KiB
  64 KiB of tiny arrays    {"input": "a cat", "x": [[], [], ...]}: ~22,000 empty arrays, the worst shape
                           for the scan and the lone-surrogate walk
For each: the median ms of json.loads (the reference), of api/json_limits.parse_json (the limit scan + parse),
of RequestModel's lone-surrogate walk alone, and of the whole parse + validation as a request gets it
(api/bodies._parse_and_validate with EmbeddingRequest), and the whole path's ratio to json.loads.
Then the blank-text check (service/text_checks.is_blank) on 2048 texts of 19,999 spaces + "x".
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from clipserve.api.bodies import _parse_and_validate
from clipserve.api.json_limits import JsonBodyParser, parse_json
from clipserve.api.protocol import EmbeddingRequest
from clipserve.config import Settings
from clipserve.service.text_checks import is_blank, reject_lone_surrogates
from common import cpu_description


def texts_body(size: int) -> bytes:
    texts, total = [], 20
    while total < size - 40:
        texts.append(f"a photo of a cat, number {len(texts)}")
        total += len(texts[-1]) + 4
    return json.dumps({"input": texts}).encode()


def arrays_body(size: int) -> bytes:
    count = (size - 40) // 3
    return ('{"input": "a cat", "x": [' + ",".join(["[]"] * count) + "]}").encode()


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    body_parser = JsonBodyParser.from_settings(Settings())
    bodies = {
        "16 KiB of texts": texts_body(16 * 1024),
        "64 KiB of texts": texts_body(64 * 1024),
        "64 KiB of tiny arrays": arrays_body(64 * 1024),
    }
    print(f"# {cpu_description()}; median of {args.rounds} after one warm-up")
    print(
        f"{'body':24} {'bytes':>7} {'json.loads':>11} {'parse_json':>11} {'surrogate walk':>15} "
        f"{'parse+validate':>15} {'vs json.loads':>14}"
    )
    for name, body in bodies.items():
        parsed = json.loads(body)
        reference = median_ms(lambda b=body: json.loads(b), args.rounds)
        scan = median_ms(lambda b=body: parse_json(b, body_parser.limits), args.rounds)
        walk = median_ms(lambda p=parsed: reject_lone_surrogates(p), args.rounds)
        whole = median_ms(lambda b=body: _parse_and_validate([b], EmbeddingRequest, body_parser), args.rounds)
        print(
            f"{name:24} {len(body):>7,} {reference:>8.2f} ms {scan:>8.2f} ms {walk:>12.2f} ms "
            f"{whole:>12.2f} ms {whole / reference:>13.1f}x"
        )
    blanks = [" " * 19_999 + "x" for _ in range(2048)]
    blank_ms = median_ms(lambda: [is_blank(t) for t in blanks], max(3, args.rounds // 4))
    print(f"\nis_blank on 2048 texts of 19,999 spaces + 'x': {blank_ms:.0f} ms")
    body_parser.close()


if __name__ == "__main__":
    main()
