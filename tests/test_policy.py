"""Sending policy: quiet hours per channel, urgent blasts first without starving others, caps, a clean stop."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from dispatcher import blasts
from dispatcher.config import Settings, load_settings
from dispatcher.dispatch import Sleep, Worker
from dispatcher.domain import BlastState
from dispatcher.gateways.base import Outcome, OutgoingMessage
from dispatcher.gateways.fake import FakeGateway
from dispatcher.models import deliveries
from dispatcher.policy import QuietHours
from dispatcher.regions import RegionIndex
from dispatcher.segments import SegmentSpec, resolve
from tests.clock import Clock
from tests.world import catalogue, people

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
URGENT = "gia-danh-cong-an-goi-video"
NORMAL = ("khong-cung-cap-ma-otp", "viec-nhe-luong-cao", "dau-tu-tien-ao-ngoai-hoi", "cuoc-goi-dau-so-nuoc-ngoai")
PEOPLE = 200
DAY = timedelta(days=1)


def _at(local: str) -> datetime:
    """A Hà Nội wall-clock time as an aware UTC instant."""
    return datetime.fromisoformat(local).replace(tzinfo=LOCAL).astimezone(UTC)


def _quiet(moment: datetime, start: time = time(22), end: time = time(7)) -> bool:
    """Whether `moment` is inside a nightly window, worked out here rather than by the code under test."""
    local = moment.astimezone(LOCAL).time()
    return local >= start or local < end


async def _yield(_seconds: float) -> None:
    """Nothing waits for real, but the event loop gets its turn (so a hang would time out)."""
    await asyncio.sleep(0)


@dataclass
class World:
    """Subscribers in Đà Nẵng, approved alerts, a fake gateway behind every carrier and a hand-moved clock."""

    engine: Engine
    regions: RegionIndex
    clock: Clock
    fake: FakeGateway
    tmp_path: Path

    def settings(self, toml: str = "") -> Settings:
        """Defaults plus `toml`, whatever the developer's environment or ./config.toml say."""
        path = self.tmp_path / "settings.toml"
        base = '[routes]\ndefault = ["fake"]\nzalo = ["fake"]\n[dispatch]\nreport_wait_seconds = 0\n'
        path.write_text(_merge(base, toml), encoding="utf-8")
        return load_settings(path, {})

    def worker(self, settings: Settings, sleep: Sleep = _yield) -> Worker:
        """A worker on this world's clock and fake gateway."""
        return Worker(self.engine, {"fake": self.fake}, settings, self.regions, self.clock, "w1", sleep=sleep)

    def blast(self, settings: Settings, alert: str, **request: Any) -> tuple[int, dict[str, Any]]:
        """A blast to everyone in Đà Nẵng (whatever the alert's audiences) created and approved at the clock's time:
        (id, its preview)."""
        request.setdefault("segment", SegmentSpec(provinces=("Đà Nẵng",), audiences=("all",)))
        segment = resolve(request.pop("segment"), self.regions)
        with self.engine.begin() as conn:
            blast_id, shown = blasts.create(conn, blasts.BlastRequest(alert, segment, **request), "liaison",
                                            settings, self.regions, self.clock())  # fmt: skip
            blasts.approve(conn, blast_id, "chief", self.clock())
        return blast_id, shown

    def start(self, settings: Settings) -> list[int]:
        """Start every blast due at the clock's time, in one go."""
        with self.engine.begin() as conn:
            return blasts.start_due(conn, settings, self.clock())

    def counts(self, blast_id: int) -> dict[str, int]:
        """The blast's deliveries by status, zeros left out."""
        with self.engine.connect() as conn:
            return {k: v for k, v in blasts.counts(conn, blast_id).items() if v}

    def get(self, blast_id: int) -> dict[str, Any]:
        """The blast's row."""
        with self.engine.connect() as conn:
            return blasts.get(conn, blast_id)

    def rows(self, *where: Any) -> list[Any]:
        """Delivery rows (all columns) matching `where`."""
        with self.engine.connect() as conn:
            return conn.execute(select(deliveries).where(*where).order_by(deliveries.c.id)).all()


