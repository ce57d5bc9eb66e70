"""The schema migrates itself on both databases and matches the models."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import make_url

from dispatcher import db
from dispatcher.config import DatabaseSettings
from dispatcher.models import metadata


def test_upgrade_creates_every_table(engine: Engine) -> None:
    """`db upgrade` builds the schema at the newest revision."""
    assert db.current_revision(engine) == db.head_revision()
    assert {"subscribers", "alerts", "audit_log"} <= set(inspect(engine).get_table_names())


def test_migrations_match_the_models(engine: Engine) -> None:
    """Autogenerate finds nothing to change: migrations and models describe the same schema."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    """Running the upgrade again changes nothing and reports the same revision."""
    before, after = db.upgrade(engine)
    assert before == after == db.head_revision()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path) -> None:
    """The embedded database waits for locks instead of failing at once."""
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'x' / 'c.db'}", busy_timeout_ms=1234))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234


def _write_megabytes(engine: Engine, megabytes: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE filler (body BLOB)")
        conn.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO filler SELECT zeroblob(1024) FROM n",
            (megabytes * 1024,),
        )


def test_a_long_running_process_checkpoints_sqlite_on_a_thread_not_at_commit(tmp_path) -> None:
    """The worker's commits leave the log to a thread, which copies it into the file and stops with the engine."""
    path = tmp_path / "w.db"
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{path}"), checkpoint_thread=True)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == db.BACKSTOP_BYTES // db.PAGE_SIZE
    _write_megabytes(engine, 8)
    deadline = time.monotonic() + 10
    while path.stat().st_size < 8 * 2**20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size >= 8 * 2**20  # the pages reached the database file
    threads = [t for t in threading.enumerate() if t.name == "sqlite-wal-checkpoint"]
    assert len(threads) == 1
    engine.dispose()
    assert not threads[0].is_alive()


def test_a_one_shot_command_checkpoints_at_commit_past_80_megabytes(tmp_path) -> None:
    """Without the thread a small write stays in the log until the connection closes (no checkpoint per commit)."""
    path = tmp_path / "c.db"
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == db.AUTOCHECKPOINT_BYTES // db.PAGE_SIZE
    _write_megabytes(engine, 8)
    time.sleep(1)
    assert path.stat().st_size < 2**20
    assert not [t for t in threading.enumerate() if t.name == "sqlite-wal-checkpoint"]
    engine.dispose()


def test_a_grown_log_is_cut_back_once_it_is_reset(tmp_path, monkeypatch) -> None:
    """After a large write, the log file shrinks to journal_size_limit when the next write starts it over."""
    monkeypatch.setattr(db, "JOURNAL_SIZE_LIMIT", 256 * 1024)
    path = tmp_path / "c.db"
    wal = tmp_path / "c.db-wal"
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{path}"), checkpoint_thread=True)
    _write_megabytes(engine, 8)
    assert wal.stat().st_size >= 8 * 2**20
    deadline = time.monotonic() + 10
    while wal.stat().st_size > 256 * 1024 and time.monotonic() < deadline:
        time.sleep(0.1)  # the thread copies the log into the file; the next write resets and cuts it
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO filler VALUES (zeroblob(10))")
    assert wal.stat().st_size <= 256 * 1024
    engine.dispose()


def test_a_new_sqlite_database_gets_large_pages_and_an_old_one_keeps_its_own(tmp_path) -> None:
    """A fresh file gets 16 KiB pages; a file made with 4 KiB pages keeps them, its checkpoint still at ~80 MB."""
    old = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(old)) as raw:
        raw.execute("PRAGMA page_size=4096")
        raw.execute("CREATE TABLE t (a)")
    for path, page_size in ((tmp_path / "new.db", db.PAGE_SIZE), (old, 4096)):
        engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{path}"))
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (a)")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == page_size
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == db.AUTOCHECKPOINT_BYTES // page_size
        engine.dispose()


def test_ensure_schema_migrates_a_fresh_database(tmp_path) -> None:
    """Any command works on a fresh install: the first use migrates."""
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'fresh.db'}"))
    db.ensure_schema(engine)
    assert db.current_revision(engine) == db.head_revision()


