"""Building a test world: generated people in Đà Nẵng, the real alert catalogue, a gateway that notes times."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from dispatcher import alerts, blasts, population
from dispatcher.config import Settings
from dispatcher.domain import METHODS
from dispatcher.gateways.fake import FakeGateway
from dispatcher.regions import RegionIndex
from dispatcher.segments import SegmentSpec, resolve
from dispatcher.subscribers import RejectsFile, RowParser, SubscriberImporter

MESSAGES = Path(__file__).resolve().parent.parent / "messages"


def people(engine: Engine, regions: RegionIndex, now: datetime, tmp_path: Path, count: int, seed: int) -> None:
    """Import `count` generated subscribers of Đà Nẵng (province 48), the same for the same seed."""
    positions = {name: i for i, name in enumerate(population.HEADER)}
    importer = SubscriberImporter(engine, regions, tmp_path / "rejects")
    rows = population.generate(regions, 48, count, seed=seed)
    importer.load(rows, RowParser(regions, positions), now, "test", RejectsFile(tmp_path / "r.csv"))


def catalogue(engine: Engine, now: datetime, approved: Iterable[str] | None = None) -> None:
    """Sync messages/ and have `approved` (every alert when None) submitted by police, approved by chief."""
    loaded = alerts.load_catalogue_dir(MESSAGES, alerts.Catalogue(METHODS, 4))
    with engine.begin() as conn:
        alerts.sync(conn, loaded, "police", now)
        for slug in [spec.id for _, spec, _ in loaded] if approved is None else approved:
            alerts.submit(conn, slug, "police", now)
            alerts.approve(conn, slug, "chief", now)


def approved_blast(engine: Engine, regions: RegionIndex, settings: Settings, now: datetime,
                   alert: str = "gia-danh-cong-an-goi-video", province: str = "Đà Nẵng") -> int:  # fmt: skip
    """A blast of `alert` to everyone in `province`, created by the liaison and approved by the chief; its id."""
    segment = resolve(SegmentSpec(provinces=(province,)), regions)
    with engine.begin() as conn:
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(alert, segment), "liaison", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
    return blast_id


def busiest_second(times: Iterable[float]) -> int:
    """The most of `times` (epoch or monotonic seconds) in any one-second window opening at one of them."""
    times, busiest, start = sorted(times), 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest


class StampingGateway(FakeGateway):
    """A fake gateway that notes when (epoch seconds) each message reached it."""

    def __init__(self, name: str = "fake") -> None:
        super().__init__(name)
        self.times: list[float] = []

    async def send_batch(self, messages):  # type: ignore[no-untyped-def]
        self.times += [time.time()] * len(messages)
        return await super().send_batch(messages)
