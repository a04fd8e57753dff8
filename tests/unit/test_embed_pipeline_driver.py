"""The driver side of embed-dataset's Ray plan: chunks arrive in any order (Ray Data does not keep it) and a
shard is written exactly when all its chunks 0..last are in, once; which actors and resources a cluster gets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from clipserve.config import Settings
from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.output import open_output
from clipserve.dataset_embed.pipeline import (
    GPU_TASK_CPUS,
    EmbedPlanError,
    RunTotals,
    ShardCollector,
    plan_stages,
)
from clipserve.dataset_embed.records import EmbeddedChunk, InputShard, RawChunk

IDENTITY = {"weights": "random", "fingerprint": "f", "architecture": "a", "precision": "fp32"}


def _job(tmp_path: Path, **overrides: object) -> EmbedJob:
    settings = Settings(data_dir=tmp_path, weights="random", **overrides)  # type: ignore[arg-type]
    return EmbedJob(settings=settings, input=str(tmp_path), output=tmp_path / "out", text=False)


def _chunk(shard: int, number: int, last: bool, rows: int, failed: int = 0) -> EmbeddedChunk:
    keys = [f"s{shard}c{number}r{i}" for i in range(rows)]
    errors: list[str | None] = ["bad" if i < failed else None for i in range(rows)]
    raw = RawChunk(
        shard=shard, chunk=number, last=last, base="", keys=keys, sources=[f"{k}.png" for k in keys],
        captions=[None] * rows, extras=[{} for _ in keys], data=[None] * rows, errors=[None] * rows,
    )  # fmt: skip
    vectors = np.full((rows - failed, 512), 1 / np.sqrt(512), np.float32)
    return EmbeddedChunk(raw=raw, errors=errors, image_embeddings=vectors, text_embeddings=None)


def test_a_shard_is_written_once_all_its_chunks_are_in_whatever_their_order(tmp_path: Path) -> None:
    job = _job(tmp_path)
    shards = {n: InputShard(index=n, kind="folder", location=str(tmp_path)) for n in (0, 1)}
    output = open_output(job, IDENTITY)
    totals = RunTotals()
    collector = ShardCollector(output, shards, totals, progress=False)
    collector.add(_chunk(0, 2, last=True, rows=1))  # the last chunk first: the shard has 3 chunks
    collector.add(_chunk(1, 0, last=False, rows=4))
    collector.add(_chunk(0, 0, last=False, rows=4, failed=1))
    assert output.committed() == set()  # shard 0 still lacks chunk 1
    collector.add(_chunk(0, 1, last=False, rows=4))
    assert output.committed() == {0}
    assert (totals.images, totals.failures) == (8, 1)
    keys = np.load(tmp_path / "out/img_emb/img_emb_0.npy").shape[0]
    assert keys == 8
    with pytest.raises(RuntimeError, match="shards \\[1\\]"):
        collector.finish()  # shard 1 never got its last chunk
    collector.add(_chunk(1, 1, last=True, rows=2))
    assert output.committed() == {0, 1}
    collector.finish()


def test_a_chunk_delivered_twice_is_written_once_and_a_shard_not_asked_for_stops_the_run(
    tmp_path: Path,
) -> None:
    """A retried task can deliver a chunk again, even after its shard was written: the copy is dropped (the
    same input in the same model call gives the same bytes), and the shard's files are not written again."""
    job = _job(tmp_path)
    shards = {0: InputShard(index=0, kind="folder", location=str(tmp_path))}
    totals = RunTotals()
    output = open_output(job, IDENTITY)
    collector = ShardCollector(output, shards, totals, progress=False)
    collector.add(_chunk(0, 0, last=False, rows=2))
    collector.add(_chunk(0, 0, last=False, rows=2))
    collector.add(_chunk(0, 1, last=True, rows=3))
    marker = tmp_path / "out" / "_committed" / "0.json"
    written = marker.stat().st_mtime_ns
    collector.add(_chunk(0, 1, last=True, rows=3))  # after the shard was committed
    assert (totals.images, marker.stat().st_mtime_ns) == (5, written)
    assert np.load(tmp_path / "out" / "img_emb" / "img_emb_0.npy").shape == (5, 512)
    collector.finish()
    with pytest.raises(RuntimeError, match="did not ask for"):
        collector.add(_chunk(5, 0, last=True, rows=2))


def test_actors_and_reservations_per_cluster_shape(tmp_path: Path) -> None:
    two_cpus = plan_stages(_job(tmp_path), {"CPU": 2.0})
    assert (two_cpus.actors, two_cpus.gpus_per_actor, two_cpus.torch_threads) == (2, 0.0, 1)
    # One actor and one task fit on a node of one CPU (whole CPUs would leave the tasks no room).
    assert two_cpus.cpus_per_actor + two_cpus.cpus_per_task <= 1.0
    assert (
        min(two_cpus.cpus_per_actor, two_cpus.cpus_per_task) > 0
    )  # both stages reserve a share: none starves
    one_actor = plan_stages(dataclasses.replace(_job(tmp_path), actors=1), {"CPU": 2.0})
    assert one_actor.actors == 1  # --actors wins over the cluster's shape
    gpus = plan_stages(_job(tmp_path), {"CPU": 64.0, "GPU": 8.0})
    assert (gpus.actors, gpus.gpus_per_actor, gpus.torch_threads, gpus.cpus_per_task) == (
        8,
        1.0,
        None,
        GPU_TASK_CPUS,
    )
    forced_cpu = plan_stages(_job(tmp_path, device="cpu"), {"CPU": 4.0, "GPU": 1.0})
    assert (forced_cpu.actors, forced_cpu.gpus_per_actor) == (4, 0.0)
    with pytest.raises(EmbedPlanError, match="no GPU"):
        plan_stages(_job(tmp_path, device="cuda"), {"CPU": 4.0})


def test_the_summary_reports_the_rate_once_running_apart_from_start_up() -> None:
    """Start-up (Ray, model loads) is the time to the first chunk the model finished; the running rate counts the
    images of the other chunks over the time from it to the last, by when the model finished each (they reach
    the driver in bursts and out of order): 9 images in 4 s here, after 10 s of start-up."""
    from clipserve.dataset_embed.pipeline import EmbedSummary

    totals = RunTotals()
    for chunk, at_s in ((_chunk(0, 0, False, 4), 12.0), (_chunk(0, 1, False, 4, failed=1), 10.0),
                        (_chunk(0, 2, True, 5), 14.0)):  # fmt: skip
        totals.arrived(chunk, at_s)
    assert (totals.first_chunk_s, totals.running_images, totals.last_chunk_s) == (10.0, 9, 14.0)
    summary = EmbedSummary(
        shards_total=1, shards_skipped=0, images=12, texts=0, failures=1, seconds=16.0, output_bytes=0,
        startup_seconds=totals.first_chunk_s, running_images=totals.running_images,
        running_seconds=totals.last_chunk_s - 10.0,
    )  # fmt: skip
    assert "images: 12 in 16.0 s (0.8 images/s; 2.2 images/s once running, after 10.0 s of start-up)" in (
        summary.lines()
    )
