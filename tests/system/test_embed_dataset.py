"""`clipserve embed-dataset` end to end on a local Ray (the real command, in its own process): a generated
folder, a parquet of paths and WebDataset shards give the server's embeddings row for row, corrupt images land
in failures/, and a run SIGKILLed mid-way then rerun gives byte for byte the output of an uninterrupted run."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import data_uri
from tests.system.conftest import ServerProcess
from tests.system.embed_dataset_support import (
    CORRUPT,
    IMAGES,
    SHARD_SIZE,
    Dataset,
    command,
    command_line,
    committed,
    descendants,
    make_dataset,
    output_files,
    read_shards,
    run_command,
    started_command,
    wait_gone,
)

TOLERANCE = 1e-5  # the bound between the batch path and the server (float32 output)
KILL_WAIT_S = 300.0  # for the first committed shard of the run to be killed; only a hang gets near it
RAY_EXIT_S = 60.0  # for the killed run's Ray processes to go


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="module")
def served(tiny_server: ServerProcess, dataset: Dataset) -> dict[str, np.ndarray]:
    """The server's float32 embeddings: 'image:<folder key>' and 'text:<caption>' (the same tiny model)."""
    expected: dict[str, np.ndarray] = {}
    good = [row for row in dataset.rows.values() if row.good]
    captions = sorted({row.caption for row in good if row.caption is not None})
    with httpx.Client(base_url=tiny_server.base_url, timeout=120) as http:
        for start in range(0, len(good), 16):
            batch = good[start : start + 16]
            images = [{"image": data_uri(row.data)} for row in batch]
            for row, vector in zip(batch, _embed(http, images), strict=True):
                expected[f"image:{row.key}"] = vector
        for start in range(0, len(captions), 16):
            batch_texts = captions[start : start + 16]
            for caption, vector in zip(batch_texts, _embed(http, batch_texts), strict=True):
                expected[f"text:{caption}"] = vector
    return expected