def _merge(base: str, extra: str) -> str:
    """`base` TOML with `extra`'s keys added to its sections (TOML forbids a section twice)."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in (base + extra).splitlines():
        if line.startswith("["):
            current = line
        elif line.strip():
            sections.setdefault(current, []).append(line)
    return "".join(f"{name}\n" + "\n".join(lines) + "\n" for name, lines in sections.items())


@pytest.fixture
def world(engine: Engine, regions: RegionIndex, now: datetime, tmp_path: Path) -> World:
    """PEOPLE subscribers in Đà Nẵng (about two thirds on Zalo too), one urgent and four normal alerts approved."""
    before = now - timedelta(days=2)
    people(engine, regions, before, tmp_path, PEOPLE, seed=2)
    catalogue(engine, before, [URGENT, *NORMAL])
    return World(engine, regions, Clock(now), FakeGateway(), tmp_path)


# -- quiet hours --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "deadline", "rate", "sendable"),
    [
        pytest.param("2026-11-23 23:30", "2026-11-24 06:00", 100, 0, id="all-inside-the-night"),
        pytest.param("2026-11-23 21:00", "2026-11-24 08:00", 100, 720_000, id="an-hour-each-side-of-the-night"),
        pytest.param("2026-11-23 09:00", "2026-11-23 09:10", 0.01, 6, id="ten-minutes-at-one-per-100-s"),
        pytest.param("2026-11-23 09:00", "2026-11-26 14:00", 10, 1_800_000, id="several-nights"),
        pytest.param("2026-11-24 06:00", "2026-11-24 06:30", 100, 0, id="deadline-before-seven"),
    ],
)
def test_sendable_counts_the_messages_out_before_a_deadline(start, deadline, rate, sendable) -> None:
    """Only the open hours between the start and the deadline carry messages: finish_time's inverse."""
    quiet = QuietHours.parse("22:00", "07:00", "Asia/Ho_Chi_Minh")
    assert quiet.sendable(_at(start), _at(deadline), rate) == sendable
    if sendable:
        assert quiet.finish_time(_at(start), sendable, rate) <= _at(deadline)


@pytest.mark.parametrize(
    ("local", "sends"),
    [("2026-11-23 21:59:59", True), ("2026-11-23 22:00:00", False),
     ("2026-11-24 06:59:59", False), ("2026-11-24 07:00:00", True)],
    ids=["21:59:59", "22:00", "06:59:59", "07:00"],
)  # fmt: skip
def test_a_tick_sends_only_outside_quiet_hours(world, local, sends) -> None:
    """Quiet hours run from 22:00 included to 07:00 excluded: a tick inside them sends nothing."""
    settings = world.settings()
    world.clock.now = _at(local)
    blast_id, _ = world.blast(settings, NORMAL[0])
    assert asyncio.run(world.worker(settings).tick()) is sends
    assert bool(world.fake.sent) is sends
    assert ("queued" in world.counts(blast_id)) is not sends


def test_messages_held_at_night_go_at_seven(world) -> None:
    """A blast started at 23:00 keeps every message queued overnight and sends them all at 07:00."""
    settings = world.settings()
    world.clock.now = _at("2026-11-23 23:00")
    blast_id, _ = world.blast(settings, NORMAL[0])
    worker = world.worker(settings)
    asyncio.run(worker.run(until_idle=True))
    queued = world.counts(blast_id)["queued"]
    world.clock.now = _at("2026-11-24 07:00")
    asyncio.run(worker.run(until_idle=True))
    assert world.counts(blast_id) == {"sent": queued} and len(world.fake.sent) == queued
    assert {blasts.utc(row.sent_at) for row in world.rows()} == {_at("2026-11-24 07:00")}
    assert world.get(blast_id)["state"] == BlastState.COMPLETED.value


def test_until_idle_at_night_returns_and_leaves_messages_queued(world) -> None:
    """`run(until_idle=True)` inside quiet hours stops at once: held messages are not due work."""
    settings = world.settings()
    world.clock.now = _at("2026-11-24 02:00")
    blast_id, _ = world.blast(settings, NORMAL[0])
    asyncio.run(asyncio.wait_for(world.worker(settings).run(until_idle=True), timeout=30))
    assert set(world.counts(blast_id)) == {"queued"} and world.fake.sent == []
    assert world.get(blast_id)["state"] == BlastState.RUNNING.value


