"""The Ray Data plan of an embed-dataset run, and the driver that commits its shards.

    from_items(uncommitted InputShards, one block each)
      -> flat_map(read_chunks) -> map(prepare_chunk)     CPU tasks (fused by Ray Data: one task per shard)
      -> map_batches(_ModelActor, batch_size=1)          an actor pool: one chunk per model call
      -> the driver: iter_rows, chunks grouped by shard, OutputDir.write_shard once a shard's chunks are all in

Every payload crosses the stages as one pickled object in one binary column ({"chunk": pickle.dumps(obj)}), so
Ray's Arrow conversion never looks inside it. A chunk is one model call on any cluster shape (and on CPU every
actor runs torch with one thread), so the same input gives byte-identical output on one node or many.

Resources: model actors reserve 0.75 CPU (plus 1 GPU with CUDA) and the read/decode tasks 0.25 CPU, so a
cluster of one CPU per node still runs both an actor and a task on every node instead of waiting forever (with
whole CPUs, the actors would hold every CPU and no decode task could start). With GPUs, a task reserves 1 CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.records import EmbeddedChunk, InputShard, PreparedChunk

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from ray.data import Dataset

    from clipserve.dataset_embed.output import OutputDir
    from clipserve.runtime.model import ClipRuntime

logger = logging.getLogger(__name__)

ACTOR_CPUS = 0.75  # per model actor: with TASK_CPUS, one actor and one task fit on a node of one CPU
TASK_CPUS = 0.25  # per read/decode task on a CPU-only cluster
GPU_TASK_CPUS = 1.0  # per read/decode task when the actors have GPUs (GPU nodes have cores to spare)
COLUMN = "chunk"  # the one column every stage's rows have: a pickled RawChunk / PreparedChunk / EmbeddedChunk


class EmbedPlanError(ValueError):
    """The run cannot start on this Ray: no cluster at --ray-address, or --device cuda without a GPU."""


@dataclass(frozen=True)
class EmbedSummary:
    """What one run did (the shards it committed) and how fast; `lines()` is what the command prints."""

    shards_total: int  # shards in the input
    shards_skipped: int  # already committed by an earlier run: not read again
    images: int  # images embedded by this run
    texts: int  # captions embedded by this run
    failures: int  # rows of this run that went to failures/ (unreadable, corrupt, too large, refused)
    seconds: float  # wall time of this run, model loading and Ray start included
    output_bytes: int  # the size of the output folder after the run (every run's files)
    output: Path = field(default=Path("."))
    startup_seconds: float | None = None  # from the start to the first embedded chunk (Ray, model loads)
    running_images: int = 0  # images embedded after the first chunk arrived
    running_seconds: float = 0.0  # from the first embedded chunk to the last

    def lines(self) -> list[str]:
        seconds = max(self.seconds, 1e-9)
        done = self.shards_total - self.shards_skipped
        running = ""
        if self.startup_seconds is not None and self.running_seconds > 0:
            running = (
                f"; {self.running_images / self.running_seconds:.1f} images/s once running, after "
                f"{self.startup_seconds:.1f} s of start-up"
            )
        return [
            f"shards: {done} embedded, {self.shards_skipped} already done, {self.shards_total} in the input",
            f"images: {self.images} in {self.seconds:.1f} s ({self.images / seconds:.1f} images/s{running})",
            f"texts: {self.texts} ({self.texts / seconds:.1f} texts/s)",
            f"failures: {self.failures}" + (" (see failures/)" if self.failures else ""),
            f"output: {self.output} ({_human_bytes(self.output_bytes)})",
        ]


def run_embed_job(job: EmbedJob, progress: bool = True) -> EmbedSummary:
    """Embed every shard of `job.input` not yet committed in `job.output`; Ray started (or joined) and left."""
    from clipserve.dataset_embed.output import open_output
    from clipserve.dataset_embed.sources import discover_shards

    started = time.monotonic()
    started_at = time.time()  # the actors stamp their chunks with the wall clock
    runtime = _driver_runtime(job)
    identity = model_identity(runtime, job)
    transform = runtime.image_transform
    del runtime  # the driver needs its weights no further: the actors load their own copy
    shards = discover_shards(job)
    job = dataclasses.replace(job, text=embeds_text(job, shards))
    totals = RunTotals()
    with open_output(job, identity, shards=shards) as output:
        committed = output.committed()
        todo = [shard for shard in shards if shard.index not in committed]
        if todo:
            with ray_session(job.ray_address, progress=progress):
                collector = ShardCollector(output, {shard.index: shard for shard in todo}, totals, progress)
                for chunk in embedded_chunks(job, todo, transform):
                    totals.arrived(chunk, chunk.embedded_at - started_at)
                    collector.add(chunk)
                collector.finish()
    return EmbedSummary(
        shards_total=len(shards),
        shards_skipped=len(shards) - len(todo),
        images=totals.images,
        texts=totals.texts,
        failures=totals.failures,
        seconds=time.monotonic() - started,
        output_bytes=_folder_bytes(job.output),
        output=job.output,
        startup_seconds=totals.first_chunk_s,
        running_images=totals.running_images,
        running_seconds=totals.last_chunk_s - (totals.first_chunk_s or 0.0),
    )


def embeds_text(job: EmbedJob, shards: list[InputShard]) -> bool:
    """Captions are embedded (text_emb/ written) unless --no-text, or no shard can have a caption (no sidecar
    .txt in a folder, no caption column in a table): all-zero text_emb files would only cost space."""
    return job.text and any(shard.captioned for shard in shards)


def model_identity(runtime: ClipRuntime, job: EmbedJob) -> dict[str, str]:
    """What decides the vectors (the output's manifest refuses a rerun with other values)."""
    return {
        "weights": runtime.weights.source,
        "fingerprint": runtime.weights.fingerprint,
        "architecture": runtime.weights.architecture,
        "precision": job.settings.precision,
    }


def _driver_runtime(job: EmbedJob) -> ClipRuntime:
    """The model on the driver, on CPU: it validates the weights and gives the identity and the transform
    (the actors, on their GPUs, load their own; the driver must not hold a GPU they need)."""
    from clipserve.runtime.loader import runtime_from_settings

    settings = job.settings.model_copy(update={"device": "cpu", "precision": "fp32"})
    return runtime_from_settings(settings, torch_threads=1)


# ---------------------------------------------------------------------------------------------------- Ray


@contextmanager
def ray_session(address: str | None, *, progress: bool) -> Iterator[None]:
    """A local Ray with this machine's cores (stopped after), or the cluster at `address` (left running)."""
    import ray
    from ray.data import DataContext

    quiet = logging.ERROR
    if address is None:
        ray.init(
            num_cpus=local_cpus(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=quiet,
        )
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EmbedPlanError(f"no Ray cluster at --ray-address {address}: {exc}") from exc
    try:
        context = DataContext.get_current()
        context.enable_progress_bars = progress
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        # Ray Data logs its execution (and, without a terminal, the progress) at INFO on "ray.data".
        logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.ERROR)
        yield
    finally:
        ray.shutdown()


def local_cpus() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset), else os.cpu_count()."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class StagePlan:
    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    torch_threads: int | None  # per actor: 1 on CPU (the same arithmetic on any cluster shape)
    cpus_per_task: float  # per read/decode task


