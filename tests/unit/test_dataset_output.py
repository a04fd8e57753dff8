"""embed-dataset's output folder: clip-retrieval's layout, atomic per-shard commits, resumability, reading back.

No Ray and no model: EmbeddedChunks are built by hand with seeded random unit vectors.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipserve.config import Settings
from clipserve.dataset_embed import output as output_module
from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.output import (
    OutputInUseError,
    OutputMismatchError,
    ShardCounts,
    count_output_items,
    is_embed_output,
    iter_output_items,
    open_output,
)
from clipserve.dataset_embed.records import EmbeddedChunk, InputShard, RawChunk

DIM = 16
IDENTITY = {"weights": "hf-hub:test/tiny", "fingerprint": "sha256:aaaa", "architecture": "ViT-T"}


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_chunk(
    shard: int,
    chunk: int,
    last: bool,
    keys: list[str],
    seed: int,
    *,
    failed: dict[int, str] | None = None,
    no_caption: tuple[int, ...] = (),
    sources: list[str] | None = None,
    extras: list[dict[str, Any]] | None = None,
    text: bool = True,
) -> EmbeddedChunk:
    """A chunk as the model stage hands it over: vectors only for the rows that decoded."""
    rng = np.random.default_rng(seed)
    failed = failed or {}
    n = len(keys)
    errors = [failed.get(i) for i in range(n)]
    good = n - len(failed)
    captions = [None if i in no_caption else f"a photo of {k}" for i, k in enumerate(keys)]
    # not zeroed where a row has no caption: the writer guarantees the zeros whatever the model stage sent
    texts = unit_rows(rng, good) if text else None
    raw = RawChunk(
        shard=shard,
        chunk=chunk,
        last=last,
        base="/data",
        keys=keys,
        sources=sources or [f"{k}.jpg" for k in keys],
        captions=captions,
        extras=extras or [{"width": 10 * i, "source": "synthetic"} for i in range(n)],
        data=[None] * n,
        errors=list(errors),
    )
    return EmbeddedChunk(raw, errors, unit_rows(rng, good), texts)


def sample_shard(index: int = 3, seed: int = 7, **kw: Any) -> tuple[InputShard, list[EmbeddedChunk]]:
    """Two chunks, 8 rows: rows a1 and a5 fail, a3 and a6 have no caption, a2 carries an extra column."""
    keys = [f"s{index}/a{i}" for i in range(8)]
    extras0 = [{"width": 10 * i, "source": "synthetic"} for i in range(5)]
    extras0[2]["license"] = "cc-by"
    chunks = [
        make_chunk(index, 0, False, keys[:5], seed, failed={1: "corrupt image"}, no_caption=(3,), extras=extras0, **kw),
        make_chunk(index, 1, True, keys[5:], seed + 1, failed={0: "image too large"}, no_caption=(1,), **kw),
    ]  # fmt: skip
    shard = InputShard(index=index, kind="folder", location="/data", members=tuple(f"{k}.jpg" for k in keys))
    return shard, chunks


def job_for(root: Path, **kw: Any) -> EmbedJob:
    return EmbedJob(settings=Settings(), input="/data", output=root, chunk_size=5, shard_size=8, **kw)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_dtypes_and_row_alignment_float16(tmp_path: Path) -> None:
    shard, chunks = sample_shard()
    out = open_output(job_for(tmp_path), IDENTITY)
    counts = out.write_shard(shard, chunks)

    files = tree(tmp_path)
    assert set(files) == {
        ".lock",
        "embed_dataset.json",
        "img_emb/img_emb_3.npy",
        "text_emb/text_emb_3.npy",
        "metadata/metadata_3.parquet",
        "failures/failures_3.parquet",
        "_committed/3.json",
    }
    assert counts == ShardCounts(rows=8, embedded=6, failed=2, bytes_written=sum(
        len(b) for name, b in files.items() if name not in ("embed_dataset.json", ".lock")
    ))  # fmt: skip
    expected_images = np.concatenate([c.image_embeddings for c in chunks])
    img = np.load(tmp_path / "img_emb/img_emb_3.npy")
    assert img.dtype == np.float16
    assert img.shape == (6, DIM)
    assert np.array_equal(img, expected_images.astype(np.float16))

    metadata = pq.read_table(tmp_path / "metadata/metadata_3.parquet")
    assert metadata.column_names == ["key", "image_path", "caption", "width", "source", "license"]
    assert metadata.schema.metadata is None or b"pandas" not in metadata.schema.metadata
    rows = metadata.to_pylist()
    assert [r["key"] for r in rows] == ["s3/a0", "s3/a2", "s3/a3", "s3/a4", "s3/a6", "s3/a7"]
    assert [r["image_path"] for r in rows] == [f"{r['key']}.jpg" for r in rows]
    assert [r["caption"] for r in rows] == ["a photo of s3/a0", "a photo of s3/a2", None, "a photo of s3/a4", None,
                                            "a photo of s3/a7"]  # fmt: skip
    assert [r["license"] for r in rows] == [None, "cc-by", None, None, None, None]
    assert [r["width"] for r in rows] == [0, 20, 30, 40, 10, 20]

    text = np.load(tmp_path / "text_emb/text_emb_3.npy")
    assert text.dtype == np.float16
    assert text.shape == (6, DIM)
    no_caption = [i for i, r in enumerate(rows) if r["caption"] is None]
    assert no_caption == [2, 4]
    assert not text[no_caption].any()
    with_caption = [i for i in range(6) if i not in no_caption]
    expected_text = np.concatenate([c.text_embeddings for c in chunks if c.text_embeddings is not None])
    assert np.array_equal(text[with_caption], expected_text[with_caption].astype(np.float16))

    failures = pq.read_table(tmp_path / "failures/failures_3.parquet").to_pylist()
    assert failures == [
        {"key": "s3/a1", "image_path": "s3/a1.jpg", "reason": "corrupt image"},
        {"key": "s3/a5", "image_path": "s3/a5.jpg", "reason": "image too large"},
    ]
    assert out.committed() == {3}


def test_float32_option_stores_the_model_vectors_exactly(tmp_path: Path) -> None:
    shard, chunks = sample_shard()
    open_output(job_for(tmp_path, dtype="float32"), IDENTITY).write_shard(shard, chunks)
    img = np.load(tmp_path / "img_emb/img_emb_3.npy")
    assert img.dtype == np.float32
    assert np.array_equal(img, np.concatenate([c.image_embeddings for c in chunks]))
    assert np.load(tmp_path / "text_emb/text_emb_3.npy").dtype == np.float32


def test_url_sources_are_a_url_column_and_text_off_writes_no_text_emb(tmp_path: Path) -> None:
    keys = ["k0", "k1", "k2"]
    urls = [f"https://example.com/{k}.jpg" for k in keys]
    chunk = make_chunk(0, 0, True, keys, 1, failed={2: "fetch refused"}, sources=urls, text=False)
    out = open_output(job_for(tmp_path, text=False), IDENTITY)
    out.write_shard(InputShard(0, "table", "/data/t.parquet", source_column="url"), [chunk])
    assert pq.read_table(tmp_path / "metadata/metadata_0.parquet").column("url").to_pylist() == urls[:2]
    assert pq.read_table(tmp_path / "failures/failures_0.parquet").to_pylist() == [
        {"key": "k2", "url": urls[2], "reason": "fetch refused"}
    ]
    assert not (tmp_path / "text_emb/text_emb_0.npy").exists()


def test_every_shard_of_a_run_has_the_same_schema_whatever_its_values(tmp_path: Path) -> None:
    """The source column is the input's (InputShard.source_column), not guessed per shard: a URL table's shard
    whose only bad row has no URL still says `url`; integers past int64 (a uint64 hash in a .json) are kept as
    text instead of failing the shard."""
    keys = ["k0", "k1"]
    chunk = make_chunk(
        1, 0, True, keys, 2, failed={1: "no image path or URL"}, sources=["https://e.com/a.jpg", ""],
        extras=[{"hash": 2**64 + 1}, {"hash": 3}], text=False,
    )  # fmt: skip
    out = open_output(job_for(tmp_path, text=False), IDENTITY)
    out.write_shard(InputShard(1, "table", "/data/t.parquet", source_column="url"), [chunk])
    metadata = pq.read_table(tmp_path / "metadata/metadata_1.parquet")
    assert metadata.column_names == ["key", "url", "caption", "hash"]
    assert metadata.column("hash").to_pylist() == [str(2**64 + 1)]
    assert pq.read_table(tmp_path / "failures/failures_1.parquet").column_names == ["key", "url", "reason"]


def test_a_shard_where_every_row_failed_writes_empty_files(tmp_path: Path) -> None:
    chunk = make_chunk(0, 0, True, ["k0", "k1"], 1, failed={0: "bad", 1: "bad"})
    assert chunk.image_embeddings.shape == (0, DIM)
    counts = open_output(job_for(tmp_path), IDENTITY).write_shard(InputShard(0, "folder", "/d"), [chunk])
    assert (counts.rows, counts.embedded, counts.failed) == (2, 0, 2)
    assert np.load(tmp_path / "img_emb/img_emb_0.npy").shape == (0, DIM)
    assert pq.read_table(tmp_path / "metadata/metadata_0.parquet").num_rows == 0
    assert pq.read_table(tmp_path / "failures/failures_0.parquet").num_rows == 2


def test_embedding_parquet_is_a_fixed_size_float32_list_column(tmp_path: Path) -> None:
    shard, chunks = sample_shard()
    open_output(job_for(tmp_path, embedding_parquet=True), IDENTITY).write_shard(shard, chunks)
    table = pq.read_table(tmp_path / "embeddings/embeddings_3.parquet")
    metadata = pq.read_table(tmp_path / "metadata/metadata_3.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    assert table.drop_columns(["embedding"]).equals(metadata)
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, DIM)
    assert np.array_equal(vectors, np.concatenate([c.image_embeddings for c in chunks]))


def test_embedding_parquet_reads_as_a_float_array_in_duckdb(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    shard, chunks = sample_shard()
    open_output(job_for(tmp_path, embedding_parquet=True), IDENTITY).write_shard(shard, chunks)
    path = tmp_path / "embeddings/embeddings_3.parquet"
    connection = duckdb.connect()
    # parquet has no fixed-size list: DuckDB reads a FLOAT[] list, which casts to its FLOAT[dim] array type
    kind = connection.execute(f"SELECT typeof(embedding) FROM '{path}' LIMIT 1").fetchone()[0]
    assert kind == "FLOAT[]"
    expected = np.concatenate([c.image_embeddings for c in chunks])
    rows = connection.execute(
        f"SELECT key, embedding, array_inner_product(embedding::FLOAT[{DIM}], embedding::FLOAT[{DIM}]) "
        f"FROM '{path}'"
    ).fetchall()
    assert [r[0] for r in rows] == pq.read_table(path).column("key").to_pylist()
    assert np.array_equal(np.array([r[1] for r in rows], np.float32), expected)
    assert np.allclose([r[2] for r in rows], 1.0, atol=1e-5)


def test_the_same_shard_written_twice_is_byte_identical(tmp_path: Path) -> None:
    for name in ("one", "two"):
        shard, chunks = sample_shard()  # rebuilt: equal values, new objects
        open_output(job_for(tmp_path / name, embedding_parquet=True), IDENTITY).write_shard(shard, chunks)
    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert len(one) == 8
    assert one == two


class Crash(BaseException):
    """Stands for the process dying: nothing in the writer may catch it."""


@pytest.mark.parametrize("crash_before", range(6))  # 5 files (embedding parquet on) then the marker
def test_a_crash_at_any_replace_leaves_the_shard_uncommitted_and_a_rerun_writes_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_before: int
) -> None:
    shard, chunks = sample_shard()
    open_output(job_for(tmp_path / "clean", embedding_parquet=True), IDENTITY).write_shard(shard, chunks)
    clean = tree(tmp_path / "clean")

    root = tmp_path / "crashed"
    job = job_for(root, embedding_parquet=True)
    out = open_output(job, IDENTITY)
    replaced: list[str] = []
    real_replace = os.replace

    def replace_then_die(src: Any, dst: Any) -> None:
        if len(replaced) == crash_before:
            raise Crash
        replaced.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(output_module.os, "replace", replace_then_die)
    with pytest.raises(Crash):
        out.write_shard(shard, chunks)
    monkeypatch.setattr(output_module.os, "replace", real_replace)

    assert "3.json" not in replaced
    assert out.committed() == set()
    temps = [p for p in root.rglob("*.tmp")]
    assert temps, "the files not yet renamed are left as temp files, as after a kill"
    out.close()  # the process is gone: the OS drops its lock
    reopened = open_output(job, IDENTITY)
    assert list(root.rglob("*.tmp")) == []
    assert reopened.committed() == set()
    assert list(iter_output_items(root)) == []
    reopened.write_shard(shard, chunks)
    assert tree(root) == clean


def test_rewriting_a_committed_shard_uncommits_it_until_the_new_files_are_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard, chunks = sample_shard()
    out = open_output(job_for(tmp_path), IDENTITY)
    out.write_shard(shard, chunks)

    def die(src: Any, dst: Any) -> None:
        raise Crash

    monkeypatch.setattr(output_module.os, "replace", die)
    with pytest.raises(Crash):
        out.write_shard(shard, sample_shard(seed=99)[1])
    assert out.committed() == set()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda job, ident: (job, {**ident, "fingerprint": "sha256:bbbb"}), "fingerprint"),
        (lambda job, ident: (dataclasses.replace(job, dtype="float32"), ident), "dtype"),
        (lambda job, ident: (dataclasses.replace(job, shard_size=9), ident), "shard_size"),
        (lambda job, ident: (dataclasses.replace(job, input="/other"), ident), "input"),
    ],
)
def test_a_rerun_of_another_model_or_layout_is_refused_with_one_line(
    tmp_path: Path, change: Any, field: str
) -> None:
    job = job_for(tmp_path)
    shard, chunks = sample_shard()
    open_output(job, IDENTITY).write_shard(shard, chunks)
    before = tree(tmp_path)
    other_job, other_identity = change(job, IDENTITY)
    with pytest.raises(OutputMismatchError) as refused:
        open_output(other_job, other_identity)
    message = str(refused.value)
    print(message)
    assert "\n" not in message
    assert field in message
    assert "new --output" in message
    assert tree(tmp_path) == before
    # ray/actor settings are not part of the manifest: the same run on a cluster resumes the folder
    assert open_output(dataclasses.replace(job, actors=3, ray_address="auto"), IDENTITY).committed() == {3}


def test_a_rerun_over_changed_input_shards_is_refused(tmp_path: Path) -> None:
    job = job_for(tmp_path)
    shards = [sample_shard(index=i)[0] for i in range(2)]
    open_output(job, IDENTITY, shards=shards)
    open_output(job, IDENTITY, shards=shards)
    moved = [dataclasses.replace(shards[0], members=shards[0].members[1:]), shards[1]]
    with pytest.raises(OutputMismatchError, match="shards"):
        open_output(job, IDENTITY, shards=moved)


def test_committed_shards_without_a_manifest_are_refused(tmp_path: Path) -> None:
    shard, chunks = sample_shard()
    open_output(job_for(tmp_path), IDENTITY).write_shard(shard, chunks)
    (tmp_path / "embed_dataset.json").unlink()
    with pytest.raises(OutputMismatchError, match=r"no embed_dataset\.json"):
        open_output(job_for(tmp_path), IDENTITY)


def test_iter_output_items_yields_committed_shards_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = open_output(job_for(tmp_path), IDENTITY)
    for index in (10, 0, 2):
        out.write_shard(*sample_shard(index=index, seed=index))
    # shard 1's files are in place but its marker never came (killed before it)
    real_replace = os.replace

    def no_marker(src: Any, dst: Any) -> None:
        if Path(dst).parent.name == "_committed":
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(output_module.os, "replace", no_marker)
    with pytest.raises(Crash):
        out.write_shard(*sample_shard(index=1, seed=1))
    monkeypatch.setattr(output_module.os, "replace", real_replace)
    assert (tmp_path / "img_emb/img_emb_1.npy").exists()

    items = list(iter_output_items(tmp_path))
    assert is_embed_output(tmp_path)
    assert count_output_items(tmp_path) == len(items) == 18
    assert [item["id"] for item in items] == [f"s{n}/a{i}" for n in (0, 2, 10) for i in (0, 2, 3, 4, 6, 7)]
    stored = np.concatenate([np.load(tmp_path / f"img_emb/img_emb_{n}.npy") for n in (0, 2, 10)])
    vectors = np.array([item["vector"] for item in items], np.float32)
    assert np.array_equal(vectors, stored.astype(np.float32))
    assert all(isinstance(v, float) for v in items[0]["vector"])
    assert items[0]["metadata"] == {
        "image_path": "s0/a0.jpg", "caption": "a photo of s0/a0", "width": 0, "source": "synthetic"
    }  # fmt: skip
    assert items[2]["metadata"] == {"image_path": "s0/a3.jpg", "width": 30, "source": "synthetic"}


def test_clip_retrieval_embedding_reader_reads_the_output_row_aligned(tmp_path: Path) -> None:
    """rom1504's embedding-reader (what clip-retrieval's index step and autofaiss read img_emb/ with) pairs
    every img_emb row with its metadata row; it lists files by name (img_emb_10 before img_emb_2)."""
    embedding_reader = pytest.importorskip("embedding_reader")
    out = open_output(job_for(tmp_path), IDENTITY)
    expected: dict[str, np.ndarray] = {}  # key -> the vector the model stage handed over for it
    for index in (0, 1, 2, 10):
        shard, chunks = sample_shard(index=index, seed=index)
        out.write_shard(shard, chunks)
        for chunk in chunks:
            keys_in = [k for k, e in zip(chunk.raw.keys, chunk.errors, strict=True) if e is None]
            expected.update(
                zip(keys_in, chunk.image_embeddings.astype(np.float16).astype(np.float32), strict=True)
            )
    reader = embedding_reader.EmbeddingReader(
        embeddings_folder=str(tmp_path / "img_emb"),
        metadata_folder=str(tmp_path / "metadata"),
        meta_columns=["key", "caption"],
        file_format="parquet_npy",
    )
    assert (reader.count, reader.dimension) == (24, DIM)
    vectors, keys = [], []
    for batch, meta in reader(batch_size=7, start=0, end=reader.count, parallel_pieces=1):
        vectors.append(batch)
        keys.extend(meta["key"].tolist())
    assert [k.split("/")[0] for k in keys[::6]] == ["s0", "s1", "s10", "s2"]
    assert sorted(keys) == sorted(expected)
    assert np.array_equal(np.concatenate(vectors), np.array([expected[k] for k in keys]))


def test_a_clip_retrieval_output_without_manifest_is_read_by_file_number(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    (tmp_path / "img_emb").mkdir()
    (tmp_path / "metadata").mkdir()
    vectors = {n: unit_rows(rng, 2).astype(np.float16) for n in (0, 1)}
    for n in (1, 0):
        np.save(tmp_path / f"img_emb/img_emb_{n:02d}.npy", vectors[n])
        table = pa.table({"image_path": [f"/img/{n}_{i}.jpg" for i in range(2)], "caption": ["x", None]})
        pq.write_table(table, tmp_path / f"metadata/metadata_{n:02d}.parquet")
    items = list(iter_output_items(tmp_path))
    assert count_output_items(tmp_path) == 4
    assert [item["id"] for item in items] == ["/img/0_0.jpg", "/img/0_1.jpg", "/img/1_0.jpg", "/img/1_1.jpg"]
    assert np.array_equal(
        np.array([i["vector"] for i in items], np.float32),
        np.concatenate([vectors[0], vectors[1]]).astype(np.float32),
    )
    assert not is_embed_output(tmp_path / "img_emb")


HOLD_OUTPUT = """
import sys
from pathlib import Path
from clipserve.config import Settings
from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.output import open_output
job = EmbedJob(settings=Settings(), input="/data", output=Path(sys.argv[1]), chunk_size=5, shard_size=8)
held = open_output(job, {"weights": "hf-hub:test/tiny", "fingerprint": "sha256:aaaa", "architecture": "ViT-T"})
print("held", flush=True)
sys.stdin.read()  # until the test kills it
"""


def test_a_second_run_on_a_folder_in_use_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    job = job_for(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OUTPUT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        in_flight = tmp_path / "img_emb/.img_emb_3.npy.tmp"
        in_flight.write_bytes(b"the first run is writing this")
        with pytest.raises(OutputInUseError, match="another embed-dataset run") as refused:
            open_output(job, IDENTITY)
        assert "\n" not in str(refused.value)
        assert in_flight.exists()
    finally:
        holder.kill()  # SIGKILL: the lock goes with the process
        holder.wait()
    with open_output(job, IDENTITY) as second:
        assert not in_flight.exists()
        second.write_shard(*sample_shard())
    assert open_output(job, IDENTITY).committed() == {3}


def test_chunks_out_of_order_are_a_programming_error(tmp_path: Path) -> None:
    shard, chunks = sample_shard()
    out = open_output(job_for(tmp_path), IDENTITY)
    with pytest.raises(ValueError, match=r"0\.\.k in order"):
        out.write_shard(shard, chunks[::-1])
    assert out.committed() == set()
