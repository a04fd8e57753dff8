"""Collections: add throughput and search latency of the embedded store, against brute-force search.

    python bench/search.py [--sizes 10000,100000,1000000] [--queries 200]

1. Search: synthetic unit vectors loaded into the in-memory index the server uses: clustered ones (the
   neighbourhood structure real embeddings have) and uniform random ones (no structure: the worst case for
   any ANN index); queries are held-out vectors of the same kind. Per size: p50/p99 latency of the server's
   path (exact up to --exact-max, IVF beyond), of a plain NumPy brute-force scan (the reference), and
   recall@10 of the server's results against the brute-force top 10.
2. Adds through the HTTP API (in-process app, embedded store on SQLite, durable commits): items/s with
   precomputed vectors (embedding excluded), and with texts and images embedded by a full-size ViT-B-32
   (embedding included), next to open_clip's own encode rate for the same inputs and batches (the
   reference). Both sides are warm: one untimed add (into another collection) and one untimed reference
   batch run first, so neither side's rate includes first-call costs. The reference runs before and after
   the adds (both printed); the ratio uses their mean.
3. Loading a collection from the database (what a restart pays), at the largest SQL-backed size.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import open_clip
import torch
from PIL import Image

from clipserve.api.app import create_app
from clipserve.config import Settings
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from clipserve.store.database import Database
from clipserve.vectors.base import StoredItem
from clipserve.vectors.embedded import EmbeddedVectorStore
from clipserve.vectors.memory_index import AnnSettings, MemoryIndex
from common import cpu_description, photo_paths, timed, write_random_vit_b32


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.empty((n, 512), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), 512)).astype(np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def clustered_rows(rng: np.random.Generator, n: int, clusters: int = 2000) -> np.ndarray:
    """Unit vectors around `clusters` random centres (cosine to their centre about 0.7): the neighbourhood
    structure real embeddings have and uniform random vectors lack."""
    centres = unit_rows(rng, clusters)
    out = np.empty((n, 512), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(0, clusters, m)] + rng.standard_normal((m, 512)).astype(
            np.float32
        ) / np.sqrt(512)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000


def bench_search(sizes: list[int], queries: int, exact_max: int, kinds: list[str], nprobe: float) -> None:
    print(
        f"\n## search (exact up to {exact_max:,} items, IVF beyond); queries: held-out vectors of the same kind"
    )
    header = ["items", "data", "path", "p50 ms", "p99 ms", "brute p50", "speed-up", "recall@10", "build s"]
    print(" ".join(f"{h:>10}" for h in header))
    rng = np.random.default_rng(0)
    for n, kind in [(n, kind) for n in sizes for kind in kinds]:
        make = clustered_rows if kind == "clustered" else unit_rows
        both = make(rng, n + queries)
        data, held_out = both[:n], both[n:]
        started = time.perf_counter()
        index = MemoryIndex(AnnSettings(exact_max_items=exact_max, nprobe_fraction=nprobe))
        ids = [str(i) for i in range(n)]
        for start in range(0, n, 100_000):
            index.upsert(
                ids[start : start + 100_000],
                data[start : start + 100_000],
                [{}] * min(100_000, n - start),
                maintain=False,
            )
        index.maintain()
        build_s = time.perf_counter() - started
        ours, brute, recalls = [], [], []
        for q in held_out:
            t0 = time.perf_counter()
            found = index.search(q, 10, None)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            scores = data @ q
            top = np.argpartition(-scores, 10)[:10]
            brute.append(time.perf_counter() - t0)
            recalls.append(len({r for r, _ in found} & set(top.tolist())) / 10)
        p50, p99 = percentiles(ours)
        b50, _ = percentiles(brute)
        path = "ivf" if index.uses_ann else "exact"
        row = [f"{n:,}", kind, path, f"{p50:.2f}", f"{p99:.2f}", f"{b50:.2f}", f"{b50 / p50:.1f}x",
               f"{statistics.mean(recalls):.3f}", f"{build_s:.1f}"]  # fmt: skip
        print(" ".join(f"{cell:>10}" for cell in row))
        del index, data, both


async def _add_rate(app: Any, batches: list[list[dict[str, Any]]]) -> float:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600
        ) as client,
    ):
        for _ in range(3000):
            if (await client.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        for name in ("warm-up", "bench"):
            await client.post("/v1/collections", json={"name": name})
        warm = await client.post("/v1/collections/warm-up/items", json={"items": batches[0]})
        assert warm.status_code == 200, warm.text
        started = time.perf_counter()
        items = 0
        for batch in batches:
            response = await client.post("/v1/collections/bench/items", json={"items": batch})
            assert response.status_code == 200, response.text
            assert not response.json()["errors"], response.text
            items += len(batch)
        return items / (time.perf_counter() - started)


def bench_adds(root: Path, vectors: int) -> None:
    print("\n## adds through the API (embedded store, SQLite, durable commits)")
    checkpoint = write_random_vit_b32(root / "vit-b-32.safetensors")
    runtime = ClipRuntime.load(RuntimeSpec(weights=str(checkpoint), device="cpu"))
    rng = np.random.default_rng(1)
    data = unit_rows(rng, vectors)
    vector_batches = [[{"vector": v.tolist(), "metadata": {"n": i}} for i, v in enumerate(data[s : s + 256], s)]
                      for s in range(0, vectors, 256)]  # fmt: skip
    texts = [f"a photo of a {word} number {i}" for i, word in enumerate(["cat", "dog", "car", "tree"] * 64)]
    text_batches = [[{"text": t} for t in texts[s : s + 64]] for s in range(0, len(texts), 64)]
    photos = [p.read_bytes() for p in photo_paths()]
    uris = [f"data:image/png;base64,{base64.b64encode(photos[i % len(photos)]).decode()}" for i in range(32)]
    image_batches = [[{"image": u} for u in uris[s : s + 16]] for s in range(0, len(uris), 16)]

    def settings(name: str) -> Settings:
        return Settings(
            data_dir=root / name,
            weights=str(checkpoint),
            batch_wait_ms=2,
            max_collection_items_per_request=256,
        )

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")

    def encode_texts() -> None:
        for s in range(0, len(texts), 64):
            model.encode_text(tokenizer(texts[s : s + 64]))

    def encode_images() -> None:  # the same 16-image batches as the adds, decode and preprocess included
        for s in range(0, len(uris), 16):
            images = [
                Image.open(io.BytesIO(photos[i % len(photos)])).convert("RGB") for i in range(s, s + 16)
            ]
            model.encode_image(torch.stack([preprocess(image) for image in images]))

    def reference() -> tuple[float, float]:
        with torch.no_grad():  # timed(): one untimed warm-up call first
            return len(texts) / timed(encode_texts, 1), len(uris) / timed(encode_images, 1)

    # The reference runs before and after the adds and the ratio uses the mean of the two, so a change in the
    # machine's load between the two sides shows as a spread instead of skewing the ratio unseen.
    ref_before = reference()
    vector_rate = asyncio.run(_add_rate(create_app(settings("v"), runtime), vector_batches))
    text_rate = asyncio.run(_add_rate(create_app(settings("t"), runtime), text_batches))
    image_rate = asyncio.run(_add_rate(create_app(settings("i"), runtime), image_batches))
    ref_after = reference()
    ref_text = (ref_before[0] + ref_after[0]) / 2
    ref_image = (ref_before[1] + ref_after[1]) / 2
    print(
        f"reference before / after the adds: texts {ref_before[0]:.1f} / {ref_after[0]:.1f} per s, "
        f"photos {ref_before[1]:.1f} / {ref_after[1]:.1f} per s"
    )
    print(f"{'items':<36} {'clipserve items/s':>18} {'open_clip encode/s':>19} {'ratio':>7}")
    print(f"{'precomputed vectors (no embedding)':<36} {vector_rate:>18.0f} {'-':>19} {'-':>7}")
    print(
        f"{'short texts (embedded)':<36} {text_rate:>18.1f} {ref_text:>19.1f} {text_rate / ref_text:>6.2f}x"
    )
    print(f"{'photos (embedded)':<36} {image_rate:>18.1f} {ref_image:>19.1f} {image_rate / ref_image:>6.2f}x")


def bench_load(root: Path, n: int) -> None:
    print(f"\n## a restart: loading {n:,} items from the database")
    database = Database(f"sqlite:///{root / 'load.db'}")
    database.migrate()
    store = EmbeddedVectorStore(database)
    store.create_collection("c_load")
    data = unit_rows(np.random.default_rng(2), n)
    started = time.perf_counter()
    for s in range(0, n, 5000):
        store.upsert("c_load", [StoredItem(str(i), data[i], {"n": i}) for i in range(s, min(n, s + 5000))])
    write_s = time.perf_counter() - started
    fresh = EmbeddedVectorStore(database)
    started = time.perf_counter()
    fresh.search("c_load", data[0], 10)
    load_s = time.perf_counter() - started
    print(
        f"write {n / write_s:,.0f} items/s (store level, 5000 per transaction); load + first search {load_s:.1f} s"
    )
    database.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--data", default="clustered,uniform", help="clustered (realistic) and/or uniform (worst case)"
    )
    parser.add_argument("--skip-adds", action="store_true")
    parser.add_argument("--nprobe-fraction", type=float, default=AnnSettings().nprobe_fraction)
    parser.add_argument("--exact-max", type=int, default=100_000)
    parser.add_argument("--add-vectors", type=int, default=5120)
    parser.add_argument("--load-items", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"CPU: {cpu_description()}")
    bench_search(
        [int(s) for s in args.sizes.split(",")],
        args.queries,
        args.exact_max,
        args.data.split(","),
        args.nprobe_fraction,
    )
    if args.skip_adds:
        return
    with tempfile.TemporaryDirectory() as tmp:
        bench_adds(Path(tmp), args.add_vectors)
        bench_load(Path(tmp), args.load_items)


if __name__ == "__main__":
    main()