def plan_stages(job: EmbedJob, cluster: dict[str, float]) -> StagePlan:
    """How many model actors and what each stage reserves, from the cluster's resources
    (ray.cluster_resources()): one actor per GPU with CUDA, else one per CPU of the cluster."""
    gpus = int(cluster.get("GPU", 0))
    cpus = int(cluster.get("CPU", 1))
    if job.settings.device == "cuda" and gpus == 0:
        raise EmbedPlanError("--device cuda was asked for but the Ray cluster has no GPU")
    if gpus and job.settings.device != "cpu":
        return StagePlan(job.actors or gpus, 1.0, ACTOR_CPUS, None, GPU_TASK_CPUS)
    return StagePlan(job.actors or max(1, cpus), 0.0, ACTOR_CPUS, 1, TASK_CPUS)


def embedded_chunks(
    job: EmbedJob, shards: list[InputShard], transform: Callable[[Image.Image], torch.Tensor]
) -> Iterator[EmbeddedChunk]:
    """The plan, run on the current Ray: every chunk of `shards`, embedded, in the order they finish."""
    import ray
    import ray.data

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    plan = plan_stages(job, resources)
    with warnings.catch_warnings():  # max_restarts is passed the way Ray 2.60 deprecates (no other way yet)
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", DeprecationWarning)
        dataset = _plan(job, shards, transform, plan)
    for row in dataset.iter_rows():
        chunk = _unpickle(row[COLUMN])
        assert isinstance(chunk, EmbeddedChunk)
        yield chunk


