"""Shared fixtures: a fixed clock, the region index, real databases (SQLite and PostgreSQL), a headless Chromium.

PostgreSQL is a throwaway cluster started for the session as a non-root user on 127.0.0.1.
Without PostgreSQL binaries the PostgreSQL cases are skipped, except under CI, where a missing
server is a failure.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from sqlalchemy import Engine

from dispatcher import db
from dispatcher.config import DatabaseSettings
from dispatcher.regions import RegionIndex
from tests import browser as browser_helpers
from tests import pg

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts and ends with structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def now() -> datetime:
    """A fixed instant: 09:00 in Hà Nội on 23 November 2026."""
    return datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def regions() -> RegionIndex:
    """The region index, loaded once."""
    return RegionIndex.load()


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[browser_helpers.Chromium]:
    """One headless Chromium for the module's browser tests."""
    launched = browser_helpers.Chromium()
    yield launched
    launched.close()


@pytest.fixture
def browser(chromium: browser_helpers.Chromium) -> Iterator[browser_helpers.Browser]:
    """The test's own pages and console log; its pages close when it ends, failed or not."""
    session = chromium.session()
    yield session
    session.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL cluster for this test session (fsync off: tests, not durability); yields its base URL."""
    with pg.cluster("-c fsync=off -c shared_buffers=128MB") as url:
        if url is None:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL binaries not found: .ci/run must install postgresql")
            pytest.skip("PostgreSQL binaries not installed")
        yield url


# -- databases ----------------------------------------------------------------------------

_SCHEMAS: dict[str, str] = {}


def migrate(url: str) -> None:
    """Bring the new, empty database at `url` to the newest schema, as `canhbao db upgrade` does.

    Running the migrations costs about a second a database, and a thousand tests want one: they
    run once per test process and kind (SQLite, each PostgreSQL server), and each test gets a copy
    of that database (a file copy; PostgreSQL's CREATE DATABASE … TEMPLATE). test_db.py runs the
    migrations themselves.
    """
    if url.startswith("sqlite:///"):
        shutil.copyfile(_schema("sqlite"), url.removeprefix("sqlite:///"))
    else:
        pg.clone_database(url, _schema(url.rsplit("/", 1)[0]))


def _schema(kind: str) -> str:
    """The migrated database copied for `kind` ('sqlite', or a PostgreSQL server's URL): a path or a name."""
    if kind not in _SCHEMAS:
        if kind == "sqlite":
            folder = tempfile.mkdtemp(prefix="canhbao-schema-")
            atexit.register(shutil.rmtree, folder, True)
            url = f"sqlite:///{folder}/canhbao.db"
        else:
            url = pg.create_database(kind)
        engine = db.make_engine(DatabaseSettings(url=url))
        db.upgrade(engine)
        engine.dispose()
        _SCHEMAS[kind] = url.removeprefix("sqlite:///") if kind == "sqlite" else url.rsplit("/", 1)[1]
    return _SCHEMAS[kind]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'canhbao.db'}"
    return pg.create_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database of each kind."""
    migrate(database_url)
    engine = db.make_engine(DatabaseSettings(url=database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database, for behaviour that has no PostgreSQL-specific path."""
    url = f"sqlite:///{tmp_path / 'canhbao.db'}"
    migrate(url)
    engine = db.make_engine(DatabaseSettings(url=url))
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_server: str) -> Iterator[Engine]:
    """A migrated PostgreSQL database, for behaviour only PostgreSQL has (a shared server, its planner, HOT updates)."""
    url = pg.create_database(pg_server)
    migrate(url)
    engine = db.make_engine(DatabaseSettings(url=url))
    yield engine
    engine.dispose()


# -- the command line ---------------------------------------------------------------------


class Cli:
    """Runs `canhbao` in-process against a private config, database and catalogue."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str], database_url: str, create: bool = True) -> None:
        """With `create` the database is made first, as `canhbao db upgrade` makes it."""
        if create:
            migrate(database_url)
        self.root = root
        self.capsys = capsys
        self.messages = root / "messages"
        shutil.copytree(Path(__file__).parent.parent / "messages", self.messages)
        self.config = root / "config.toml"
        self.config.write_text(
            f'[database]\nurl = "{database_url}"\n'
            f'[subscribers]\nrejects_dir = "{root / "rejects"}"\n'
            f'[catalogue]\nmessages_dir = "{self.messages}"\n'
            '[logging]\nformat = "json"\nlevel = "warning"\n'
            # The CLI runs on the wall clock: without this, what a test sees would depend on the hour
            # it runs at (nothing leaves 22:00–07:00). Quiet hours are tested with a fixed clock.
            '[policy.quiet_hours]\nsms = ""\nzalo = ""\n',
            encoding="utf-8",
        )

    def quiet_hours(self, window: str) -> None:
        """Keep `window` ('22:00-07:00') as the quiet hours of both channels, for a test on fixed dates."""
        text = self.config.read_text(encoding="utf-8")
        self.config.write_text(text.replace('sms = ""\nzalo = ""', f'sms = "{window}"\nzalo = "{window}"'), "utf-8")

    def __call__(self, *args: str, user: str = "tester") -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of `canhbao --config … --as user args…`."""
        from dispatcher.cli.app import run

        self.capsys.readouterr()
        code = run(["--config", str(self.config), "--as", user, *args])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def json(self, *args: str, user: str = "tester") -> tuple[int, object]:
        """(exit status, the JSON document printed) of a --json command."""
        import json

        code, out, err = self(*args, "--json", user=user)
        assert out.strip(), f"no JSON printed; stderr: {err}"
        return code, json.loads(out)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The command line on a fresh SQLite database (made, as `canhbao db upgrade` makes it)."""
    return Cli(tmp_path, capsys, f"sqlite:///{tmp_path / 'canhbao.db'}")