def test_schema_head_constant_is_alembics_head() -> None:
    """The revision every command checks against is the newest migration."""
    assert db.head_revision() == db.SCHEMA_HEAD


def test_no_index_of_deliveries_names_a_column_the_sending_path_changes(engine: Engine) -> None:
    """Claims, results and reports must stay HOT updates on PostgreSQL: only fixed columns are indexed."""
    found = inspect(engine)
    indexed = {column for index in found.get_indexes("deliveries") for column in index["column_names"]}
    indexed |= {column for unique in found.get_unique_constraints("deliveries") for column in unique["column_names"]}
    assert indexed <= {"blast_id", "subscriber_id", "alert_id"}
    where = f"{engine.dialect.name}_where"
    assert not [index for index in found.get_indexes("deliveries") if index.get("dialect_options", {}).get(where)]
    if engine.dialect.name == "postgresql":  # room on each page for the row's next versions
        with engine.connect() as conn:
            options = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'deliveries'")).scalar()
        assert options == ["fillfactor=30"]


def _old_alerts(conn: Connection, t: object, slugs: list[str]) -> None:
    """Approved alerts (ids from 1), in columns every revision since 0001 has: today's code writes newer ones."""
    for alert_id, slug in enumerate(slugs, start=1):
        conn.execute(text(
            "INSERT INTO alerts (id, slug, version, method, title, body, body_ascii, body_ascii_reviewed, variables, "
            "audiences, priority, valid_days, source, content_hash, origin, status, author, approver, created_at) "
            "VALUES (:i, :slug, 1, 'impersonation', 'T', 'B', 'B', false, '{}', '[]', 'normal', 7, 'S', :slug, "
            "'test', 'approved', 'police', 'chief', :t)"
        ), {"i": alert_id, "slug": slug, "t": t})  # fmt: skip


def _old_blast(conn: Connection, t: object, blast_id: int, alert_id: int, series: str | None = None) -> None:
    """A running blast, in columns every revision since 0003 has."""
    conn.execute(text(
        "INSERT INTO blasts (id, alert_id, segment, channel, encoding, start_at, priority, state, preview, "
        "created_by, created_at, started_at, series) "
        "VALUES (:b, :a, '{}', 'sms', 'auto', :t, 0, 'running', '{}', 'liaison', :t, :t, :s)"
    ), {"b": blast_id, "a": alert_id, "t": t, "s": series})  # fmt: skip


def _old_delivery(conn: Connection, t: object, i: int, blast_id: int, slug: str, status: str = "sent",
                  provider_id: str | None = None) -> None:  # fmt: skip
    """A delivery as the schema had it before 0005: the alert by slug, a queued_at of its own."""
    conn.execute(text(
        "INSERT INTO deliveries (id, blast_id, subscriber_id, alert_slug, msisdn, carrier, province_code, "
        "priority, status, attempts, next_attempt_at, lease_until, provider_id, queued_at) VALUES "
        "(:i, :b, :i, :slug, '+84905123456', 'viettel', 48, 0, :s, 1, :t, :t, :p, :t)"
    ), {"i": i, "b": blast_id, "slug": slug, "s": status, "p": provider_id, "t": t})  # fmt: skip


def test_the_queue_migration_moves_waiting_in_flight_and_sent_rows(database_url: str) -> None:
    """Upgrading a database with a blast under way: queued rows are queued, in-flight ones claimed, sent ones found."""
    from alembic import command

    engine = db.make_engine(DatabaseSettings(url=database_url))
    command.upgrade(db._alembic_config(engine), "0003")
    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    t = db.driver_time(engine.dialect.name, at)
    with engine.begin() as conn:
        _old_alerts(conn, t, ["gia-danh-cong-an-goi-video"])
        _old_blast(conn, t, 7, alert_id=1)
        for i, status, provider_id in [(1, "queued", None), (2, "queued", None), (3, "sending", None),
                                       (4, "sent", "P-4"), (5, "delivered", "P-5")]:  # fmt: skip
            _old_delivery(conn, t, i, 7, "a", status, provider_id)
    db.upgrade(engine)
    with engine.connect() as conn:
        queued = conn.execute(text("SELECT delivery_id, blast_id FROM delivery_queue ORDER BY 1")).all()
        claims = conn.execute(text("SELECT worker, blast_id, delivery_ids FROM claims")).all()
        refs = conn.execute(text("SELECT provider_id, delivery_id FROM provider_refs ORDER BY 1")).all()
        gateways = conn.execute(text("SELECT DISTINCT gateway FROM provider_refs")).scalars().all()
    engine.dispose()
    assert [tuple(r) for r in queued] == [(1, 7), (2, 7)]
    assert [tuple(r) for r in claims] == [("migration", 7, "3")]
    assert [tuple(r) for r in refs] == [("P-4", 4), ("P-5", 5)]
    assert gateways == [""]  # 0011: the gateway its delivery went through (these rows name none)


