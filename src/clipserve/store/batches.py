"""The Batch API's rows (issue 13): batches and their lines, with leases and exactly-once answers (files:
store/batch_file_rows.py).

Lines are the unit of work. `claim_work` leases a few unanswered lines of one in_progress batch to an
instance (FOR UPDATE SKIP LOCKED on Postgres, so replicas never wait on each other's claims; SQLite's
serialized write transaction there); a lease that runs out (a killed replica) makes the lines claimable
again. `answer_line` is the one way a line gets answered: in one transaction it marks the line answered
(only if it was not), counts it on the batch (only while the batch is in_progress, so a cancel or an expiry
stops answers and charges at once) and charges it through the ledger's own code with the charge id
"batch:<batch id>:<line>" (the ledger's unique charge_id refuses a second one). Whatever kills a process, a
line is either answered and charged once, or neither.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    true,
    update,
)

from clipserve.errors import BatchQuotaError, ConflictError, NotFoundError
from clipserve.store.accounts import lock_account
from clipserve.store.batch_file_rows import FileRows, owned, page
from clipserve.store.batch_records import (
    ACTIVE,
    Answer,
    BatchRecord,
    LineClaim,
    LineError,
    NewLine,
    Page,
)
from clipserve.store.ledger import Charge, record_charge
from clipserve.store.schema import batch_lines, batches

FINAL_STATUSES = ("completed", "cancelled", "expired")
_RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
_CANDIDATE_BATCHES = 8  # batches looked at per claim; all of their free lines may be locked by other claims
_INSERT_CHUNK = 1000


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def line_charge_id(batch_id: str, line: int) -> str:
    """The ledger charge id of a batch line: unique, so a line is never charged twice."""
    return f"batch:{batch_id}:{line}"


class _Refused(Exception):
    """Rolls answer_line's transaction back: the line was answered already, or the batch stopped."""


def _open_line(now: datetime) -> ColumnElement[bool]:
    """An unanswered line whose claim is free or has run out."""
    return and_(
        batch_lines.c.answered == false(),
        or_(batch_lines.c.claimed_until.is_(None), batch_lines.c.claimed_until <= now),
    )


