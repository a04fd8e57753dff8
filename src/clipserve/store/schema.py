"""The tables, as SQLAlchemy Core. Alembic migrations create them; this module is what queries use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on Postgres (timestamptz) and SQLite (naive UTC text, compared as text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Money is integer micro-dollars everywhere. The three totals are kept in the same transaction as the ledger
# row that changes them, so balance == granted - charged == sum(ledger) at every commit.
accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("granted_micros", BigInteger, nullable=False, default=0),
    Column("charged_micros", BigInteger, nullable=False, default=0),
    Column("balance_micros", BigInteger, nullable=False, default=0),
)

# Keys are stored as a SHA-256 of the secret part only; the prefix is not secret and finds the row.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("secret_sha256", LargeBinary(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("requests_per_minute", Integer, nullable=True),
    Column("images_per_minute", Integer, nullable=True),
    # A web login's hidden key: meters session callers; its secret was discarded, so it is never a Bearer key.
    Column("is_console", Boolean, nullable=False, default=False, server_default=false()),
)

# Append-only: grants are positive, charges negative. One charge per request id (unique), so a retry of the
# settle step can never charge twice.
ledger = Table(
    "ledger",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=True),
    Column("kind", String(16), nullable=False),  # grant | charge
    Column("amount_micros", BigInteger, nullable=False),
    Column("charge_id", String(64), nullable=True, unique=True),
    Column("request_id", String(160), nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("endpoint", String(120), nullable=True),
    Column("images", Integer, nullable=False, default=0),
    Column("tokens", Integer, nullable=False, default=0),
    Column("note", String(500), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("day", Date, nullable=False),
    Index("ix_ledger_account_day", "account_id", "day"),
)

# Credit reserved by requests in flight: admission needs balance - live holds >= the estimate.
holds = Table(
    "holds",
    metadata,
    Column("charge_id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("amount_micros", BigInteger, nullable=False),
    Column("instance_id", String(32), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

# Idempotency-Key records: pending while the first request runs, then the stored answer.
idempotency = Table(
    "idempotency",
    metadata,
    Column("key_id", Integer, ForeignKey("api_keys.id"), primary_key=True),
    Column("idempotency_key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("charge_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # pending | done
    Column("instance_id", String(32), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("media_type", String(100), nullable=True),
    Column("body_zlib", LargeBinary, nullable=True),
    Column("expires_at", UtcDateTime(), nullable=False),
)

# Sliding-window rate-limit counters per key and minute; in the database so replicas share them.
rate_windows = Table(
    "rate_windows",
    metadata,
    Column("key_id", Integer, ForeignKey("api_keys.id"), primary_key=True),
    Column("minute", BigInteger, primary_key=True),  # unix time // 60
    Column("requests", Integer, nullable=False, default=0),
    Column("images", Integer, nullable=False, default=0),
)

# Running server processes. Holds and pending idempotency records belong to one; when it stops heartbeating
# (or, in the same pid namespace of the same boot, its process is gone) they stop counting, so a crashed
# server frees them. The id is random per process start; hostname and pid alone identify nothing (two
# containers may both be "web-1", pid 1).
instances = Table(
    "instances",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_scope", String(200), nullable=True),  # kernel boot id + pid namespace: where `pid` is meant
    Column("pid_started", BigInteger, nullable=True),  # the process's start time (clock ticks after boot)
    Column("started_at", UtcDateTime(), nullable=False),
    Column("heartbeat_at", UtcDateTime(), nullable=False),
)

signups = Table(
    "signups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("address", String(64), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_signups_address_created", "address", "created_at"),
)


# Collections: the catalogue (names, owners) and, for the embedded vector store, the items themselves. The
# SQL rows are the source of truth; search indexes are derived from them in memory.
collections = Table(
    "collections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(64), nullable=False),  # "account:<id>", or "local" when auth is off
    Column("name", String(128), nullable=False),
    Column("description", String(1000), nullable=True),
    Column("store_key", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("owner", "name", name="uq_collections_owner_name"),
)

vector_collections = Table(
    "vector_collections",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),  # bumped by every write, so other processes see staleness
)

collection_items = Table(
    "collection_items",
    metadata,
    Column(
        "collection_key",
        String(64),
        ForeignKey("vector_collections.key", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("item_id", String(256), primary_key=True),
    Column("vector", LargeBinary, nullable=False),  # 512 little-endian float32
    Column("metadata_json", Text, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)


# Web sign-in (issue 12): one login (email + argon2id hash) per account, server-side sessions stored by the
# SHA-256 of their cookie token (the database never holds a usable token), and failed sign-ins, shared by
# replicas for throttling.
logins = Table(
    "logins",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, unique=True),
    Column("email", String(254), nullable=False, unique=True),  # lowercased
    Column("password_hash", String(255), nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_sha256", LargeBinary(32), primary_key=True),
    Column("login_id", Integer, ForeignKey("logins.id"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),  # absolute expiry
)

signin_failures = Table(
    "signin_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=True),
    Column("address", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_signin_failures_email_created", "email", "created_at"),
    Index("ix_signin_failures_address_created", "address", "created_at"),
)


# Custom classifiers (issue 15): a linear probe's weights (float32 K x 512, little-endian), its zero-shot prior
# (so a retrain encodes no prompts), and the examples' embeddings (so an add retrains on all of them). `version`
# is bumped by every add: a concurrent add that trained on an older state is refused (409), never lost.
classifiers = Table(
    "classifiers",
    metadata,
    Column("id", String(40), primary_key=True),  # "clf_<32 hex>"
    Column("owner", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("labels_json", Text, nullable=False),
    Column("template", String(300), nullable=True),
    Column("zero_shot_prior", Boolean, nullable=False),
    Column("prior_weights", LargeBinary, nullable=True),
    Column("weights", LargeBinary, nullable=False),
    Column("bias", LargeBinary, nullable=False),
    Column("c", Float, nullable=False),
    Column("c_fixed", Boolean, nullable=False),  # the caller chose C: never re-chosen by cross-validation
    Column("c_examples", Integer, nullable=False),  # examples when C was chosen
    Column("train_accuracy", Float, nullable=True),  # null with no examples
    Column("cv_accuracy", Float, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_classifiers_owner_created", "owner", "created_at"),
)

classifier_examples = Table(
    "classifier_examples",
    metadata,
    Column("classifier_id", String(40), ForeignKey("classifiers.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("label_index", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # 512 little-endian float32
)


# The Batch API (issue 13). Files hold JSONL bytes in FileStorage (storage_key); the rows say who owns them.
# A batch's input lines are copied into batch_lines when it is created, so its work never depends on the file
# again; each line is claimed with a lease (claimed_by/claimed_until) and answered exactly once (`answered`,
# guarded in the same transaction as the line's ledger charge). account_id is NULL in local mode (no auth).
batch_files = Table(
    "batch_files",
    metadata,
    Column("id", String(40), primary_key=True),  # "file-<24 hex>"
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=True),
    Column("filename", String(255), nullable=False),
    Column("purpose", String(32), nullable=False),  # batch | batch_output
    Column("bytes", BigInteger, nullable=False),
    Column("storage_key", String(255), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Index("ix_batch_files_account_created", "account_id", "created_at"),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),  # "batch_<24 hex>"
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=True),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=True),
    Column("input_file_id", String(40), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("errors_json", Text, nullable=True),
    Column("metadata_json", Text, nullable=True),
    Column("output_file_id", String(40), nullable=True),
    Column("error_file_id", String(40), nullable=True),
    Column("total", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("finalize_to", String(16), nullable=True),  # completed | cancelled | expired, once decided
    Column("finalizer", String(32), nullable=True),  # the instance writing the output files ...
    Column("finalize_until", UtcDateTime(), nullable=True),  # ... until this lease runs out
    Column("created_at", UtcDateTime(), nullable=False),
    Column("in_progress_at", UtcDateTime(), nullable=True),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("finalizing_at", UtcDateTime(), nullable=True),
    Column("completed_at", UtcDateTime(), nullable=True),
    Column("failed_at", UtcDateTime(), nullable=True),
    Column("expired_at", UtcDateTime(), nullable=True),
    Column("cancelling_at", UtcDateTime(), nullable=True),
    Column("cancelled_at", UtcDateTime(), nullable=True),
    Index("ix_batches_account_created", "account_id", "created_at"),
    Index("ix_batches_status", "status", "created_at"),
)

batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(40), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("line", Integer, primary_key=True),  # 1-based line number in the input file
    Column("custom_id", String(512), nullable=False),
    Column("body_json", Text, nullable=False),
    Column("answered", Boolean, nullable=False),
    Column("claimed_by", String(32), nullable=True),
    Column("claimed_until", UtcDateTime(), nullable=True),
    Column("status_code", Integer, nullable=True),  # None: no response (e.g. insufficient_quota)
    Column("result_json", Text, nullable=True),  # the whole output line, as written to the output file
    Column("answered_at", UtcDateTime(), nullable=True),
    Index("ix_batch_lines_open", "batch_id", "answered", "claimed_until"),
)