def test_the_narrowing_migration_keeps_the_alert_version_of_every_row(database_url: str) -> None:
    """Deliveries name their alert by id after 0005: a plain blast's own version, a rotation's version of each slug."""
    from alembic import command

    engine = db.make_engine(DatabaseSettings(url=database_url))
    command.upgrade(db._alembic_config(engine), "0004")
    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    t = db.driver_time(engine.dialect.name, at)
    with engine.begin() as conn:
        _old_alerts(conn, t, ["gia-danh-cong-an-goi-video", "viec-nhe-luong-cao"])
        ids = {slug: alert_id for slug, alert_id in conn.execute(text("SELECT slug, id FROM alerts"))}
        plain, video, jobs = ids["gia-danh-cong-an-goi-video"], "gia-danh-cong-an-goi-video", "viec-nhe-luong-cao"
        series = f'[["{video}", {ids[video]}], ["{jobs}", {ids[jobs]}]]'
        _old_blast(conn, t, 7, plain)
        _old_blast(conn, t, 8, plain, series)
        for i, blast_id, slug in [(1, 7, video), (2, 8, video), (3, 8, jobs)]:
            _old_delivery(conn, t, i, blast_id, slug)
    db.upgrade(engine)
    with engine.connect() as conn:
        got = [tuple(row) for row in conn.execute(text("SELECT id, alert_id FROM deliveries ORDER BY id"))]
        columns = {column["name"] for column in inspect(conn).get_columns("deliveries")}
    engine.dispose()
    assert got == [(1, ids[video]), (2, ids[video]), (3, ids[jobs])]
    assert "alert_slug" not in columns and "queued_at" not in columns


def test_a_missing_database_is_not_created_by_a_command_that_only_uses_one(database_url: str) -> None:
    """Without `create`, a missing SQLite file or a PostgreSQL database without our schema is refused, nothing made."""
    settings = DatabaseSettings(url=database_url)
    with pytest.raises(db.MissingDatabase, match="canhbao db upgrade"):
        db.open_database(settings, create=False)
    if database_url.startswith("sqlite"):
        assert not Path(make_url(database_url).database).exists()
    engine, created = db.open_database(settings, create=True)
    assert created and db.current_revision(engine) == db.head_revision()
    engine.dispose()


def test_a_database_at_an_older_schema_is_still_migrated(database_url: str) -> None:
    """Opening an existing database behind the newest schema migrates it, create or not."""
    from alembic import command

    engine = db.make_engine(DatabaseSettings(url=database_url))
    command.upgrade(db._alembic_config(engine), "0009")
    engine.dispose()
    engine, created = db.open_database(DatabaseSettings(url=database_url), create=False)
    assert not created and db.current_revision(engine) == db.head_revision()
    engine.dispose()


def test_a_reading_connection_leaves_the_write_lock_to_writers(sqlite_engine) -> None:
    """While a long read is open on `db.reading`, a writer commits at once; a plain transaction would hold it back."""
    from sqlalchemy.exc import OperationalError

    quick = db.make_engine(DatabaseSettings(url=str(sqlite_engine.url), busy_timeout_ms=50))
    with db.reading(sqlite_engine) as reader:
        reader.execute(text("SELECT count(*) FROM blasts")).scalar_one()
        with quick.begin() as writer:
            writer.execute(text("DELETE FROM blasts"))
    with sqlite_engine.connect() as holder:
        holder.execute(text("SELECT count(*) FROM blasts")).scalar_one()
        with pytest.raises(OperationalError, match="locked"), quick.begin() as writer:
            writer.execute(text("DELETE FROM blasts"))
    quick.dispose()
