"""What one `clipserve embed-dataset` run is asked to do: built by the CLI, read by every stage (picklable)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clipserve.config import Settings

OutputDtype = Literal["float16", "float32"]


@dataclass(frozen=True)
class TableColumns:
    """Column names of a parquet/CSV input (img2dataset's url_col / caption_col conventions)."""

    image: str | None = None  # None: the first of "url", "image_path", "path", "filepath" that exists
    caption: str | None = None  # None: "caption" or "text" if present, else no captions
    key: str | None = None  # None: "key" if present, else the row number within the file, zero-padded


@dataclass(frozen=True)
class EmbedJob:
    settings: Settings  # the model (weights, architecture, device, precision) and the image/fetch limits
    input: (
        str  # a folder, a parquet/CSV file or folder of them, or .tar shards (file, folder or glob); fsspec
    )
    output: Path
    shard_size: int = 10_000  # folder and table inputs: rows per output shard (webdataset: one per .tar)
    chunk_size: int = 32  # rows per model call (and per unit of work between stages)
    actors: int | None = None  # model actors; None: one per GPU with CUDA, else one per CPU of the cluster
    ray_address: str | None = None  # None: start a local Ray with this machine's cores and stop it after
    dtype: OutputDtype = "float16"  # of img_emb/text_emb (clip-retrieval's default)
    text: bool = True  # embed captions into text_emb/ when the input has them
    embedding_parquet: bool = (
        False  # also write embeddings/embeddings_{n}.parquet (metadata + embedding column)
    )
    index: bool = False  # build a FAISS index of the image embeddings afterwards
    index_exact_below: int = 100_000  # exact (flat) index below this many vectors, IVF-PQ at and above
    columns: TableColumns = TableColumns()
