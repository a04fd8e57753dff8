"""Server-side web sessions: rows keyed by the SHA-256 of the cookie's token (never the token itself)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, insert, select, update

from clipserve.store.accounts import Clock, utc_now
from clipserve.store.database import Database
from clipserve.store.records import KeyRecord, LoginRecord, WebSessionRecord
from clipserve.store.schema import api_keys, logins, web_sessions

# last_seen_at is written at most this often per session (idle expiry needs no finer grain)
TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class SessionLifetimes:
    idle_s: float
    max_age_s: float


@dataclass(frozen=True)
class FoundSession:
    session: WebSessionRecord
    login: LoginRecord
    console_key: KeyRecord | None


class WebSessionStore:
    def __init__(self, db: Database, lifetimes: SessionLifetimes, clock: Clock = utc_now) -> None:
        self.db = db
        self.lifetimes = lifetimes
        self.clock = clock

    def create(self, id_sha256: bytes, login: LoginRecord, csrf_token: str) -> WebSessionRecord:
        """A new session for `login` (and, while here, forget the sessions that expired)."""
        now = self.clock()
        record = WebSessionRecord(
            id_sha256=id_sha256,
            login_id=login.id,
            account_id=login.account_id,
            csrf_token=csrf_token,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=self.lifetimes.max_age_s),
        )
        with self.db.write() as conn:
            conn.execute(
                delete(web_sessions).where(
                    (web_sessions.c.expires_at <= now)
                    | (web_sessions.c.last_seen_at <= now - timedelta(seconds=self.lifetimes.idle_s))
                )
            )
            conn.execute(insert(web_sessions).values(**record.__dict__))
        return record

    def find(self, id_sha256: bytes) -> FoundSession | None:
        """The live session with this id (its login and console key), else None; an expired one is deleted.
        last_seen_at moves forward at most once per TOUCH_INTERVAL."""
        now = self.clock()
        query = (
            select(web_sessions, logins)
            .join(logins, logins.c.id == web_sessions.c.login_id)
            .where(web_sessions.c.id_sha256 == id_sha256)
        )
        with self.db.read() as conn:
            row = conn.execute(query).mappings().first()
            if row is None:
                return None
            session = WebSessionRecord(**{c.name: row[web_sessions.c[c.name]] for c in web_sessions.c})
            login = LoginRecord(**{c.name: row[logins.c[c.name]] for c in logins.c})
            key_row = (
                conn.execute(
                    select(api_keys)
                    .where(api_keys.c.account_id == session.account_id, api_keys.c.is_console.is_(True))
                    .order_by(api_keys.c.id)
                )
                .mappings()
                .first()
            )
        idle_deadline = session.last_seen_at + timedelta(seconds=self.lifetimes.idle_s)
        if session.expires_at <= now or idle_deadline <= now:
            self.delete(id_sha256)
            return None
        if now - session.last_seen_at >= TOUCH_INTERVAL:
            with self.db.write(durable=False) as conn:
                conn.execute(
                    update(web_sessions).where(web_sessions.c.id_sha256 == id_sha256).values(last_seen_at=now)
                )
        return FoundSession(session, login, KeyRecord(**key_row) if key_row else None)

    def delete(self, id_sha256: bytes) -> None:
        with self.db.write() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.id_sha256 == id_sha256))

    def count(self, account_id: int) -> int:
        """Sessions stored for an account (tests and operators)."""
        with self.db.read() as conn:
            return len(
                conn.execute(
                    select(web_sessions.c.id_sha256).where(web_sessions.c.account_id == account_id)
                ).all()
            )
