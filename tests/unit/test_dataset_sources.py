"""embed-dataset inputs (issue 14): which kind an input is, its shards (deterministic, sized), and its rows."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipserve.dataset_embed.job import EmbedJob, TableColumns
from clipserve.dataset_embed.records import InputShard, RawChunk
from clipserve.dataset_embed.sources import NO_IMAGE_IN_SHARD, DatasetInputError, discover_shards, read_chunks
from tests.support import encode_image, gradient_image, make_settings


def job_for(tmp_path: Path, source: str | Path, **options: Any) -> EmbedJob:
    settings = make_settings(tmp_path, **options.pop("settings", {}))
    return EmbedJob(settings=settings, input=str(source), output=tmp_path / "out", **options)


def chunks_of(job: EmbedJob) -> list[RawChunk]:
    return [chunk for shard in discover_shards(job) for chunk in read_chunks(shard, job)]


def png(seed: int, size: int = 16) -> bytes:
    return encode_image(gradient_image(size, size, seed=seed))


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


# --- image folders -----------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write(root / "b.png", png(1))
    write(root / "a" / "c.jpg", encode_image(gradient_image(16, 16, seed=2), "JPEG"))
    write(root / "a" / "c.txt", "a cat on a mat")
    write(root / "a" / "B.JPG", encode_image(gradient_image(16, 16, seed=3), "JPEG"))
    write(root / "z" / "deep" / "d.webp", encode_image(gradient_image(16, 16, seed=4), "WEBP"))
    write(root / "z" / "deep" / "d.txt", "ünïcödé caption\n")
    write(root / "notes.md", "not an image")
    write(root / "orphan.txt", "a caption without an image")
    return root


def test_a_folder_is_found_recursively_sorted_and_cut_into_shards(tmp_path: Path, folder: Path) -> None:
    shards = discover_shards(job_for(tmp_path, folder, shard_size=3))
    assert shards == [
        InputShard(0, "folder", str(folder), members=("a/B.JPG", "a/c.jpg", "b.png"), captioned=True),
        InputShard(1, "folder", str(folder), members=("z/deep/d.webp",), captioned=True),
    ]
    assert discover_shards(job_for(tmp_path, folder, shard_size=3)) == shards


def test_a_folder_shard_reads_bytes_and_sidecar_captions_in_chunks(tmp_path: Path, folder: Path) -> None:
    job = job_for(tmp_path, folder, shard_size=3, chunk_size=2)
    first, second = discover_shards(job)
    chunks = list(read_chunks(first, job))
    assert [(c.shard, c.chunk, c.last, len(c.keys)) for c in chunks] == [(0, 0, False, 2), (0, 1, True, 1)]
    assert [k for c in chunks for k in c.keys] == ["a/B", "a/c", "b"]
    assert [s for c in chunks for s in c.sources] == ["a/B.JPG", "a/c.jpg", "b.png"]
    assert [t for c in chunks for t in c.captions] == [None, "a cat on a mat", None]
    assert [d for c in chunks for d in c.data] == [(folder / m).read_bytes() for m in first.members]
    assert all(c.base == str(folder) for c in chunks)
    assert all(e is None for c in chunks for e in c.errors)
    (last,) = read_chunks(second, job)
    assert (last.chunk, last.last, last.keys, last.captions) == (0, True, ["z/deep/d"], ["ünïcödé caption\n"])


def test_a_shard_is_captioned_only_when_one_of_its_images_has_a_sidecar(tmp_path: Path, folder: Path) -> None:
    """Sidecars are opened only for captioned shards (on an object store each missing one is a request), and a
    run whose shards have no caption writes no text_emb."""
    shards = discover_shards(job_for(tmp_path, folder, shard_size=1))
    assert [(s.members, s.captioned) for s in shards] == [
        (("a/B.JPG",), False), (("a/c.jpg",), True), (("b.png",), False), (("z/deep/d.webp",), True),
    ]  # fmt: skip
    (folder / "b.txt").write_text("a caption the reader must not open: b.png's shard was listed uncaptioned")
    job = job_for(tmp_path, folder, shard_size=1)
    assert [c.captions for c in read_chunks(shards[2], job)] == [[None]]
    assert discover_shards(job)[2].captioned


def test_a_chunk_of_exactly_chunk_size_rows_is_the_last_one(tmp_path: Path, folder: Path) -> None:
    job = job_for(tmp_path, folder, shard_size=4, chunk_size=2)
    (shard,) = discover_shards(job)
    assert [(c.chunk, c.last, len(c.keys)) for c in read_chunks(shard, job)] == [(0, False, 2), (1, True, 2)]


def test_an_image_over_the_byte_cap_fails_its_row_without_being_read_past_the_cap(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write(root / "a.png", png(0))
    os.symlink("/dev/zero", root / "endless.png")  # reading it whole would never end
    job = job_for(tmp_path, root, settings={"max_image_bytes": 4096})
    (chunk,) = chunks_of(job)
    assert chunk.keys == ["a", "endless"]
    assert chunk.data == [(root / "a.png").read_bytes(), None]
    assert chunk.errors == [None, "image is over the 4096-byte limit"]


def test_a_folder_can_be_given_as_a_file_url(tmp_path: Path, folder: Path) -> None:
    job = job_for(tmp_path, folder, shard_size=10)
    assert discover_shards(job_for(tmp_path, f"file://{folder}", shard_size=10)) == discover_shards(job)


def test_a_folder_on_an_fsspec_filesystem_is_read_through_fsspec(tmp_path: Path) -> None:
    memory = fsspec.filesystem("memory")
    root = f"/clipserve-test-{os.getpid()}"
    images = {"x/1.png": png(1), "x/2.png": png(2)}
    try:
        for name, data in images.items():
            memory.pipe(f"{root}/{name}", data)
        memory.pipe(f"{root}/x/2.txt", b"two")
        job = job_for(tmp_path, f"memory://{root}", chunk_size=8)
        (shard,) = discover_shards(job)
        assert (shard.location, shard.members) == (f"memory://{root}", ("x/1.png", "x/2.png"))
        (chunk,) = read_chunks(shard, job)
        assert (chunk.keys, chunk.captions, chunk.data) == (
            ["x/1", "x/2"],
            [None, "two"],
            list(images.values()),
        )
    finally:
        memory.rm(root, recursive=True)


# --- tables ------------------------------------------------------------------------------------------------


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=2)  # several row groups: ranges cross them
    return path


def test_parquet_files_are_cut_into_row_ranges_numbered_across_files(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    write_parquet(tables / "part-0.parquet", {"image_path": ["a.png", "b.png", "c.png"]})
    write_parquet(tables / "part-1.parquet", {"image_path": ["d.png", "e.png"]})
    job = job_for(tmp_path, tables, shard_size=2, chunk_size=10)
    p0, p1 = str(tables / "part-0.parquet"), str(tables / "part-1.parquet")
    assert discover_shards(job) == [
        InputShard(0, "table", p0, row_start=0, row_stop=2, captioned=False, key_prefix="part-0/"),
        InputShard(1, "table", p0, row_start=2, row_stop=3, captioned=False, key_prefix="part-0/"),
        InputShard(2, "table", p1, row_start=0, row_stop=2, captioned=False, key_prefix="part-1/"),
    ]
    chunks = chunks_of(job)
    assert [c.keys for c in chunks] == [
        ["part-0/000000000", "part-0/000000001"],
        ["part-0/000000002"],
        ["part-1/000000000", "part-1/000000001"],
    ]
    assert [c.sources for c in chunks] == [["a.png", "b.png"], ["c.png"], ["d.png", "e.png"]]
    assert all(c.base == str(tables) and c.data == [None] * len(c.keys) for c in chunks)


def test_a_parquet_row_range_crosses_row_groups_and_passes_scalar_columns_through(tmp_path: Path) -> None:
    absolute = str(tmp_path / "elsewhere" / "f.png")
    table = write_parquet(
        tmp_path / "data.parquet",
        {
            "score": [0.5, 0.25, 1.0, 2.0, 3.0],
            "url": ["https://e.test/a.jpg", "imgs/b.png", absolute, None, ""],
            "text": ["one", None, "three", "four", "five"],
            "width": [1, 2, 3, 4, 5],
            "tags": [["x"], [], ["y"], [], []],  # nested: not passed through
            "key": [10, 11, 12, 13, 14],
        },
    )
    job = job_for(tmp_path, table, shard_size=4, chunk_size=3)
    first, second = discover_shards(job)
    assert (first.key_prefix, first.row_start, first.row_stop, second.row_start, second.row_stop) == (
        "",
        0,
        4,
        4,
        5,
    )
    a, b = read_chunks(first, job)
    assert (a.keys, b.keys, a.last, b.last) == (["10", "11", "12"], ["13"], False, True)
    assert a.sources + b.sources == ["https://e.test/a.jpg", "imgs/b.png", absolute, ""]
    assert a.captions + b.captions == ["one", None, "three", "four"]
    assert a.extras + b.extras == [
        {"score": s, "width": w} for s, w in [(0.5, 1), (0.25, 2), (1.0, 3), (2.0, 4)]
    ]
    assert a.errors + b.errors == [None, None, None, "no image path or URL in column 'url'"]
    (c,) = read_chunks(second, job)
    assert (c.keys, c.errors) == (["14"], ["no image path or URL in column 'url'"])


def test_chosen_columns_override_the_defaults(tmp_path: Path) -> None:
    table = write_parquet(tmp_path / "t.parquet", {"file": ["a.png"], "alt": ["an alt text"], "id": ["x1"]})
    columns = TableColumns(image="file", caption="alt", key="id")
    (chunk,) = chunks_of(job_for(tmp_path, table, columns=columns))
    assert (chunk.keys, chunk.sources, chunk.captions, chunk.extras) == (
        ["x1"],
        ["a.png"],
        ["an alt text"],
        [{}],
    )


def test_a_csv_keeps_its_image_and_caption_columns_as_text(tmp_path: Path) -> None:
    csv = write(
        tmp_path / "list.csv",
        'key,url,caption,license,height\n00042,0001,"a, quoted caption",cc-by,10\n7,http://e.test/x.jpg,1984,cc0,20\n8,y.png,,,30\n',
    )
    (chunk,) = chunks_of(job_for(tmp_path, csv))
    assert chunk.keys == ["00042", "7", "8"]
    assert chunk.sources == ["0001", "http://e.test/x.jpg", "y.png"]
    assert chunk.captions == ["a, quoted caption", "1984", None]  # an empty cell: no caption
    assert chunk.extras == [
        {"license": "cc-by", "height": "10"},
        {"license": "cc0", "height": "20"},
        {"license": None, "height": "30"},
    ]
    assert chunk.base == str(tmp_path)


def test_an_empty_table_is_one_shard_of_one_empty_last_chunk(tmp_path: Path) -> None:
    table = write_parquet(tmp_path / "empty.parquet", {"url": pa.array([], pa.string())})
    job = job_for(tmp_path, table)
    (shard,) = discover_shards(job)
    (chunk,) = read_chunks(shard, job)
    assert (chunk.chunk, chunk.last, chunk.keys, chunk.data) == (0, True, [], [])


def test_a_table_without_an_image_column_is_refused_naming_its_columns(tmp_path: Path) -> None:
    table = write_parquet(tmp_path / "t.parquet", {"name": ["a"], "caption": ["x"]})
    with pytest.raises(
        DatasetInputError, match="no image column: expected one of url, image_path, path, filepath"
    ):
        discover_shards(job_for(tmp_path, table))


# --- WebDataset tars ---------------------------------------------------------------------------------------


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sidecar(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Two tars as img2dataset writes them: {key}.jpg|png|webp, {key}.txt, {key}.json."""
    jpeg = encode_image(gradient_image(16, 16, seed=5), "JPEG")
    webp = encode_image(gradient_image(16, 16, seed=6), "WEBP")
    root = tmp_path / "shards"
    meta = {
        "url": "https://e.test/0.jpg",
        "key": "000000000",
        "caption": "c0",
        "status": "success",
        "width": 16,
    }
    write_tar(
        root / "00001.tar",
        [
            ("000010000.jpg", jpeg),
            ("000010000.txt", b"a red gradient"),
            ("000010000.json", sidecar(**meta, exif={"nested": 1}, sizes=[1, 2])),
            ("000010001.txt", b"a caption whose image failed to download"),
            ("000010001.json", sidecar(url="https://e.test/1.jpg", status="failed_to_download")),
            ("000010002.webp", webp),
        ],
    )
    write_tar(root / "00000.tar", [("000000000.png", png(7)), ("000000000.txt", b"first")])
    return root