def _embed(http: httpx.Client, inputs: Sequence[object]) -> list[np.ndarray]:
    answer = http.post("/v1/embeddings", json={"input": inputs, "encoding_format": "base64"})
    assert answer.status_code == 200, answer.text
    rows = sorted(answer.json()["data"], key=lambda d: d["index"])
    return [np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4") for row in rows]


@pytest.fixture(scope="module")
def folder_run(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One uninterrupted run over the folder: checked against the server, and the SIGKILL test's reference."""
    output = tmp_path_factory.mktemp("folder-run") / "out"
    log = run_command(command(dataset.folder, output), output.parent / "run.log")
    return output, log


def _check_embeddings(
    metadata: list[dict[str, object]],
    images: np.ndarray,
    texts: np.ndarray | None,
    folder_keys: list[str],
    dataset: Dataset,
    served: dict[str, np.ndarray],
) -> None:
    """Row i of img_emb/text_emb is the server's embedding of the image/caption of metadata row i."""
    assert images.dtype == np.float32
    assert images.shape == (len(folder_keys), 512)
    assert texts is not None
    assert texts.shape == images.shape
    assert [row["caption"] for row in metadata] == [dataset.rows[k].caption for k in folder_keys]
    for i, key in enumerate(folder_keys):
        np.testing.assert_allclose(images[i], served[f"image:{key}"], atol=TOLERANCE, err_msg=key)
        caption = dataset.rows[key].caption
        want = np.zeros(512, np.float32) if caption is None else served[f"text:{caption}"]
        np.testing.assert_allclose(texts[i], want, atol=TOLERANCE, err_msg=f"caption of {key}")


def _good_keys_in(order: list[str], dataset: Dataset) -> list[str]:
    return [key for key in order if dataset.rows[key].good]


def _corrupt_keys() -> list[str]:
    return sorted(path.rsplit(".", 1)[0] for path in CORRUPT)


def test_a_folder_gives_the_servers_embeddings_row_for_row(
    folder_run: tuple[Path, str], dataset: Dataset, served: dict[str, np.ndarray]
) -> None:
    output, log = folder_run
    rows = len(dataset.rows)
    assert committed(output) == list(range(-(-rows // SHARD_SIZE)))
    metadata, images, texts, failures = read_shards(output)
    # The folder's order: relative POSIX paths sorted; every good row once, in that order, no gap.
    order = sorted(dataset.rows, key=lambda k: dataset.rows[k].path)
    keys = _good_keys_in(order, dataset)
    assert [row["key"] for row in metadata] == keys
    assert [row["image_path"] for row in metadata] == [dataset.rows[k].path for k in keys]
    _check_embeddings(metadata, images, texts, keys, dataset, served)
    assert sorted(str(row["key"]) for row in failures) == _corrupt_keys()
    assert all(row["reason"] for row in failures)
    assert f"images: {IMAGES} in" in log, log
    assert f"failures: {len(CORRUPT)}" in log, log


def test_a_rerun_of_a_finished_output_changes_nothing(
    folder_run: tuple[Path, str], dataset: Dataset, tmp_path: Path
) -> None:
    output, _ = folder_run
    before = output_files(output)
    log = run_command(command(dataset.folder, output), tmp_path / "rerun.log")
    assert f"0 embedded, {len(committed(output))} already done" in log, log
    assert output_files(output) == before


def test_a_parquet_of_paths_keeps_its_row_order_and_columns(
    dataset: Dataset, served: dict[str, np.ndarray], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    log = run_command(command(dataset.table, output), tmp_path / "run.log")
    metadata, images, texts, failures = read_shards(output)
    keys = _good_keys_in(dataset.table_order, dataset)
    assert [row["key"] for row in metadata] == [f"t-{k}" for k in keys]
    assert [row["image_path"] for row in metadata] == [f"../images/{dataset.rows[k].path}" for k in keys]
    assert [row["label"] for row in metadata] == [dataset.rows[k].label for k in keys]  # passed through
    _check_embeddings(metadata, images, texts, keys, dataset, served)
    assert sorted(str(row["key"]) for row in failures) == [f"t-{k}" for k in _corrupt_keys()]
    assert f"images: {IMAGES} in" in log, log


def test_webdataset_shards_are_one_output_shard_per_tar(
    dataset: Dataset, served: dict[str, np.ndarray], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    run_command(command(dataset.tars, output), tmp_path / "run.log")
    assert committed(output) == [0, 1]
    metadata, images, texts, failures = read_shards(output)
    by_wds = {key.replace("/", "_"): key for key in dataset.rows}
    wds_keys = [key for tar in dataset.tar_keys for key in tar if dataset.rows[by_wds[key]].good]
    assert [row["key"] for row in metadata] == wds_keys
    assert [row["label"] for row in metadata] == [dataset.rows[by_wds[k]].label for k in wds_keys]
    _check_embeddings(metadata, images, texts, [by_wds[k] for k in wds_keys], dataset, served)
    assert sorted(str(row["key"]) for row in failures) == [k.replace("/", "_") for k in _corrupt_keys()]


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_output(
    folder_run: tuple[Path, str], dataset: Dataset, tmp_path: Path
) -> None:
    reference, _ = folder_run
    output = tmp_path / "out"
    argv = command(dataset.folder, output)
    shards = len(committed(reference))
    with started_command(argv, tmp_path / "killed.log") as process:
        marker_dir = output / "_committed"
        deadline = time.monotonic() + KILL_WAIT_S
        while not (marker_dir.is_dir() and any(marker_dir.glob("*.json"))):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no shard was committed in time"
            time.sleep(0.005)
        ray_processes = descendants(process.pid)  # Ray's head processes and workers, all started by the run
        started = [command_line(pid) for pid in ray_processes]
        assert any("raylet" in line for line in started), started  # the run's own local Ray
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    survivors = wait_gone(ray_processes, RAY_EXIT_S)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, [command_line(pid) for pid in survivors]
    done = committed(output)
    print(f"killed with shards {done} of {shards} committed; {len(ray_processes)} processes below the run")
    assert 0 < len(done) < shards, f"the kill came too late to prove anything: {done}"
    # What was committed before the kill is already final: byte for byte the uninterrupted run's files.
    want = output_files(reference)
    left = output_files(output)
    for n in done:
        for folder in ("img_emb/img_emb", "text_emb/text_emb", "metadata/metadata", "failures/failures"):
            suffix = "npy" if folder.endswith("emb") else "parquet"
            name = f"{folder}_{n}.{suffix}"
            assert left[name] == want[name], name
    log = run_command(argv, tmp_path / "rerun.log")
    assert f"{len(done)} already done" in log, log
    got = output_files(output)
    assert sorted(got) == sorted(want)  # no temp file left, no shard missing or extra
    for name in want:
        assert got[name] == want[name], f"{name} differs from the uninterrupted run's"


@pytest.fixture(autouse=True, scope="module")
def _no_ray_left_behind() -> Iterator[None]:
    yield
    mine = descendants(os.getpid())
    leftovers = [command_line(pid) for pid in mine if "ray" in command_line(pid)]
    assert not leftovers, leftovers


def test_an_input_without_captions_writes_no_text_emb(
    dataset: Dataset, served: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """A table with no caption column: no text_emb/ files (all-zero ones would only cost space), text off in the
    manifest, and the images still the server's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [k for k in sorted(dataset.rows) if dataset.rows[k].good][:10]
    table = dataset.table.parent / "no_captions.parquet"
    pq.write_table(pa.table({"image_path": [f"../images/{dataset.rows[k].path}" for k in keys]}), table)
    output = tmp_path / "out"
    log = run_command(command(table, output), tmp_path / "run.log")
    metadata, images, texts, failures = read_shards(output)
    assert texts is None
    assert not list((output / "text_emb").glob("*"))
    assert "texts: 0 " in log, log
    assert json.loads((output / "embed_dataset.json").read_text())["text"] is False
    assert failures == []
    assert len(metadata) == len(keys)
    for i, key in enumerate(keys):
        np.testing.assert_allclose(images[i], served[f"image:{key}"], atol=TOLERANCE, err_msg=key)
