"""The units of work that travel between the stages of an embed-dataset run (plain, picklable data).

An input is cut into InputShards (one output shard each, numbered n); a shard is read as RawChunks of at most
`chunk_size` rows, in row order; a chunk is decoded into a PreparedChunk and embedded into an EmbeddedChunk.
A chunk is also the unit of one model call, so the same input always meets the model in the same batches and
runs give byte-identical output, on one node or many.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SourceKind = Literal["folder", "table", "webdataset"]


@dataclass(frozen=True)
class InputShard:
    """One input shard; its outputs are named by `index` (img_emb_{index}.npy ...), stable across reruns."""

    index: int
    kind: SourceKind
    location: (
        str  # folder: the root; table: the parquet/CSV file; webdataset: the .tar (local path or fsspec URL)
    )
    members: tuple[str, ...] = ()  # folder: this shard's files, relative to the root, in order
    # folder: members whose key keeps its suffix, because another image has the same path without one
    # (a.jpg and a.png: keys a.jpg and a.png, not a twice)
    keyed_with_suffix: tuple[str, ...] = ()
    row_start: int = 0  # table: the first row of this shard in the file
    row_stop: int | None = None  # table: one past the last row (None: to the end)
    source_column: str = (
        "image_path"  # the metadata column naming each image: image_path, or url (URL inputs)
    )
    captioned: bool = True  # whether any row can have a caption (False: no sidecar .txt, no caption column)
    key_prefix: str = ""  # table without a key column: prepended to row-number keys (several files)


@dataclass
class RawChunk:
    """Rows as read, before decoding. Lists are parallel, one entry per row, in input order."""

    shard: int
    chunk: int  # 0, 1, ... within the shard
    last: bool  # the shard's final chunk (the driver then knows how many chunks the shard has)
    base: str  # where relative `sources` are resolved (the folder root, the table's folder); "" for none
    keys: list[str]
    sources: list[str]  # the image's path (relative to a folder root) or URL, as the metadata will show it
    captions: list[str | None]
    extras: list[
        dict[str, Any]
    ]  # pass-through columns (tables) / the .json sidecar's scalar fields (webdataset)
    data: list[
        bytes | None
    ]  # the image bytes when the reader already has them (webdataset, folder); None: fetch
    errors: list[str | None]  # a reason when the row already failed while reading (then data is None)


@dataclass
class PreparedChunk:
    """A decoded chunk: the pixels of the rows that decoded; the others carry their reason in `errors`."""

    raw: RawChunk  # with `data` emptied (the bytes are not carried further)
    pixels: np.ndarray  # float32 [rows that decoded, 3, H, W], the server's preprocessing
    errors: list[str | None] = field(default_factory=list)  # per row: None when it decoded, else the reason


@dataclass
class EmbeddedChunk:
    """The model's output for one chunk: one row per row that decoded, in input order."""

    raw: RawChunk  # `data` emptied
    errors: list[str | None]  # per input row, as in PreparedChunk
    image_embeddings: np.ndarray  # float32 [decoded rows, dim], L2-normalised, exactly the server's
    text_embeddings: (
        np.ndarray | None
    )  # float32 [decoded rows, dim] of the captions (zeros: no caption); None: off
    embedded_at: float = 0.0  # time.time() when the model finished it (for the summary's running rate)
