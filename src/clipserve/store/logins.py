"""Web logins (an email and an argon2id hash per account) and the failed sign-ins that throttle them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from clipserve.errors import ConflictError
from clipserve.store.accounts import AccountStore, Clock, lock_account
from clipserve.store.records import AccountRecord, KeyRecord, LoginRecord
from clipserve.store.schema import logins, signin_failures

EMAIL_UNAVAILABLE = "cannot sign up with this email"


@dataclass(frozen=True)
class NewSignup:
    """What a web sign-up asks for, besides the address it comes from."""

    email: str
    password_hash: str
    name: str
    credit_micros: int
    per_address_per_day: int


@dataclass(frozen=True)
class FailureCounts:
    """Failed sign-ins within the window, oldest first, for one email and for one address."""

    email: list[datetime]
    address: list[datetime]


class LoginStore:
    def __init__(self, accounts: AccountStore) -> None:
        self.accounts = accounts
        self.db = accounts.db

    @property
    def clock(self) -> Clock:
        """The accounts store's (injectable) clock."""
        return self.accounts.clock

    def sign_up(self, address: str, signup: NewSignup) -> tuple[AccountRecord, LoginRecord, KeyRecord]:
        """A new account with its free credit, its login and its console key, in one transaction; the same
        per-address limit and `signups` rows as /v1/signup. An email in use raises ConflictError."""
        try:
            with self.db.write() as conn:
                if self._find(conn, signup.email) is not None:
                    raise ConflictError(EMAIL_UNAVAILABLE, param="email", code="email_unavailable")
                account_id = self.accounts.admit_signup(
                    conn, address, signup.name, signup.credit_micros, signup.per_address_per_day
                )
                login = self._insert(conn, account_id, signup.email, signup.password_hash, False)
                key = self.accounts.ensure_console_key(conn, account_id, False)
                return self.accounts._account(conn, account_id), login, key
        except IntegrityError as exc:  # two sign-ups with one email at once: the unique index decides
            raise ConflictError(EMAIL_UNAVAILABLE, param="email", code="email_unavailable") from exc

    def add_login(self, account_id: int, email: str, password_hash: str, is_admin: bool) -> LoginRecord:
        """Give an existing account a login (and its console key); one login per account, one per email."""
        try:
            with self.db.write() as conn:
                lock_account(conn, account_id)
                if self._find(conn, email) is not None or self._of_account(conn, account_id) is not None:
                    raise ConflictError(
                        "this account already has a login, or the email is in use", code="login_exists"
                    )
                login = self._insert(conn, account_id, email, password_hash, is_admin)
                self.accounts.ensure_console_key(conn, account_id, is_admin)
                return login
        except IntegrityError as exc:
            raise ConflictError("the email is in use", code="login_exists") from exc

    def find(self, email: str) -> LoginRecord | None:
        with self.db.read() as conn:
            return self._find(conn, email)

    def of_account(self, account_id: int) -> LoginRecord | None:
        with self.db.read() as conn:
            return self._of_account(conn, account_id)

    def console_key(self, login: LoginRecord) -> KeyRecord:
        """The login's console key, created on first use (a login added before console keys existed)."""
        with self.db.write() as conn:
            return self.accounts.ensure_console_key(conn, login.account_id, login.is_admin)

    def set_password_hash(self, login_id: int, password_hash: str) -> None:
        with self.db.write() as conn:
            conn.execute(update(logins).where(logins.c.id == login_id).values(password_hash=password_hash))

    # failed sign-ins (throttling; in the database so every replica counts them)

    def failures_since(self, email: str, address: str, since: datetime) -> FailureCounts:
        with self.db.read() as conn:
            return self._failures(conn, email, address, since)

    def _failures(self, conn: Connection, email: str, address: str, since: datetime) -> FailureCounts:
        def times(column: Any, value: str) -> list[datetime]:
            created = signin_failures.c.created_at
            query = select(created).where(column == value, created > since).order_by(created)
            return list(conn.execute(query).scalars())

        return FailureCounts(times(signin_failures.c.email, email), times(signin_failures.c.address, address))

    def reserve_attempt(
        self, email: str, address: str, window_s: float, limits: tuple[int, int]
    ) -> tuple[int | None, FailureCounts]:
        """Count a sign-in attempt as a failure before its password is checked, unless the email or the address
        is at its limit (per_account, per_address) within the window: (the new row's id or None, the counts).

        Counting and inserting in one serialised transaction means concurrent guesses cannot all pass the check
        while the first ones are still hashing. A success deletes its row again (forget_attempt)."""
        now = self.clock()
        since = now - timedelta(seconds=window_s)
        with self.db.write(durable=False) as conn:
            if not self.db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serialises writers
                for key in (f"signin-email:{email}", f"signin-address:{address}"):  # always in this order
                    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
            counts = self._failures(conn, email, address, since)
            if len(counts.email) >= limits[0] or len(counts.address) >= limits[1]:
                return None, counts
            result = conn.execute(
                insert(signin_failures).values(email=email, address=address, created_at=now)
            )
            conn.execute(delete(signin_failures).where(signin_failures.c.created_at <= since))
            return int(result.inserted_primary_key[0]), counts  # type: ignore[index]

    def forget_attempt(self, attempt_id: int) -> None:
        """The attempt succeeded: it no longer counts as a failure."""
        with self.db.write(durable=False) as conn:
            conn.execute(delete(signin_failures).where(signin_failures.c.id == attempt_id))

    def record_failure(self, email: str | None, address: str, window_s: float) -> None:
        """Count one failed sign-in, and forget those that left the window (any email or address)."""
        now = self.clock()
        with self.db.write(durable=False) as conn:  # throttling state: a crash losing a second is harmless
            conn.execute(insert(signin_failures).values(email=email, address=address, created_at=now))
            conn.execute(
                delete(signin_failures).where(
                    signin_failures.c.created_at <= now - timedelta(seconds=window_s)
                )
            )

    # internals

    def _insert(
        self, conn: Connection, account_id: int, email: str, password_hash: str, is_admin: bool
    ) -> LoginRecord:
        conn.execute(
            insert(logins).values(
                account_id=account_id, email=email, password_hash=password_hash, is_admin=is_admin,
                created_at=self.clock(),
            )
        )  # fmt: skip
        found = self._find(conn, email)
        assert found is not None
        return found

    def _find(self, conn: Connection, email: str) -> LoginRecord | None:
        row = conn.execute(select(logins).where(logins.c.email == email)).mappings().first()
        return LoginRecord(**row) if row else None

    def _of_account(self, conn: Connection, account_id: int) -> LoginRecord | None:
        row = conn.execute(select(logins).where(logins.c.account_id == account_id)).mappings().first()
        return LoginRecord(**row) if row else None
