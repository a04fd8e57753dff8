"""Parquet and CSV inputs: which columns hold the image, caption and key, how many rows, and a row range of them.

Both formats are read in record batches (a parquet file's row groups before the range are skipped), so a
shard's rows are streamed, never the whole file. A CSV's cells are read as text, as written (a path "0001"
stays "0001", a number column passes through as strings), and an empty cell is a missing value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from clipserve.dataset_embed.job import TableColumns

IMAGE_COLUMNS = ("url", "image_path", "path", "filepath")
CAPTION_COLUMNS = ("caption", "text")
KEY_COLUMN = "key"
# Metadata's own column names: never taken from a table's other columns or a .json sidecar.
RESERVED_COLUMNS = frozenset({"key", "caption", "image_path", "url"})


@dataclass(frozen=True)
class TableLayout:
    image: str
    caption: str | None
    key: str | None
    extras: tuple[str, ...]  # the other scalar columns, in the table's order, passed through to metadata

    @property
    def read(self) -> list[str]:
        named = [c for c in (self.image, self.caption, self.key) if c is not None]
        return [*dict.fromkeys(named), *self.extras]


def table_layout(fs: fsspec.AbstractFileSystem, path: str, wanted: TableColumns) -> TableLayout:
    """The columns to read, from the file's schema and the job's choices; ValueError if there is no image column."""
    schema = _schema(fs, path)
    names = schema.names
    image = _pick(wanted.image, IMAGE_COLUMNS, names, "image")
    if image is None:
        raise ValueError(
            f"no image column: expected one of {', '.join(IMAGE_COLUMNS)} (or choose one); the columns are "
            f"{', '.join(names) or 'none'}"
        )
    caption = _pick(wanted.caption, CAPTION_COLUMNS, names, "caption")
    key = _pick(wanted.key, (KEY_COLUMN,), names, "key")
    used = {image, caption, key}
    extras = tuple(
        f.name for f in schema if f.name not in used and f.name not in RESERVED_COLUMNS and _is_scalar(f.type)
    )
    return TableLayout(image, caption, key, extras)


def count_rows(fs: fsspec.AbstractFileSystem, path: str) -> int:
    """Rows in the table (parquet: from the footer; CSV: one streaming pass over the key-less first column)."""
    with fs.open(path, "rb") as file:
        if _is_csv(path):
            first = _schema(fs, path).names[:1]
            reader = pacsv.open_csv(file, convert_options=_csv_options(first, first))
            return sum(batch.num_rows for batch in reader)
        return int(pq.ParquetFile(file).metadata.num_rows)


def open_table(
    fs: fsspec.AbstractFileSystem, path: str, layout: TableLayout, start: int, stop: int | None
) -> Iterator[pa.RecordBatch]:
    """Record batches of exactly rows [start, stop) of the table (stop None: to the end), only layout's columns."""
    with fs.open(path, "rb") as file:
        if _is_csv(path):
            # Every column as text: the streaming reader infers types from the first block only and would fail
            # a later block that does not fit (a number column with one "n/a" far down).
            batches: Iterator[pa.RecordBatch] = iter(
                pacsv.open_csv(file, convert_options=_csv_options(layout.read, layout.read))
            )
            position = 0
        else:
            parquet = pq.ParquetFile(file)
            groups, position = _row_groups(parquet.metadata, start, stop)
            batches = parquet.iter_batches(row_groups=groups, columns=layout.read) if groups else iter(())
        for batch in batches:
            begin = max(start - position, 0)
            end = batch.num_rows if stop is None else min(stop - position, batch.num_rows)
            position += batch.num_rows
            if end > begin:
                yield batch.slice(begin, end - begin)
            if stop is not None and position >= stop:
                return


def _row_groups(metadata: pq.FileMetaData, start: int, stop: int | None) -> tuple[list[int], int]:
    """The row groups that hold rows [start, stop), and the file row the first of them starts at."""
    groups: list[int] = []
    first: int | None = None
    offset = 0
    for index in range(metadata.num_row_groups):
        rows = metadata.row_group(index).num_rows
        if offset + rows > start and (stop is None or offset < stop):
            groups.append(index)
            first = offset if first is None else first
        offset += rows
    return groups, first or 0


def _schema(fs: fsspec.AbstractFileSystem, path: str) -> pa.Schema:
    with fs.open(path, "rb") as file:
        if _is_csv(path):
            return pacsv.open_csv(file).schema
        return pq.ParquetFile(file).schema_arrow


def _csv_options(include: list[str], text: list[str]) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        include_columns=include, column_types={c: pa.string() for c in text}, strings_can_be_null=True
    )


def _is_csv(path: str) -> bool:
    return path.lower().endswith(".csv")


def _pick(chosen: str | None, defaults: tuple[str, ...], names: list[str], what: str) -> str | None:
    if chosen is not None:
        if chosen not in names:
            raise ValueError(
                f"the {what} column {chosen!r} is not in the table (its columns: {', '.join(names)})"
            )
        return chosen
    return next((n for n in defaults if n in names), None)


def _is_scalar(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_temporal(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    )
