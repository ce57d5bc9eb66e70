"""Engines and schema migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import re
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from dispatcher.config import DatabaseSettings
from dispatcher.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration; tests/test_db.py checks it against Alembic's head. Knowing it here
# lets every command check the schema without importing Alembic (0.6 s).
SCHEMA_HEAD = "0027"
# A new SQLite database gets 16 KiB pages (SQLite's default is 4): a blast's start appends a
# million rows to three B-trees, and larger pages mean fewer pages to fill, link and log
# (1M recipients: 2.3–2.5 s instead of 2.6–2.9 s, the commit 0.06 s instead of 0.13). An
# existing database keeps the page size it was created with.
PAGE_SIZE = 16_384
# SQLite copies its write-ahead log back into the database file at a commit once the log holds
# this much: every ~80 MB instead of every 1000 pages.
AUTOCHECKPOINT_BYTES = 80 * 2**20
# With a checkpoint thread the writers only step in past ~1 GB, so that a log the thread cannot
# finish (it never catches up with a writer that commits all the time) is still reset.
BACKSTOP_BYTES = 2**30
# Once reset, a log that grew past this (up to the backstop's ~1 GB while sending) is cut back to
# it, and the disk comes back. Above a blast's start (~170 MB of log for a million), so that
# the start writes into room the log already has.
JOURNAL_SIZE_LIMIT = 256 * 2**20

log = structlog.get_logger(__name__)


def make_engine(settings: DatabaseSettings, checkpoint_thread: bool = False) -> Engine:
    """An engine for `settings.url`; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE.

    `checkpoint_thread` (long-running processes, SQLite files): a thread of the process copies the
    write-ahead log back into the database (see `WalCheckpointer`) instead of the committing
    writer, which then never waits for it. It stops when the engine is disposed.
    """
    url = make_url(settings.url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, echo=settings.echo, pool_pre_ping=True)
    on_file = bool(url.database) and url.database != ":memory:"
    if on_file:
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=settings.echo, connect_args={"timeout": settings.busy_timeout_ms / 1000})
    threaded = checkpoint_thread and on_file
    _configure_sqlite(engine, settings.busy_timeout_ms, BACKSTOP_BYTES if threaded else AUTOCHECKPOINT_BYTES)
    if threaded:
        checkpointer = WalCheckpointer(str(url.database), settings.busy_timeout_ms)
        checkpointer.start()
        event.listen(engine, "engine_disposed", lambda _engine: checkpointer.stop())
    return engine


READING = "canhbao_reading"


def reading(engine: Engine) -> Connection:
    """A connection whose transactions only read: on SQLite they take no write lock, so they never hold up a writer.

    A write through it may fail at once with "database is locked" (another writer committed
    since it read); whatever may write uses `engine.begin()`.
    """
    return engine.connect().execution_options(**{READING: True})


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, autocheckpoint_bytes: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # SQLAlchemy, not sqlite3, emits BEGIN
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL, which fixes it: only a new file takes it
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        page_size = cursor.execute("PRAGMA page_size").fetchone()[0]
        cursor.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint_bytes // page_size}")
        cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # A deferred transaction that reads then writes fails at once with "database is
        # locked" when another writer committed meanwhile; taking the lock up front waits.
        # A connection that only reads (`reading`) must not take it: a page of the log held it
        # for its whole query, and twenty people browsing starved the worker of it.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READING) else "BEGIN IMMEDIATE")


class WalCheckpointer:
    """Copies a SQLite database's write-ahead log back into its file, every `interval` seconds.

    Done by the writer at commit, this is the slowest part of a large write: starting a blast
    of a million recipients writes ~170 MB of log, and copying it back (then syncing the file)
    took the committing worker 1.2–2 s, as did every ~80 MB of sending. Here a thread with a
    connection of its own does it on the other core while the worker goes on (the sqlite3
    module releases the GIL inside SQLite). Passive checkpoints never block readers or writers;
    what they cannot copy yet (a reader still needs the old pages) waits for the next round.
    """

    def __init__(self, path: str, busy_timeout_ms: int, interval: float = 0.5) -> None:
        self.path, self.busy_timeout_ms, self.interval = path, busy_timeout_ms, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the checkpoint under way, if any; the last one runs as the thread ends."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            while not self._stop.wait(self.interval):
                self.checkpoint(conn)
            self.checkpoint(conn)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # locked by a schema change, or the file went away: next round
            log.warning("db.checkpoint_failed", error=str(exc))


def driver_time(dialect_name: str, moment: datetime) -> datetime | str:
    """`moment` as a raw driver call must bind it: SQLAlchemy's UTC text for sqlite3, as is for psycopg."""
    if dialect_name != "sqlite":
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", timespec="microseconds")


