"""embed-dataset (issue 14), hostile tables: a URL list from the internet must not reach past the fetch policy.

A row's image is an http(s) URL (fetched by the service's SSRF-safe fetcher), a path, or a URL on the table's
own filesystem. fsspec would also open chained URLs (`simplecache::http://...`) and any other protocol it knows
(ftp, sftp, smb, webdav, ...), each its own network client that no address policy guards: those rows fail.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest

from clipserve.dataset_embed.decoding import prepare_chunk
from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.records import RawChunk
from clipserve.runtime.model import ClipRuntime
from tests.support import encode_image, gradient_image, make_settings

IMAGE = encode_image(gradient_image(32, 32, seed=0))


class _Counting(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)

    def do_HEAD(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def internal_host() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on loopback standing for an internal host (a metadata service): what it was asked."""
    requests: list[str] = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), type("H", (_Counting,), {"requests": requests})
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def table_chunk(base: str, sources: list[str]) -> RawChunk:
    n = len(sources)
    return RawChunk(
        0, 0, True, base, [str(i) for i in range(n)], sources, [None] * n, [{}] * n, [None] * n, [None] * n
    )


def job_for(tmp_path: Path) -> EmbedJob:
    return EmbedJob(settings=make_settings(tmp_path), input=str(tmp_path), output=tmp_path / "out")


@pytest.mark.parametrize("chain", ["simplecache::http", "blockcache::http", "filecache::https"])
def test_a_chained_fsspec_url_does_not_reach_past_the_fetch_policy(
    tmp_path: Path, tiny_runtime: ClipRuntime, internal_host: tuple[str, list[str]], chain: str
) -> None:
    host, requests = internal_host
    source = f"{chain}://{host}/latest/meta-data.png"
    prepared = prepare_chunk(
        table_chunk(str(tmp_path), [source]), job_for(tmp_path), tiny_runtime.image_transform
    )
    assert requests == []
    assert prepared.errors == [
        f"image {source!r} is a chained fsspec URL: a row names an http(s) URL, a path, or a URL on the table's "
        "own filesystem (file)"
    ]
    assert prepared.pixels.shape[0] == 0


@pytest.mark.parametrize("scheme", ["ftp", "sftp", "webdav", "memory"])
def test_a_url_on_another_filesystem_than_the_tables_is_refused(
    tmp_path: Path, tiny_runtime: ClipRuntime, scheme: str
) -> None:
    source = f"{scheme}://10.0.0.1/x.png"
    prepared = prepare_chunk(
        table_chunk(str(tmp_path), [source]), job_for(tmp_path), tiny_runtime.image_transform
    )
    assert prepared.errors == [
        f"image URL scheme {scheme!r} is not read here: a row names an http(s) URL, a path, or a URL on the "
        "table's own filesystem (file)"
    ]


def test_a_table_on_an_fsspec_filesystem_reads_its_own_urls_and_paths(
    tmp_path: Path, tiny_runtime: ClipRuntime
) -> None:
    memory = fsspec.filesystem("memory")
    root = f"/hostile-inputs-{id(tmp_path)}"
    memory.pipe(f"{root}/imgs/a.png", IMAGE)
    try:
        sources = [
            "imgs/a.png",
            f"{root}/imgs/a.png",
            f"memory://{root}/imgs/a.png",
            str(tmp_path / "local.png"),
        ]
        (tmp_path / "local.png").write_bytes(IMAGE)
        raw = table_chunk(f"memory://{root}", sources)
        prepared = prepare_chunk(raw, job_for(tmp_path), tiny_runtime.image_transform)
    finally:
        memory.rm(root, recursive=True)
    # The last row's absolute path is on the table's filesystem (memory), where it does not exist.
    assert prepared.errors[:3] == [None, None, None]
    assert prepared.errors[3] is not None
    assert prepared.errors[3].startswith("could not read the image: ")
    assert prepared.pixels.shape[0] == 3


def test_a_csv_column_whose_values_change_type_late_in_the_file_does_not_fail_the_shard(
    tmp_path: Path,
) -> None:
    # pyarrow's streaming CSV reader infers a column's type from its first block (1 MiB) and fails a later
    # block that does not fit it: a URL list with "height" numbers and one "unknown" far down would kill the job.
    from clipserve.dataset_embed.sources import discover_shards, read_chunks

    rows = 60_000  # about 2 MiB: several blocks
    lines = [f"https://e.test/{i}.jpg,{i}" for i in range(rows - 1)] + ["https://e.test/last.jpg,unknown"]
    (tmp_path / "list.csv").write_text("url,height\n" + "\n".join(lines) + "\n")
    job = EmbedJob(
        settings=make_settings(tmp_path),
        input=str(tmp_path / "list.csv"),
        output=tmp_path / "out",
        shard_size=rows,
        chunk_size=20_000,
    )
    (shard,) = discover_shards(job)
    chunks = list(read_chunks(shard, job))
    extras = [e for c in chunks for e in c.extras]
    assert len(extras) == rows
    assert (extras[0], extras[-2], extras[-1]) == (
        {"height": "0"},
        {"height": str(rows - 2)},
        {"height": "unknown"},
    )


def test_a_tar_shard_that_is_not_a_tar_is_one_failure_row_not_a_failed_job(tmp_path: Path) -> None:
    from clipserve.dataset_embed.sources import discover_shards, read_chunks

    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "00000.tar").write_bytes(b"this is not a tar archive" * 100)
    job = EmbedJob(settings=make_settings(tmp_path), input=str(tmp_path / "shards"), output=tmp_path / "out")
    (shard,) = discover_shards(job)
    (chunk,) = read_chunks(shard, job)
    assert (chunk.keys, chunk.sources, chunk.data) == (["00000.tar"], ["00000.tar"], [None])
    assert chunk.errors == ["the tar shard is unreadable after 0 keys: invalid header"]


def test_a_parquet_file_damaged_part_way_fails_the_rest_of_its_shard_not_the_job(tmp_path: Path) -> None:
    """A shard in the damaged part is one failure row naming its range (the job goes on); the shard before the
    damage reads as usual."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clipserve.dataset_embed.sources import discover_shards, read_chunks

    table = tmp_path / "t" / "paths.parquet"
    table.parent.mkdir()
    paths = [f"img{i}.png" for i in range(6)]
    pq.write_table(pa.table({"image_path": paths}), table, row_group_size=3, compression="snappy")
    second = pq.ParquetFile(table).metadata.row_group(1).column(0)
    data = bytearray(table.read_bytes())
    start = second.data_page_offset  # the second row group's data page header: garbage from here on 12 bytes
    data[start : start + 12] = b"\xff" * 12
    table.write_bytes(bytes(data))
    job = EmbedJob(
        settings=make_settings(tmp_path), input=str(table.parent), output=tmp_path / "out", shard_size=3
    )
    first, second = discover_shards(job)

    def rows_of(shard: Any) -> list[tuple[str, str, str | None]]:
        return [
            (k, s, e)
            for c in read_chunks(shard, job)
            for k, s, e in zip(c.keys, c.sources, c.errors, strict=True)
        ]

    assert rows_of(first) == [(f"{i:09d}", f"img{i}.png", None) for i in range(3)]
    ((key, source, error),) = rows_of(second)
    assert (key, source) == ("unreadable-000000003", "paths.parquet")
    assert error is not None
    assert error.startswith("could not read the table past some row of 3..6: ")
