"""A batch's output: its lines in OpenAI's shape, and the output and error JSONL files written when it is
finalized (streamed page by page from the store, never held whole)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from clipserve.store.batch_records import BatchRecord, LineClaim
from clipserve.store.batches import BatchStore


class OutputFiles(Protocol):
    """Where a finalized batch's output and error files go (service/batch_files.py)."""

    def write_output(self, batch: BatchRecord, kind: str, chunks: Iterable[bytes]) -> str | None:
        """Store the chunks as the batch's `kind` ("output" or "error") file; returns its file id, or None
        when there were no bytes (no file)."""
        ...


EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def output_line(claim: LineClaim, request_id: str, status: int | None, body: Any, error: Any = None) -> str:
    """An output/error file line, OpenAI's shape."""
    response = None if status is None else {"status_code": status, "request_id": request_id, "body": body}
    return line_json(claim.custom_id, response, error)


def line_json(custom_id: str, response: Any, error: Any) -> str:
    return json.dumps(
        {
            "id": f"batch_req_{secrets.token_hex(16)}",
            "custom_id": custom_id,
            "response": response,
            "error": error,
        },
        separators=(",", ":"),
    )


def write_batch_files(
    store: BatchStore, files: OutputFiles, batch: BatchRecord
) -> tuple[str | None, str | None]:
    """Write the output file (200s) and the error file (the rest; for an expired batch also its lines never
    run, as OpenAI writes them: no response, error code batch_expired); returns their file ids (None: none)."""
    expired = batch.finalize_to == "expired"
    return (
        files.write_output(batch, "output", _answers(store, batch.id, succeeded=True)),
        files.write_output(batch, "error", _errors(store, batch.id, expired)),
    )


def _answers(store: BatchStore, batch_id: str, *, succeeded: bool) -> Iterator[bytes]:
    after = 0
    while page := store.answers(batch_id, after_line=after, succeeded=succeeded):
        yield _jsonl(answer.result_json for answer in page)
        after = page[-1].line


def _errors(store: BatchStore, batch_id: str, expired: bool) -> Iterator[bytes]:
    yield from _answers(store, batch_id, succeeded=False)
    if not expired:
        return
    error = {"code": "batch_expired", "message": EXPIRED_MESSAGE}
    after = 0
    while page := store.unanswered(batch_id, after):
        yield _jsonl([line_json(custom_id, None, error) for _, custom_id in page])
        after = page[-1][0]


def _jsonl(lines: Iterable[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


def output_file_id(batch_id: str, kind: str) -> str:
    """The id of a batch's output or error file: the same on every try, so a finalize that is redone after a
    crash replaces its file instead of leaving a second one."""
    return f"file-{hashlib.sha256(f'{batch_id}:{kind}'.encode()).hexdigest()[:24]}"