def test_webdataset_tars_are_one_shard_each_in_sorted_order(tmp_path: Path, shards: Path) -> None:
    expected = [
        InputShard(0, "webdataset", str(shards / "00000.tar"), source_column="url"),
        InputShard(1, "webdataset", str(shards / "00001.tar"), source_column="url"),
    ]
    assert discover_shards(job_for(tmp_path, shards)) == expected
    assert discover_shards(job_for(tmp_path, f"{shards}/*.tar")) == expected
    assert discover_shards(job_for(tmp_path, shards / "00001.tar")) == [
        InputShard(0, "webdataset", str(shards / "00001.tar"), source_column="url")
    ]


def test_webdataset_members_are_grouped_by_key_with_captions_and_json_fields(
    tmp_path: Path, shards: Path
) -> None:
    job = job_for(tmp_path, shards, chunk_size=2)
    first, a, b = chunks_of(job)
    assert (first.shard, first.keys, first.captions, first.sources) == (
        0,
        ["000000000"],
        ["first"],
        ["000000000.png"],
    )
    assert [(c.shard, c.chunk, c.last) for c in (a, b)] == [(1, 0, False), (1, 1, True)]
    assert a.keys + b.keys == ["000010000", "000010001", "000010002"]
    assert a.sources + b.sources == ["https://e.test/0.jpg", "https://e.test/1.jpg", "000010002.webp"]
    assert a.captions + b.captions == ["a red gradient", "a caption whose image failed to download", None]
    assert a.extras + b.extras == [{"status": "success", "width": 16}, {"status": "failed_to_download"}, {}]
    with tarfile.open(shards / "00001.tar") as tar:
        image_bytes = [tar.extractfile(name).read() for name in ("000010000.jpg", "000010002.webp")]  # type: ignore[union-attr]
    assert a.data + b.data == [image_bytes[0], None, image_bytes[1]]
    assert a.errors + b.errors == [None, NO_IMAGE_IN_SHARD, None]


