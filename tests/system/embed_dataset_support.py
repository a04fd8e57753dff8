"""Shared by the embed-dataset system tests: a generated dataset in three input forms, running the real
`clipserve embed-dataset` command, reading its output back, and finding the Ray processes a run started."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.support import TINY_CONFIG, encode_image, gradient_image

SEED = 14  # of the generated images, captions and the table's row order
IMAGES = 240
CORRUPT = {  # name -> bytes that no decoder accepts
    "bad/truncated.png": b"",  # filled in by make_dataset: a real PNG cut in half
    "bad/garbage.jpg": b"this is not a jpeg at all",
    "bad/empty.webp": b"",
}
SHARD_SIZE = 20
CHUNK_SIZE = 8
MODEL_ARGS = ("--weights", "random", "--architecture", str(TINY_CONFIG))
RUN_TIMEOUT_S = 600.0  # a run of this dataset takes ~20 s on 2 busy cores; this only stops a hang


@dataclass(frozen=True)
class Row:
    key: str  # the folder's key: the relative path without suffix
    path: str  # relative to the folder root (POSIX)
    data: bytes
    caption: str | None
    label: int

    @property
    def good(self) -> bool:
        return self.path not in CORRUPT


@dataclass(frozen=True)
class Dataset:
    root: Path
    folder: Path  # the image folder (sidecar .txt captions)
    table: Path  # a parquet of paths relative to its folder, with key, caption and a pass-through column
    table_order: list[str]  # the folder keys in the table's (shuffled) row order
    tars: Path  # a folder of WebDataset shards (img2dataset's layout)
    tar_keys: list[list[str]]  # per .tar, in order: the webdataset keys (folder key with / -> _)
    rows: dict[str, Row]  # by folder key


def make_dataset(root: Path, images: int = IMAGES, seed: int = SEED) -> Dataset:
    """`images` generated images (PNG and JPEG, varied sizes, two thirds captioned) plus the CORRUPT files."""
    rng = np.random.default_rng(seed)
    folder = root / "images"
    rows: dict[str, Row] = {}
    for i in range(images):
        width, height = int(rng.integers(24, 72)), int(rng.integers(24, 72))
        image = gradient_image(width, height, seed=seed * 1000 + i)
        jpeg = i % 4 == 0
        data = encode_image(image, "JPEG", quality=90) if jpeg else encode_image(image, "PNG")
        path = f"part{i % 3}/img{i:04d}.{'jpg' if jpeg else 'png'}"
        caption = f"picture number {i} of {images}" if i % 3 != 1 else None
        rows[path.rsplit(".", 1)[0]] = Row(path.rsplit(".", 1)[0], path, data, caption, int(i % 7))
    half = encode_image(gradient_image(40, 40, seed=seed), "PNG")
    for path, data in CORRUPT.items():
        data = half[: len(half) // 2] if path.endswith("truncated.png") else data
        key = path.rsplit(".", 1)[0]
        rows[key] = Row(key, path, data, f"broken {key}", 0)
    for row in rows.values():
        target = folder / row.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(row.data)
        if row.caption is not None:
            target.with_suffix(".txt").write_text(row.caption)
    # The table: the same images in a shuffled order, paths relative to the table's folder.
    order = sorted(rows)
    table_order = [order[i] for i in rng.permutation(len(order))]
    table_dir = root / "table"
    table_dir.mkdir()
    table = table_dir / "paths.parquet"
    pq.write_table(
        pa.table({
            "key": [f"t-{k}" for k in table_order],
            "image_path": [f"../images/{rows[k].path}" for k in table_order],
            "caption": [rows[k].caption for k in table_order],
            "label": [rows[k].label for k in table_order],
        }),
        table,
    )  # fmt: skip
    # WebDataset: two tars, img2dataset's members {key}.jpg|png, {key}.txt, {key}.json.
    tars = root / "tars"
    tars.mkdir()
    tar_keys: list[list[str]] = []
    for n, part in enumerate((order[: len(order) // 2], order[len(order) // 2 :])):
        with tarfile.open(tars / f"{n:05d}.tar", "w") as tar:
            for key in part:
                row = rows[key]
                wds = key.replace("/", "_")
                _add(tar, f"{wds}.{row.path.rsplit('.', 1)[1]}", row.data)
                if row.caption is not None:
                    _add(tar, f"{wds}.txt", row.caption.encode())
                _add(tar, f"{wds}.json", json.dumps({"label": row.label, "nested": {"x": 1}}).encode())
        tar_keys.append([key.replace("/", "_") for key in part])
    return Dataset(root, folder, table, table_order, tars, tar_keys, rows)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------------------ the command


def command(input_path: Path | str, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "clipserve", "embed-dataset", str(input_path), "--output", str(output),
        "--shard-size", str(SHARD_SIZE), "--batch-size", str(CHUNK_SIZE), "--dtype", "float32",
        "--no-progress", *MODEL_ARGS, *extra,
    ]  # fmt: skip


def command_env(ray_tmp: Path) -> dict[str, str]:
    # RAY_TMPDIR: this run's Ray session lives in its own short folder (Ray's socket paths must stay short).
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(ray_tmp)}


def short_tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="ray-t-", dir="/tmp"))


def run_command(argv: list[str], log: Path) -> str:
    """Run the command to completion (own process group); its output, or AssertionError with it."""
    ray_tmp = short_tmp()
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=command_env(ray_tmp), start_new_session=True
        )
        try:
            code = process.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError(f"embed-dataset hung for {RUN_TIMEOUT_S} s:\n{log.read_text()}") from None
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    text = log.read_text()
    assert code == 0, f"embed-dataset exited {code}:\n{text}"
    return text


@contextmanager
def started_command(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    ray_tmp = short_tmp()
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=command_env(ray_tmp), start_new_session=True
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            shutil.rmtree(ray_tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------- the processes


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    """Poll until none of `pids` runs; the ones still running after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {pid for pid in pids if alive(pid)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------ the output


def output_files(output: Path) -> dict[str, bytes]:
    """Every file under `output` by relative path (hidden temp files included, so leftovers show)."""
    return {
        path.relative_to(output).as_posix(): path.read_bytes()
        for path in sorted(output.rglob("*"))
        if path.is_file()
    }


def committed(output: Path) -> list[int]:
    return sorted(int(p.stem) for p in (output / "_committed").glob("*.json"))


def read_shards(
    output: Path,
) -> tuple[list[dict[str, object]], np.ndarray, np.ndarray | None, list[dict[str, object]]]:
    """Metadata rows, img_emb, text_emb (None if absent) and failure rows of all shards, in shard order."""
    metadata: list[dict[str, object]] = []
    failures: list[dict[str, object]] = []
    images, texts = [], []
    for n in committed(output):
        metadata += pq.read_table(output / f"metadata/metadata_{n}.parquet").to_pylist()
        failures += pq.read_table(output / f"failures/failures_{n}.parquet").to_pylist()
        images.append(np.load(output / f"img_emb/img_emb_{n}.npy"))
        text_file = output / f"text_emb/text_emb_{n}.npy"
        if text_file.exists():
            texts.append(np.load(text_file))
    return metadata, np.concatenate(images), (np.concatenate(texts) if texts else None), failures
