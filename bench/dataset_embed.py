"""embed-dataset throughput against a plain single-process open_clip loop over the same files, in one run.

    python bench/dataset_embed.py [--images 800] [--batch-size 32] [--shard-size 100] [--no-cluster]

1. The reference: one process, open_clip's model and transform on the same weights, torch on every core,
   read -> decode -> preprocess -> encode a batch at a time (what people write by hand).
2. `clipserve embed-dataset` on a local Ray with the same cores (decode in CPU tasks, the model in actors).
3. Unless --no-cluster: the same job on a local Ray cluster of one node (1 CPU) and of two nodes (1 CPU each,
   two `ray start` processes on this machine), for the scaling from 1 to 2 nodes.
Prints images/s and the ratios. Weights: a seeded random full-size ViT-B-32 (speed does not depend on values).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from common import cpu_description, free_port, photo_paths, write_random_vit_b32


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` 640x480 JPEGs: seeded crops and flips of the scikit-image photos, in nested folders."""
    rng = random.Random(seed)
    sources = [Image.open(p).convert("RGB") for p in photo_paths()]
    paths = []
    for i in range(count):
        image = rng.choice(sources)
        w, h = image.size
        box_w, box_h = rng.randint(w // 2, w), rng.randint(h // 2, h)
        left, top = rng.randint(0, w - box_w), rng.randint(0, h - box_h)
        crop = ImageOps.fit(image.crop((left, top, left + box_w, top + box_h)), (640, 480))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        path = folder / f"part{i % 8}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, "JPEG", quality=90)
        paths.append(path)
    return sorted(paths)


def reference_loop(weights: Path, paths: list[Path], batch_size: int, threads: int) -> float:
    """Images/s of the plain loop (model loading excluded)."""
    torch.set_num_threads(threads)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(weights))
    model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            pixels = torch.stack([preprocess(Image.open(p)) for p in paths[start : start + batch_size]])
            F.normalize(model.encode_image(pixels), dim=-1).numpy()
    return len(paths) / (time.perf_counter() - started)


def embed_dataset(
    weights: Path,
    folder: Path,
    output: Path,
    args: argparse.Namespace,
    *extra: str,
    env: dict[str, str] | None = None,
) -> tuple[float, float]:
    """(images/s over the whole command, images/s once running as its summary reports: after Ray's start and
    the model loads, which a large dataset amortises)."""
    shutil.rmtree(output, ignore_errors=True)
    command = [
        sys.executable, "-m", "clipserve", "embed-dataset", str(folder), "--output", str(output),
        "--weights", str(weights), "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size),
        "--no-progress", "--no-text", *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"embed-dataset failed ({done.returncode}):\n{done.stderr[-3000:]}")
    count = sum(1 for _ in folder.rglob("*.jpg"))
    reported = re.search(r"([\d.]+) images/s once running", done.stdout)
    return count / wall, float(reported.group(1)) if reported else float("nan")


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc), so a stopped node leaves none behind."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class LocalCluster:
    """`ray start` head plus workers on this machine, 1 CPU each, with their own auth token; killed on stop.

    (Ray 2.60 binds its nodes to the machine's address even when told 127.0.0.1, and turns token
    authentication on: every node and the driver get this cluster's own token.)"""

    def __init__(self, nodes: int) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex * 2}
        self.temp_dirs = [Path(tempfile.mkdtemp(prefix="ray-b-", dir="/tmp")) for _ in range(nodes)]
        ray = str(Path(sys.executable).with_name("ray"))
        common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
        self.processes: list[subprocess.Popen[bytes]] = []
        for n, temp_dir in enumerate(self.temp_dirs):
            where = (
                [
                    "--head",
                    "--node-ip-address",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--include-dashboard",
                    "false",
                ]
                if n == 0
                else ["--address", self.address]
            )
            argv = [ray, "start", *where, *common, "--temp-dir", str(temp_dir),
                    "--dashboard-agent-listen-port", str(free_port())]  # fmt: skip
            self.processes.append(
                subprocess.Popen(argv, env=self.env, start_new_session=True, stdout=subprocess.DEVNULL)
            )
            self._wait_for_nodes(n + 1)

    def _wait_for_nodes(self, count: int, timeout_s: float = 180) -> None:
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = subprocess.run(
                [sys.executable, "-c", probe, self.address], capture_output=True, text=True, env=self.env
            )
            if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            time.sleep(1)
        self.stop()
        raise SystemExit(f"the local Ray cluster did not reach {count} nodes in {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGKILL (SIGTERM makes `ray start --block` drain for 30 s) every node and what it started."""
        below = {pid for process in self.processes for pid in _descendants(process.pid)}
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in below:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--shard-size",
        type=int,
        default=100,
        help="images per shard: decoding runs one task per shard (default 100)",
    )
    parser.add_argument("--no-cluster", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"CPU: {cpu_description()}, {cores} cores; {args.images} JPEGs 640x480; batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = write_random_vit_b32(work / "vit-b-32.safetensors")
        paths = write_images(work / "images", args.images)
        reference = reference_loop(weights, paths, args.batch_size, cores)
        print(f"plain open_clip loop, {cores} torch threads: {reference:.1f} images/s")
        wall, reported = embed_dataset(weights, work / "images", work / "out", args)
        print(
            f"embed-dataset, local Ray ({cores} CPUs): {reported:.1f} images/s once running = "
            f"{reported / reference:.2f}x the loop; {wall:.1f} images/s over the whole command "
            f"(Ray start and model loads included) = {wall / reference:.2f}x"
        )
        if args.no_cluster:
            return
        rates = {}
        for nodes in (1, 2):
            cluster = LocalCluster(nodes)
            try:
                rates[nodes] = embed_dataset(
                    weights, work / "images", work / f"out{nodes}", args, "--ray-address", cluster.address,
                    env=cluster.env,
                )  # fmt: skip
            finally:
                cluster.stop()
            print(
                f"{nodes} node(s) of 1 CPU: {rates[nodes][1]:.1f} images/s once running, "
                f"{rates[nodes][0]:.1f} over the whole command"
            )
        print(
            f"2 nodes / 1 node: {rates[2][1] / rates[1][1]:.2f}x once running, "
            f"{rates[2][0] / rates[1][0]:.2f}x over the whole command"
        )


if __name__ == "__main__":
    main()