def test_a_webdataset_image_over_the_cap_fails_its_row(tmp_path: Path) -> None:
    big = b"\xff" * 5000
    tar = write_tar(tmp_path / "s.tar", [("a.jpg", big), ("b.png", png(0))])
    (chunk,) = chunks_of(job_for(tmp_path, tar, settings={"max_image_bytes": 4096}))
    assert chunk.data == [None, png(0)]
    assert chunk.errors == ["image is 5000 bytes; the limit is 4096", None]


def test_a_truncated_tar_keeps_its_readable_keys_and_reports_the_rest(tmp_path: Path) -> None:
    whole = write_tar(tmp_path / "whole.tar", [("a.png", png(0)), ("b.png", png(1) * 40)])
    with tarfile.open(whole) as complete:
        cut = complete.getmember("b.png").offset_data + 100
    tar = write(tmp_path / "cut" / "cut.tar", whole.read_bytes()[:cut])  # b's data cut short
    (chunk,) = chunks_of(job_for(tmp_path, tar))
    assert chunk.keys == ["a", "b", "cut.tar"]
    assert chunk.data == [png(0), None, None]
    assert chunk.errors[0] is None
    assert chunk.errors[1] == "could not read the image from the tar: unexpected end of data"
    assert chunk.errors[2] == "the tar shard is unreadable after 2 keys: unexpected end of data"