def test_a_blast_spanning_several_nights_finishes_when_its_preview_said(world) -> None:
    """One message every 10 min from 09:00: it waits out each night, and completes at the preview's finish_at."""
    interval = 600  # rate limits wait on the wall clock, so the test's clock moves one message's worth per tick
    settings = world.settings("[dispatch]\nbatch_size = 1\nlease_seconds = 3600\n")
    start = world.clock()
    blast_id, shown = world.blast(settings, NORMAL[0], rate=1 / interval)
    finish = datetime.fromisoformat(shown["finish_at"])
    assert (finish.astimezone(LOCAL).date() - start.astimezone(LOCAL).date()).days >= 2, "not several nights"
    worker = world.worker(settings)

    async def drive() -> None:
        while world.get(blast_id)["state"] != BlastState.COMPLETED.value and world.clock() <= finish + DAY:
            await worker.tick()
            world.clock.advance(interval)

    asyncio.run(drive())
    sent = sorted(blasts.utc(row.sent_at) for row in world.rows(deliveries.c.blast_id == blast_id))
    assert len(sent) == shown["recipients"] == world.counts(blast_id)["sent"]
    assert [t.astimezone(LOCAL).isoformat() for t in sent if _quiet(t)] == []
    assert len({t.astimezone(LOCAL).date() for t in sent}) >= 3
    assert blasts.utc(world.get(blast_id)["finished_at"]) == finish
    assert shown["eta_seconds"] == (finish - start).total_seconds()


@pytest.mark.parametrize(("channel", "sends"), [("zalo", True), ("sms", False), ("zalo_then_sms", False)])
def test_each_channel_keeps_its_own_quiet_hours(world, channel, sends) -> None:
    """Zalo quiet until 06:00 and SMS until 07:00: at 06:30 only a Zalo blast sends (Zalo-then-SMS keeps SMS hours)."""
    settings = world.settings('[policy.quiet_hours]\nzalo = "22:00-06:00"\nsms = "22:00-07:00"\n')
    world.clock.now = _at("2026-11-24 06:30")
    blast_id, shown = world.blast(settings, NORMAL[0], channel=channel)
    asyncio.run(world.worker(settings).run(until_idle=True))
    expected = "sent" if sends else "queued"
    assert world.counts(blast_id) == {expected: shown["recipients"]}
    assert len(world.fake.sent) == (shown["recipients"] if sends else 0)


def test_the_claim_takes_only_blasts_whose_channel_is_open(world) -> None:
    """At 06:30 a claim returns the Zalo blast's messages and none of the SMS blast's."""
    settings = world.settings('[policy.quiet_hours]\nzalo = "22:00-06:00"\nsms = "22:00-07:00"\n')
    world.clock.now = _at("2026-11-24 06:30")
    zalo, shown = world.blast(settings, NORMAL[0], channel="zalo")
    sms, _ = world.blast(settings, NORMAL[1], channel="sms")
    world.start(settings)
    worker = world.worker(settings)
    claimed, _ = worker._claim(world.clock())
    assert {row.blast_id for row in claimed} == {zalo} and len(claimed) == shown["recipients"]


@pytest.mark.parametrize("allowed", [True, False], ids=["urgent-allowed", "urgent-held"])
def test_urgent_messages_go_at_night_only_if_config_allows(world, allowed) -> None:
    """At 23:00 an urgent blast sends when `urgent_in_quiet_hours` is true, a normal one always waits."""
    settings = world.settings(f"[policy]\nurgent_in_quiet_hours = {str(allowed).lower()}\n")
    world.clock.now = _at("2026-11-23 23:00")
    urgent, shown = world.blast(settings, URGENT)
    normal, _ = world.blast(settings, NORMAL[0])
    asyncio.run(world.worker(settings).run(until_idle=True))
    assert world.counts(urgent) == {"sent" if allowed else "queued": shown["recipients"]}
    assert set(world.counts(normal)) == {"queued"}


# -- priority -----------------------------------------------------------------------------