def _plan(
    job: EmbedJob,
    shards: list[InputShard],
    transform: Callable[[Image.Image], torch.Tensor],
    plan: StagePlan,
) -> Dataset:
    import ray.data

    return (
        ray.data.from_items(
            [{COLUMN: pickle.dumps(shard)} for shard in shards], override_num_blocks=len(shards)
        )
        .flat_map(partial(_read_stage, job=job), num_cpus=plan.cpus_per_task)
        .map(partial(_prepare_stage, job=job, transform=transform), num_cpus=plan.cpus_per_task)
        .map_batches(
            _ModelActor,
            fn_constructor_kwargs={"job": job, "torch_threads": plan.torch_threads},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor or None,
            **_restarts(job),
        )
    )


def _restarts(job: EmbedJob) -> dict[str, Any]:
    """On a cluster, Ray restarts a lost actor (a node went away) and Ray Data resubmits its chunk. Locally an
    actor that dies (out of memory) would die again: the run fails and a rerun resumes. (Ray's restartable
    actors also print a core_worker error line on every start, which a local run does not need to show.)"""
    if job.ray_address:
        return {}
    return {"max_restarts": 0}


def _unpickle(payload: bytes) -> Any:
    # Only this run's own stages write these payloads, inside its Ray cluster: nothing from outside.
    return pickle.loads(payload)  # noqa: S301


def _read_stage(row: dict[str, Any], *, job: EmbedJob) -> Iterator[dict[str, Any]]:
    from clipserve.dataset_embed.sources import read_chunks

    shard = _unpickle(row[COLUMN])
    for raw in read_chunks(shard, job):
        yield {COLUMN: pickle.dumps(raw, protocol=pickle.HIGHEST_PROTOCOL)}


def _prepare_stage(
    row: dict[str, Any], *, job: EmbedJob, transform: Callable[[Image.Image], torch.Tensor]
) -> dict[str, Any]:
    from clipserve.dataset_embed.decoding import prepare_chunk

    prepared = prepare_chunk(_unpickle(row[COLUMN]), job, transform)
    return {COLUMN: pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL)}