# --- which kind an input is --------------------------------------------------------------------------------


def test_a_folder_of_tables_is_a_table_input_and_one_with_images_is_a_folder(tmp_path: Path) -> None:
    write_parquet(tmp_path / "t" / "x.parquet", {"url": ["a.png"]})
    assert [s.kind for s in discover_shards(job_for(tmp_path, tmp_path / "t"))] == ["table"]
    write(tmp_path / "t" / "img.png", png(0))
    assert [s.kind for s in discover_shards(job_for(tmp_path, tmp_path / "t"))] == ["folder"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "is an empty folder"),
        ("nothing", "holds no images"),
        ("notes.txt", "is not an input this command reads"),
        ("*.nope", "matches no files"),
        ("pics/*.png", "matches images: give their folder instead"),
    ],
)
def test_an_input_that_cannot_be_embedded_is_refused_in_one_line(
    tmp_path: Path, name: str, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path / "nothing" / "readme.md", "hello")
    write(tmp_path / "pics" / "photo.png", png(0))
    write(tmp_path / "notes.txt", "hello")
    with pytest.raises(DatasetInputError, match=message) as raised:
        discover_shards(job_for(tmp_path, tmp_path / name))
    assert "\n" not in str(raised.value)


def test_an_input_url_of_an_unknown_protocol_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetInputError, match=r"^nosuchfs://bucket/x: Protocol not known: nosuchfs$"):
        discover_shards(job_for(tmp_path, "nosuchfs://bucket/x"))