def test_an_urgent_blast_overtakes_a_normal_one_without_starving_it(world) -> None:
    """While both wait, urgent messages take urgent_share of each batch and normal ones the rest; then normal all."""
    settings = world.settings("[dispatch]\nbatch_size = 20\n[policy]\nurgent_share = 0.8\n")
    normal, _ = world.blast(settings, NORMAL[0])
    world.start(settings)
    world.clock.advance(60)
    urgent, _ = world.blast(settings, URGENT)
    world.start(settings)
    blast_of = {row.id: row.blast_id for row in world.rows()}
    worker = world.worker(settings)
    batches = []  # (urgent, normal) messages of each batch, in order
    while len(world.fake.sent) < len(blast_of):
        before = len(world.fake.sent)
        asyncio.run(worker.tick())
        mix = Counter(blast_of[m.delivery_id] for m in world.fake.sent[before:])
        batches.append((mix[urgent], mix[normal]))
        world.clock.advance(1)
    share = int(settings.dispatch.batch_size * settings.policy.urgent_share)
    with_urgent = [(u, n) for u, n in batches if u]
    assert all(u >= share for u, _ in with_urgent[:-1]), "urgent did not get its share"
    assert all(n >= 1 and u + n == 20 for u, n in with_urgent), "normal starved while urgent waited"
    after = [n for u, n in batches if not u]
    assert batches[: len(with_urgent)] == with_urgent and all(n == 20 for n in after[:-1]) and after


# -- caps ---------------------------------------------------------------------------------

VIETTEL = SegmentSpec(provinces=("Đà Nẵng",), carriers=("viettel",))


# blasts.materialise counts who it held back after its INSERT, when the blast's own new rows already make
# everyone "already received": deferred people are reported as 0 (skipped ones are not queued, so they count).
def _sent_two_hours_ago(world: World, settings: Settings) -> tuple[set[int], set[int]]:
    """One alert sent to everyone and a second to Viettel subscribers, 2 h before the clock: (everyone, Viettel)."""
    start = world.clock()
    world.clock.now = start - timedelta(hours=2)
    everyone, _ = world.blast(settings, NORMAL[1])
    viettel, _ = world.blast(settings, NORMAL[2], segment=VIETTEL)
    asyncio.run(world.worker(settings).run(until_idle=True))
    world.clock.now = start
    return _people(world, everyone), _people(world, viettel)


def _people(world: World, blast_id: int) -> set[int]:
    """Who the blast queued a message for."""
    return {row.subscriber_id for row in world.rows(deliveries.c.blast_id == blast_id)}


def _most_in_a_day(world: World) -> int:
    """The most messages one person was sent, or has queued, within any 24 h (both ends included)."""
    times: dict[int, list[datetime]] = {}
    for row in world.rows(deliveries.c.status.in_(["queued", "sent"])):
        at = row.sent_at if row.status == "sent" else row.next_attempt_at
        times.setdefault(row.subscriber_id, []).append(blasts.utc(at))
    return max(sum(first <= t <= first + DAY for t in ts) for ts in times.values() for first in ts)


@pytest.mark.parametrize("capped", ["defer", "skip"])
def test_two_blasts_started_together_keep_everyone_within_the_cap(world, capped) -> None:
    """Two blasts started at the same instant after two sent ones: nobody gets more than 3 messages in any 24 h."""
    settings = world.settings(f'[dispatch]\ncap_per_day = 3\n[policy]\ncapped = "{capped}"\n')
    everyone, viettel = _sent_two_hours_ago(world, settings)
    first, _ = world.blast(settings, NORMAL[3])
    second, _ = world.blast(settings, NORMAL[0])
    assert world.start(settings) == [first, second]
    assert _most_in_a_day(world) == 3
    worker = world.worker(settings)
    asyncio.run(worker.run(until_idle=True))
    world.clock.advance(DAY.total_seconds())
    asyncio.run(worker.run(until_idle=True))
    assert _most_in_a_day(world) == 3
    assert _people(world, first) == everyone
    assert _people(world, second) == (everyone if capped == "defer" else everyone - viettel)


@pytest.mark.parametrize("capped", ["defer", "skip"])
def test_the_second_of_two_blasts_started_together_holds_people_at_their_cap(world, capped) -> None:
    """The later-materialised of two simultaneous blasts defers (a day later) or skips those the other one capped."""
    settings = world.settings(f'[dispatch]\ncap_per_day = 3\n[policy]\ncapped = "{capped}"\n')
    everyone, viettel = _sent_two_hours_ago(world, settings)
    first, _ = world.blast(settings, NORMAL[3])
    second, _ = world.blast(settings, NORMAL[0])
    assert world.start(settings) == [first, second]
    reason = "deferred" if capped == "defer" else "capped"
    assert world.get(first)["held"] == {reason: 0}
    assert world.get(second)["held"] == {reason: len(viettel)}
    due = {row.subscriber_id: blasts.utc(row.next_attempt_at) for row in world.rows(deliveries.c.blast_id == second)}
    later = viettel if capped == "defer" else set()
    assert due == {p: world.clock() + (DAY if p in viettel else timedelta()) for p in (everyone - viettel) | later}


