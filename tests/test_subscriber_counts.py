"""Subscriber counts (migration 0024): what a blast's preview sums equals the subscribers themselves, always."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import Engine, delete, func, select, update

from dispatcher import db
from dispatcher.config import DatabaseSettings
from dispatcher.models import subscriber_counts, subscribers
from dispatcher.regions import RegionIndex
from dispatcher.subscribers import SubscriberImporter, set_opt_out

HEADER = ["msisdn", "province", "commune", "legacy_district", "audiences", "channels", "carrier", "opt_out"]
PEOPLE = [
    ["0985000001", "48", "Xã Nam Phước", "", "public", "sms", "", ""],
    ["0912000002", "48", "Xã Thu Bồn", "", "student", "sms", "", ""],
    ["0905000003", "48", "Xã Duy Xuyên", "", "public, student", "sms, zalo", "", ""],
    ["0987000005", "Đà Nẵng", "", "Huyện Duy Xuyên", "elderly", "sms", "", ""],
    ["0913000006", "Đà Nẵng", "", "Huyện Duy Xuyên", "student", "sms", "", "x"],
    ["0988000007", "48", "Phường Hải Châu", "", "student", "sms", "", ""],
    ["0906000008", "48", "Phường Hải Châu", "", "public", "sms, zalo", "", ""],
    ["0984000010", "Hà Nội", "", "", "public", "sms", "", ""],
]
# The same people a month later: one moved, one changed carrier and channels, one more, one refused.
LATER = [
    ["0985000001", "48", "Phường Hải Châu", "", "public", "sms", "", ""],
    ["0912000002", "48", "Xã Thu Bồn", "", "student", "sms, zalo", "MobiFone", ""],
    ["0986000004", "48", "Xã Duy Nghĩa", "", "student", "sms", "", ""],
    ["0988000007", "48", "Phường Hải Châu", "", "student", "sms", "", "x"],
]


def _direct(engine: Engine) -> dict[tuple, int]:
    """The subscribers grouped by the counted columns, straight from their rows."""
    s = subscribers.c
    key = (s.province_code, func.coalesce(s.commune_code, 0), func.coalesce(s.legacy_district_code, 0), s.carrier,
           s.audience_mask, s.channel_mask, s.opted_out_at.is_not(None))  # fmt: skip
    with engine.connect() as conn:
        return {tuple(row[:-1]): row[-1] for row in conn.execute(select(*key, func.count()).group_by(*key))}


def _counted(engine: Engine) -> dict[tuple, int]:
    """What subscriber_counts holds, leaving out the combinations nobody holds any more."""
    c = subscriber_counts.c
    key = (c.province_code, c.commune_code, c.legacy_district_code, c.carrier, c.audience_mask, c.channel_mask,
           c.opted_out)  # fmt: skip
    with engine.connect() as conn:
        rows = conn.execute(select(*key, c.people).where(c.people != 0))
        return {(*row[:-2], bool(row[-2])): row[-1] for row in rows}


def _import(engine: Engine, regions: RegionIndex, tmp_path: Path, rows: list[list[str]], now: datetime) -> None:
    path = tmp_path / f"people-{len(list(tmp_path.glob('people-*')))}.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([HEADER, *rows])
    summary = SubscriberImporter(engine, regions, tmp_path / "rejects").import_file(path, now)
    assert summary.rejected == 0


def _same(engine: Engine) -> None:
    direct = {key[:-1] + (bool(key[-1]),): n for key, n in _direct(engine).items()}
    assert _counted(engine) == direct


def test_an_import_is_counted(engine: Engine, regions: RegionIndex, tmp_path: Path, now: datetime) -> None:
    """A first import's people are in the counts, by place, carrier, audiences, channels and refusal."""
    _import(engine, regions, tmp_path, PEOPLE, now)
    _same(engine)
    assert sum(_counted(engine).values()) == len(PEOPLE)


def test_a_second_import_moves_people_between_counts(
    engine: Engine, regions: RegionIndex, tmp_path: Path, now: datetime
) -> None:
    """Re-importing with changed places, carriers, channels and a refusal moves each person to their new count."""
    _import(engine, regions, tmp_path, PEOPLE, now - timedelta(days=30))
    _import(engine, regions, tmp_path, LATER, now)
    _same(engine)
    assert sum(_counted(engine).values()) == len(PEOPLE) + 1


def test_opt_out_and_opt_in_are_counted(engine: Engine, regions: RegionIndex, tmp_path: Path, now: datetime) -> None:
    """A refusal moves the person to the opted-out count in its own transaction, and accepting again moves them back."""
    _import(engine, regions, tmp_path, PEOPLE, now - timedelta(days=1))
    with engine.begin() as conn:
        set_opt_out(conn, "+84985000001", True, now)
        set_opt_out(conn, "+84913000006", False, now)
    _same(engine)
    with engine.begin() as conn:
        set_opt_out(conn, "+84985000001", False, now)
    _same(engine)


def test_a_rolled_back_change_leaves_the_counts_as_they_were(
    engine: Engine, regions: RegionIndex, tmp_path: Path, now: datetime
) -> None:
    """The counts change in the subscriber's transaction: a rollback takes both back."""
    _import(engine, regions, tmp_path, PEOPLE, now)
    before = _counted(engine)
    with engine.connect() as conn, conn.begin() as transaction:
        set_opt_out(conn, "+84985000001", True, now)
        transaction.rollback()
    assert _counted(engine) == before


def test_deleted_people_leave_the_counts(engine: Engine, regions: RegionIndex, tmp_path: Path, now: datetime) -> None:
    """Deleting subscribers (one, then a whole province) takes them out of the counts."""
    _import(engine, regions, tmp_path, PEOPLE, now)
    with engine.begin() as conn:
        conn.execute(delete(subscribers).where(subscribers.c.msisdn == "+84984000010"))
    _same(engine)
    with engine.begin() as conn:
        conn.execute(delete(subscribers).where(subscribers.c.province_code == 48))
    assert _counted(engine) == {} == _direct(engine)


def test_a_change_of_an_uncounted_column_leaves_the_counts_alone(
    engine: Engine, regions: RegionIndex, tmp_path: Path, now: datetime
) -> None:
    """Touching only what the counts do not hold (the source, the time) changes no count."""
    _import(engine, regions, tmp_path, PEOPLE, now)
    before = _counted(engine)
    with engine.begin() as conn:
        conn.execute(update(subscribers).values(source="sửa tay", updated_at=now))
    assert _counted(engine) == before


def test_the_migration_counts_the_subscribers_already_there(
    database_url: str, regions: RegionIndex, tmp_path: Path, now: datetime
) -> None:
    """A database with subscribers before 0024 gets their counts when it is migrated."""
    engine = db.make_engine(DatabaseSettings(url=database_url))
    config = db._alembic_config(engine)
    command.upgrade(config, "0024")
    command.downgrade(config, "-1")  # the schema just before the counts
    _import(engine, regions, tmp_path, PEOPLE, now)
    command.upgrade(config, "0024")
    _same(engine)
    engine.dispose()
