"""Batch lines run by real server processes (issue 13): exactly once across SIGKILL and replicas, credit, cancel,
expiry.

Batches are created straight in the database (the store the API writes), so these tests are about execution
only; the servers find them by polling (`--batch-poll-s`). Progress is observed in the database (answered
lines, claims, the batch's status), never by sleeping.
"""

from __future__ import annotations

import collections
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from clipserve.store.batch_records import BatchRecord, NewLine
from clipserve.store.batches import BatchStore
from clipserve.store.database import Database
from clipserve.store.schema import accounts, batch_lines, batches, instances, ledger
from tests.support import TINY_CONFIG, data_uri, encode_image, gradient_image, open_accounts
from tests.system.conftest import HeldImages, ServerProcess, start_server

WAIT_S = 180.0
SEED_VARIABLE = "BATCH_KILL_SEED"


SHORT_LEASE = ("--batch-lease-s", "3")  # for the tests that wait for a killed server's claims to run out


def _serve(data_dir: Path, database_url: str, files_dir: Path, *extra: str) -> ServerProcess:
    """A tiny-model server on the shared database and files dir; claims last 30 s (renewed every 10 s), so a
    stalled test machine cannot hand a running line to a second runner; `extra` flags come last and win."""
    return start_server(
        data_dir, "--weights", "random", "--architecture", str(TINY_CONFIG), "--database-url", database_url,
        "--batch-files-dir", str(files_dir), "--batch-poll-s", "0.2", "--batch-lease-s", "30",
        "--rate-limit-requests-per-minute", "0", *extra,
    )  # fmt: skip


def _image_body(i: int) -> dict[str, Any]:
    return {"input": [{"image": data_uri(encode_image(gradient_image(40, 32, seed=i)))}]}


def _create_batch(
    db: Database, account_id: int, key_id: int, bodies: list[dict[str, Any]], endpoint: str = "/v1/embeddings"
) -> BatchRecord:
    store = BatchStore(db)
    input_file = store.create_file(account_id, "in.jsonl", "batch", 1, "in-key")
    lines = [NewLine(i + 1, f"req-{i + 1}", json.dumps(body)) for i, body in enumerate(bodies)]
    return store.create_batch(
        account_id, key_id, input_file.id, endpoint, None, len(lines), store.clock() + timedelta(hours=24),
        lines=lines,
    )  # fmt: skip


def _key_id(db: Database, account_id: int) -> int:
    from clipserve.store.schema import api_keys

    with db.read() as conn:
        return int(
            conn.execute(select(api_keys.c.id).where(api_keys.c.account_id == account_id)).scalar_one()
        )


