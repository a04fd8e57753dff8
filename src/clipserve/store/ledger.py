"""The money path: admit (rate limits, credit hold, idempotency), settle (one charge), release, usage, audit."""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, bindparam, case, delete, func, insert, select, update

from clipserve.errors import (
    IdempotencyConflictError,
    IdempotencyMismatchError,
    InsufficientQuotaError,
    RateLimitExceededError,
)
from clipserve.service.pricing import micros_to_dollars
from clipserve.service.rate_limits import LimitCheck, WindowCounts, check, rate_limit_headers
from clipserve.store import instances
from clipserve.store.accounts import Clock, lock_account, utc_now
from clipserve.store.database import Database
from clipserve.store.instances import Instance
from clipserve.store.records import ChargeRow, LedgerAudit, UsageRow
from clipserve.store.schema import accounts, api_keys, holds, idempotency, ledger, rate_windows

# The hot path's statements, built once: SQLAlchemy then skips building and keying them per request, which
# was a third of a metered request's CPU time here.
_HELD = select(func.coalesce(func.sum(holds.c.amount_micros), 0)).where(
    holds.c.account_id == bindparam("account_id"),
    holds.c.expires_at > bindparam("now"),
    holds.c.instance_id.not_in(bindparam("dead", expanding=True)),
)
_AVAILABLE = select(accounts.c.balance_micros - _HELD.scalar_subquery()).where(
    accounts.c.id == bindparam("account_id")
)
_INSERT_HOLD = insert(holds)
_DELETE_HOLD = delete(holds).where(holds.c.charge_id == bindparam("charge_id"))
_INSERT_LEDGER = insert(ledger)
_CHARGE_ACCOUNT = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(
        charged_micros=accounts.c.charged_micros + bindparam("cost"),
        balance_micros=accounts.c.balance_micros - bindparam("cost"),
    )
)
_RATE_WINDOWS = select(rate_windows).where(
    rate_windows.c.key_id == bindparam("key_id"), rate_windows.c.minute >= bindparam("since")
)
_COUNT_REQUEST = (
    update(rate_windows)
    .where(
        rate_windows.c.key_id == bindparam("window_key"), rate_windows.c.minute == bindparam("this_minute")
    )
    .values(requests=rate_windows.c.requests + 1, images=rate_windows.c.images + bindparam("added_images"))
)
_INSERT_WINDOW = insert(rate_windows)


@dataclass(frozen=True)
class AdmissionRequest:
    charge_id: str  # unique per admitted request; the ledger's key for exactly-once charging
    account_id: int
    key_id: int
    estimate_micros: int
    images: int
    requests_per_minute: int | None
    images_per_minute: int | None
    idempotency_key: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    media_type: str
    body: bytes


@dataclass(frozen=True)
class Admitted:
    requests: LimitCheck
    images: LimitCheck
    replay: StoredResponse | None = None  # an earlier answer to the same Idempotency-Key


@dataclass(frozen=True)
class Charge:
    charge_id: str
    request_id: str  # the x-request-id, for matching ledger rows to logs
    account_id: int
    key_id: int
    endpoint: str
    images: int
    tokens: int
    cost_micros: int
    idempotency_key: str | None = None
    response: StoredResponse | None = None


@dataclass(frozen=True)
class LedgerTimeouts:
    hold_s: float = 900.0  # the longest a request may hold credit, whatever happens to its process
    idempotency_s: float = 24 * 3600.0  # answers kept for replay this long (as Stripe does)
    instance_liveness_s: float = 30.0  # a process that has not heartbeated for this long is dead
    heartbeat_s: float = 10.0


