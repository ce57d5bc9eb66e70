"""The dashboard's figures (dispatcher/overview.py): what it shows equals what the deliveries say."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select, update

from dispatcher import blasts, overview
from dispatcher.config import Settings, load_settings
from dispatcher.models import blasts as blasts_table
from dispatcher.models import deliveries
from dispatcher.regions import RegionIndex
from tests import world

ALERT = "khong-cung-cap-ma-otp"


def _running_blast(engine: Engine, regions: RegionIndex, now: datetime, tmp_path: Path) -> tuple[Settings, int]:
    """300 people of Đà Nẵng (since yesterday) and a blast of ALERT to them, running, half of it delivered;
    the settings (no quiet hours: it starts now) and its id."""
    settings = load_settings(None, {"CANHBAO_POLICY__QUIET_HOURS__SMS": "00:00-00:00"})
    world.people(engine, regions, now - timedelta(days=1), tmp_path, 300, seed=5)
    world.catalogue(engine, now - timedelta(days=1), [ALERT])
    blast_id = world.approved_blast(engine, regions, settings, now, ALERT, "48")
    with engine.begin() as conn:
        assert blasts.start_due(conn, settings, now) == [blast_id]
        # Half of it went out: a few states to count.
        half = deliveries.c.id % 2 == 0
        conn.execute(update(deliveries).where(deliveries.c.blast_id == blast_id, half).values(status="delivered"))
    return settings, blast_id


def test_a_running_blasts_counts_and_todays_add_up_to_its_deliveries(
    engine: Engine, regions: RegionIndex, now: datetime, tmp_path: Path
) -> None:
    """The running blast's counts by state, and today's by state and carrier, equal its deliveries counted directly."""
    settings, blast_id = _running_blast(engine, regions, now, tmp_path)
    d = deliveries.c
    with engine.connect() as conn:
        shown = overview.dashboard(conn, settings, now)
        direct = conn.execute(select(d.carrier, d.status, func.count()).group_by(d.carrier, d.status)).all()
        assert shown["live"][0]["counts"] == blasts.counts(conn, blast_id)
    by_carrier: dict[str, dict[str, int]] = {}
    for carrier, status, n in direct:
        by_carrier.setdefault(carrier, {})[status] = n
    assert shown["today_by_carrier"] == by_carrier
    assert shown["live"][0]["total"] == sum(n for _, _, n in direct) == sum(shown["today_by_state"].values())


def test_an_ended_blasts_counts_are_kept_a_minute_and_a_running_ones_read_every_time(
    engine: Engine, regions: RegionIndex, now: datetime, tmp_path: Path
) -> None:
    """With tallies, a completed blast's counts are read again only after `ended_every`; a running blast's at once."""
    settings, blast_id = _running_blast(engine, regions, now, tmp_path)
    tallies = overview.Tallies()
    d = deliveries.c
    queued = (d.blast_id == blast_id, d.status == "queued")

    def today(at: datetime) -> dict[str, int]:
        with engine.connect() as conn:
            return overview.dashboard(conn, settings, at, tallies)["today_by_state"]

    before = today(now)
    with engine.begin() as conn:  # one more went out while it runs: seen at once
        conn.execute(update(deliveries).where(d.id == select(func.min(d.id)).where(*queued).scalar_subquery())
                     .values(status="sent"))  # fmt: skip
    assert today(now) == {**before, "queued": before["queued"] - 1, "sent": 1}
    with engine.begin() as conn:
        conn.execute(update(deliveries).where(*queued).values(status="delivered"))
        conn.execute(blasts_table.update().values(state="completed", finished_at=now))
    everyone = sum(before.values())
    assert today(now) == {"delivered": everyone - 1, "sent": 1}
    with engine.begin() as conn:  # a late receipt
        conn.execute(update(deliveries).where(d.status == "sent").values(status="delivered"))
    assert today(now + timedelta(seconds=59)) == {"delivered": everyone - 1, "sent": 1}
    assert today(now + timedelta(seconds=61)) == {"delivered": everyone}


def test_a_blasts_counts_read_in_chunks_add_up_across_them(
    engine: Engine, regions: RegionIndex, now: datetime, tmp_path: Path, monkeypatch
) -> None:
    """Counted 7 ids at a time, a blast's counts equal its deliveries counted whole."""
    settings, blast_id = _running_blast(engine, regions, now, tmp_path)
    monkeypatch.setattr(overview, "CHUNK", 7)
    with engine.connect() as conn:
        shown = overview.dashboard(conn, settings, now)
        assert shown["live"][0]["counts"] == blasts.counts(conn, blast_id)
        assert shown["today_by_carrier"] == blasts.by_carrier(conn, blast_id)
