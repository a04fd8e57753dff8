"""The bytes of one output shard's files (npy and parquet), built deterministically from its embedded chunks.

Same chunks -> the same bytes: arrays saved with numpy's fixed header, parquet tables built directly with
pyarrow (no pandas index metadata, no timestamps), columns in a fixed order.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.records import EmbeddedChunk

# the columns this layout writes itself; an extra (pass-through) column of the same name is dropped
RESERVED = ("key", "image_path", "url", "caption", "reason", "embedding")


@dataclass
class _Rows:
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    captions: list[str | None] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def shard_files(
    index: int, chunks: list[EmbeddedChunk], job: EmbedJob, source_column: str
) -> tuple[dict[str, bytes], int, int]:
    """{relative path: bytes} of shard `index`'s files, its input row count, and its embedded row count.

    `source_column`: the metadata column of the images' paths/URLs, decided once per input (InputShard), so
    every shard of a run has the same schema."""
    _check_order(index, chunks)
    good, bad = _Rows(), _Rows()
    images: list[np.ndarray] = []
    texts: list[np.ndarray] = []
    dim = next((c.image_embeddings.shape[1] for c in chunks if c.image_embeddings.ndim == 2), 0)
    for chunk in chunks:
        raw = chunk.raw
        n = len(raw.keys)
        if not len(raw.sources) == len(raw.captions) == len(raw.extras) == len(chunk.errors) == n:
            raise ValueError(f"shard {index} chunk {raw.chunk}: its per-row lists differ in length")
        embedded = [i for i in range(n) if chunk.errors[i] is None]
        vectors = (
            chunk.image_embeddings.reshape(len(embedded), dim) if not embedded else chunk.image_embeddings
        )
        if vectors.shape != (len(embedded), dim):
            raise ValueError(
                f"shard {index} chunk {raw.chunk}: {len(embedded)} rows embedded but image_embeddings has "
                f"shape {chunk.image_embeddings.shape} (dim {dim})"
            )
        images.append(vectors.astype(np.float32))
        if job.text:
            texts.append(_text_rows(chunk, embedded, dim))
        for i in range(n):
            reason = chunk.errors[i]
            rows = good if reason is None else bad
            rows.keys.append(raw.keys[i])
            rows.sources.append(raw.sources[i])
            rows.captions.append(raw.captions[i])
            rows.extras.append(raw.extras[i])
            if reason is not None:
                rows.reasons.append(reason)
    image_matrix = np.concatenate(images).reshape(-1, dim)
    metadata = _metadata_table(good, source_column)
    files = {f"img_emb/img_emb_{index}.npy": _npy(image_matrix.astype(job.dtype))}
    if job.text:
        files[f"text_emb/text_emb_{index}.npy"] = _npy(
            np.concatenate(texts).reshape(-1, dim).astype(job.dtype)
        )
    files[f"metadata/metadata_{index}.parquet"] = _parquet(metadata)
    files[f"failures/failures_{index}.parquet"] = _parquet(_failures_table(bad, source_column))
    if job.embedding_parquet:
        files[f"embeddings/embeddings_{index}.parquet"] = _parquet(_with_embedding(metadata, image_matrix))
    return files, len(good.keys) + len(bad.keys), len(good.keys)


def _check_order(index: int, chunks: list[EmbeddedChunk]) -> None:
    numbers = [c.raw.chunk for c in chunks]
    if not chunks or numbers != list(range(len(chunks))) or not chunks[-1].raw.last:
        raise ValueError(f"shard {index}: chunks must be 0..k in order, the last one last; got {numbers}")
    if any(c.raw.last for c in chunks[:-1]) or any(c.raw.shard != index for c in chunks):
        raise ValueError(f"shard {index}: a chunk of another shard, or a last chunk before the end")


def _text_rows(chunk: EmbeddedChunk, embedded: list[int], dim: int) -> np.ndarray:
    """The caption embeddings of the embedded rows, zeros for rows without a caption."""
    if chunk.text_embeddings is None:
        return np.zeros((len(embedded), dim), np.float32)
    vectors = chunk.text_embeddings.astype(np.float32).reshape(len(embedded), dim)
    no_caption = [r for r, i in enumerate(embedded) if chunk.raw.captions[i] is None]
    vectors[no_caption] = 0.0
    return vectors


def _metadata_table(rows: _Rows, source_column: str) -> Any:
    import pyarrow as pa

    columns: dict[str, Any] = {
        "key": pa.array(rows.keys, pa.string()),
        source_column: pa.array(rows.sources, pa.string()),
        "caption": pa.array(rows.captions, pa.string()),
    }
    names: dict[str, None] = {}  # first appearance order, deterministic for the same rows
    for extra in rows.extras:
        names.update((name, None) for name in extra if name not in RESERVED)
    for name in names:
        columns[name] = _column([extra.get(name) for extra in rows.extras])
    return pa.table(columns)


def _column(values: list[Any]) -> Any:
    """A pass-through column as pyarrow infers it; as strings when its values mix types."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _failures_table(rows: _Rows, source_column: str) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "key": pa.array(rows.keys, pa.string()),
            source_column: pa.array(rows.sources, pa.string()),
            "reason": pa.array(rows.reasons, pa.string()),
        }
    )


def _with_embedding(metadata: Any, vectors: np.ndarray) -> Any:
    """The metadata plus `embedding`: fixed_size_list<float32>[dim], the model's float32 vector (unrounded)."""
    import pyarrow as pa

    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1), pa.float32())
    return metadata.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, dim))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _parquet(table: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())
