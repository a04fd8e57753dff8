"""What the bench scripts share: the timing loop, the seeded full-size checkpoint, the photos, the CPU line.

Scripts run as `python bench/NAME.py`, so this folder is on sys.path and they import from here directly.
"""

from __future__ import annotations

import asyncio
import io
import platform
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import open_clip
import skimage
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "horse.png"]


def photo_paths(names: list[str] = PHOTOS) -> list[Path]:
    return [Path(skimage.__file__).parent / "data" / name for name in names]


def write_random_vit_b32(path: Path, seed: int = 0) -> Path:
    """A full-size ViT-B-32 open_clip checkpoint with seeded random weights (speed does not depend on values)."""
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}
    save_file(state, str(path))
    return path


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def cpu_description() -> str:
    """The CPU model and the matrix-unit features that decide which precisions are fast."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), ""
    )
    flags = set(
        next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    )
    features = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{model or platform.machine()} ({', '.join(features) or 'no AVX2'})"


def wait_until_ready(base: str, process: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    """Poll a started server's /ready until 200; SystemExit if it exits or is not ready in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before it was ready")
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server was not ready in {timeout_s:.0f} s")


@asynccontextmanager
async def ready_app_client(app: Any, timeout_s: float = 30) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app in this process (lifespan started), once /ready answers 200."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=None
        ) as client,
    ):
        deadline = time.monotonic() + timeout_s
        while (await client.get("/ready")).status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"the app was not ready in {timeout_s:.0f} s")
            await asyncio.sleep(0.05)
        yield client


def closed_loop_latencies(
    base: str, bodies: list[dict[str, Any]], clients: int, seconds: float, think_s: float = 0.0
) -> list[float]:
    """Latencies (s) of `clients` concurrent clients POSTing /v1/embeddings for `seconds`, each sending its next
    body (round robin over `bodies`, client i starting at body i) `think_s` after its last answer."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            i = index
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                http.post("/v1/embeddings", json=bodies[i % len(bodies)]).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - started)
                i += 1
                if think_s:
                    time.sleep(think_s)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def jpeg_640x480(path: Path) -> bytes:
    buffer = io.BytesIO()
    ImageOps.fit(Image.open(path).convert("RGB"), (640, 480)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
