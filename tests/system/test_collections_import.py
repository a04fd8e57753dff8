"""`clipserve collections import` against a real server: a folder of images, resumable; a parquet file."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from clipserve.cli import main
from tests.support import encode_image, gradient_image
from tests.system.conftest import ServerProcess


def _folder(root: Path) -> Path:
    folder = root / "photos"
    (folder / "trip").mkdir(parents=True)
    for i in range(5):
        target = folder / ("trip" if i % 2 else "") / f"img{i}.png"
        target.write_bytes(encode_image(gradient_image(40, 30, seed=i)))
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def test_import_a_folder_and_resume(tiny_server: ServerProcess, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    state = tmp_path / "progress.log"
    state.write_text("trip/img1.png\n")  # as if an earlier run had already imported it
    argv = ["collections", "import", "holiday", str(folder), "--url", tiny_server.base_url, "--batch-size", "2",
            "--state", str(state)]  # fmt: skip
    assert main(argv) == 1  # broken.jpg failed, and says so
    with httpx.Client(base_url=tiny_server.base_url, timeout=60) as http:
        assert http.get("/v1/collections/holiday").json()["item_count"] == 4  # 5 images, one skipped as done
        ids = set(state.read_text().split())
        assert ids == {"trip/img1.png", "img0.png", "img2.png", "img4.png", "trip/img3.png"}
        assert main(argv) == 1  # only broken.jpg is sent again
        assert http.get("/v1/collections/holiday").json()["item_count"] == 4


def test_import_a_parquet_file_of_embeddings(tiny_server: ServerProcess, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pa.table(
        {"id": [f"row{i}" for i in range(10)], "embedding": vectors.tolist(), "label": ["a", "b"] * 5}
    )
    pq.write_table(table, tmp_path / "embeddings.parquet")
    assert (
        main(
            [
                "collections",
                "import",
                "vectors",
                str(tmp_path / "embeddings.parquet"),
                "--url",
                tiny_server.base_url,
            ]
        )
        == 0
    )
    with httpx.Client(base_url=tiny_server.base_url, timeout=60) as http:
        assert http.get("/v1/collections/vectors").json()["item_count"] == 10
        hits = http.post(
            "/v1/collections/vectors/search", json={"query": {"vector": vectors[6].tolist()}, "top_k": 10}
        )
    # every row came in with its own vector and label: all ten scores are the cosines numpy computes
    want = vectors.astype(np.float64) @ vectors[6].astype(np.float64)
    order = np.argsort(-want)
    results = hits.json()["results"]
    assert [r["id"] for r in results] == [f"row{i}" for i in order]
    assert [r["score"] for r in results] == pytest.approx(want[order].tolist(), abs=1e-5)
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-5)  # the row's own vector
    assert [r["metadata"] for r in results] == [{"label": "ab"[i % 2]} for i in order]


def _embed_output(root: Path, vectors: np.ndarray) -> Path:
    """An embed-dataset output folder of two shards (float16, as the command writes by default), written by its
    own writer; shard 1 is left uncommitted (its files present, no marker), as a killed run leaves it."""
    from clipserve.config import Settings
    from clipserve.dataset_embed.job import EmbedJob
    from clipserve.dataset_embed.output import open_output
    from clipserve.dataset_embed.records import EmbeddedChunk, InputShard, RawChunk

    job = EmbedJob(settings=Settings(), input=str(root / "photos"), output=root / "out", text=False)
    shards = [InputShard(n, "folder", str(root / "photos"), members=(f"s{n}",)) for n in range(3)]
    with open_output(
        job, {"weights": "random", "fingerprint": "f", "architecture": "a"}, shards=shards
    ) as out:
        for n, rows in ((0, range(0, 4)), (2, range(4, 6)), (1, range(6, 8))):
            keys = [f"img{i}" for i in rows]
            raw = RawChunk(
                shard=n, chunk=0, last=True, base="", keys=keys, sources=[f"{k}.jpg" for k in keys],
                captions=[None] * len(keys), extras=[{"year": 2020 + i} for i in rows], data=[None] * len(keys),
                errors=[None] * len(keys),
            )  # fmt: skip
            out.write_shard(shards[n], [EmbeddedChunk(raw, list(raw.errors), vectors[list(rows)], None)])
    (root / "out" / "_committed" / "1.json").unlink()  # shard 1: written, never committed
    return root / "out"


def test_import_an_embed_dataset_output_folder_without_re_embedding(
    tiny_server: ServerProcess, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((8, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    output = _embed_output(tmp_path, vectors)
    argv = ["collections", "import", "dataset", str(output), "--url", tiny_server.base_url]
    assert main(argv) == 0
    with httpx.Client(base_url=tiny_server.base_url, timeout=60) as http:
        assert http.get("/v1/collections/dataset").json()["item_count"] == 6  # shards 0 and 2; 1 uncommitted
        item = http.get("/v1/collections/dataset/items/img5", params={"include_vector": "true"}).json()
        stored = np.asarray(item["vector"], dtype=np.float32)
        # the float16 row the command stored, sent as float32: no model ran (the tiny model would differ)
        half = vectors[5].astype(np.float16).astype(np.float32)
        assert np.allclose(stored, half / np.linalg.norm(half), atol=1e-6)  # the server stores unit vectors
        assert not np.allclose(stored, vectors[5], atol=1e-6)  # ... of the float16 row, not the original
        assert item["metadata"] == {"image_path": "img5.jpg", "year": 2025}
        assert http.get("/v1/collections/dataset/items/img6").status_code == 404
    assert main(argv) == 0  # a second run: everything acknowledged already, nothing sent again
