"""How long the event loop stalls while a large JSON body is parsed on a worker thread: one json.loads of the
whole body (as before) vs parse_json (the scan, then json.loads in pieces of ~32 KiB: api/json_pieces.py).

    python bench/json_stall.py [--rounds 5]

A ticker coroutine sleeps 1 ms at a time on the event loop and records how late each wake-up is; meanwhile a
worker thread parses the body. The worst lateness is how long a request arriving then would wait for the loop.
Bodies: a collection add of 256 items with 512-d vectors (2.7 MB, the largest add), and the most numbers the
default limits let through (an embeddings input of 480,000 token ids in 2,400 lists). Prints the worst stall of
each way (median over rounds), the ratio, and the parse time of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from clipserve.api.json_limits import JsonLimits, parse_json
from clipserve.config import Settings


async def worst_stall(parse: Callable[[], Any]) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    done = False
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await loop.run_in_executor(None, parse)
    took = time.perf_counter() - started
    done = True
    await task
    return worst * 1000, took * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings()
    limits = JsonLimits(
        settings.max_json_depth, settings.max_json_keys, settings.max_json_strings, settings.max_json_values
    )
    rng = random.Random(0)
    bodies = {
        "add, 256 x 512-d vectors": json.dumps(
            {
                "items": [
                    {"id": f"i{i}", "vector": [rng.uniform(-1, 1) for _ in range(512)]} for i in range(256)
                ]
            }
        ).encode(),
        "480,000 token ids": json.dumps(
            {"input": [[rng.randrange(49_000) for _ in range(200)] for _ in range(2_400)]}
        ).encode(),
    }
    print(
        f"{'body':<26} {'MB':>5} {'json.loads: stall':>18} {'parse':>7} {'in pieces: stall':>17} {'parse':>7} {'stall ratio':>12}"
    )
    for name, body in bodies.items():
        whole = [asyncio.run(worst_stall(lambda b=body: json.loads(b))) for _ in range(args.rounds)]
        pieces = [asyncio.run(worst_stall(lambda b=body: parse_json(b, limits))) for _ in range(args.rounds)]
        w_stall, w_took = statistics.median(s for s, _ in whole), statistics.median(t for _, t in whole)
        p_stall, p_took = statistics.median(s for s, _ in pieces), statistics.median(t for _, t in pieces)
        print(f"{name:<26} {len(body) / 1e6:>5.1f} {w_stall:>15.1f} ms {w_took:>4.0f} ms {p_stall:>14.1f} ms "
              f"{p_took:>4.0f} ms {w_stall / max(p_stall, 1e-3):>11.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