@pytest.mark.parametrize("capped", ["defer", "skip"])
def test_the_preview_counts_people_at_their_cap_as_the_start_holds_them(world, capped) -> None:
    """People already at their cap are `deferred` or `excluded.capped` in the preview, and held so at the start."""
    settings = world.settings(f'[dispatch]\ncap_per_day = 3\n[policy]\ncapped = "{capped}"\n')
    everyone, viettel = _sent_two_hours_ago(world, settings)
    world.blast(settings, NORMAL[3])
    world.start(settings)
    world.clock.advance(60)
    blast_id, shown = world.blast(settings, NORMAL[0])
    world.start(settings)
    if capped == "defer":
        assert (shown["deferred"], shown["excluded"]["capped"], shown["recipients"]) == (len(viettel), 0, len(everyone))
        assert world.get(blast_id)["held"] == {"deferred": len(viettel)}
        assert datetime.fromisoformat(shown["finish_at"]) >= world.clock() + DAY
    else:
        assert (shown["deferred"], shown["excluded"]["capped"]) == (0, len(viettel))
        assert shown["recipients"] == len(everyone - viettel)
        assert world.get(blast_id)["held"] == {"capped": len(viettel)}


# -- stopping -----------------------------------------------------------------------------


class ClockedGateway(FakeGateway):
    """A fake gateway that also notes, by the test's clock, when each message was handed to it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.handed_at: list[datetime] = []

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Note the time, then behave as the fake does."""
        self.handed_at += [self.clock()] * len(messages)
        return await super().send_batch(messages)


def test_a_stop_inside_a_rate_limited_batch_leaves_nothing_sending(world) -> None:
    """A stop while a batch is paced: what was handed over is recorded sent, the rest is queued again as it was."""
    settings = world.settings("[dispatch]\nbatch_size = 20\n")
    blast_id, shown = world.blast(settings, NORMAL[0], rate=2)
    waits = 0

    async def sleep(_seconds: float) -> None:
        nonlocal waits
        waits += 1
        if waits == 5:
            stop.set()  # SIGTERM arrives while the worker waits for the blast's rate

    stop = asyncio.Event()
    asyncio.run(asyncio.wait_for(world.worker(settings, sleep).run(stop=stop), timeout=30))
    handed = {m.delivery_id for m in world.fake.sent}
    assert 0 < len(handed) < settings.dispatch.batch_size, "the stop did not cut the batch short"
    rows = world.rows(deliveries.c.blast_id == blast_id)
    assert {row.id for row in rows if row.status == "sent"} == handed
    assert {(row.status, row.attempts) for row in rows if row.id not in handed} == {("queued", 0)}
    assert world.counts(blast_id) == {"sent": len(handed), "queued": shown["recipients"] - len(handed)}


def test_a_batch_paced_into_the_night_hands_nothing_over_from_22h(world) -> None:
    """A rate-limited batch claimed at 21:59:58 hands nothing over from 22:00; the rest is queued for the morning."""
    settings = world.settings("[dispatch]\nbatch_size = 20\n")
    world.clock.now = _at("2026-11-23 21:59:58")
    gateway = ClockedGateway(world.clock)
    blast_id, shown = world.blast(settings, NORMAL[0], rate=1)

    async def sleep(seconds: float) -> None:
        world.clock.advance(seconds)  # the wait the rate asks for is time passing on the test's clock

    worker = Worker(world.engine, {"fake": gateway}, settings, world.regions, world.clock, "w1", sleep=sleep)
    asyncio.run(asyncio.wait_for(worker.run(until_idle=True), timeout=30))
    assert gateway.handed_at and [t for t in gateway.handed_at if _quiet(t)] == []
    assert world.counts(blast_id) == {"sent": len(gateway.sent), "queued": shown["recipients"] - len(gateway.sent)}
    rows = world.rows(deliveries.c.status == "queued")
    assert {row.attempts for row in rows} == {0}
