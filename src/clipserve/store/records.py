"""Plain records the store hands out (no SQLAlchemy rows leak past the store)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal


@dataclass(frozen=True)
class AccountRecord:
    id: int
    name: str
    created_at: datetime
    granted_micros: int
    charged_micros: int
    balance_micros: int


@dataclass(frozen=True)
class KeyOptions:
    """What a new key may carry besides its name."""

    is_admin: bool = False
    expires_at: datetime | None = None
    requests_per_minute: int | None = None  # None: the server's default; 0: unlimited
    images_per_minute: int | None = None


@dataclass(frozen=True)
class KeyRecord:
    id: int
    account_id: int
    prefix: str
    secret_sha256: bytes
    name: str
    is_admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    requests_per_minute: int | None
    images_per_minute: int | None
    is_console: bool = False  # a web login's hidden metering key (never presented, never listed)

    def status(self, now: datetime) -> Literal["active", "revoked", "expired"]:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at is not None and self.expires_at <= now else "active"


@dataclass(frozen=True)
class UsageRow:
    day: date
    endpoint: str
    requests: int
    images: int
    tokens: int
    cost_micros: int


@dataclass(frozen=True)
class LedgerAudit:
    """The invariant every commit keeps: balance == granted - charged == sum of the account's ledger rows."""

    account_id: int
    balance_micros: int
    granted_micros: int
    charged_micros: int
    ledger_sum_micros: int
    ledger_grants_micros: int
    ledger_charges_micros: int

    @property
    def consistent(self) -> bool:
        return (
            self.balance_micros == self.granted_micros - self.charged_micros == self.ledger_sum_micros
            and self.granted_micros == self.ledger_grants_micros
            and self.charged_micros == self.ledger_charges_micros
        )


@dataclass(frozen=True)
class LoginRecord:
    id: int
    account_id: int
    email: str
    password_hash: str
    is_admin: bool
    created_at: datetime


@dataclass(frozen=True)
class WebSessionRecord:
    """A stored web session (the row holds the token's SHA-256 only)."""

    id_sha256: bytes
    login_id: int
    account_id: int
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class ChargeRow:
    """One ledger charge as the console lists it."""

    id: int
    created_at: datetime
    endpoint: str
    images: int
    tokens: int
    cost_micros: int
    request_id: str | None
    key_name: str | None
