"""The output folder of an embed-dataset run, in clip-retrieval's layout, committed one shard at a time.

For input shard n (no zero padding):
  img_emb/img_emb_{n}.npy            [embedded rows, dim] in job.dtype
  text_emb/text_emb_{n}.npy          [same rows] job.dtype, zeros where a row has no caption (job.text only)
  metadata/metadata_{n}.parquet      one row per embedded row, same order: key, image_path | url, caption, extras
  failures/failures_{n}.parquet      key, image_path | url, reason: every row that did not embed
  embeddings/embeddings_{n}.parquet  (job.embedding_parquet) metadata columns + embedding fixed_size_list<float32>
  _committed/{n}.json                the completion marker (counts), written last
  embed_dataset.json                 the run's manifest: a rerun with another model or layout is refused

A shard's files go to temporary names (`.<name>.tmp`, same folder), are fsynced and renamed into place, then
the marker is written the same way: a shard without its marker is not part of the output (a rerun writes it
again, byte for byte the same), and a marker always names complete files.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.output_files import shard_files
from clipserve.dataset_embed.records import EmbeddedChunk, InputShard

MANIFEST = "embed_dataset.json"
LOCK = ".lock"  # locked (lockf) by the run writing the folder; the OS releases it when that process dies
MARKERS = "_committed"
FORMAT = "clipserve-embed-dataset/1"
FOLDERS = ("img_emb", "text_emb", "metadata", "failures", "embeddings", MARKERS)
_TEMP = re.compile(r"^\..+\.tmp$")
_TEMP_FOLDERS = (*FOLDERS, "index")


class OutputMismatchError(ValueError):
    """The output folder holds (part of) another run's output: other model, input, dtype or layout."""


class OutputInUseError(OutputMismatchError):
    """Another run (another process) is writing to the output folder right now."""


@dataclass(frozen=True)
class ShardCounts:
    rows: int  # input rows of the shard
    embedded: int  # rows in img_emb/metadata
    failed: int  # rows in failures
    bytes_written: int  # all files of the shard, marker included


def open_output(
    job: EmbedJob, model_identity: dict[str, str], *, shards: Sequence[InputShard] | None = None
) -> OutputDir:
    """Create the output folder (or check that its manifest is this run's) and remove a killed run's temp files.

    `model_identity`: the weights' source, fingerprint and architecture (any str -> str). `shards`, when given,
    is recorded (a digest) so that a rerun over an input whose files changed is refused, not mixed in.
    Raises OutputMismatchError with a one-line message when the folder belongs to a different run, and
    OutputInUseError when another process has it open. The returned OutputDir holds the folder's lock until
    it is closed (or its process ends).
    """
    root = job.output
    root.mkdir(parents=True, exist_ok=True)
    lock = _lock(root)
    try:
        _prepare(root, _manifest(job, model_identity, shards))
    except BaseException:
        lock.close()
        raise
    return OutputDir(root, job, lock)


