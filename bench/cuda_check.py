"""The CUDA path, checked on a GPU machine: parity with the CPU runtime, throughput, and one HTTP request.

    python bench/cuda_check.py

Exits 1 when no CUDA device is present. Prints max |cuda - cpu| for photos and texts (fp32 with TF32 off,
so differences are kernel rounding only), images/s at batch 256, and an /v1/embeddings round trip.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from clipserve.api.app import create_app
from clipserve.config import Settings
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from common import photo_paths

TEXTS = ["a photo of an astronaut", "a cat", "a cup of coffee", "a rocket", "x" * 300]


def vectors(runtime: ClipRuntime, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    pixels = torch.stack([runtime.preprocess(Image.open(p)) for p in paths])
    return runtime.encode_images(pixels), runtime.encode_texts(runtime.tokenize(TEXTS).ids)


async def http_round_trip(runtime: ClipRuntime, image: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp), weights="random", device="cuda"), runtime)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gpu") as client:
                for _ in range(200):  # warm-up runs in the background after start
                    if (await client.get("/ready")).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
                response = await client.post("/v1/embeddings", json={"input": ["a cat", {"image": image}]})
                return {
                    "status": response.status_code,
                    "compute_ms": response.headers.get("x-compute-time-ms"),
                }


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 1
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    paths = photo_paths()
    cpu = ClipRuntime.load(RuntimeSpec(weights="random", device="cpu", seed=0))
    gpu = ClipRuntime.load(RuntimeSpec(weights="random", device="auto", seed=0))
    assert gpu.device.type == "cuda", "--device auto did not pick CUDA"
    cpu_images, cpu_texts = vectors(cpu, paths)
    gpu_images, gpu_texts = vectors(gpu, paths)
    print(f"max |cuda - cpu|: images {np.abs(gpu_images - cpu_images).max():.2e}, "
          f"texts {np.abs(gpu_texts - cpu_texts).max():.2e}")  # fmt: skip

    batch = torch.randn(256, 3, 224, 224)
    gpu.encode_images(batch)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        gpu.encode_images(batch)
    torch.cuda.synchronize()
    print(f"fp32 image tower, batch 256: {2560 / (time.perf_counter() - started):.0f} images/s")
    print(
        f"HTTP round trip: {asyncio.run(http_round_trip(gpu, base64.b64encode(paths[0].read_bytes()).decode()))}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