def test_a_sidecar_caption_is_read_only_up_to_the_text_limit(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write(root / "a.png", png(0))
    write(root / "a.txt", "é" * 100_000)  # 2 bytes a character: a cut character would show as U+FFFD
    (chunk,) = chunks_of(job_for(tmp_path, root, settings={"max_text_chars": 11}))
    assert chunk.captions == ["é" * 11]


def test_a_chosen_column_that_is_not_in_the_table_is_refused_naming_its_columns(tmp_path: Path) -> None:
    table = write_parquet(tmp_path / "t.parquet", {"url": ["a.png"], "alt": ["x"]})
    message = f"^{table}: the caption column 'caption_text' is not in the table \\(its columns: url, alt\\)$"
    with pytest.raises(DatasetInputError, match=message):
        discover_shards(job_for(tmp_path, table, columns=TableColumns(caption="caption_text")))


def test_images_sharing_a_path_without_suffix_keep_their_suffix_in_the_key(tmp_path: Path) -> None:
    """a.jpg and a.png would both be key `a` (one would overwrite the other in a collection): they keep their
    suffixes, across a shard boundary too; other keys stay suffix-less, as clip-retrieval writes them."""
    root = tmp_path / "images"
    write(root / "a.jpg", encode_image(gradient_image(16, 16, seed=1), "JPEG"))
    write(root / "a.png", png(2))
    write(root / "b.png", png(3))
    write(root / "a.txt", "both a's caption")
    job = job_for(tmp_path, root, shard_size=1)
    keys = [(k, c) for shard in discover_shards(job) for chunk in read_chunks(shard, job)
            for k, c in zip(chunk.keys, chunk.captions, strict=True)]  # fmt: skip
    assert keys == [("a.jpg", "both a's caption"), ("a.png", "both a's caption"), ("b", None)]
