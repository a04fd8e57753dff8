"""FileStorage (the Batch API's file bytes) and the JSONL line handling of uploads and validation: all or nothing
writes, an fsspec URL works like a directory, limits refuse before anything is stored, and line splitting and
counting do not depend on how the bytes were chunked."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipserve.errors import InvalidRequestError, RequestTooLargeError
from clipserve.service.batch_files import FileStorage, UploadLimits, store_upload
from clipserve.service.batch_validation import (
    BatchInputLimits,
    RequestLineCounter,
    split_lines,
    validate_lines,
)


def test_a_local_file_round_trips_and_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    storage = FileStorage(str(tmp_path / "files"))
    assert storage.write_bytes("file-1", b"hello\n") == "file-1"
    assert storage.read_bytes("file-1") == b"hello\n"

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise RequestTooLargeError("too large")

    with pytest.raises(RequestTooLargeError):
        storage.write_stream("file-2", broken())
    with pytest.raises(RequestTooLargeError):
        storage.write_stream("file-1", broken())  # a failed rewrite keeps the old bytes
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["file-1"]
    assert storage.read_bytes("file-1") == b"hello\n"
    storage.delete("file-1")
    storage.delete("file-1")  # again: fine
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("file-1")
    for bad in ("../etc/passwd", ".hidden", "a/b", ""):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.write_bytes(bad, b"x")


def test_an_fsspec_url_stores_like_a_directory() -> None:
    storage = FileStorage("memory://clipserve-test/files")
    assert not storage.local
    data = b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(1000))
    storage.write_bytes("file-a", data)
    assert storage.size("file-a") == len(data)
    assert b"".join(storage.read_chunks("file-a", chunk_bytes=777)) == data

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise RequestTooLargeError("too large")

    for key in ("file-a", "file-b"):  # a failed rewrite keeps the old bytes; a failed write leaves nothing
        with pytest.raises(RequestTooLargeError):
            storage.write_stream(key, broken())
    assert storage.read_bytes("file-a") == data
    assert storage.fs.ls(storage.path, detail=False) == [f"{storage.path}/file-a"]
    storage.delete("file-a")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("file-a")


def test_an_upload_over_a_limit_stores_nothing(tmp_path: Path) -> None:
    storage = FileStorage(str(tmp_path))
    lines = b'{"a": 1}\n\n  \n{"b": 2}\r\n{"c": 3}'  # 3 requests: blank lines are none
    assert store_upload(storage, "ok", io.BytesIO(lines), UploadLimits(len(lines), 3)) == (len(lines), 3)
    with pytest.raises(RequestTooLargeError):
        store_upload(storage, "big", io.BytesIO(lines), UploadLimits(len(lines) - 1, 3))
    with pytest.raises(InvalidRequestError, match="more than 2 request lines"):
        store_upload(storage, "many", io.BytesIO(lines), UploadLimits(len(lines), 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def test_lines_split_and_count_the_same_however_the_bytes_are_chunked() -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    rows = [rng.choice([b"", b"  ", b'{"x": 1}', b"a" * rng.randrange(1, 50), b"\r"]) for _ in range(300)]
    data = b"\n".join(rows) + rng.choice([b"", b"\n"])
    expected = [(i + 1, row.rstrip(b"\r")) for i, row in enumerate(data.split(b"\n"))]
    if data.endswith(b"\n"):
        expected.pop()  # the empty "line" after the final newline is no line
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(0, 40)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert list(split_lines(chunks)) == expected, f"seed {seed}"
        counter = RequestLineCounter()
        for chunk in chunks:
            counter.feed(chunk)
        assert counter.finish() == sum(1 for _, row in expected if row.strip()), f"seed {seed}"


def test_validation_keeps_the_first_errors_and_counts_them_all() -> None:
    lines = [(n, b"not json") for n in range(1, 11)]
    result = validate_lines(lines, "/v1/embeddings", BatchInputLimits(100, 1000, 3), json.loads)
    assert [e.line for e in result.errors] == [1, 2, 3]
    assert result.error_count == 10
    many = [
        (n, json.dumps({"custom_id": str(n), "method": "POST", "url": "/v1/rank", "body": {}}).encode())
        for n in range(1, 6)
    ]
    capped = validate_lines(many, "/v1/rank", BatchInputLimits(4, 1000, 10), json.loads)
    assert [(e.code, e.line) for e in capped.errors] == [("too_many_requests", 5)]
    assert [line.custom_id for line in capped.lines] == ["1", "2", "3", "4"]
    empty = validate_lines([(1, b"  ")], "/v1/rank", BatchInputLimits(4, 1000, 10), json.loads)
    assert [(e.code, e.line) for e in empty.errors] == [("empty_file", None)]
