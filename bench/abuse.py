"""Another account's latency while one account attacks the server, per attack class, against a quiet server.

    python bench/abuse.py [--tiny] [--seconds 30] [--classes aspect,json-body,...] [--json out.json]

A real server process (auth on, default limits, seeded random ViT-B-32 unless --tiny) serves two accounts. The
victim sends small requests one at a time (a short text, a small image inline, a small image by URL) and
records each latency; the attacker, in its own process at the lowest CPU priority (on a real deployment its
client runs elsewhere), runs one attack class at full speed for the same time. The server's RSS is sampled every 50 ms. For each
class the script prints the victim's p50/p99, their ratio to the quiet run, the server's peak RSS over its RSS
when the phase began and in all, and what the attacker's requests got (status codes). The goal (docs/security.md): the victim's
p99 at most 2x its quiet p99, and the peak RSS within the bound stated there, for every class.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from PIL import Image

from common import cpu_description, free_port, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "clipserve-tiny.json"
PHASES = (
    "quiet",
    "aspect",
    "json-body",
    "long-texts",
    "slow-urls",
    "tiny-images",
    "slowloris",
    "free-requests",
)


# ---------- payloads ----------


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def random_words(chars: int, rng: random.Random) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 12)))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


# ---------- the image host (fast and slow URLs) ----------


def run_image_host(port: int) -> None:
    from aiohttp import web

    small = png_bytes(64, 64, seed=1)

    async def fast(_: web.Request) -> web.Response:
        return web.Response(body=small, content_type="image/png")

    async def slow(_: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(_)
        try:
            for byte in small[:200]:  # trickle: one byte every 50 ms, for 10 s
                await response.write(bytes([byte]))
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass  # the server gave up on the URL (its timeout, or the request was refused): as meant
        return response

    app = web.Application()
    app.router.add_get("/fast.png", fast)
    app.router.add_get("/slow/{n}.png", slow)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)


# ---------- the attacker (its own process) ----------


Attack = Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[int]]


def _attacks(image_host: str) -> dict[str, tuple[int, Attack]]:
    """Each class: (concurrent loops, one attack request)."""
    rng = random.Random(0)
    thin = data_uri(png_bytes(3000, 1))
    tall = data_uri(png_bytes(1, 3000))
    body = ("{" + ",".join(f'"k{i}":0' for i in range(2_500_000)) + "}").encode()
    texts = [random_words(20_000, rng) for _ in range(100)]
    labels = [random_words(150_000, rng) for _ in range(8)]
    tiny = [data_uri(png_bytes(1, 1, seed=i)) for i in range(512)]
    slow_urls = [{"id": f"u{i}", "image": f"{image_host}/slow/{i}.png"} for i in range(200)]
    counter = iter(range(10**9))

    async def aspect(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
        image = thin if next(counter) % 2 else tall
        r = await client.post("/v1/embeddings", json={"input": [{"image": image}]}, headers=headers)
        return r.status_code

    async def json_body(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
        # no API key: the server should refuse without reading 34 MB
        r = await client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
        return r.status_code

    async def long_texts(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
        if next(counter) % 2:
            r = await client.post("/v1/embeddings", json={"input": texts}, headers=headers)
        else:
            payload = {"image": data_uri(png_bytes(32, 32)), "labels": labels}
            r = await client.post("/v1/classify", json=payload, headers=headers)
        return r.status_code

    async def slow(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
        name = "c" + str(next(counter) % 4)
        await client.post("/v1/collections", json={"name": name}, headers=headers)
        r = await client.post(f"/v1/collections/{name}/items", json={"items": slow_urls}, headers=headers)
        return r.status_code

    async def tiny_images(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
        r = await client.post("/v1/embeddings", json={"input": [{"image": t} for t in tiny]}, headers=headers)
        return r.status_code

    async def free(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
        name = f"f{next(counter)}"
        r = await client.post("/v1/collections", json={"name": name}, headers=headers)
        if r.status_code == 200:
            await client.delete(f"/v1/collections/{name}", headers=headers)
        return r.status_code

    return {
        "aspect": (4, aspect),
        "json-body": (4, json_body),
        "long-texts": (4, long_texts),
        "slow-urls": (4, slow),
        "tiny-images": (4, tiny_images),
        "free-requests": (8, free),
    }


async def _slowloris(base: str, seconds: float) -> Counter[str]:
    """Open many connections that send their headers one byte at a time."""
    host, port = base.removeprefix("http://").split(":")
    outcome: Counter[str] = Counter()
    request = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: abcdefgh\r\n" * 1000

    async def one() -> None:
        try:
            _reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            outcome["connect refused"] += 1
            return
        deadline = time.monotonic() + seconds
        try:
            for byte in request:
                if time.monotonic() > deadline:
                    outcome["still open at the end"] += 1
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)
        except (ConnectionError, OSError):
            outcome["closed by the server"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(500)))
    return outcome


def run_attacker(
    name: str,
    base: str,
    key: str,
    image_host: str,
    seconds: float,
    out: multiprocessing.Queue[dict[str, int]],
) -> None:
    # Lowest CPU priority: on a real deployment the attacker's client runs on its own machines, so its CPU must
    # not be taken from the server here (it still gets every idle cycle, so the attack runs at full speed
    # whenever the server lets it).
    os.nice(19)

    async def main() -> Counter[str]:
        if name == "slowloris":
            return await _slowloris(base, seconds)
        loops, attack = _attacks(image_host)[name]
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + seconds
        statuses: Counter[str] = Counter()
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:

            async def loop() -> None:
                while time.monotonic() < deadline:
                    try:
                        statuses[str(await attack(client, headers))] += 1
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1

            await asyncio.gather(*(loop() for _ in range(loops)))
        return statuses

    out.put(dict(asyncio.run(main())))


# ---------- the victim ----------


async def victim(base: str, key: str, image_host: str, seconds: float) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    inline = data_uri(png_bytes(96, 96, seed=7))
    bodies = [
        {"input": "a photo of a cat"},
        {"input": [{"image": inline}]},
        {"input": [{"image": f"{image_host}/fast.png"}]},
    ]
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = await client.post("/v1/embeddings", json=bodies[i % 3], headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"the victim's request failed: {response.status_code} {response.text}")
            i += 1
            await asyncio.sleep(0.1)
    return latencies


def sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        time.sleep(0.05)


def rss_now(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------- the server ----------


def create_key(data_dir: Path, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "clipserve", "keys", "create", "--data-dir", str(data_dir), "--name", name,
         "--credit", "1000"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return next(word for word in out.stdout.split() if word.startswith("sk-clip-"))


def start_server(data_dir: Path, tiny: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [sys.executable, "-m", "clipserve", "serve", "--port", str(port), "--data-dir", str(data_dir),
            "--weights", "random", "--image-fetch-allowed-networks", "127.0.0.1/32"]  # fmt: skip
    if tiny:
        args += ["--architecture", str(TINY)]
    log = (data_dir / "server.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
    except SystemExit:
        print((data_dir / "server.log").read_text(), file=sys.stderr)
        raise
    return process, base


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of ViT-B-32")
    parser.add_argument(
        "--seconds",
        type=float,
        default=30.0,
        help="length of each phase (30 s: ~120 victim requests, so the p99 is not just the maximum)",
    )
    parser.add_argument("--classes", default=",".join(PHASES[1:]), help="attack classes to run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    classes = [c for c in args.classes.split(",") if c]
    unknown = set(classes) - set(PHASES)
    if unknown:
        parser.error(f"unknown classes: {sorted(unknown)}")

    print(f"CPU: {cpu_description()}; model: {'tiny' if args.tiny else 'ViT-B-32 (random weights)'}")
    host_port = free_port()
    image_host = f"http://127.0.0.1:{host_port}"
    host_process = multiprocessing.Process(target=run_image_host, args=(host_port,), daemon=True)
    host_process.start()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        victim_key, attacker_key = create_key(data_dir, "victim"), create_key(data_dir, "attacker")
        server, base = start_server(data_dir, args.tiny)
        try:
            asyncio.run(victim(base, victim_key, image_host, 3))  # warm-up
            baseline_rss = rss_now(server.pid)
            results: dict[str, dict[str, object]] = {}
            for phase in ["quiet", *classes]:
                queue: multiprocessing.Queue[dict[str, int]] = multiprocessing.Queue()
                attacker = None
                if phase != "quiet":
                    attacker = multiprocessing.Process(
                        target=run_attacker,
                        args=(phase, base, attacker_key, image_host, args.seconds + 2, queue),
                    )
                    attacker.start()
                    time.sleep(2)  # let the attack build up
                phase_start_rss = rss_now(server.pid)
                stop, peak = threading.Event(), [phase_start_rss]
                sampler = threading.Thread(target=sample_rss, args=(server.pid, stop, peak), daemon=True)
                sampler.start()
                latencies = asyncio.run(victim(base, victim_key, image_host, args.seconds))
                statuses = queue.get(timeout=180) if attacker else {}
                if attacker:
                    attacker.join(60)
                stop.set()
                sampler.join()
                if server.poll() is not None:
                    raise SystemExit(f"the server died during {phase}")
                results[phase] = {
                    "p50_ms": statistics.median(latencies) * 1000,
                    "p99_ms": percentile(latencies, 0.99) * 1000,
                    "requests": len(latencies),
                    "peak_rss_over_phase_start_mb": (peak[0] - phase_start_rss) / 2**20,
                    "peak_rss_mb": peak[0] / 2**20,
                    "attacker": statuses,
                }
                time.sleep(1)
        finally:
            server.terminate()
            server.wait(60)
            host_process.terminate()

    quiet = results["quiet"]
    print(f"\nserver RSS at the start: {baseline_rss / 2**20:.0f} MB; each phase {args.seconds:.0f} s\n")
    print(
        f"{'phase':<14} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'p99/quiet':>9} {'RSS +MB':>8} {'peak MB':>8}  "
        "attacker's answers"
    )
    for phase, row in results.items():
        ratio = float(row["p99_ms"]) / float(quiet["p99_ms"])  # type: ignore[arg-type]
        print(
            f"{phase:<14} {row['requests']:>4} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {ratio:>8.2f}x "
            f"{row['peak_rss_over_phase_start_mb']:>8.0f} {row['peak_rss_mb']:>8.0f}  {row['attacker']}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
