"""The SQL engine: SQLite (WAL, durable commits, one writer at a time) or PostgreSQL, migrated on open."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from clipserve.errors import StorageFullError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: replicas starting together on one Postgres take turns migrating.
_MIGRATION_LOCK_ID = 0x636C6970


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Database:
    """One engine plus the two kinds of transaction the store needs: a write and a read."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not the psycopg2 default
        self.url: URL = parsed
        self._sqlite_writer = threading.Lock()
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(parsed, connect_args={"timeout": 30})
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(
                parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for logs."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """A transaction that will write. On SQLite it takes the write lock up front (BEGIN IMMEDIATE), so two
        writers never deadlock upgrading read locks, and this process's writers queue on a Python lock instead
        of SQLite's sleeping busy handler. `durable=False` skips the fsync at commit (safe against a killed
        process, not a power cut): for state that is worthless after a crash anyway. On Postgres rows are
        locked explicitly (FOR UPDATE) and every commit is durable."""
        with storage_errors():
            if not self.is_sqlite:
                with self.engine.begin() as conn:
                    yield conn
                return
            with (
                self._sqlite_writer,
                self.engine.connect().execution_options(clipserve_durable=durable) as conn,
                conn.begin(),
            ):
                yield conn

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction; `snapshot=True` makes every statement see one snapshot on Postgres too
        (REPEATABLE READ; SQLite's read transactions always do)."""
        options: dict[str, object] = {"clipserve_read_only": True}
        if snapshot and not self.is_sqlite:
            options["isolation_level"] = "REPEATABLE READ"
        with storage_errors(), self.engine.connect().execution_options(**options) as conn, conn.begin():
            yield conn

    def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic); safe when several processes start at once."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.write() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()


# SQLite's SQLITE_FULL ("database or disk is full": the disk, or PRAGMA max_page_count); Postgres's SQLSTATE
# 53100 disk_full ("could not extend file", "could not write to file").
_SQLITE_FULL = 13
_POSTGRES_DISK_FULL = "53100"


def is_storage_full(error: BaseException) -> bool:
    """Whether a database error means that the storage is full (not that the statement was wrong)."""
    orig = error.orig if isinstance(error, DBAPIError) else error
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
        return True
    if getattr(orig, "sqlstate", None) == _POSTGRES_DISK_FULL:
        return True
    return isinstance(orig, OSError) and orig.errno == errno.ENOSPC


@contextmanager
def storage_errors() -> Iterator[None]:
    """Turn "the disk is full" from the database into StorageFullError (a clear 503), wherever it surfaces:
    a statement, or the commit."""
    try:
        yield
    except DBAPIError as exc:
        if is_storage_full(exc):
            logger.error("the accounts database's storage is full: %s", exc.orig)
            raise StorageFullError(
                "the server's storage is full, so it cannot record this request; retry later (the operator "
                "has been told)"
            ) from exc
        raise


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the HTTP answer is sent
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("clipserve_read_only", False):
            conn.exec_driver_sql("BEGIN")
            return
        # per transaction: FULL fsyncs the WAL at commit; NORMAL leaves it to the OS (a later FULL commit
        # syncs it too, so ordering holds)
        conn.exec_driver_sql(
            f"PRAGMA synchronous={'FULL' if options.get('clipserve_durable', True) else 'NORMAL'}"
        )
        conn.exec_driver_sql("BEGIN IMMEDIATE")
