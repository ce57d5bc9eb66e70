"""The schema migrates itself on both databases and matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

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


def test_ensure_schema_migrates_a_fresh_database(tmp_path) -> None:
    """Any command works on a fresh install: the first use migrates."""
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'fresh.db'}"))
    db.ensure_schema(engine)
    assert db.current_revision(engine) == db.head_revision()


def test_schema_head_constant_is_alembics_head() -> None:
    """The revision every command checks against is the newest migration."""
    assert db.head_revision() == db.SCHEMA_HEAD