class LedgerStore:
    def __init__(
        self,
        db: Database,
        clock: Clock = utc_now,
        timeouts: LedgerTimeouts | None = None,
        instance: Instance | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.timeouts = timeouts or LedgerTimeouts()
        self.instance = instance or Instance()
        self._registered = False
        self._registration = threading.Lock()
        self._dead_cache: tuple[datetime | None, set[str]] = (None, set())

    def heartbeat(self) -> None:
        """Say this process is alive (registers it the first time); its holds count while it does."""
        with self._registration:
            with self.db.write() as conn:
                instances.heartbeat(conn, self.instance, self.clock())
            self._registered = True

    def _dead(self, conn: Connection, now: datetime) -> set[str]:
        """Ids of instances known to be dead, re-read at most once a second. Stale only ever in the safe
        direction: an instance that died within the second still counts (its holds too), and one that started
        within it is not named, so it counts from its first hold."""
        cached_at, dead = self._dead_cache
        if cached_at is not None and timedelta(0) <= now - cached_at < timedelta(seconds=1):
            return dead
        dead = instances.dead_instances(conn, self.instance, now, self.timeouts.instance_liveness_s)
        self._dead_cache = (now, dead)
        return dead

    def available_micros(self, account_id: int) -> int:
        """The account's balance less the credit that live instances hold for requests in flight (what `admit`
        checks an estimate against), read without taking the account's lock."""
        if not self._registered:
            self.heartbeat()
        now = self.clock()
        with self.db.read() as conn:
            available = conn.execute(
                _AVAILABLE, {"account_id": account_id, "now": now, "dead": sorted(self._dead(conn, now))}
            ).scalar_one()
        return int(available)

    def admit(self, request: AdmissionRequest) -> Admitted:
        """Check limits and credit and reserve the estimate, in one transaction; raises when refused."""
        if not self._registered:
            self.heartbeat()
        now = self.clock()
        # Holds, counters and pending keys mean nothing after a crash (the process is then dead), so the
        # admission need not wait for the disk; the charge (settle) does.
        with self.db.write(durable=False) as conn:
            balance = lock_account(conn, request.account_id)
            dead = self._dead(conn, now)
            if request.idempotency_key is not None:
                replay = self._earlier_answer(conn, request, now, dead)
                if replay is not None:
                    requests, images = self._rate_checks(conn, request, now, 0, 0)
                    return Admitted(requests, images, replay)
            requests, images = self._rate_checks(conn, request, now, 1, request.images)
            limited = requests.limit is not None or images.limit is not None
            for name, outcome in (("requests", requests), ("images", images)):
                if not outcome.allowed:
                    raise _rate_limited(name, outcome, request, rate_limit_headers(requests, images))
            held = conn.execute(
                _HELD, {"account_id": request.account_id, "now": now, "dead": sorted(dead)}
            ).scalar_one()
            available = balance - int(held)
            if available < request.estimate_micros:
                raise InsufficientQuotaError(
                    "You exceeded your current quota: this request may cost up to "
                    f"${micros_to_dollars(request.estimate_micros)} and the account has "
                    f"${micros_to_dollars(max(0, available))} available. Add credit to continue."
                )
            if limited:
                self._count(conn, request, now)
            conn.execute(
                _INSERT_HOLD,
                {
                    "charge_id": request.charge_id,
                    "account_id": request.account_id,
                    "amount_micros": request.estimate_micros,
                    "instance_id": self.instance.id,
                    "expires_at": now + timedelta(seconds=self.timeouts.hold_s),
                },
            )
            if request.idempotency_key is not None:
                conn.execute(
                    insert(idempotency).values(
                        key_id=request.key_id,
                        idempotency_key=request.idempotency_key,
                        fingerprint=request.fingerprint or "",
                        charge_id=request.charge_id,
                        state="pending",
                        instance_id=self.instance.id,
                        expires_at=now + timedelta(seconds=self.timeouts.idempotency_s),
                    )
                )
            return Admitted(requests, images)

    def admit_free(self, account_id: int, key_id: int, requests_per_minute: int | None) -> LimitCheck:
        """Count a request that costs nothing against its key's request rate (no credit, no hold); raises
        RateLimitExceededError when the key is at its limit."""
        if requests_per_minute is None:
            return check(None, WindowCounts(0, 0), 0, 0)
        request = AdmissionRequest(
            charge_id="", account_id=account_id, key_id=key_id, estimate_micros=0, images=0,
            requests_per_minute=requests_per_minute, images_per_minute=None,
        )  # fmt: skip
        now = self.clock()
        with self.db.write(durable=False) as conn:  # counters are worthless after a crash, as in admit
            lock_account(conn, account_id)
            requests, images = self._rate_checks(conn, request, now, 1, 0)
            if not requests.allowed:
                raise _rate_limited("requests", requests, request, rate_limit_headers(requests, images))
            self._count(conn, request, now)
            return requests

    def settle(self, charge: Charge) -> None:
        """Charge a request that succeeded: release its hold, append the ledger row, update the totals and
        store the answer for its Idempotency-Key, all in one transaction."""
        now = self.clock()
        with self.db.write() as conn:
            # Lock the account before anything else, as admit does: the ledger row's foreign key takes a
            # share lock on the account, which would deadlock against an admit waiting for FOR UPDATE.
            lock_account(conn, charge.account_id)
            conn.execute(_DELETE_HOLD, {"charge_id": charge.charge_id})
            record_charge(conn, charge, now)
            if charge.idempotency_key is not None and charge.response is not None:
                conn.execute(
                    update(idempotency)
                    .where(
                        idempotency.c.key_id == charge.key_id,
                        idempotency.c.idempotency_key == charge.idempotency_key,
                        idempotency.c.charge_id == charge.charge_id,
                    )
                    .values(
                        state="done",
                        status_code=charge.response.status_code,
                        media_type=charge.response.media_type,
                        body_zlib=zlib.compress(charge.response.body, 3),
                    )
                )

    def release(self, charge_id: str, key_id: int, idempotency_key: str | None) -> None:
        """A request that failed costs nothing: drop its hold and its pending Idempotency-Key."""
        with self.db.write() as conn:
            conn.execute(_DELETE_HOLD, {"charge_id": charge_id})
            if idempotency_key is not None:
                conn.execute(
                    delete(idempotency).where(
                        idempotency.c.key_id == key_id,
                        idempotency.c.idempotency_key == idempotency_key,
                        idempotency.c.charge_id == charge_id,
                        idempotency.c.state == "pending",
                    )
                )

    def usage(self, account_id: int | None, start: date, end: date) -> list[UsageRow]:
        """Charges per UTC day and endpoint, start..end inclusive; all accounts when account_id is None."""
        conditions = [ledger.c.kind == "charge", ledger.c.day >= start, ledger.c.day <= end]
        if account_id is not None:
            conditions.append(ledger.c.account_id == account_id)
        query = (
            select(
                ledger.c.day,
                ledger.c.endpoint,
                func.count(),
                func.sum(ledger.c.images),
                func.sum(ledger.c.tokens),
                -func.sum(ledger.c.amount_micros),
            )
            .where(*conditions)
            .group_by(ledger.c.day, ledger.c.endpoint)
            .order_by(ledger.c.day, ledger.c.endpoint)
        )
        with self.db.read() as conn:
            return [
                UsageRow(day, endpoint or "", int(n), int(images), int(tokens), int(cost))
                for day, endpoint, n, images, tokens, cost in conn.execute(query)
            ]

    def charges(self, account_id: int | None = None) -> list[tuple[str | None, str | None, int]]:
        """(request_id, idempotency_key, cost) of every charge, oldest first."""
        query = select(ledger.c.request_id, ledger.c.idempotency_key, ledger.c.amount_micros).where(
            ledger.c.kind == "charge"
        )
        if account_id is not None:
            query = query.where(ledger.c.account_id == account_id)
        with self.db.read() as conn:
            return [
                (rid, key, -int(amount)) for rid, key, amount in conn.execute(query.order_by(ledger.c.id))
            ]

    def recent_charges(self, account_id: int, limit: int) -> list[ChargeRow]:
        """The account's latest `limit` charges, newest first, with the name of the key that made each."""
        query = (
            select(
                ledger.c.id, ledger.c.created_at, ledger.c.endpoint, ledger.c.images, ledger.c.tokens,
                ledger.c.amount_micros, ledger.c.request_id, api_keys.c.name,
            )
            .select_from(ledger.outerjoin(api_keys, api_keys.c.id == ledger.c.key_id))
            .where(ledger.c.account_id == account_id, ledger.c.kind == "charge")
            .order_by(ledger.c.id.desc())
            .limit(limit)
        )  # fmt: skip
        with self.db.read() as conn:
            return [
                ChargeRow(int(i), at, endpoint or "", int(images), int(tokens), -int(amount), rid, name)
                for i, at, endpoint, images, tokens, amount, rid, name in conn.execute(query)
            ]

    def audit(self, account_id: int) -> LedgerAudit:
        with self.db.read(snapshot=True) as conn:  # the account row and the sums from one snapshot
            account = conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().one()
            total, grants, charges = conn.execute(
                select(
                    func.coalesce(func.sum(ledger.c.amount_micros), 0),
                    func.coalesce(func.sum(case((ledger.c.kind == "grant", ledger.c.amount_micros), else_=0)), 0),
                    func.coalesce(func.sum(case((ledger.c.kind == "charge", -ledger.c.amount_micros), else_=0)), 0),
                ).where(ledger.c.account_id == account_id)
            ).one()  # fmt: skip
        return LedgerAudit(
            account_id=account_id,
            balance_micros=account["balance_micros"],
            granted_micros=account["granted_micros"],
            charged_micros=account["charged_micros"],
            ledger_sum_micros=int(total),
            ledger_grants_micros=int(grants),
            ledger_charges_micros=int(charges),
        )

    def purge_expired(self) -> None:
        """Forget expired holds and idempotency records, and rate windows that no longer count."""
        now = self.clock()
        minute = int(now.timestamp() // 60)
        with self.db.write() as conn:
            dead = self._dead(conn, now)
            conn.execute(delete(holds).where((holds.c.expires_at <= now) | holds.c.instance_id.in_(dead)))
            instances.forget_stopped(conn, now)
            conn.execute(delete(idempotency).where(idempotency.c.expires_at <= now))
            conn.execute(delete(rate_windows).where(rate_windows.c.minute < minute - 1))

    # internals (inside the admission transaction)

    def _earlier_answer(
        self, conn: Connection, request: AdmissionRequest, now: datetime, dead: set[str]
    ) -> StoredResponse | None:
        row = (
            conn.execute(
                select(idempotency).where(
                    idempotency.c.key_id == request.key_id,
                    idempotency.c.idempotency_key == request.idempotency_key,
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        abandoned = row["state"] == "pending" and row["instance_id"] in dead  # its process died
        if row["expires_at"] <= now or abandoned:
            conn.execute(
                delete(idempotency).where(
                    idempotency.c.key_id == request.key_id,
                    idempotency.c.idempotency_key == request.idempotency_key,
                )
            )
            return None
        if row["fingerprint"] != request.fingerprint:
            raise IdempotencyMismatchError(
                "this Idempotency-Key was already used with a different request; use a new key",
                param="Idempotency-Key",
            )
        if row["state"] != "done":
            raise IdempotencyConflictError(
                "a request with this Idempotency-Key is still running; retry when it has finished"
            )
        return StoredResponse(row["status_code"], row["media_type"], zlib.decompress(row["body_zlib"]))

    def _rate_checks(
        self, conn: Connection, request: AdmissionRequest, now: datetime, requests: int, images: int
    ) -> tuple[LimitCheck, LimitCheck]:
        if request.requests_per_minute is None and request.images_per_minute is None:
            unlimited = check(None, WindowCounts(0, 0), 0, 0)
            return unlimited, unlimited
        minute = int(now.timestamp() // 60)
        elapsed = now.timestamp() - minute * 60
        rows = {
            row.minute: row
            for row in conn.execute(_RATE_WINDOWS, {"key_id": request.key_id, "since": minute - 1})
        }
        previous, current = rows.get(minute - 1), rows.get(minute)
        request_counts = WindowCounts(
            previous.requests if previous else 0, current.requests if current else 0
        )
        image_counts = WindowCounts(previous.images if previous else 0, current.images if current else 0)
        return (
            check(request.requests_per_minute, request_counts, elapsed, requests),
            check(request.images_per_minute, image_counts, elapsed, images),
        )

    def _count(self, conn: Connection, request: AdmissionRequest, now: datetime) -> None:
        """Add this request to its key's current window (the account lock makes read-then-write safe)."""
        minute = int(now.timestamp() // 60)
        updated = conn.execute(
            _COUNT_REQUEST,
            {"window_key": request.key_id, "this_minute": minute, "added_images": request.images},
        )
        if updated.rowcount == 0:
            conn.execute(
                _INSERT_WINDOW,
                {"key_id": request.key_id, "minute": minute, "requests": 1, "images": request.images},
            )


def record_charge(conn: Connection, charge: Charge, now: datetime) -> None:
    """Append the charge's ledger row and take its cost from the account's totals. The caller holds the account
    lock (lock_account, first in its transaction) and commits; the ledger's unique charge_id refuses a second
    charge with the same id. settle and the Batch API's answer_line both charge through this."""
    conn.execute(
        _INSERT_LEDGER,
        {
            "account_id": charge.account_id, "key_id": charge.key_id, "kind": "charge",
            "amount_micros": -charge.cost_micros, "charge_id": charge.charge_id,
            "request_id": charge.request_id, "idempotency_key": charge.idempotency_key,
            "endpoint": charge.endpoint, "images": charge.images, "tokens": charge.tokens,
            "note": None, "created_at": now, "day": now.date(),
        },
    )  # fmt: skip
    conn.execute(_CHARGE_ACCOUNT, {"account_id": charge.account_id, "cost": charge.cost_micros})


def _rate_limited(
    name: str, outcome: LimitCheck, request: AdmissionRequest, headers: dict[str, str]
) -> RateLimitExceededError:
    if outcome.retry_after_s == float("inf"):
        message = (
            f"this request has {request.images} images, more than this key's limit of {outcome.limit} "
            "images per minute; split it into smaller requests"
        )
    else:
        message = (
            f"Rate limit reached for {name} per minute: limit {outcome.limit}. "
            f"Retry in {outcome.retry_after_s:.1f}s."
        )
    return RateLimitExceededError(
        message, limit_name=name, retry_after_s=outcome.retry_after_s, limit_headers=headers
    )
