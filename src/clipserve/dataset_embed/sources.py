"""What an embed-dataset input is (an image folder, parquet/CSV tables, WebDataset tars), its shards, and its rows.

Local paths and fsspec URLs alike go through fsspec. Shards are cut deterministically (sorted names, fixed
sizes), so a rerun numbers them the same way and can skip the committed ones. Reading never holds more than
one chunk of image bytes, and never reads more than `max_image_bytes + 1` bytes of any one image.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.records import InputShard, RawChunk
from clipserve.dataset_embed.tables import RESERVED_COLUMNS, TableLayout, count_rows, open_table, table_layout
from clipserve.errors import ImageTooLargeError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
TABLE_SUFFIXES = frozenset({".parquet", ".csv"})
TAR_SUFFIX = ".tar"
CAPTION_SUFFIX = ".txt"
NO_IMAGE_IN_SHARD = "no image in the shard for this key"


class DatasetInputError(ValueError):
    """The input cannot be embedded at all (missing, empty, of no known kind): one line for the CLI to print."""


def discover_shards(job: EmbedJob) -> list[InputShard]:
    """The input's shards, in a deterministic order (the same input always gives the same shards)."""
    try:
        fs, path = url_to_fs(job.input)
    except (ImportError, ValueError) as exc:  # a protocol whose fsspec package is missing, a malformed URL
        raise DatasetInputError(f"{job.input}: {exc}") from exc
    files = _list_input(fs, path, job.input)
    tars = [f for f in files if _suffix(f) == TAR_SUFFIX]
    images = [f for f in files if _suffix(f) in IMAGE_SUFFIXES]
    tables = [f for f in files if _suffix(f) in TABLE_SUFFIXES]
    if tars:
        return [
            InputShard(n, "webdataset", _location(fs, tar), source_column="url") for n, tar in enumerate(tars)
        ]
    if images and fs.isdir(path):
        sidecars = {posixpath.splitext(f)[0] for f in files if _suffix(f) == CAPTION_SUFFIX}
        return _folder_shards(fs, path.rstrip("/") or "/", images, sidecars, job.shard_size)
    if tables:
        return _table_shards(fs, tables, job)
    if images:
        raise DatasetInputError(
            f"{job.input} matches images: give their folder instead (it is read recursively)"
        )
    raise DatasetInputError(
        f"{job.input} holds no images ({' '.join(sorted(IMAGE_SUFFIXES))}), parquet/CSV tables or .tar shards"
    )


def read_chunks(shard: InputShard, job: EmbedJob) -> Iterator[RawChunk]:
    """The shard's rows in input order, in chunks of at most job.chunk_size rows; the final one has last=True."""
    fs, path = url_to_fs(shard.location)
    if shard.kind == "folder":
        rows, base = _folder_rows(fs, path, shard, job), shard.location
    elif shard.kind == "table":
        rows, base = _table_rows(fs, path, shard, job), _location(fs, posixpath.dirname(path))
    else:
        rows, base = _webdataset_rows(fs, path, job), ""
    return _chunked(shard.index, base, rows, job.chunk_size)


def read_capped(fs: fsspec.AbstractFileSystem, path: str, cap: int) -> bytes:
    """The file's bytes, reading at most cap + 1 of them; ImageTooLargeError beyond the cap."""
    with fs.open(path, "rb") as file:
        data: bytes = file.read(cap + 1)
    if len(data) > cap:
        raise ImageTooLargeError(f"image is over the {cap}-byte limit")
    return data


@dataclass
class _Row:
    key: str
    source: str
    caption: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None
    error: str | None = None


def _chunked(shard: int, base: str, rows: Iterator[_Row], size: int) -> Iterator[RawChunk]:
    number = 0
    pending: list[_Row] = []
    for row in rows:
        if len(pending) == size:
            yield _chunk(shard, number, False, base, pending)
            number, pending = number + 1, []
        pending.append(row)
    yield _chunk(shard, number, True, base, pending)


def _chunk(shard: int, number: int, last: bool, base: str, rows: list[_Row]) -> RawChunk:
    return RawChunk(
        shard=shard,
        chunk=number,
        last=last,
        base=base,
        keys=[r.key for r in rows],
        sources=[r.source for r in rows],
        captions=[r.caption for r in rows],
        extras=[r.extras for r in rows],
        data=[r.data for r in rows],
        errors=[r.error for r in rows],
    )


# --- finding the files -------------------------------------------------------------------------------------


def _list_input(fs: fsspec.AbstractFileSystem, path: str, given: str) -> list[str]:
    """The input's files (recursively for a folder), sorted; a glob matches files."""
    if any(c in given for c in "*?["):
        files = sorted(f for f in fs.glob(path) if fs.isfile(f))
        if not files:
            raise DatasetInputError(f"{given} matches no files")
        return files
    if fs.isdir(path):
        files = sorted(fs.find(path))
        if not files:
            raise DatasetInputError(f"{given} is an empty folder")
        return files
    if fs.isfile(path):
        if _suffix(path) not in TABLE_SUFFIXES | {TAR_SUFFIX}:
            raise DatasetInputError(
                f"{given} is not an input this command reads: give a folder of images, a .parquet/.csv "
                "table (or a folder or glob of them), or WebDataset .tar shards"
            )
        return [path]
    raise DatasetInputError(f"{given} does not exist")