class _ModelActor:
    """One model per actor, loaded once; each call embeds one chunk (one model call)."""

    def __init__(self, job: EmbedJob, torch_threads: int | None) -> None:
        from clipserve.runtime.loader import runtime_from_settings

        self._job = job
        self._runtime = runtime_from_settings(job.settings, torch_threads=torch_threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        out = []
        for payload in batch[COLUMN]:
            prepared = _unpickle(payload)
            assert isinstance(prepared, PreparedChunk)
            out.append(pickle.dumps(embed_chunk(self._runtime, prepared, self._job.text)))
        return {COLUMN: out}


def embed_chunk(runtime: ClipRuntime, prepared: PreparedChunk, text: bool) -> EmbeddedChunk:
    """The model's part: the decoded rows' image embeddings and, with `text`, their captions' (zeros: none)."""
    import torch

    decoded = [i for i, error in enumerate(prepared.errors) if error is None]
    rows = len(decoded)
    dim = runtime.embed_dim
    images = np.zeros((0, dim), np.float32)
    if rows:
        images = runtime.encode_images(torch.from_numpy(np.ascontiguousarray(prepared.pixels)))
    texts: np.ndarray | None = None
    if text:
        texts = np.zeros((rows, dim), np.float32)
        captioned = [j for j, i in enumerate(decoded) if prepared.raw.captions[i]]
        if captioned:
            captions = [prepared.raw.captions[decoded[j]] or "" for j in captioned]
            texts[captioned] = runtime.encode_texts(runtime.tokenize(captions).ids)
    return EmbeddedChunk(
        raw=prepared.raw,
        errors=prepared.errors,
        image_embeddings=images,
        text_embeddings=texts,
        embedded_at=time.time(),
    )


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class RunTotals:
    images: int = 0
    texts: int = 0
    failures: int = 0
    first_chunk_s: float | None = None  # seconds into the run when the first embedded chunk arrived
    last_chunk_s: float = 0.0
    running_images: int = 0  # embedded images of the chunks after the first
    _first_images: int = 0

    def arrived(self, chunk: EmbeddedChunk, at_s: float) -> None:
        """The steady rate, apart from start-up: the images of every chunk but the first embedded, over the time
        from the first to the last (`at_s`: when the model finished the chunk, seconds into the run; Ray Data
        hands chunks to the driver in bursts, so their arrival times would overstate the rate)."""
        if self.first_chunk_s is None or at_s < self.first_chunk_s:
            if self.first_chunk_s is not None:
                self.running_images += self._first_images
            self.first_chunk_s, self._first_images = at_s, len(chunk.image_embeddings)
        else:
            self.running_images += len(chunk.image_embeddings)
        self.last_chunk_s = max(self.last_chunk_s, at_s)


@dataclass
class _PendingShard:
    chunks: dict[int, EmbeddedChunk] = field(default_factory=dict)
    count: int | None = None  # known once the shard's last chunk arrived


class ShardCollector:
    """Groups chunks (arriving in any order) by shard; writes a shard once its chunks 0..last are all in."""

    def __init__(
        self, output: OutputDir, shards: dict[int, InputShard], totals: RunTotals, progress: bool
    ) -> None:
        self._output = output
        self._log_level = logging.INFO if progress else logging.DEBUG
        self._shards = shards
        self._totals = totals
        self._pending: dict[int, _PendingShard] = {}
        self._texts: dict[int, int] = {}
        self._written: set[int] = set()

    def add(self, chunk: EmbeddedChunk) -> None:
        index, number = chunk.raw.shard, chunk.raw.chunk
        if index not in self._shards:
            raise RuntimeError(f"a chunk of shard {index}, which this run did not ask for")
        pending = self._pending.setdefault(index, _PendingShard())
        if number in pending.chunks or index in self._written:
            # Delivered again (a task Ray retried after its first result got through): the same input in the
            # same model call gives the same bytes, so the copy is dropped, never written twice.
            logger.warning("chunk %d of shard %d arrived twice; the second copy is ignored", number, index)
            return
        pending.chunks[number] = chunk
        if chunk.raw.last:
            pending.count = number + 1
        if chunk.text_embeddings is not None:
            decoded = [i for i, error in enumerate(chunk.errors) if error is None]
            texts = sum(1 for i in decoded if chunk.raw.captions[i])
            self._texts[index] = self._texts.get(index, 0) + texts
        if pending.count is not None and len(pending.chunks) == pending.count:
            self._commit(index, pending)

    def _commit(self, index: int, pending: _PendingShard) -> None:
        chunks = [pending.chunks[number] for number in range(len(pending.chunks))]
        counts = self._output.write_shard(self._shards[index], chunks)
        del self._pending[index]
        self._written.add(index)
        self._totals.images += counts.embedded
        self._totals.failures += counts.failed
        self._totals.texts += self._texts.pop(index, 0)
        logger.log(
            self._log_level, "shard %d committed: %d rows, %d failed", index, counts.rows, counts.failed
        )

    def finish(self) -> None:
        missing = sorted(set(self._shards) - self._written)
        if missing:
            raise RuntimeError(f"the run ended without every chunk of shards {missing}")


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
