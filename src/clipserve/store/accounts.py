"""Accounts, their API keys and credit grants."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, bindparam, func, insert, select, text, update

from clipserve.errors import NotFoundError, RateLimitExceededError
from clipserve.service.api_keys import NewKey, generate_key
from clipserve.store.database import Database
from clipserve.store.records import AccountRecord, KeyOptions, KeyRecord
from clipserve.store.schema import accounts, api_keys, ledger, signups

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class AccountStore:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    # accounts and credit

    def create_account(self, name: str, credit_micros: int = 0, note: str | None = None) -> AccountRecord:
        with self.db.write() as conn:
            account_id = self._insert_account(conn, name)
            if credit_micros:
                self._grant(conn, account_id, credit_micros, note or "initial credit")
            return self._account(conn, account_id)

    def grant(self, account_id: int, micros: int, note: str | None = None) -> AccountRecord:
        """Add (or, negative, remove) credit: one ledger row, totals updated in the same transaction."""
        with self.db.write() as conn:
            lock_account(conn, account_id)
            self._grant(conn, account_id, micros, note or "grant")
            return self._account(conn, account_id)

    def get_account(self, account_id: int) -> AccountRecord:
        with self.db.read() as conn:
            return self._account(conn, account_id)

    def list_accounts(self) -> list[AccountRecord]:
        with self.db.read() as conn:
            rows = conn.execute(select(accounts).order_by(accounts.c.id)).mappings()
            return [AccountRecord(**row) for row in rows]

    def open_account(
        self, name: str, credit_micros: int, options: KeyOptions | None = None
    ) -> tuple[AccountRecord, KeyRecord, str]:
        """A new account with its first key (and credit), in one transaction."""
        return self.issue_key(name, credit_micros, options)

    # keys

    def issue_key(
        self,
        name: str,
        credit_micros: int = 0,
        options: KeyOptions | None = None,
        account_id: int | None = None,
    ) -> tuple[AccountRecord, KeyRecord, str]:
        """A new key, on `account_id` or on a new account named `name`, with `credit_micros` granted to that
        account, in one transaction: (account, key, plaintext). The plaintext exists only in this return value."""
        with self.db.write() as conn:
            if account_id is None:
                account_id = self._insert_account(conn, name)
                note = "initial credit"
            else:
                lock_account(conn, account_id)
                note = "credit with a new key"
            if credit_micros:
                self._grant(conn, account_id, credit_micros, note)
            new = generate_key()
            key_id = self._insert_key(conn, account_id, new, name, options or KeyOptions())
            return self._account(conn, account_id), self._key(conn, key_id), new.plaintext

    def create_key(
        self, account_id: int, name: str, options: KeyOptions | None = None
    ) -> tuple[KeyRecord, str]:
        """A new key for an existing account: (record, plaintext)."""
        _, key, plaintext = self.issue_key(name, 0, options, account_id)
        return key, plaintext

    def find_key(self, prefix: str) -> KeyRecord | None:
        with self.db.read() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).mappings().first()
            return KeyRecord(**row) if row else None

    def find_key_by_id(self, key_id: int) -> KeyRecord | None:
        with self.db.read() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
            return KeyRecord(**row) if row else None

    def get_key(self, key_id: int) -> KeyRecord:
        with self.db.read() as conn:
            return self._key(conn, key_id)

    def list_keys(self, account_id: int | None = None, *, console: bool = True) -> list[KeyRecord]:
        """Keys by id (oldest first); `console=False` leaves out web logins' hidden console keys."""
        query = select(api_keys).order_by(api_keys.c.id)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        if not console:
            query = query.where(api_keys.c.is_console.is_(False))
        with self.db.read() as conn:
            return [KeyRecord(**row) for row in conn.execute(query).mappings()]

    def revoke_key(self, key_id: int) -> KeyRecord:
        with self.db.write() as conn:
            self._key(conn, key_id)
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self.clock())
            )
            return self._key(conn, key_id)

    def has_usable_keys(self) -> bool:
        now = self.clock()
        query = (
            select(func.count())
            .select_from(api_keys)
            .where(
                api_keys.c.revoked_at.is_(None),
                (api_keys.c.expires_at.is_(None)) | (api_keys.c.expires_at > now),
            )
        )
        with self.db.read() as conn:
            return bool(conn.execute(query).scalar_one())

    # open sign-up

    def sign_up(
        self,
        address: str,
        name: str,
        credit_micros: int,
        per_address_per_day: int,
    ) -> tuple[AccountRecord, KeyRecord, str]:
        """A new account + key with the free credit, unless this address signed up too often today."""
        with self.db.write() as conn:
            account_id = self.admit_signup(conn, address, name, credit_micros, per_address_per_day)
            new = generate_key()
            key_id = self._insert_key(conn, account_id, new, name, KeyOptions())
            return self._account(conn, account_id), self._key(conn, key_id), new.plaintext

    def signups_left(self, address: str, per_address_per_day: int) -> None:
        """Raise RateLimitExceededError when this address is at its sign-up limit (a read, no lock: the
        transaction that signs up checks again)."""
        with self.db.read() as conn:
            self._check_signup_address(conn, address, per_address_per_day, self.clock())

    def admit_signup(
        self, conn: Connection, address: str, name: str, credit_micros: int, per_address_per_day: int
    ) -> int:
        """Inside a write transaction: check the address's sign-ups in the last 24 hours (shared by /v1/signup
        and the web sign-up), then create the account with its free credit and count the sign-up."""
        now = self.clock()
        if not self.db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serializes; Postgres needs a lock
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:address))"), {"address": address})
        self._check_signup_address(conn, address, per_address_per_day, now)
        account_id = self._insert_account(conn, name)
        if credit_micros:
            self._grant(conn, account_id, credit_micros, "sign-up credit")
        conn.execute(insert(signups).values(address=address, account_id=account_id, created_at=now))
        return account_id

    def _check_signup_address(
        self, conn: Connection, address: str, per_address_per_day: int, now: datetime
    ) -> None:
        since = now - timedelta(days=1)
        recent = conn.execute(
            select(signups.c.created_at)
            .where(signups.c.address == address, signups.c.created_at > since)
            .order_by(signups.c.created_at)
        ).scalars()
        times = list(recent)
        if len(times) >= per_address_per_day:
            retry = (times[0] + timedelta(days=1) - now).total_seconds()
            raise RateLimitExceededError(
                f"this address signed up {len(times)} times in the last 24 hours; the limit is "
                f"{per_address_per_day}", limit_name="requests", retry_after_s=max(1.0, retry),
            )  # fmt: skip

    # console keys (web logins, issue 12)

    def ensure_console_key(self, conn: Connection, account_id: int, is_admin: bool) -> KeyRecord:
        """Inside a write transaction: the account's console key, created if missing, its admin flag set to
        the login's. Its secret is generated and discarded: nobody can ever present it as a Bearer key."""
        row = (
            conn.execute(
                select(api_keys)
                .where(api_keys.c.account_id == account_id, api_keys.c.is_console.is_(True))
                .order_by(api_keys.c.id)
            )
            .mappings()
            .first()
        )
        if row is None:
            key_id = self._insert_key(
                conn, account_id, generate_key(), "console", KeyOptions(is_admin=is_admin), console=True
            )
            return self._key(conn, key_id)
        if bool(row["is_admin"]) != is_admin:
            conn.execute(update(api_keys).where(api_keys.c.id == row["id"]).values(is_admin=is_admin))
            return self._key(conn, int(row["id"]))
        return KeyRecord(**row)

    # internals (inside a transaction)

    def _insert_account(self, conn: Connection, name: str) -> int:
        result = conn.execute(
            insert(accounts).values(
                name=name, created_at=self.clock(), granted_micros=0, charged_micros=0, balance_micros=0
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def _insert_key(
        self,
        conn: Connection,
        account_id: int,
        new: NewKey,
        name: str,
        options: KeyOptions,
        *,
        console: bool = False,
    ) -> int:
        result = conn.execute(
            insert(api_keys).values(
                account_id=account_id,
                prefix=new.prefix,
                secret_sha256=new.secret_sha256,
                name=name,
                is_admin=options.is_admin,
                created_at=self.clock(),
                expires_at=options.expires_at,
                requests_per_minute=options.requests_per_minute,
                images_per_minute=options.images_per_minute,
                is_console=console,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def _grant(self, conn: Connection, account_id: int, micros: int, note: str) -> None:
        now = self.clock()
        conn.execute(
            insert(ledger).values(
                account_id=account_id, kind="grant", amount_micros=micros, note=note[:500],
                images=0, tokens=0, created_at=now, day=now.date(),
            )
        )  # fmt: skip
        conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id)
            .values(
                granted_micros=accounts.c.granted_micros + micros,
                balance_micros=accounts.c.balance_micros + micros,
            )
        )

    def _account(self, conn: Connection, account_id: int) -> AccountRecord:
        row = conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no account with id {account_id}")
        return AccountRecord(**row)

    def _key(self, conn: Connection, key_id: int) -> KeyRecord:
        row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no key with id {key_id}")
        return KeyRecord(**row)


_LOCK_ACCOUNT = (
    select(accounts.c.balance_micros).where(accounts.c.id == bindparam("account_id")).with_for_update()
)


def lock_account(conn: Connection, account_id: int) -> int:
    """Lock the account row until commit (Postgres: FOR UPDATE; SQLite: BEGIN IMMEDIATE already holds the
    database's write lock). Returns the balance."""
    row = conn.execute(_LOCK_ACCOUNT, {"account_id": account_id}).first()
    if row is None:
        raise NotFoundError(f"no account with id {account_id}")
    return int(row[0])
