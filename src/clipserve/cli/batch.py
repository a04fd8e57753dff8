"""`clipserve batch`: the Batch API (/v1/files + /v1/batches, OpenAI's shapes) from the command line.

    clipserve batch submit requests.jsonl --endpoint /v1/embeddings --wait
    clipserve batch get|cancel BATCH_ID, clipserve batch list, clipserve batch download BATCH_ID

`submit` uploads the JSONL file (purpose "batch") and creates a batch on it; with --wait it shows the batch's
request_counts as a progress bar and, once the batch ends, downloads its output and error files next to the
input (FILE.out.jsonl, FILE.errors.jsonl). The other commands print the batch object(s) as JSON on stdout.
Exit status: 0 when the batch completed with every line answered 200, 1 otherwise (a failed validation, failed
lines, an expired or cancelled batch, or an error from the server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from clipserve.cli.http_retries import request_with_retries
from clipserve.service.batch_validation import BATCH_ENDPOINTS

ENDED = {"completed", "failed", "expired", "cancelled"}  # statuses a batch never leaves
UPLOAD_TIMEOUT_S = 3600.0  # a 200 MB upload on a slow link; every other call gets REQUEST_TIMEOUT_S
REQUEST_TIMEOUT_S = 120.0


class BatchCommandError(Exception):
    """The server refused a call; the message is the line the user sees."""


def add_batch_commands(commands: Any) -> None:
    batch = commands.add_parser(
        "batch",
        help="run bulk requests through the Batch API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = batch.add_subparsers(dest="batch_command", required=True)

    submit = actions.add_parser("submit", help="upload a JSONL file of requests and create a batch on it")
    submit.add_argument("file", type=Path, help="JSONL: one {custom_id, method, url, body} request a line")
    submit.add_argument("--endpoint", required=True, choices=BATCH_ENDPOINTS, help="the url every line names")
    submit.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_metadata_pair,
        help="a metadata pair for the batch (repeatable)",
    )
    submit.add_argument("--wait", action="store_true", help="show progress until it ends, then download")
    _add_poll_flag(submit)
    _add_server_flags(submit)
    submit.set_defaults(handler=lambda _settings, args: _run(submit_batch, args))

    get = actions.add_parser("get", help="print a batch (its status and request_counts) as JSON")
    get.add_argument("batch_id")
    _add_server_flags(get)
    get.set_defaults(handler=lambda _settings, args: _run(get_batch, args))

    listing = actions.add_parser("list", help="print your batches as JSON, newest first")
    listing.add_argument("--limit", type=int, default=20, help="how many (1 to 100, default 20)")
    listing.add_argument("--after", help="a batch id: list the ones after it (the next page)")
    _add_server_flags(listing)
    listing.set_defaults(handler=lambda _settings, args: _run(list_batches, args))

    cancel = actions.add_parser("cancel", help="cancel a batch: no new lines start, answered lines stay")
    cancel.add_argument("batch_id")
    _add_server_flags(cancel)
    cancel.set_defaults(handler=lambda _settings, args: _run(cancel_batch, args))

    download = actions.add_parser("download", help="download a batch's output and error files")
    download.add_argument("batch_id")
    download.add_argument(
        "--output",
        type=Path,
        default=Path("."),
        help="folder for BATCH_ID.out.jsonl and BATCH_ID.errors.jsonl (default: here)",
    )
    _add_poll_flag(download)
    download.add_argument("--wait", action="store_true", help="wait for the batch to end first")
    _add_server_flags(download)
    download.set_defaults(handler=lambda _settings, args: _run(download_batch, args))


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: local)")
    parser.add_argument(
        "--api-key", default=os.environ.get("CLIPSERVE_API_KEY"), help="API key [env CLIPSERVE_API_KEY]"
    )


def _add_poll_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poll-s", type=float, default=1.0, help="seconds between status checks (default 1)")


def _metadata_pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, val


def _run(command: Any, args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as http:
        try:
            return int(command(http, args))
        except BatchCommandError as exc:
            print(f"clipserve: error: {exc}", file=sys.stderr)
            return 1
        except httpx.TransportError as exc:
            print(f"clipserve: error: {args.url}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            return 1


def _json(response: httpx.Response) -> Any:
    """The body of a 2xx answer; anything else raises BatchCommandError with the server's own message."""
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        message = f"{error.get('code') or error.get('type')}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        message = response.text[:500]
    raise BatchCommandError(
        f"{response.request.method} {response.request.url.path}: {response.status_code} {message}"
    )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def submit_batch(http: httpx.Client, args: argparse.Namespace) -> int:
    source: Path = args.file
    if not source.is_file():
        print(f"clipserve: error: {source} is not a file", file=sys.stderr)
        return 2
    with source.open("rb") as handle:
        uploaded = _json(
            http.post(
                "/v1/files",
                data={"purpose": "batch"},
                files={"file": (source.name, handle, "application/jsonl")},
                timeout=UPLOAD_TIMEOUT_S,
            )
        )
    body: dict[str, Any] = {
        "input_file_id": uploaded["id"],
        "endpoint": args.endpoint,
        "completion_window": "24h",
    }
    if args.metadata:
        body["metadata"] = dict(args.metadata)
    batch = _json(http.post("/v1/batches", json=body))
    print(batch["id"])  # stdout: the id alone, for scripts; everything else goes to stderr
    print(
        f"uploaded {source} as {uploaded['id']} ({uploaded['bytes']} bytes); batch {batch['id']}: "
        f"{batch['status']}",
        file=sys.stderr,
    )
    if not args.wait:
        return 0
    batch = _wait(http, batch, args.poll_s)
    return _finish(
        http,
        batch,
        source.with_name(source.name + ".out.jsonl"),
        source.with_name(source.name + ".errors.jsonl"),
    )


