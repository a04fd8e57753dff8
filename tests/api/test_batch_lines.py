"""A batch line's answer is the online endpoint's answer for the same body (issue 13): the same code path.

Batches are created in the app's database (as POST /v1/batches does) and run by the app's own BatchRunner;
each output or error line is then compared with what the online route answers for the line's body, status and
body, errors included (their OpenAI error objects word for word).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from clipserve.config import Settings
from clipserve.store.batch_records import NewLine
from clipserve.store.batches import BatchStore
from clipserve.store.database import Database
from clipserve.store.schema import api_keys, batch_files, ledger
from tests.support import bearer, create_key, data_uri, encode_image, gradient_image, occupy, running_app

pytestmark = pytest.mark.anyio

IMAGE = data_uri(encode_image(gradient_image(40, 32, seed=3)))
OTHER = data_uri(encode_image(gradient_image(36, 30, seed=4)))
BODIES: dict[str, list[dict[str, Any]]] = {
    "/v1/embeddings": [
        {"input": ["a photo of a cat", "a dog on a beach"]},
        {"input": [{"image": IMAGE}, "caption"], "encoding_format": "base64"},
        {"input": ["x"], "dimensions": 3},  # a typed error (400, param dimensions)
        {"input": 5},  # a body the wire model refuses (400, invalid_value)
        {"input": [{"image": "data:image/png;base64,AAAA"}]},  # an image that does not decode
    ],
    "/v1/classify": [
        {"input": [{"image": IMAGE}, {"image": OTHER}], "labels": ["cat", "dog", "car"]},
        {"inputs": IMAGE, "parameters": {"candidate_labels": ["cat", "dog"]}},  # Hugging Face's shape
        {"input": [{"image": IMAGE}]},  # no labels
    ],
    "/v1/rank": [
        {"query": "a cat", "documents": ["a cat", {"image": IMAGE}, "a car"], "return_documents": True},
        {"query": {"image": OTHER}, "documents": [{"image": IMAGE}, "dog"], "top_n": 1},
        {"query": "x", "documents": []},
    ],
}


def _close(batch: Any, online: Any, where: str) -> None:
    """Equal JSON, floats to 1e-5 (a line's items may share a model batch with others, the online request's
    with none); base64 embeddings are compared as floats."""
    if isinstance(online, dict):
        assert isinstance(batch, dict), where
        assert batch.keys() == online.keys(), where
        for key in online:
            _close(batch[key], online[key], f"{where}.{key}")
    elif isinstance(online, list):
        assert isinstance(batch, list), where
        assert len(batch) == len(online), where
        for i, (b, o) in enumerate(zip(batch, online, strict=True)):
            _close(b, o, f"{where}[{i}]")
    elif isinstance(online, float):
        assert batch == pytest.approx(online, abs=1e-5), where
    elif isinstance(online, str) and where.endswith(".embedding"):
        import base64

        import numpy as np

        b = np.frombuffer(base64.b64decode(batch), "<f4")
        o = np.frombuffer(base64.b64decode(online), "<f4")
        np.testing.assert_allclose(b, o, atol=1e-5, err_msg=where)
    else:
        assert batch == online, where


def _batch_cost(images: int, tokens: int) -> int:
    """Default prices at the default 50% discount, by hand: 23.5 micro-dollars an image, 0.005 a token."""
    return math.ceil(Decimal(images) * Decimal("23.5") + Decimal(tokens) * Decimal("0.005"))


async def test_every_output_line_equals_the_online_answer_for_the_same_body(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    key = create_key(tmp_path, credit="10")
    db = Database(f"sqlite:///{tmp_path / 'clipserve.db'}")
    try:
        async with running_app(tiny_runtime, tmp_path, batch_poll_s=0.05) as (client, _app):
            store = BatchStore(db)
            with db.read() as conn:
                account_id, key_id = conn.execute(select(api_keys.c.account_id, api_keys.c.id)).one()
            for (
                url,
                bodies,
            ) in BODIES.items():  # warm the prompt cache, so both answers count the same cached tokens
                for body in bodies:
                    await client.post(url, json=body, headers=bearer(key))
            created = {}
            for url, bodies in BODIES.items():
                source = store.create_file(account_id, "in.jsonl", "batch", 1, "in")
                lines = [NewLine(i + 1, f"{url}#{i + 1}", json.dumps(body)) for i, body in enumerate(bodies)]
                created[url] = store.create_batch(
                    account_id, key_id, source.id, url, None, len(lines), store.clock() + timedelta(hours=1),
                    lines=lines,
                )  # fmt: skip
            deadline = time.monotonic() + 120
            while any(store.get_batch(account_id, b.id).status != "completed" for b in created.values()):
                assert time.monotonic() < deadline, [
                    store.get_batch(account_id, b.id) for b in created.values()
                ]
                await asyncio.sleep(0.05)
            storage_settings = Settings(data_dir=tmp_path)
            from clipserve.service.batch_files import FileStorage

            storage = FileStorage.from_settings(storage_settings)
            compared = 0
            for url, batch in created.items():
                done = store.get_batch(account_id, batch.id)
                answers = []
                for file_id in (done.output_file_id, done.error_file_id):
                    if file_id is None:
                        continue
                    with db.read() as conn:
                        storage_key = conn.execute(
                            select(batch_files.c.storage_key).where(batch_files.c.id == file_id)
                        ).scalar_one()
                    answers += [
                        json.loads(line) for line in storage.read_bytes(storage_key).decode().splitlines()
                    ]
                assert sorted(a["custom_id"] for a in answers) == sorted(
                    f"{url}#{i + 1}" for i in range(len(BODIES[url]))
                )
                with db.read() as conn:
                    charges = {
                        row.charge_id: row
                        for row in conn.execute(
                            select(ledger).where(ledger.c.charge_id.like(f"batch:{batch.id}:%"))
                        )
                    }
                for answer in answers:
                    line = int(answer["custom_id"].split("#")[1])
                    body = BODIES[url][line - 1]
                    online = await client.post(url, json=body, headers=bearer(key))
                    response = answer["response"]
                    assert answer["error"] is None
                    assert answer["id"].startswith("batch_req_")
                    assert response["status_code"] == online.status_code, (answer, online.text)
                    _close(response["body"], online.json(), f"{url}#{line}")
                    charge = charges.get(f"batch:{batch.id}:{line}")
                    if online.status_code != 200:
                        assert charge is None
                        continue
                    assert charge is not None
                    assert charge.endpoint == f"batch:{url}"
                    if isinstance(online.json(), dict):  # not Hugging Face's shape, which has no usage
                        usage = online.json()["usage"]
                        tokens = usage["prompt_tokens"] + usage.get("cached_tokens", 0)
                        assert (charge.images, charge.tokens) == (usage["image_count"], tokens)
                    assert -charge.amount_micros == _batch_cost(charge.images, charge.tokens)
                    compared += 1
                assert done.completed == sum(a["response"]["status_code"] == 200 for a in answers)
            assert compared == 6  # two successful lines per endpoint
    finally:
        db.close()


async def test_batch_lines_wait_in_the_background_lane_of_the_model_queue(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    """While an online request holds items of the image queue (here: reserved, as while its images decode), a
    batch's images are queued under the account's background tenant (served only when no online request has
    items: runtime/fair_queue.py), not under the account itself, and run once the online request is done."""
    from clipserve.runtime.fair_queue import background_tenant

    create_key(tmp_path, credit="10")
    db = Database(f"sqlite:///{tmp_path / 'clipserve.db'}")
    try:
        async with running_app(tiny_runtime, tmp_path, batch_poll_s=0.05) as (_client, app):
            context = app.state.context
            online = context.queues.images.reserve(1, tenant="account:someone-online")
            store = BatchStore(db)
            with db.read() as conn:
                account_id, key_id = conn.execute(select(api_keys.c.account_id, api_keys.c.id)).one()
            source = store.create_file(account_id, "in.jsonl", "batch", 1, "in")
            lines = [NewLine(i + 1, f"r{i}", json.dumps({"input": [{"image": IMAGE}]})) for i in range(4)]
            batch = store.create_batch(account_id, key_id, source.id, "/v1/embeddings", None, 4,
                                       store.clock() + timedelta(hours=1), lines=lines)  # fmt: skip
            pending = context.queues.images._pending
            tenant = background_tenant(f"account:{account_id}")
            deadline = time.monotonic() + 60
            while pending.tenant_size(tenant) == 0:
                assert time.monotonic() < deadline, "the batch's images never reached the image queue"
                await asyncio.sleep(0.01)
            assert pending.tenant_size(f"account:{account_id}") == 0
            await asyncio.sleep(0.3)
            assert (
                store.get_batch(account_id, batch.id).completed == 0
            )  # still waiting for the online request
            online.release()
            while store.get_batch(account_id, batch.id).completed < 4:
                assert time.monotonic() < deadline, store.get_batch(account_id, batch.id)
                await asyncio.sleep(0.05)
    finally:
        db.close()


async def test_local_mode_runs_batch_lines_without_charging(tiny_runtime: Any, tmp_path: Path) -> None:
    """No accounts (no key exists): the batch belongs to no account, runs as "local" and is charged nothing."""
    db = Database(f"sqlite:///{tmp_path / 'clipserve.db'}")
    try:
        async with running_app(tiny_runtime, tmp_path, batch_poll_s=0.05) as (client, _app):
            store = BatchStore(db)
            source = store.create_file(None, "in.jsonl", "batch", 1, "in")
            body = {"input": ["a cat", {"image": IMAGE}]}
            batch = store.create_batch(None, None, source.id, "/v1/embeddings", None, 1,
                                       store.clock() + timedelta(hours=1),
                                       lines=[NewLine(1, "only", json.dumps(body))])  # fmt: skip
            deadline = time.monotonic() + 60
            while store.get_batch(None, batch.id).status != "completed":
                assert time.monotonic() < deadline, store.get_batch(None, batch.id)
                await asyncio.sleep(0.05)
            done = store.get_batch(None, batch.id)
            (answer,) = store.answers(batch.id)
            online = await client.post("/v1/embeddings", json=body)
            _close(json.loads(answer.result_json)["response"]["body"], online.json(), "local")
            assert (done.completed, done.failed, done.error_file_id) == (1, 0, None)
            assert done.output_file_id is not None
            with db.read() as conn:
                assert conn.execute(select(ledger)).all() == []
    finally:
        db.close()


async def test_cancel_stops_the_lines_running_here_at_once(tiny_runtime: Any, tmp_path: Path) -> None:
    """POST /v1/batches/{id}/cancel: the lines this process is running stop at once, while the model is still
    busy (not only when they would have been answered), and none is answered or charged."""
    import threading

    db = Database(f"sqlite:///{tmp_path / 'clipserve.db'}")
    gate = threading.Event()
    try:
        # two claims of 4 lines: the runner then waits on its claims (up to batch_poll_s), not for a wake-up, and
        # renews them (checking the status) only every 200 s: only the cancel route's wake-up can stop them in time
        options = {"batch_poll_s": 120, "batch_claim_lines": 4, "batch_lease_s": 600}
        async with running_app(tiny_runtime, tmp_path, **options) as (client, app):
            context = app.state.context
            runner = context.batch_runner
            # the model is busy on both threads: online calls and (with --batch-yields) batch calls have their own
            blocked = [asyncio.wrap_future(occupy(pool, gate))
                       for pool in (context.compute_pool, context.background_compute_pool)]  # fmt: skip
            store = BatchStore(db)
            source = store.create_file(None, "in.jsonl", "batch", 1, "in")
            lines = [NewLine(i + 1, f"r{i}", json.dumps({"input": [{"image": IMAGE}]})) for i in range(8)]
            batch = store.create_batch(None, None, source.id, "/v1/embeddings", None, 8,
                                       store.clock() + timedelta(hours=1), lines=lines)  # fmt: skip
            runner.wake()  # as POST /v1/batches does
            deadline = time.monotonic() + 60
            while len(runner._running) < 8:
                assert time.monotonic() < deadline, "no line started"
                await asyncio.sleep(0.01)
            cancelled = await client.post(f"/v1/batches/{batch.id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            while runner._running:  # the model thread is still blocked: only a cancel can end them
                assert time.monotonic() < deadline, "the running lines were not stopped"
                await asyncio.sleep(0.01)
            gate.set()
            await asyncio.gather(*blocked)
            while store.get_batch(None, batch.id).status != "cancelled":
                assert time.monotonic() < deadline, store.get_batch(None, batch.id)
                await asyncio.sleep(0.05)
            done = store.get_batch(None, batch.id)
            assert (done.completed, done.failed, done.output_file_id, done.error_file_id) == (
                0,
                0,
                None,
                None,
            )
    finally:
        gate.set()
        db.close()
