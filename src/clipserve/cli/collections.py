"""`clipserve collections import`: load a folder of images, a parquet file of precomputed embeddings, or the
output folder of `clipserve embed-dataset` (or clip-retrieval's `clip inference`: img_emb/ + metadata/, no
re-embedding) into a collection through a running server, with a progress bar; resumable.

Items go through the server's own API, so it works with either vector store, and with keys and metering
when accounts are on. Progress is a log of acknowledged ids next to the source (or --state): an interrupted
import, run again, skips what the server already acknowledged and re-sends the rest (adds are upserts by id,
so re-sending is harmless).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import mimetypes
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from clipserve.cli.http_retries import request_with_retries

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def add_collections_commands(commands: Any) -> None:
    collections = commands.add_parser("collections", help="bulk-load collections", description=__doc__)
    actions = collections.add_subparsers(dest="collections_command", required=True)
    load = actions.add_parser("import", help="import a folder of images or a parquet file of embeddings")
    load.add_argument("name", help="collection name (created if missing)")
    load.add_argument(
        "source",
        type=Path,
        help="a folder of images, a .parquet file (id, embedding, ...), or an embed-dataset output folder",
    )
    load.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: local)")
    load.add_argument(
        "--api-key", default=os.environ.get("CLIPSERVE_API_KEY"), help="API key [env CLIPSERVE_API_KEY]"
    )
    load.add_argument(
        "--batch-size", type=_batch_size, default=32, help=f"items per request, 1 to {MAX_BATCH} (default 32)"
    )
    load.add_argument("--state", type=Path, help="progress log (default: SOURCE.clipserve-import-NAME.log)")
    load.set_defaults(handler=lambda _settings, args: run_import(args))


MAX_BATCH = 4096  # the server refuses more per add anyway (max_collection_items_per_request)


def _batch_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from exc
    if not 1 <= size <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"{value!r}: a batch is 1 to {MAX_BATCH} items")
    return size


def run_import(args: argparse.Namespace) -> int:
    source: Path = args.source
    if not source.exists():
        print(f"clipserve: error: {source} does not exist", file=sys.stderr)
        return 2
    state = args.state or source.with_name(f"{source.name}.clipserve-import-{args.name}.log")
    done = set(state.read_text().split("\n")) - {""} if state.exists() else set()
    items, total = _source_items(source)
    todo = (item for item in items if item["id"] not in done)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    failed = 0
    with httpx.Client(base_url=args.url, headers=headers, timeout=600) as http, state.open("a") as log:
        created = http.post("/v1/collections", json={"name": args.name})
        if created.status_code not in (200, 409):
            print(f"clipserve: error: {created.status_code} {created.text}", file=sys.stderr)
            return 1
        with tqdm(total=total, initial=min(len(done), total), unit="item", desc=args.name) as bar:
            while batch := [_payload(item) for item in itertools.islice(todo, args.batch_size)]:
                response = request_with_retries(
                    http, "POST", f"/v1/collections/{args.name}/items", json={"items": batch}
                )
                if response.status_code != 200:
                    print(f"\nclipserve: error: {response.status_code} {response.text}", file=sys.stderr)
                    return 1
                for status in response.json()["data"]:
                    if status["status"] == "ok":
                        log.write(status["id"] + "\n")
                    else:
                        failed += 1
                        tqdm.write(f"skipped {status['id']}: {status['error']['message']}")
                log.flush()
                os.fsync(log.fileno())
                bar.update(len(batch))
    print(f"{total - failed} of {total} items in '{args.name}'; progress in {state}", file=sys.stderr)
    return 1 if failed else 0


def _source_items(source: Path) -> tuple[Iterable[dict[str, Any]], int]:
    """The items of `source` (streamed for embed-dataset outputs, which may be large) and how many there are."""
    if source.is_dir():
        from clipserve.dataset_embed.output import count_output_items, is_embed_output, iter_output_items

        if is_embed_output(source):
            return iter_output_items(source), count_output_items(source)
    items = list(_parquet_items(source) if source.suffix == ".parquet" else _folder_items(source))
    return items, len(items)


def _folder_items(folder: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            rel = path.relative_to(folder).as_posix()
            yield {"id": rel, "path": path, "metadata": {"path": rel}}


def _parquet_items(path: Path) -> Iterator[dict[str, Any]]:
    """Rows with an `id` (or `path`) column, an `embedding` (or `vector`) column of 512 floats, and any other
    scalar columns, which become metadata."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise SystemExit("clipserve: error: reading parquet needs pyarrow (pip install pyarrow)") from exc
    table = pq.read_table(path)
    columns = set(table.column_names)
    id_column = "id" if "id" in columns else "path"
    vector_column = "embedding" if "embedding" in columns else "vector"
    if id_column not in columns or vector_column not in columns:
        raise SystemExit("clipserve: error: the parquet file needs an id (or path) and an embedding column")
    for row in table.to_pylist():
        metadata = {k: v for k, v in row.items() if k not in (id_column, vector_column) and _scalar(v)}
        yield {"id": str(row[id_column]), "vector": row[vector_column], "metadata": metadata}


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _payload(item: dict[str, Any]) -> dict[str, Any]:
    if "vector" in item:
        return {"id": item["id"], "vector": item["vector"], "metadata": item["metadata"]}
    path: Path = item["path"]
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    uri = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
    return {"id": item["id"], "image": uri, "metadata": item["metadata"]}