def _wait_for(what: str, check: Callable[[], bool], servers: list[ServerProcess]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        for server in servers:
            if server.process.poll() is not None:
                raise AssertionError(f"server exited while waiting for {what}:\n{server.log()}")
        if time.monotonic() > deadline:
            logs = "\n".join(server.log()[-4000:] for server in servers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def _lines(db: Database, batch_id: str) -> list[Any]:
    with db.read() as conn:
        return list(
            conn.execute(
                select(batch_lines).where(batch_lines.c.batch_id == batch_id).order_by(batch_lines.c.line)
            )
        )


def _batch(db: Database, batch_id: str) -> Any:
    with db.read() as conn:
        return conn.execute(select(batches).where(batches.c.id == batch_id)).one()


def _charges(db: Database, batch_id: str) -> list[Any]:
    with db.read() as conn:
        return list(
            conn.execute(
                select(ledger).where(
                    ledger.c.kind == "charge", ledger.c.charge_id.like(f"batch:{batch_id}:%")
                )
            )
        )


def _balance(db: Database, account_id: int) -> int:
    with db.read() as conn:
        return int(
            conn.execute(select(accounts.c.balance_micros).where(accounts.c.id == account_id)).scalar_one()
        )


def _batch_cost(images: int, tokens: int) -> int:
    """The default prices ($0.047 per 1,000 images, $0.01 per 1M tokens) at the default 50% batch discount,
    rounded up to the micro-dollar: worked out here by hand, not by the server's PriceTable."""
    exact = Decimal(images) * Decimal("23.5") + Decimal(tokens) * Decimal("0.005")
    return math.ceil(exact)


def _file_lines(files_dir: Path, db: Database, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    from clipserve.store.schema import batch_files

    with db.read() as conn:
        key = conn.execute(select(batch_files.c.storage_key).where(batch_files.c.id == file_id)).scalar_one()
    from clipserve.config import Settings
    from clipserve.service.batch_files import FileStorage

    storage = FileStorage.from_settings(Settings(data_dir=files_dir.parent, batch_files_dir=str(files_dir)))
    return [json.loads(line) for line in storage.read_bytes(key).decode().splitlines()]


def _check_exactly_once(
    db: Database, files_dir: Path, batch_id: str, total: int, account_id: int, credit: int
) -> None:
    """Every line answered once (a 200), in the output file once, charged once at the batch price."""
    batch = _batch(db, batch_id)
    assert batch.status == "completed", batch
    assert (batch.completed, batch.failed) == (total, 0)
    lines = _lines(db, batch_id)
    assert all(row.answered and row.status_code == 200 for row in lines)
    output = _file_lines(files_dir, db, batch.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(1, total + 1))
    assert batch.error_file_id is None
    charges = _charges(db, batch_id)
    by_id = collections.Counter(row.charge_id for row in charges)
    assert by_id == collections.Counter(f"batch:{batch_id}:{i}" for i in range(1, total + 1))
    expected = 0
    for row in charges:
        line = int(row.charge_id.rsplit(":", 1)[1])
        usage = json.loads(lines[line - 1].result_json)["response"]["body"]["usage"]
        assert (row.images, row.tokens) == (usage["image_count"], usage["prompt_tokens"])
        assert -row.amount_micros == _batch_cost(usage["image_count"], usage["prompt_tokens"])
        assert row.endpoint == "batch:/v1/embeddings"
        expected += -row.amount_micros
    assert _balance(db, account_id) == credit - expected


def _seeded_random() -> tuple[int, random.Random]:
    seed = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(2**32))
    print(f"{SEED_VARIABLE}={seed}")
    return seed, random.Random(seed)


def test_sigkill_mid_batch_then_restart_answers_and_charges_every_line_exactly_once(
    tmp_path: Path, database_url: str
) -> None:
    credit = 10_000_000
    ((account_id, _),) = open_accounts(database_url, [credit])
    db = Database(database_url)
    files_dir = tmp_path / "files"
    # the last line's image is held by a loopback server until the kill: the kill always lands mid-batch
    held = HeldImages(encode_image(gradient_image(40, 32, seed=99)))
    threading.Thread(target=held.serve_forever, daemon=True).start()
    fetch = ("--image-fetch-allow-private", "--image-fetch-timeout-s", "300", *SHORT_LEASE)
    try:
        total = 40
        bodies = [_image_body(i) for i in range(total - 1)] + [{"input": [{"image": held.url}]}]
        batch = _create_batch(db, account_id, _key_id(db, account_id), bodies)
        seed, rng = _seeded_random()
        kill_after = rng.randrange(4, 20)
        server = _serve(tmp_path / "first", database_url, files_dir, "--batch-lines-in-flight", "2",
                        "--batch-claim-lines", "4", *fetch)  # fmt: skip
        try:
            _wait_for(
                f"{kill_after} answered lines",
                lambda: sum(row.answered for row in _lines(db, batch.id)) >= kill_after,
                [server],
            )
        finally:
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
        before = {row.line: row.result_json for row in _lines(db, batch.id) if row.answered}
        claimed = [
            row.line for row in _lines(db, batch.id) if not row.answered and row.claimed_until is not None
        ]
        assert 0 < len(before) < total, f"seed {seed}: the kill did not land mid-batch"
        print(f"killed with {len(before)} lines answered and {len(claimed)} claimed")

        held.release.set()
        restarted = _serve(tmp_path / "second", database_url, files_dir, *fetch)
        try:
            _wait_for(
                "the batch to complete", lambda: _batch(db, batch.id).status == "completed", [restarted]
            )
        finally:
            restarted.stop()
        after = {row.line: row.result_json for row in _lines(db, batch.id)}
        assert all(after[line] == answer for line, answer in before.items()), "a line was answered again"
        _check_exactly_once(db, files_dir, batch.id, total, account_id, credit)
    finally:
        held.release.set()
        held.shutdown()
        db.close()


def _instance_of(db: Database, server: ServerProcess) -> str:
    with db.read() as conn:
        rows = conn.execute(select(instances.c.id).where(instances.c.pid == server.process.pid)).all()
    assert len(rows) == 1
    return str(rows[0][0])


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_replicas_share_a_batch_and_a_killed_ones_claims_go_to_the_other(
    tmp_path: Path, database_url: str
) -> None:
    credit = 10_000_000
    ((account_id, _),) = open_accounts(database_url, [credit])
    db = Database(database_url)
    files_dir = tmp_path / "files"
    options = ("--batch-lines-in-flight", "2", "--batch-claim-lines", "3", *SHORT_LEASE)
    try:
        total = 300
        survivor = _serve(tmp_path / "a", database_url, files_dir, *options)
        victim = _serve(tmp_path / "b", database_url, files_dir, *options)
        try:  # both are up before the batch exists: neither can finish it alone before the other starts
            batch = _create_batch(
                db, account_id, _key_id(db, account_id), [_image_body(i) for i in range(total)]
            )
            ids = {_instance_of(db, survivor): "survivor", _instance_of(db, victim): "victim"}
            victim_id = next(i for i, name in ids.items() if name == "victim")

            def both_answered_and_victim_holds_claims() -> bool:
                rows = _lines(db, batch.id)
                answered_by = {row.claimed_by for row in rows if row.answered}
                holding = any(
                    row.claimed_by == victim_id and not row.answered and row.claimed_until for row in rows
                )
                return set(ids) <= answered_by and holding

            _wait_for("both replicas to answer lines, the victim holding a claim", both_answered_and_victim_holds_claims,
                      [survivor, victim])  # fmt: skip
            # kill while holding the batch's row: no line can be answered (answer_line updates that row) between
            # the last look at the claims and the kill
            deadline = time.monotonic() + WAIT_S
            while True:
                with db.write() as conn:
                    conn.execute(select(batches.c.id).where(batches.c.id == batch.id).with_for_update())
                    if both_answered_and_victim_holds_claims():
                        victim.process.send_signal(signal.SIGKILL)
                        victim.process.wait()
                        break
                assert time.monotonic() < deadline, "the victim never held a claim"
                time.sleep(0.01)
            held = [
                row.line for row in _lines(db, batch.id) if row.claimed_by == victim_id and not row.answered
            ]
            assert held
            _wait_for("the batch to complete", lambda: _batch(db, batch.id).status == "completed", [survivor])
        finally:
            survivor.stop()
            victim.stop()
        rows = _lines(db, batch.id)
        assert {rows[line - 1].claimed_by for line in held} == {
            next(i for i, n in ids.items() if n == "survivor")
        }
        _check_exactly_once(db, files_dir, batch.id, total, account_id, credit)
    finally:
        db.close()


def test_credit_running_out_fails_the_remaining_lines_with_insufficient_quota_and_completes(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'clipserve.db'}"
    per_line = _batch_cost(1, 0)  # one image, no text: 24 micro-dollars at the batch price
    credit = 5 * per_line
    ((account_id, _),) = open_accounts(database_url, [credit])
    db = Database(database_url)
    files_dir = tmp_path / "files"
    try:
        total = 12
        batch = _create_batch(db, account_id, _key_id(db, account_id), [_image_body(i) for i in range(total)])
        server = _serve(tmp_path / "srv", database_url, files_dir, "--batch-lines-in-flight", "1")
        try:
            _wait_for("the batch to complete", lambda: _batch(db, batch.id).status == "completed", [server])
        finally:
            server.stop()
        done = _batch(db, batch.id)
        assert (done.completed, done.failed) == (5, 7)
        output = _file_lines(files_dir, db, done.output_file_id)
        errors = _file_lines(files_dir, db, done.error_file_id)
        assert sorted(o["custom_id"] for o in output) == [f"req-{i}" for i in (1, 2, 3, 4, 5)]
        assert sorted(int(e["custom_id"][4:]) for e in errors) == list(range(6, 13))
        for error in errors:
            assert error["response"] is None
            assert error["error"]["code"] == "insufficient_quota"
        assert len(_charges(db, batch.id)) == 5
        assert _balance(db, account_id) == 0
    finally:
        db.close()


def test_cancel_stops_answers_and_charges_and_keeps_what_was_answered(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'clipserve.db'}"
    credit = 10_000_000
    ((account_id, _),) = open_accounts(database_url, [credit])
    db = Database(database_url)
    files_dir = tmp_path / "files"
    try:
        total = 200
        batch = _create_batch(db, account_id, _key_id(db, account_id), [_image_body(i) for i in range(total)])
        server = _serve(tmp_path / "srv", database_url, files_dir, "--batch-lines-in-flight", "1",
                        "--batch-claim-lines", "2")  # fmt: skip
        try:
            _wait_for("3 answered lines", lambda: _batch(db, batch.id).completed >= 3, [server])
            BatchStore(db).request_cancel(account_id, batch.id)
            # from the cancel's commit on, no line is answered: these are the lines the batch keeps
            at_cancel = {row.line for row in _lines(db, batch.id) if row.answered}
            _wait_for(
                "the batch to be cancelled", lambda: _batch(db, batch.id).status == "cancelled", [server]
            )
        finally:
            server.stop()
        done = _batch(db, batch.id)
        answered = [row for row in _lines(db, batch.id) if row.answered]
        assert 3 <= len(answered) < total
        assert {row.line for row in answered} == at_cancel, "a line was answered after cancel"
        assert all(row.answered_at <= done.cancelling_at for row in answered), (
            "a line was answered after cancel"
        )
        assert done.completed == len(answered)
        output = _file_lines(files_dir, db, done.output_file_id)
        assert sorted(o["custom_id"] for o in output) == sorted(row.custom_id for row in answered)
        charges = _charges(db, batch.id)
        assert len(charges) == len(answered)
        assert all(row.created_at <= done.cancelling_at for row in charges)
        assert _balance(db, account_id) == credit - len(answered) * _batch_cost(1, 0)
    finally:
        db.close()


def test_a_batch_past_its_window_expires_with_its_partial_results(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'clipserve.db'}"
    ((account_id, _),) = open_accounts(database_url, [10_000_000])
    db = Database(database_url)
    files_dir = tmp_path / "files"
    try:
        total = 200
        batch = _create_batch(db, account_id, _key_id(db, account_id), [_image_body(i) for i in range(total)])
        server = _serve(tmp_path / "srv", database_url, files_dir, "--batch-lines-in-flight", "1",
                        "--batch-claim-lines", "2")  # fmt: skip
        try:
            _wait_for("3 answered lines", lambda: _batch(db, batch.id).completed >= 3, [server])
            with db.write() as conn:  # the 24 h window ends now
                conn.execute(
                    update(batches).where(batches.c.id == batch.id).values(expires_at=BatchStore(db).clock())
                )
            _wait_for("the batch to expire", lambda: _batch(db, batch.id).status == "expired", [server])
        finally:
            server.stop()
        done = _batch(db, batch.id)
        answered = [row for row in _lines(db, batch.id) if row.answered]
        assert 3 <= len(answered) < total
        assert done.expired_at is not None
        output = _file_lines(files_dir, db, done.output_file_id)
        assert sorted(o["custom_id"] for o in output) == sorted(row.custom_id for row in answered)
        assert len(_charges(db, batch.id)) == len(answered)
        # the lines never run are in the error file, as OpenAI writes them
        errors = _file_lines(files_dir, db, done.error_file_id)
        never_run = {row.custom_id for row in _lines(db, batch.id) if not row.answered}
        assert sorted(e["custom_id"] for e in errors) == sorted(never_run)
        for error in errors:
            assert error["response"] is None
            assert error["error"] == {
                "code": "batch_expired",
                "message": "This request could not be executed before the completion window expired.",
            }
    finally:
        db.close()


def test_a_stopping_server_gives_its_claimed_lines_back_at_once(tmp_path: Path) -> None:
    """SIGTERM: the lines the server had claimed but not answered are free again when it has stopped (not only
    when their lease would have run out), so another replica or the restarted server runs them at once."""
    database_url = f"sqlite:///{tmp_path / 'clipserve.db'}"
    ((account_id, _),) = open_accounts(database_url, [10_000_000])
    db = Database(database_url)
    files_dir = tmp_path / "files"
    try:
        batch = _create_batch(db, account_id, _key_id(db, account_id), [_image_body(i) for i in range(200)])
        server = _serve(tmp_path / "srv", database_url, files_dir, "--batch-lease-s", "3600",
                        "--batch-lines-in-flight", "2", "--batch-claim-lines", "4")  # fmt: skip
        try:
            _wait_for("3 answered lines", lambda: _batch(db, batch.id).completed >= 3, [server])
        finally:
            server.stop()
        now = BatchStore(db).clock()
        held = [
            row.line
            for row in _lines(db, batch.id)
            if not row.answered and row.claimed_until and row.claimed_until > now
        ]
        assert held == []
        assert _batch(db, batch.id).status == "in_progress"
    finally:
        db.close()