def get_batch(http: httpx.Client, args: argparse.Namespace) -> int:
    _print_json(_json(http.get(f"/v1/batches/{args.batch_id}")))
    return 0


def list_batches(http: httpx.Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.after:
        params["after"] = args.after
    _print_json(_json(http.get("/v1/batches", params=params)))
    return 0


def cancel_batch(http: httpx.Client, args: argparse.Namespace) -> int:
    batch = _json(http.post(f"/v1/batches/{args.batch_id}/cancel"))
    _print_json(batch)
    return 0


def download_batch(http: httpx.Client, args: argparse.Namespace) -> int:
    batch = _json(http.get(f"/v1/batches/{args.batch_id}"))
    if args.wait:
        batch = _wait(http, batch, args.poll_s)
    elif batch["status"] not in ENDED:
        print(
            f"clipserve: error: batch {batch['id']} is {batch['status']}: its files are written when it "
            "ends (--wait waits for that)",
            file=sys.stderr,
        )
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    return _finish(
        http, batch, args.output / f"{batch['id']}.out.jsonl", args.output / f"{batch['id']}.errors.jsonl"
    )


def _wait(http: httpx.Client, batch: dict[str, Any], poll_s: float) -> dict[str, Any]:
    """Poll the batch until it ends, with a progress bar of answered lines (completed + failed) of the total."""
    try:
        with tqdm(total=batch["request_counts"]["total"] or None, unit="req", desc=batch["id"]) as bar:
            while True:
                counts = batch["request_counts"]
                bar.total = counts["total"] or bar.total
                bar.update(counts["completed"] + counts["failed"] - bar.n)
                bar.set_postfix(status=batch["status"], failed=counts["failed"], refresh=True)
                if batch["status"] in ENDED:
                    return batch
                time.sleep(poll_s)
                batch = _json(request_with_retries(http, "GET", f"/v1/batches/{batch['id']}"))
    except KeyboardInterrupt:
        print(
            f"\nstopped waiting; batch {batch['id']} goes on in the server (clipserve batch get|cancel|download "
            f"{batch['id']})",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


def _finish(http: httpx.Client, batch: dict[str, Any], output: Path, errors: Path) -> int:
    """Download the batch's files (those it has) and say how it ended; 0 only for a clean completion."""
    for file_id, target in ((batch.get("output_file_id"), output), (batch.get("error_file_id"), errors)):
        if file_id:
            _download_file(http, file_id, target)
            print(f"wrote {target}", file=sys.stderr)
        elif target.exists():  # an earlier run's file would read as this batch's
            target.unlink()
    counts = batch["request_counts"]
    if batch["status"] == "failed":
        print(f"batch {batch['id']} failed: the input did not pass validation; nothing ran", file=sys.stderr)
    else:
        print(
            f"batch {batch['id']} {batch['status']}: {counts['completed']} of {counts['total']} requests "
            f"succeeded, {counts['failed']} failed",
            file=sys.stderr,
        )
    for error in (batch.get("errors") or {}).get("data") or []:
        where = f"line {error['line']}: " if error.get("line") is not None else ""
        print(f"  {where}{error.get('code')}: {error.get('message')}", file=sys.stderr)
    return 0 if batch["status"] == "completed" and counts["failed"] == 0 else 1


def _download_file(http: httpx.Client, file_id: str, target: Path) -> None:
    """Stream a file's content to `target` through a temporary name, so a broken download leaves no half file."""
    partial = target.with_name(target.name + ".partial")
    with http.stream("GET", f"/v1/files/{file_id}/content", timeout=UPLOAD_TIMEOUT_S) as response:
        if not response.is_success:
            response.read()
            _json(response)
        with partial.open("wb") as handle:
            for chunk in response.iter_bytes():
                handle.write(chunk)
    partial.replace(target)
