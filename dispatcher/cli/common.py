"""What every command shares: the consoles, the `--json` option and the context built from the settings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine

from dispatcher import alerts as catalogue
from dispatcher import db
from dispatcher.config import Settings
from dispatcher.errors import UsageError
from dispatcher.phones import InvalidNumber, PhoneBook
from dispatcher.regions import RegionIndex

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="In một tài liệu JSON ra stdout.")]


@dataclass
class Context:
    """What every command needs, built once from the settings."""

    settings: Settings
    actor: str
    long_running: bool = False
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Only the commands that start an installation (`serve`, `subscribers import`/`generate`;
    # `db upgrade` on its own) may create the database: any other on a mistyped URL says so.
    may_create: bool = False
    _engine: Engine | None = None
    _regions: RegionIndex | None = None

    @property
    def engine(self) -> Engine:
        """The database, opened and migrated to the newest schema on first use (created only if `may_create`)."""
        if self._engine is None:
            settings = self.settings.database
            self._engine, created = db.open_database(settings, self.may_create, checkpoint_thread=self.long_running)
            if created:
                where = self._engine.url.render_as_string(hide_password=True)
                err.print(f"Đã tạo cơ sở dữ liệu mới tại {escape(where)}.", soft_wrap=True)
        return self._engine

    @property
    def regions(self) -> RegionIndex:
        """The region index (loaded on first use: it takes about a second)."""
        if self._regions is None:
            self._regions = RegionIndex.load()
        return self._regions

    def close(self) -> None:
        """Let the database go (and its checkpoint thread finish its round); a later use opens it anew."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def catalogue(self) -> catalogue.Catalogue:
        """The methods and limits alerts are checked against."""
        return catalogue.catalogue_for(self.settings)


def emit(document: Any) -> None:
    """The one JSON document of a --json command."""
    print(json.dumps(document, ensure_ascii=False, indent=2, default=str))


def parse_msisdn(raw: str) -> str:
    """A phone number given on the command line, in E.164; a usage error when it is not one."""
    try:
        return PhoneBook().normalize(raw).e164
    except InvalidNumber as exc:
        raise UsageError(f"Số {raw!r}: {exc}.") from None