def _suffix(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def _location(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """How a stage re-opens `path`: the plain path on the local disk, else the fsspec URL."""
    if isinstance(fs, LocalFileSystem):
        return path
    return str(fs.unstrip_protocol(path))


def _relative(root: str, path: str) -> str:
    return path[len(root) :].lstrip("/") if path.startswith(root) else path


# --- image folders -----------------------------------------------------------------------------------------


def _folder_shards(
    fs: fsspec.AbstractFileSystem, root: str, images: list[str], sidecars: set[str], shard_size: int
) -> list[InputShard]:
    """Shards of `shard_size` images; a shard is `captioned` when one of its images has a sidecar .txt (only
    then are sidecars opened: on an object store a missing one is a failed request per image)."""
    members = sorted(_relative(root, f) for f in images)
    stems = Counter(posixpath.splitext(m)[0] for m in members)
    captioned = {_relative(root, stem) for stem in sidecars}
    location = _location(fs, root)
    shards = []
    for n, start in enumerate(range(0, len(members), shard_size)):
        chunk = tuple(members[start : start + shard_size])
        has_captions = any(posixpath.splitext(m)[0] in captioned for m in chunk)
        shared = tuple(m for m in chunk if stems[posixpath.splitext(m)[0]] > 1)
        shards.append(
            InputShard(n, "folder", location, members=chunk, keyed_with_suffix=shared, captioned=has_captions)
        )
    return shards


def _folder_rows(
    fs: fsspec.AbstractFileSystem, root: str, shard: InputShard, job: EmbedJob
) -> Iterator[_Row]:
    settings = job.settings
    shared = set(shard.keyed_with_suffix)
    for member in shard.members:
        stem = posixpath.splitext(member)[0]
        caption = (
            _read_caption(fs, f"{root}/{stem}.txt", settings.max_text_chars) if shard.captioned else None
        )
        row = _Row(member if member in shared else stem, member, caption=caption)
        try:
            row.data = read_capped(fs, f"{root}/{member}", settings.max_image_bytes)
        except ImageTooLargeError as exc:
            row.error = exc.message
        except OSError as exc:
            row.error = f"could not read the image: {exc}"
        yield row


def _read_caption(fs: fsspec.AbstractFileSystem, path: str, max_chars: int) -> str | None:
    """A sidecar caption, cut at max_chars characters (so at most 4 * max_chars bytes are read); None: none."""
    try:
        with fs.open(path, "rb") as file:
            data: bytes = file.read(4 * max_chars)
    except OSError:  # no sidecar (or an unreadable one): the image has no caption
        return None
    return _text(data, max_chars)


def _text(data: bytes, max_chars: int) -> str:
    # 4 * max_chars bytes hold at least max_chars characters, so a character cut at the end is dropped here.
    return data.decode("utf-8", errors="replace")[:max_chars]


# --- parquet / CSV tables ----------------------------------------------------------------------------------


def _table_shards(fs: fsspec.AbstractFileSystem, tables: list[str], job: EmbedJob) -> list[InputShard]:
    root = posixpath.commonpath([posixpath.dirname(t) for t in tables]) if len(tables) > 1 else ""
    shards: list[InputShard] = []
    for table in tables:
        location = _location(fs, table)
        try:
            layout = table_layout(fs, table, job.columns)  # refuses a table without an image column now
            rows = count_rows(fs, table)
        except (ValueError, OSError) as exc:  # also pyarrow's ArrowInvalid: not a readable table
            raise DatasetInputError(f"{location}: {exc}") from exc
        prefix = posixpath.splitext(_relative(root, table))[0] + "/" if root else ""
        for start in range(0, max(rows, 1), job.shard_size):
            stop = min(start + job.shard_size, rows)
            shards.append(
                InputShard(
                    len(shards), "table", location, row_start=start, row_stop=stop,
                    source_column="url" if layout.image == "url" else "image_path",
                    captioned=layout.caption is not None, key_prefix=prefix,
                )
            )  # fmt: skip
    return shards


def _table_rows(fs: fsspec.AbstractFileSystem, path: str, shard: InputShard, job: EmbedJob) -> Iterator[_Row]:
    layout = table_layout(fs, path, job.columns)
    try:
        yield from _table_batches_rows(fs, path, layout, shard, job)
    except (ValueError, OSError, pa.ArrowException) as exc:  # a corrupt page, a CSV line that does not parse
        # The rows before the damage stand; the rest of the shard is one failure row (as a tar cut short),
        # so a damaged file fails its rows, never the job, and a rerun does not stop on it again.
        yield _Row(
            key=f"{shard.key_prefix}unreadable-{shard.row_start:09d}",
            source=posixpath.basename(path),
            error=f"could not read the table past some row of {shard.row_start}..{shard.row_stop}: {exc}",
        )


def _table_batches_rows(
    fs: fsspec.AbstractFileSystem, path: str, layout: TableLayout, shard: InputShard, job: EmbedJob
) -> Iterator[_Row]:
    number = shard.row_start
    for batch in open_table(fs, path, layout, shard.row_start, shard.row_stop):
        images = batch.column(layout.image).to_pylist()
        captions = batch.column(layout.caption).to_pylist() if layout.caption else [None] * len(images)
        keys = batch.column(layout.key).to_pylist() if layout.key else [None] * len(images)
        extras = batch.select(list(layout.extras)).to_pylist() if layout.extras else [{} for _ in images]
        for image, caption, key, extra in zip(images, captions, keys, extras, strict=True):
            row = _Row(
                key=str(key) if key is not None else f"{shard.key_prefix}{number:09d}",
                source=str(image) if image is not None else "",
                caption=str(caption)[: job.settings.max_text_chars] if caption is not None else None,
                extras=extra,
            )
            if not row.source:
                row.error = f"no image path or URL in column {layout.image!r}"
            yield row
            number += 1


# --- WebDataset tars ---------------------------------------------------------------------------------------


def _webdataset_rows(fs: fsspec.AbstractFileSystem, path: str, job: EmbedJob) -> Iterator[_Row]:
    """img2dataset's layout: members `{key}.{ext}` grouped by key (up to the first dot), in order of appearance."""
    settings = job.settings
    keys = 0
    broken: str | None = None
    with fs.open(path, "rb") as file:
        try:
            tar = _open_tar(file)
        except (tarfile.TarError, OSError) as exc:  # not a tar at all: the shard is one failure row
            broken = str(exc) or type(exc).__name__
        else:
            with tar:
                groups, broken = _tar_groups(tar)
                keys = len(groups)
                for key, members in groups.items():
                    yield _webdataset_row(
                        tar, key, members, settings.max_image_bytes, settings.max_text_chars
                    )
    if broken is not None:
        name = posixpath.basename(path)
        yield _Row(name, name, error=f"the tar shard is unreadable after {keys} keys: {broken}")


def _open_tar(file: Any) -> tarfile.TarFile:
    """The tar for random access: headers are read one by one and the data seeked over, never read whole."""
    return tarfile.open(fileobj=file, mode="r:")


def _tar_groups(tar: tarfile.TarFile) -> tuple[dict[str, dict[str, tarfile.TarInfo]], str | None]:
    """key -> {extension: member} in order of appearance, and why the headers stopped early (None: they didn't)."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        for member in tar:  # headers only: the data is seeked over
            if not member.isfile():
                continue
            folder, name = posixpath.split(member.name)
            stem, dot, extension = name.partition(".")
            if dot:
                groups.setdefault(posixpath.join(folder, stem), {}).setdefault(extension.lower(), member)
    except (tarfile.TarError, OSError) as exc:
        return groups, str(exc) or type(exc).__name__
    return groups, None


def _webdataset_row(
    tar: tarfile.TarFile, key: str, members: dict[str, tarfile.TarInfo], max_bytes: int, max_chars: int
) -> _Row:
    meta = _json_fields(tar, members.get("json"), 4 * max_chars)
    url = meta.get("url")
    image = next((m for ext, m in members.items() if f".{ext}" in IMAGE_SUFFIXES), None)
    row = _Row(key, url if isinstance(url, str) else (image.name if image is not None else key))
    row.extras = {k: v for k, v in meta.items() if k not in RESERVED_COLUMNS}
    try:
        if "txt" in members:
            row.caption = _text(_member_bytes(tar, members["txt"], 4 * max_chars), max_chars)
        elif isinstance(meta.get("caption"), str):
            row.caption = meta["caption"][:max_chars]
        if image is None:
            row.error = NO_IMAGE_IN_SHARD
        elif image.size > max_bytes:
            row.error = f"image is {image.size} bytes; the limit is {max_bytes}"
        else:
            row.data = _member_bytes(tar, image, max_bytes)
    except (tarfile.TarError, OSError) as exc:
        row.data, row.error = None, f"could not read the image from the tar: {exc}"
    return row


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    file = tar.extractfile(member)
    if file is None:
        raise tarfile.ReadError(f"{member.name} has no data")
    with file:
        data = file.read(limit)
    if len(data) < min(member.size, limit):
        raise tarfile.ReadError(f"{member.name} is truncated")
    return data


def _json_fields(tar: tarfile.TarFile, member: tarfile.TarInfo | None, limit: int) -> dict[str, Any]:
    """The .json sidecar's scalar fields (nested values skipped); {} when absent, over `limit` or not JSON."""
    if member is None or member.size > limit:
        return {}
    try:
        parsed = json.loads(_member_bytes(tar, member, limit))
    except (tarfile.TarError, OSError, ValueError):
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): v for k, v in parsed.items() if v is None or isinstance(v, str | int | float | bool)}