def _lock(root: Path) -> IO[bytes]:
    """A POSIX record lock on the folder's .lock: it excludes other processes only (so one process may run
    again after an error without closing first) and the OS drops it when its process dies."""
    lock = open(root / LOCK, "ab")  # noqa: SIM115 - held open for the OutputDir's lifetime
    try:
        fcntl.lockf(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        lock.close()
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        raise OutputInUseError(
            f"{root} is being written by another embed-dataset run; wait for it or use another --output"
        ) from None
    return lock


def _prepare(root: Path, manifest: dict[str, Any]) -> None:
    path = root / MANIFEST
    if path.exists():
        _check_manifest(path, manifest)
    else:
        if any((root / MARKERS).glob("*.json")):
            raise OutputMismatchError(
                f"{root} has committed shards but no {MANIFEST}: it is not this run's output; "
                "use a new --output folder"
            )
        _write_atomic(path, _json_bytes(manifest))
    for folder in FOLDERS:
        (root / folder).mkdir(exist_ok=True)
    _remove_temp_files(root)


class OutputDir:
    """An opened output folder: which shards are committed, and writing one shard atomically."""

    def __init__(self, root: Path, job: EmbedJob, lock: IO[bytes] | None = None) -> None:
        self.root = root
        self.job = job
        self._lock = lock

    def close(self) -> None:
        """Release the folder's lock (another run may open it then)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def committed(self) -> set[int]:
        """The shards whose completion marker exists (their files are complete and final)."""
        return committed_shards(self.root)

    def write_shard(self, shard: InputShard, chunks: list[EmbeddedChunk]) -> ShardCounts:
        """Write all of one shard's files (temp names, fsync, rename), then its marker; overwrites stale files.

        `chunks`: the shard's chunks sorted by chunk number, 0.. with the last one `last`.
        """
        files, rows, embedded = shard_files(shard.index, chunks, self.job, shard.source_column)
        marker = self.root / MARKERS / f"{shard.index}.json"
        if marker.exists():  # rewriting a committed shard: it stops being committed until it is whole again
            marker.unlink()
            _fsync_dir(marker.parent)
        temps: list[tuple[Path, Path]] = []
        for name, data in files.items():
            final = self.root / name
            temp = final.with_name(f".{final.name}.tmp")
            _write_synced(temp, data)
            temps.append((temp, final))
        for temp, final in temps:
            os.replace(temp, final)
        for folder in sorted({final.parent for _, final in temps}):
            _fsync_dir(folder)
        sizes = {name: len(data) for name, data in files.items()}
        record = {"shard": shard.index, "rows": rows, "embedded": embedded, "failed": rows - embedded}
        marker_bytes = _json_bytes({**record, "files": sizes})
        _write_atomic(marker, marker_bytes)
        return ShardCounts(rows, embedded, rows - embedded, sum(sizes.values()) + len(marker_bytes))


def committed_shards(root: Path) -> set[int]:
    """The shard numbers with a completion marker under `root`."""
    return {int(p.stem) for p in (root / MARKERS).glob("*.json") if p.stem.isdigit()}


def is_embed_output(path: Path) -> bool:
    """A folder in clip-retrieval's layout (ours or clip-retrieval's own): it has img_emb/ and metadata/."""
    return (path / "img_emb").is_dir() and (path / "metadata").is_dir()


def iter_output_items(output: Path) -> Iterator[dict[str, Any]]:
    """Collection items of an output folder: {"id", "vector" (float32 of the img_emb row), "metadata"}.

    Ours (a manifest is there): the committed shards in shard order. A clip-retrieval output (no manifest):
    every img_emb_N.npy with its metadata_N.parquet, in N order; the id is the `key` column, else
    image_path / url, else "N:row".
    """
    import pyarrow.parquet as pq

    for n, emb_path, meta_path in _readable_shards(output):
        vectors = np.load(emb_path, allow_pickle=False)
        table = pq.read_table(meta_path)
        if len(vectors) != table.num_rows:
            raise OutputMismatchError(
                f"{emb_path} has {len(vectors)} rows but {meta_path} has {table.num_rows}; the output is damaged"
            )
        id_column = next((c for c in ("key", "image_path", "url") if c in table.column_names), None)
        rows = table.to_pylist()
        for i, row in enumerate(rows):
            item_id = str(row[id_column]) if id_column and row[id_column] is not None else f"{n}:{i}"
            metadata = {
                name: value
                for name, value in row.items()
                if name != "key" and _json_scalar(value) and value is not None
            }
            vector = np.asarray(vectors[i], dtype=np.float32)
            yield {"id": item_id, "vector": vector.tolist(), "metadata": metadata}


def count_output_items(output: Path) -> int:
    """How many items iter_output_items(output) yields (the img_emb rows it reads; headers only)."""
    return sum(int(np.load(emb, mmap_mode="r").shape[0]) for _, emb, _ in _readable_shards(output))


def _readable_shards(output: Path) -> list[tuple[int, Path, Path]]:
    if (output / MANIFEST).exists():
        return [
            (n, output / "img_emb" / f"img_emb_{n}.npy", output / "metadata" / f"metadata_{n}.parquet")
            for n in sorted(committed_shards(output))
        ]
    embeddings = _numbered(output / "img_emb", r"img_emb_(\d+)\.npy")
    metadata = _numbered(output / "metadata", r"metadata_(\d+)\.parquet")
    return [(n, embeddings[n], metadata[n]) for n in sorted(embeddings) if n in metadata]


def _numbered(folder: Path, pattern: str) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in folder.iterdir() if folder.is_dir() else ():
        match = re.fullmatch(pattern, path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def _json_scalar(value: object) -> bool:
    if isinstance(value, float):
        return bool(np.isfinite(value))
    return value is None or isinstance(value, str | int | bool)


def _manifest(
    job: EmbedJob, model_identity: dict[str, str], shards: Sequence[InputShard] | None
) -> dict[str, Any]:
    source = job.input if "://" in job.input else os.path.abspath(job.input)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "input": source,
        "model": dict(sorted(model_identity.items())),
        "dtype": job.dtype,
        "text": job.text,
        "embedding_parquet": job.embedding_parquet,
        "shard_size": job.shard_size,
        "chunk_size": job.chunk_size,
        "columns": {
            "image": job.columns.image,
            "caption": job.columns.caption,
            "key": job.columns.key,
        },
    }
    if shards is not None:
        digest = hashlib.sha256()  # shard by shard: no copy of a large listing in memory
        for shard in shards:
            digest.update(repr(shard).encode() + b"\n")
        manifest["shards"] = {"count": len(shards), "sha256": digest.hexdigest()}
    return manifest


def _check_manifest(path: Path, wanted: dict[str, Any]) -> None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OutputMismatchError(f"{path} is not a readable embed-dataset manifest ({exc})") from exc
    if not isinstance(found, dict):
        raise OutputMismatchError(f"{path} is not an embed-dataset manifest")
    keys = sorted(set(found) | set(wanted))
    if "shards" not in found or "shards" not in wanted:  # recorded only when the caller knew the shards
        keys = [k for k in keys if k != "shards"]
    differ = [k for k in keys if found.get(k) != wanted.get(k)]
    if differ:
        what = "; ".join(f"{k}: {_short(found.get(k))} there, {_short(wanted.get(k))} now" for k in differ)
        raise OutputMismatchError(
            f"{path.parent} holds another run's output ({what}); use a new --output folder or remove it"
        )


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _remove_temp_files(root: Path) -> None:
    for folder in (root, *(root / f for f in _TEMP_FOLDERS)):
        for path in folder.iterdir() if folder.is_dir() else ():
            if _TEMP.match(path.name) and path.is_file():
                path.unlink()


def _json_bytes(value: object) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=1) + "\n").encode()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    _write_synced(temp, data)
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
