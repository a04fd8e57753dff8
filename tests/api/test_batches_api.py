"""/v1/files and /v1/batches through the real openai client (issue 13): OpenAI's shapes, files and batches private
to their account (404 for another's), an input that fails validation fails the batch with per-line errors and
charges nothing, and the limits are clear 4xx answers in the OpenAI error shape."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from sqlalchemy import func, select

from clipserve.store.database import Database
from clipserve.store.schema import accounts, batch_lines, ledger
from tests.support import create_key, running_app

pytestmark = pytest.mark.anyio


def _jsonl(rows: list[Any]) -> bytes:
    return b"".join((row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n" for row in rows)


def _line(custom_id: str, body: dict[str, Any], url: str = "/v1/embeddings", **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra}


@asynccontextmanager
async def _clients(
    tiny_runtime: Any, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[AsyncOpenAI, AsyncOpenAI, httpx.AsyncClient]]:
    """The app with two accounts (a dollar each): an openai client for each, and a raw client of the first."""
    keys = [create_key(tmp_path, "alice"), create_key(tmp_path, "bob")]
    async with running_app(tiny_runtime, tmp_path, **settings) as (_, app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(
                transport=transport,
                base_url="http://clipserve.test/v1",
                headers={"Authorization": f"Bearer {keys[0]}"},
            ) as raw,
            httpx.AsyncClient(transport=transport, base_url="http://clipserve.test/v1") as http,
        ):
            alice, bob = (
                AsyncOpenAI(api_key=key, base_url="http://clipserve.test/v1", http_client=http, max_retries=0)
                for key in keys
            )
            yield alice, bob, raw


def _database(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'clipserve.db'}")


async def test_files_round_trip_and_belong_to_their_account(tiny_runtime: Any, tmp_path: Path) -> None:
    data = _jsonl([_line("a", {"input": "a cat"}), _line("b", {"input": "a dog"})])
    async with _clients(tiny_runtime, tmp_path) as (alice, bob, _):
        uploaded = await alice.files.create(file=("in.jsonl", data), purpose="batch")
        assert uploaded.id.startswith("file-")
        assert len(uploaded.id) == 29
        assert (uploaded.object, uploaded.bytes, uploaded.filename, uploaded.purpose, uploaded.status) == (
            "file", len(data), "in.jsonl", "batch", "processed",
        )  # fmt: skip
        assert uploaded.expires_at == uploaded.created_at + 30 * 24 * 3600
        assert (await alice.files.retrieve(uploaded.id)).model_dump() == uploaded.model_dump()
        assert (await alice.files.content(uploaded.id)).content == data
        second = await alice.files.create(file=("two.jsonl", data), purpose="batch")
        listed = [f.id async for f in alice.files.list(limit=1)]  # the paginator follows `after`
        assert sorted(listed) == sorted([uploaded.id, second.id])
        assert [f.id async for f in bob.files.list()] == []
        for call in (bob.files.retrieve, bob.files.content, bob.files.delete):
            with pytest.raises(openai.NotFoundError) as refused:
                await call(uploaded.id)
            assert refused.value.body["message"] == f"No such File object: {uploaded.id}"  # type: ignore[index]
        deleted = await alice.files.delete(uploaded.id)
        assert (deleted.id, deleted.deleted) == (uploaded.id, True)
        with pytest.raises(openai.NotFoundError):
            await alice.files.retrieve(uploaded.id)
    assert not (tmp_path / "files" / uploaded.id).exists()
    assert (tmp_path / "files" / second.id).read_bytes() == data


async def test_a_batch_is_created_in_openais_shape(tiny_runtime: Any, tmp_path: Path) -> None:
    data = _jsonl([_line(f"req-{i}", {"input": f"photo {i}"}) for i in range(3)] + [b"   "])
    async with _clients(tiny_runtime, tmp_path) as (alice, bob, _):
        uploaded = await alice.files.create(file=("in.jsonl", data), purpose="batch")
        batch = await alice.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/embeddings",
            completion_window="24h",
            metadata={"job": "nightly"},
        )
        assert batch.id.startswith("batch_")
        assert len(batch.id) == 30
        assert (batch.object, batch.endpoint, batch.input_file_id, batch.completion_window, batch.errors) == (
            "batch", "/v1/embeddings", uploaded.id, "24h", None,
        )  # fmt: skip
        assert batch.status in ("in_progress", "finalizing", "completed")  # the runner may be quick
        assert batch.request_counts is not None
        assert batch.request_counts.total == 3
        assert batch.metadata == {"job": "nightly"}
        assert batch.in_progress_at == batch.created_at
        assert batch.expires_at == batch.created_at + 24 * 3600
        again = await alice.batches.retrieve(batch.id)
        assert (again.id, again.input_file_id) == (batch.id, uploaded.id)
        assert [b.id async for b in alice.batches.list()] == [batch.id]
        assert [b.id async for b in bob.batches.list()] == []
        for call in (bob.batches.retrieve, bob.batches.cancel):
            with pytest.raises(openai.NotFoundError):
                await call(batch.id)
        with pytest.raises(openai.NotFoundError):  # another account's file is no input
            await bob.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
            )
    database = _database(tmp_path)
    with database.read() as conn:
        stored = conn.execute(
            select(batch_lines.c.line, batch_lines.c.custom_id, batch_lines.c.body_json)
        ).all()
    database.close()
    assert sorted(stored) == [
        (i + 1, f"req-{i}", json.dumps({"input": f"photo {i}"}, separators=(",", ":"))) for i in range(3)
    ]


BAD_LINES: list[Any] = [
    _line("ok-1", {"input": "fine"}),
    b"{not json",
    _line("ok-1", {"input": "again"}),  # duplicate custom_id
    _line("m", {"input": "x"}, method="GET") | {"method": "GET"},
    _line("u", {"input": "x"}, url="/v1/rank") | {"url": "/v1/rank"},
    _line("d", {"input": "x", "dimensions": 3}),  # the online endpoint refuses it (400, param dimensions)
    _line("w", {"input": 5}),  # the wire model refuses it
    [1, 2],
    _line("big", {"input": "y" * 3000}),  # over max_request_bytes (set to 2048 below)
]


async def test_an_invalid_input_fails_the_batch_with_per_line_errors_and_charges_nothing(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with _clients(tiny_runtime, tmp_path, max_request_bytes=2048) as (alice, _, raw):
        uploaded = await alice.files.create(file=("bad.jsonl", _jsonl(BAD_LINES)), purpose="batch")
        batch = await alice.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        assert batch.status == "failed"
        assert batch.failed_at == batch.created_at
        assert batch.in_progress_at is None
        assert batch.errors is not None
        found = [(e.line, e.code, e.param) for e in batch.errors.data or []]
        assert found == [
            (2, "invalid_json_line", None),
            (3, "duplicate_custom_id", "custom_id"),
            (4, "invalid_method", "method"),
            (5, "invalid_url", "url"),
            (6, "invalid_request", "dimensions"),  # the online answer's code is null
            (7, "invalid_request", "input"),
            (8, "invalid_json_line", None),
            (9, "request_too_large", None),
        ], found
        assert (await alice.batches.retrieve(batch.id)).status == "failed"
        for error in batch.errors.data[4:6]:  # the body errors are the online endpoint's own, word for word
            online = await raw.post("/embeddings", json=BAD_LINES[(error.line or 0) - 1]["body"])
            assert online.status_code == 400
            assert (error.message, error.param) == (
                online.json()["error"]["message"],
                online.json()["error"]["param"],
            )
        with pytest.raises(openai.ConflictError):
            await alice.batches.cancel(batch.id)
    database = _database(tmp_path)
    with database.read() as conn:
        charges = conn.execute(
            select(func.count()).select_from(ledger).where(ledger.c.kind == "charge")
        ).scalar_one()
        lines = conn.execute(select(func.count()).select_from(batch_lines)).scalar_one()
        charged = conn.execute(select(func.sum(accounts.c.charged_micros))).scalar_one()
    database.close()
    assert (charges, lines, charged) == (0, 0, 0)


async def test_limits_are_clear_openai_errors(tiny_runtime: Any, tmp_path: Path) -> None:
    async with _clients(
        tiny_runtime, tmp_path, max_batch_file_bytes=4096, max_batch_requests=3, max_request_bytes=2048
    ) as (
        alice,
        _,
        raw,
    ):
        too_big = _jsonl([_line(f"r{i}", {"input": "z" * 1500}) for i in range(3)])
        assert len(too_big) > 4096
        with pytest.raises(openai.APIStatusError) as refused:
            await alice.files.create(file=("big.jsonl", too_big), purpose="batch")
        assert refused.value.status_code == 413
        assert refused.value.body["code"] == "file_too_large"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as refused:
            await alice.files.create(
                file=("many.jsonl", _jsonl([_line(f"r{i}", {"input": "a"}) for i in range(4)])),
                purpose="batch",
            )
        assert refused.value.body["code"] == "too_many_requests"  # type: ignore[index]
        assert [f async for f in alice.files.list()] == []  # nothing stored
        assert [p.name for p in (tmp_path / "files").iterdir()] == []
        with pytest.raises(openai.BadRequestError) as refused:
            await alice.files.create(file=("x.jsonl", b"{}"), purpose="fine-tune")
        assert refused.value.body["param"] == "purpose"  # type: ignore[index]
        ok = await alice.files.create(
            file=("ok.jsonl", _jsonl([_line("a", {"input": "a"})])), purpose="batch"
        )
        for endpoint, window, param in (
            ("/v1/chat/completions", "24h", "endpoint"),
            ("/v1/embeddings", "1h", "completion_window"),
        ):
            with pytest.raises(openai.BadRequestError) as refused:
                await alice.batches.create(input_file_id=ok.id, endpoint=endpoint, completion_window=window)  # type: ignore[arg-type]
            assert refused.value.body["param"] == param  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as refused:
            await alice.batches.create(
                input_file_id=ok.id,
                endpoint="/v1/embeddings",
                completion_window="24h",
                metadata={f"k{i}": "v" for i in range(17)},
            )
        # uploads have their own body cap (the file limit plus framing), larger than max_request_bytes
        bigger_than_a_request = _jsonl([_line("a", {"input": "q" * 2500})])
        assert 2048 < len(bigger_than_a_request) < 4096
        big = await alice.files.create(file=("b.jsonl", bigger_than_a_request), purpose="batch")
        assert big.bytes == len(bigger_than_a_request)
        for path, declared in (("/files", 4096 + 1024 * 1024 + 1), ("/embeddings", 2049)):
            answer = await raw.post(path, content=b"x" * 10, headers={"content-length": str(declared)})
            assert answer.status_code == 413
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
        for path in ("/files", "/batches"):  # no key: 401 (before an upload's body is read)
            anonymous = await raw.post(path, content=b"x", headers={"Authorization": "Bearer nope"})
            assert anonymous.status_code == 401
            assert anonymous.json()["error"]["type"] == "invalid_request_error"
        listing = await raw.get("/batches", params={"limit": 101})
        assert listing.status_code == 400
        assert listing.json()["error"]["type"] == "invalid_request_error"


async def test_end_to_end_with_the_openai_client_every_line_is_the_online_answer(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    """Upload, create, poll, download the output and error files: each custom_id answered once, with the
    online endpoint's status and body for the same request (vectors to 1e-5: batches group items differently)."""
    bodies = {
        "ok-1": {"input": ["a photo of a cat", "a dog"]},
        "ok-2": {"input": "a red car"},
        "bad-dims": {"input": ["x"], "dimensions": 3},
    }
    async with _clients(tiny_runtime, tmp_path, batch_poll_s=0.05) as (alice, _, raw):
        uploaded = await alice.files.create(
            file=("in.jsonl", _jsonl([_line(cid, body) for cid, body in bodies.items()])), purpose="batch"
        )
        # "bad-dims" fails validation up front, so the batch runs only the good lines
        batch = await alice.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        assert batch.status == "failed"
        good = _jsonl([_line(cid, body) for cid, body in bodies.items() if cid.startswith("ok")])
        uploaded = await alice.files.create(file=("good.jsonl", good), purpose="batch")
        batch = await alice.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        deadline = time.monotonic() + 120
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            assert time.monotonic() < deadline, batch
            await asyncio.sleep(0.05)
            batch = await alice.batches.retrieve(batch.id)
        assert batch.status == "completed"
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
            2,
            2,
            0,
        )
        assert batch.output_file_id is not None
        output = (await alice.files.content(batch.output_file_id)).content.decode()
        answers = [json.loads(line) for line in output.splitlines()]
        assert sorted(a["custom_id"] for a in answers) == ["ok-1", "ok-2"]
        for answer in answers:
            online = await raw.post("/embeddings", json=bodies[answer["custom_id"]])
            assert answer["error"] is None
            assert answer["response"]["status_code"] == online.status_code == 200
            got, want = answer["response"]["body"], online.json()
            assert got["usage"] == want["usage"]
            assert [d["index"] for d in got["data"]] == [d["index"] for d in want["data"]]
            for mine, theirs in zip(got["data"], want["data"], strict=True):
                assert mine["embedding"] == pytest.approx(theirs["embedding"], abs=1e-5)
    database = _database(tmp_path)
    with database.read() as conn:
        endpoints = conn.execute(
            select(ledger.c.endpoint, func.count())
            .where(ledger.c.kind == "charge")
            .group_by(ledger.c.endpoint)
        ).all()
    database.close()
    assert dict(endpoints) == {"batch:/v1/embeddings": 2, "/v1/embeddings": 2}


async def test_an_upload_over_the_accounts_storage_quota_is_refused_and_not_kept(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    data = _jsonl([_line("a", {"input": "x" * 500})])
    assert 512 < len(data) < 1024
    async with _clients(tiny_runtime, tmp_path, max_batch_storage_bytes_per_account=1024) as (alice, bob, _):
        kept = await alice.files.create(file=("a.jsonl", data), purpose="batch")
        with pytest.raises(openai.BadRequestError) as refused:
            await alice.files.create(file=("b.jsonl", data), purpose="batch")
        assert refused.value.body["code"] == "file_storage_quota_exceeded"  # type: ignore[index]
        assert (await bob.files.create(file=("c.jsonl", data), purpose="batch")).bytes == len(
            data
        )  # per account
        await alice.files.delete(kept.id)
        assert (await alice.files.create(file=("d.jsonl", data), purpose="batch")).bytes == len(data)
    assert len(list((tmp_path / "files").iterdir())) == 2