def executemany(conn: Connection, sql: str, rows: list[dict[str, Any]]) -> int:
    """A hot-path `executemany` straight to the driver (`:name` parameters); returns rows changed.

    SQLAlchemy's per-parameter processing costs more than the statement itself at 20,000 rows
    a second; callers pass values already in driver form (see `driver_time`).
    """
    if not rows:
        return 0
    if conn.dialect.name != "sqlite":
        sql = re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql)
    return conn.exec_driver_sql(sql, rows).rowcount  # type: ignore[arg-type]


def compare_and_set(conn: Connection, table: Table, row_id: int, column: str, expected: str, **values: Any) -> bool:
    """Update one row only if `column` still holds `expected`: False when someone got there first."""
    statement = update(table).where(table.c.id == row_id, table.c[column] == expected).values(**values)
    return conn.execute(statement).rowcount == 1


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, None for an empty database."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision() -> str:
    """The newest revision Alembic finds among the migrations."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Migrate to the newest schema; returns (revision before, revision after)."""
    from alembic import command

    before = _reachable_revision(engine)
    command.upgrade(_alembic_config(engine), "head")
    return before, head_revision()


class MissingDatabase(ConfigError):
    """There is no database at the configured URL, and the command is not one that creates it."""


def open_database(settings: DatabaseSettings, create: bool, checkpoint_thread: bool = False) -> tuple[Engine, bool]:
    """An engine on the database at the newest schema, and whether the database was created just now.

    Without `create`, a missing database (no SQLite file; a PostgreSQL database without our
    schema) raises MissingDatabase instead of being made: a mistyped URL must not turn into an
    empty database that reports 0 subscribers. A database at an older schema is migrated.
    """
    if not create:
        _refuse_missing_file(settings.url)
    engine = make_engine(settings, checkpoint_thread)
    try:
        return engine, ensure_schema(engine, create)
    except BaseException:
        engine.dispose()
        raise


def ensure_schema(engine: Engine, create: bool = True) -> bool:
    """Migrate when the database is behind; True when it had no schema at all (a new database).

    An empty database is refused (MissingDatabase) unless `create`.
    """
    revision = _reachable_revision(engine)
    if revision is None and not create:
        raise MissingDatabase(f"Cơ sở dữ liệu {_where(engine.url)} trống (chưa có lược đồ Cảnh Báo). {_WHAT_TO_DO}")
    if revision != SCHEMA_HEAD:
        upgrade(engine)
    return revision is None


_WHAT_TO_DO = (
    "Nếu đúng địa chỉ, hãy tạo bằng 'canhbao db upgrade'; nếu không, sửa [database] url trong config.toml "
    "hoặc biến CANHBAO_DATABASE__URL."
)


def _refuse_missing_file(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist, before connecting creates it."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    if not Path(parsed.database).exists():
        raise MissingDatabase(f"Không có cơ sở dữ liệu tại {_where(parsed)}: chưa có tệp SQLite này. {_WHAT_TO_DO}")


def _where(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _reachable_revision(engine: Engine) -> str | None:
    try:
        return current_revision(engine)
    except OperationalError as exc:
        raise ConfigError(f"Không kết nối được cơ sở dữ liệu {_where(engine.url)}: {exc.orig}") from exc
