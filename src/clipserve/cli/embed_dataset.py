"""`clipserve embed-dataset INPUT --output DIR`: embed a whole dataset on Ray Data into clip-retrieval's layout.

Inputs: an image folder (a sidecar .txt is the caption), parquet/CSV tables with a path or URL column (what
img2dataset reads), or WebDataset .tar shards (what img2dataset writes); local paths or fsspec URLs. Output:
img_emb/, text_emb/, metadata/ and failures/ per input shard, committed atomically, so a rerun resumes.
Starts a local Ray with this machine's cores unless --ray-address names a cluster. Needs `clipserve[batch]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from clipserve.cli.settings_args import MODEL_SETTINGS, add_settings_arguments
from clipserve.config import Settings

# The model's settings, plus those that decide which images are refused and how URLs are fetched: the same
# values as the server's, so the same image gets the same embedding or the same refusal.
DATASET_SETTINGS = (
    *MODEL_SETTINGS, "jpeg_draft", "max_image_bytes", "max_image_aspect_ratio", "image_fetch_timeout_s",
    "image_fetch_max_redirects", "image_fetch_concurrency", "image_fetch_allow_private",
    "image_fetch_allowed_networks", "log_level",
)  # fmt: skip
MISSING_RAY = (
    "embed-dataset runs on Ray Data, which is not installed: pip install 'clipserve[batch]' "
    "(or: pip install 'ray[data]')"
)


def add_embed_dataset_command(commands: Any) -> None:
    command = commands.add_parser(
        "embed-dataset",
        help="embed an image dataset (folder, parquet/CSV, WebDataset tars) on Ray Data",
        description=__doc__,
    )
    command.add_argument(
        "input", help="a folder, a .parquet/.csv file or folder, or .tar shards (file, folder, glob)"
    )
    command.add_argument(
        "--output", type=Path, required=True, help="the output folder (created; a rerun resumes)"
    )
    command.add_argument(
        "--shard-size", type=_positive, default=10_000,
        help="folder and table inputs: rows per output shard (default 10000); WebDataset: one shard per .tar",
    )  # fmt: skip
    command.add_argument(
        "--batch-size", type=_positive, default=32, help="images per model call (default 32)"
    )
    command.add_argument(
        "--actors", type=_positive,
        help="model actors (default: one per GPU with CUDA, else one per CPU of the cluster)",
    )  # fmt: skip
    command.add_argument(
        "--ray-address",
        help="run on this Ray cluster ('auto', host:port or ray://host:port); default: a local Ray, stopped after",
    )
    command.add_argument(
        "--dtype",
        choices=("float16", "float32"),
        default="float16",
        help="of the .npy embeddings (default float16)",
    )
    command.add_argument("--no-text", dest="text", action="store_false", help="do not embed the captions")
    command.add_argument(
        "--embedding-parquet", action="store_true",
        help="also write embeddings/embeddings_{n}.parquet (metadata and an embedding column; LanceDB, DuckDB)",
    )  # fmt: skip
    command.add_argument("--index", action="store_true", help="build a FAISS index of the images afterwards")
    command.add_argument(
        "--index-exact-below", type=_positive, default=100_000,
        help="an exact (flat) index below this many images, IVF-PQ from there (default 100000)",
    )  # fmt: skip
    command.add_argument(
        "--image-column", help="tables: the path or URL column (default: url, image_path, path, filepath)"
    )
    command.add_argument(
        "--caption-column", help="tables: the caption column (default: caption or text, if present)"
    )
    command.add_argument("--key-column", help="tables: the key column (default: key, else the row number)")
    command.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_settings_arguments(command, only=DATASET_SETTINGS)
    command.set_defaults(handler=run_embed_dataset)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from exc
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: must be at least 1")
    return number


def run_embed_dataset(settings: Settings, args: argparse.Namespace) -> int:
    try:
        import ray.data  # noqa: F401  (the optional extra; fails here, not deep inside a run)
    except ImportError:
        print(f"clipserve: error: {MISSING_RAY}", file=sys.stderr)
        return 2
    from clipserve.dataset_embed.faiss_index import IndexBuildError, build_index
    from clipserve.dataset_embed.job import EmbedJob, TableColumns
    from clipserve.dataset_embed.output import OutputMismatchError
    from clipserve.dataset_embed.pipeline import EmbedPlanError, run_embed_job
    from clipserve.dataset_embed.sources import DatasetInputError
    from clipserve.errors import WeightsUnavailableError

    job = EmbedJob(
        settings=settings,
        input=args.input,
        output=args.output,
        shard_size=args.shard_size,
        chunk_size=args.batch_size,
        actors=args.actors,
        ray_address=args.ray_address,
        dtype=args.dtype,
        text=args.text,
        embedding_parquet=args.embedding_parquet,
        index=args.index,
        index_exact_below=args.index_exact_below,
        columns=TableColumns(image=args.image_column, caption=args.caption_column, key=args.key_column),
    )
    try:
        summary = run_embed_job(job, progress=args.progress)
    except (DatasetInputError, EmbedPlanError, OutputMismatchError, WeightsUnavailableError) as exc:
        print(f"clipserve: error: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    if job.index:
        try:
            report = build_index(job.output, job.index_exact_below)
        except IndexBuildError as exc:
            print(f"clipserve: error: --index: {exc}", file=sys.stderr)
            return 1
        print(report.line())
    return 0