class BatchStore(FileRows):
    """Batches and their lines (and, from FileRows, the files they read and write)."""

    # batches

    def create_batch(
        self,
        account_id: int | None,
        key_id: int | None,
        input_file_id: str,
        endpoint: str,
        metadata: dict[str, Any] | None,
        total_lines: int,
        expires_at: datetime,
        *,
        lines: Sequence[NewLine] = (),
        errors: Sequence[LineError] | None = None,
        completion_window: str = "24h",
        max_active: int | None = None,
    ) -> BatchRecord:
        """A validated batch (in_progress, with its lines) or, given `errors`, a failed one (no lines). With
        `max_active`, an account already running that many batches gets BatchQuotaError instead."""
        now = self.clock()
        failed = errors is not None
        values: dict[str, Any] = {
            "id": new_batch_id(), "account_id": account_id, "key_id": key_id, "input_file_id": input_file_id,
            "endpoint": endpoint, "completion_window": completion_window,
            "status": "failed" if failed else "in_progress",
            "errors_json": json.dumps([e.__dict__ for e in errors]) if errors is not None else None,
            "metadata_json": json.dumps(metadata) if metadata is not None else None,
            "total": 0 if failed else total_lines, "completed": 0, "failed": 0, "created_at": now,
            "in_progress_at": None if failed else now, "failed_at": now if failed else None,
            "expires_at": expires_at,
        }  # fmt: skip
        with self.db.write() as conn:
            if max_active is not None and not failed:
                self.lock_account_batches(conn, account_id)
                running = conn.execute(
                    select(func.count())
                    .select_from(batches)
                    .where(owned(batches, account_id), batches.c.status.in_(_RUNNING))
                ).scalar_one()
                if int(running) >= max_active:
                    raise BatchQuotaError(
                        f"this account has {int(running)} batches running, its quota; wait for one to finish "
                        "or cancel one",
                        param="input_file_id",
                    )
            conn.execute(insert(batches).values(**values))
            rows = [
                {"batch_id": values["id"], "line": line.line, "custom_id": line.custom_id,
                 "body_json": line.body_json, "answered": False}
                for line in ([] if failed else lines)
            ]  # fmt: skip
            for start in range(0, len(rows), _INSERT_CHUNK):
                conn.execute(insert(batch_lines), rows[start : start + _INSERT_CHUNK])
            return _batch(conn, values["id"])

    def get_batch(self, account_id: int | None, batch_id: str) -> BatchRecord:
        """The caller's batch; another account's is reported exactly as a missing one."""
        with self.db.read() as conn:
            return _batch(conn, batch_id, owned(batches, account_id))

    def list_batches(self, account_id: int | None, after: str | None, limit: int) -> Page[BatchRecord]:
        with self.db.read() as conn:
            rows = page(conn, batches, [owned(batches, account_id)], account_id, after, limit)
        return Page([_record(row) for row in rows[:limit]], len(rows) > limit)

    def request_cancel(self, account_id: int | None, batch_id: str) -> BatchRecord:
        """in_progress -> cancelling: from this commit on no line of it is answered or charged. Cancelling a
        batch that is cancelling or cancelled again is harmless; any other status is a 409."""
        with self.db.write() as conn:
            now = self.clock()  # under the write lock: no line answered after this commit has an earlier time
            current = _batch(conn, batch_id, owned(batches, account_id))
            if current.status in ACTIVE:
                conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id, batches.c.status.in_(ACTIVE))
                    .values(status="cancelling", cancelling_at=now, finalize_to="cancelled")
                )
            elif current.status not in ("cancelling", "cancelled"):
                raise ConflictError(
                    f"Cannot cancel a batch with status '{current.status}'.", param="batch_id"
                )
            return _batch(conn, batch_id)

    def expire_due(self, now: datetime | None = None) -> list[str]:
        """in_progress batches past expires_at -> finalizing (to expire with their partial results)."""
        now = now or self.clock()
        with self.db.write() as conn:
            due = [
                batch_id
                for (batch_id,) in conn.execute(
                    select(batches.c.id)
                    .where(batches.c.status.in_(ACTIVE), batches.c.expires_at <= now)
                    .with_for_update(skip_locked=True)
                )
            ]
            if due:
                conn.execute(
                    update(batches)
                    .where(batches.c.id.in_(due), batches.c.status.in_(ACTIVE))
                    .values(status="finalizing", finalizing_at=now, finalize_to="expired")
                )
            return due

    # work

    def claim_work(self, instance_id: str, lease_s: float, limit_lines: int) -> list[LineClaim] | None:
        """Lease up to `limit_lines` open lines of one in_progress batch (oldest batch first) to
        `instance_id`; None when no batch has an open line."""
        now = self.clock()
        until = now + timedelta(seconds=lease_s)
        with self.db.write() as conn:
            candidates = conn.execute(
                select(batches.c.id, batches.c.endpoint, batches.c.account_id, batches.c.key_id)
                .where(
                    batches.c.status == "in_progress",
                    batches.c.expires_at > now,
                    exists().where(batch_lines.c.batch_id == batches.c.id, _open_line(now)),
                )
                .order_by(batches.c.created_at, batches.c.id)
                .limit(_CANDIDATE_BATCHES)
            ).all()
            for batch_id, endpoint, account_id, key_id in candidates:
                rows = conn.execute(
                    select(batch_lines.c.line, batch_lines.c.custom_id, batch_lines.c.body_json)
                    .where(batch_lines.c.batch_id == batch_id, _open_line(now))
                    .order_by(batch_lines.c.line)
                    .limit(limit_lines)
                    .with_for_update(skip_locked=True)
                ).all()
                if not rows:
                    continue  # every open line is being claimed by another instance right now
                conn.execute(
                    update(batch_lines)
                    .where(batch_lines.c.batch_id == batch_id, batch_lines.c.line.in_([r[0] for r in rows]))
                    .values(claimed_by=instance_id, claimed_until=until)
                )
                return [
                    LineClaim(batch_id, line, custom_id, endpoint, body, account_id, key_id, until)
                    for line, custom_id, body in rows
                ]
        return None

    def renew(self, instance_id: str, batch_id: str, lines: Sequence[int], lease_s: float) -> int:
        """Extend this instance's unanswered claims; returns how many it still held."""
        until = self.clock() + timedelta(seconds=lease_s)
        with self.db.write(durable=False) as conn:  # a lost renewal only lets another instance run the line
            return conn.execute(
                update(batch_lines)
                .where(
                    batch_lines.c.batch_id == batch_id,
                    batch_lines.c.line.in_(list(lines)),
                    batch_lines.c.claimed_by == instance_id,
                    batch_lines.c.answered == false(),
                )
                .values(claimed_until=until)
            ).rowcount

    def release(self, instance_id: str) -> int:
        """Give back every unanswered line `instance_id` holds (a stopping server: another replica or the
        restarted server runs them at once instead of when their leases run out); returns how many."""
        with self.db.write() as conn:
            return conn.execute(
                update(batch_lines)
                .where(batch_lines.c.claimed_by == instance_id, batch_lines.c.answered == false())
                .values(claimed_until=None, claimed_by=None)
            ).rowcount

    def answer_line(
        self, batch_id: str, line: int, result_json: str, status_code: int | None, charge: Charge | None
    ) -> bool:
        """Answer a line and charge it, once: False (and nothing done) if it was answered already or the batch
        is no longer in_progress (cancelled, expiring). `charge.charge_id` must be line_charge_id(...)."""
        if charge is not None and charge.charge_id != line_charge_id(batch_id, line):
            raise ValueError(f"a batch line's charge id is {line_charge_id(batch_id, line)!r}")
        succeeded = 1 if status_code == 200 else 0
        try:
            with self.db.write() as conn:
                now = self.clock()  # under the write lock (see request_cancel)
                if charge is not None:
                    lock_account(conn, charge.account_id)  # first, as settle does (lock order)
                answered = conn.execute(
                    update(batch_lines)
                    .where(
                        batch_lines.c.batch_id == batch_id,
                        batch_lines.c.line == line,
                        batch_lines.c.answered == false(),
                    )
                    .values(
                        answered=true(), status_code=status_code, result_json=result_json, answered_at=now,
                        claimed_until=None,
                    )
                ).rowcount  # fmt: skip
                if not answered:
                    raise _Refused
                counted = conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id, batches.c.status == "in_progress")
                    .values(
                        completed=batches.c.completed + succeeded, failed=batches.c.failed + (1 - succeeded)
                    )
                ).rowcount
                if not counted:
                    raise _Refused
                if charge is not None:
                    record_charge(conn, charge, now)
        except _Refused:
            return False
        return True

    def answers(
        self, batch_id: str, after_line: int = 0, limit: int = 1000, *, succeeded: bool | None = None
    ) -> list[Answer]:
        """Answered lines after `after_line`, in line order (page through them to write the output files);
        `succeeded`: only those of the output file (True) or of the error file (False), as Answer.succeeded."""
        conditions = [
            batch_lines.c.batch_id == batch_id,
            batch_lines.c.answered == true(),
            batch_lines.c.line > after_line,
        ]
        if succeeded is not None:
            ok = batch_lines.c.status_code == 200
            conditions.append(ok if succeeded else or_(batch_lines.c.status_code.is_(None), ~ok))
        with self.db.read() as conn:
            rows = conn.execute(
                select(batch_lines.c.line, batch_lines.c.status_code, batch_lines.c.result_json)
                .where(*conditions)
                .order_by(batch_lines.c.line)
                .limit(limit)
            ).all()
        return [Answer(line, status, result or "") for line, status, result in rows]

    def unanswered(self, batch_id: str, after_line: int = 0, limit: int = 1000) -> list[tuple[int, str]]:
        """(line, custom_id) of the lines never answered after `after_line`, in line order (an expired batch's
        error file)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(batch_lines.c.line, batch_lines.c.custom_id)
                .where(
                    batch_lines.c.batch_id == batch_id,
                    batch_lines.c.answered == false(),
                    batch_lines.c.line > after_line,
                )
                .order_by(batch_lines.c.line)
                .limit(limit)
            ).all()
        return [(int(line), str(custom_id)) for line, custom_id in rows]

    # finalizing

    def claim_finalize(self, instance_id: str, lease_s: float) -> BatchRecord | None:
        """Lease one batch whose output files are due: an in_progress batch with every line answered (it
        becomes finalizing, to complete), or a finalizing/cancelling one whose finalize lease is free or ran
        out. Its `finalize_to` says the status that finalize will set."""
        now = self.clock()
        unanswered = exists().where(batch_lines.c.batch_id == batches.c.id, batch_lines.c.answered == false())
        lease_free = or_(batches.c.finalize_until.is_(None), batches.c.finalize_until <= now)
        with self.db.write() as conn:
            row = conn.execute(
                select(batches.c.id, batches.c.status)
                .where(
                    or_(
                        and_(batches.c.status == "in_progress", ~unanswered),
                        and_(batches.c.status.in_(("finalizing", "cancelling")), lease_free),
                    )
                )
                .order_by(batches.c.created_at, batches.c.id)
                .limit(1)
                .with_for_update(of=batches, skip_locked=True)
            ).first()
            if row is None:
                return None
            values: dict[str, Any] = {
                "finalizer": instance_id,
                "finalize_until": now + timedelta(seconds=lease_s),
            }
            if row.status == "in_progress":
                values.update(status="finalizing", finalizing_at=now, finalize_to="completed")
            conn.execute(update(batches).where(batches.c.id == row.id).values(**values))
            return _batch(conn, row.id)

    def renew_finalize(self, instance_id: str, batch_id: str, lease_s: float) -> bool:
        """Extend this instance's finalize lease (while it writes a large batch's files); False if the lease is
        no longer its own."""
        with self.db.write(durable=False) as conn:
            return bool(
                conn.execute(
                    update(batches)
                    .where(*_finalizing(batch_id, instance_id))
                    .values(finalize_until=self.clock() + timedelta(seconds=lease_s))
                ).rowcount
            )

    def finalize(
        self,
        batch_id: str,
        output_file_id: str | None,
        error_file_id: str | None,
        status: str,
        *,
        finalizer: str,
    ) -> bool:
        """The batch's last step, by the instance holding its finalize lease: its files and final status
        (completed, cancelled or expired), once; False if it was finalized already or `finalizer` lost the
        lease."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"a batch is finalized as one of {FINAL_STATUSES}, not {status!r}")
        now = self.clock()
        with self.db.write() as conn:
            return bool(
                conn.execute(
                    update(batches)
                    .where(*_finalizing(batch_id, finalizer))
                    .values(
                        {
                            "status": status,
                            f"{status}_at": now,
                            "output_file_id": output_file_id,
                            "error_file_id": error_file_id,
                            "finalizer": None,
                            "finalize_until": None,
                        }
                    )
                ).rowcount
            )


def _finalizing(batch_id: str, finalizer: str) -> list[ColumnElement[bool]]:
    """The batch, while `finalizer` is finalizing it."""
    return [
        batches.c.id == batch_id,
        batches.c.status.in_(("finalizing", "cancelling")),
        batches.c.finalizer == finalizer,
    ]


def _batch(conn: Connection, batch_id: str, owned: ColumnElement[bool] | None = None) -> BatchRecord:
    """A batch by id; with `owned` (see _owned) only the caller's."""
    query = select(batches).where(batches.c.id == batch_id)
    if owned is not None:
        query = query.where(owned)
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFoundError(f"No batch found with id '{batch_id}'.", param="batch_id")
    return _record(row)


def _record(row: Any) -> BatchRecord:
    values = dict(row)
    errors = values.pop("errors_json")
    metadata = values.pop("metadata_json")
    for internal in ("finalizer", "finalize_until"):
        values.pop(internal)
    return BatchRecord(
        **values,
        errors=None if errors is None else [LineError(**e) for e in json.loads(errors)],
        metadata=None if metadata is None else json.loads(metadata),
    )
