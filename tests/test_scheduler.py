"""The scheduler: one leader, campaign runs fired once, missed runs marked, rotation per person."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy import Engine, func, select, update

from dispatcher import alerts, blasts
from dispatcher import scheduler as scheduling
from dispatcher.config import Settings, load_settings
from dispatcher.domain import Audience, BlastState, RunOutcome, ScheduleState, audience_mask
from dispatcher.errors import UsageError
from dispatcher.models import alerts as alerts_table
from dispatcher.models import blasts as blasts_table
from dispatcher.models import deliveries, leases, schedule_runs, scheduler_jobs, schedules, subscribers
from dispatcher.schedules import ScheduleSpec, parse_file
from dispatcher.segments import SegmentSpec, resolve
from tests.world import catalogue, people

ROTATION = ["gia-danh-cong-an-goi-video", "dau-tu-tien-ao-ngoai-hoi", "viec-nhe-luong-cao", "khong-cung-cap-ma-otp",
            "phat-nguoi-gia-mao"]  # fmt: skip
# Each delivery with the slug of the alert it carried.
sent_alerts = deliveries.join(alerts_table, alerts_table.c.id == deliveries.c.alert_id)
WEEKLY = f"""
title = "Hằng tuần — Đà Nẵng"
when = "every Monday 09:00"
valid_hours = 10
[segment]
provinces = ["Đà Nẵng"]
[content]
rotation = {json.dumps(ROTATION)}
"""


@pytest.fixture
def settings() -> Settings:
    """Defaults, whatever ./config.toml says: grace one hour, caps high enough not to interfere."""
    return load_settings(None, {"CANHBAO_DISPATCH__CAP_PER_DAY": "50", "CANHBAO_SCHEDULER__GRACE_SECONDS": "3600"})


@pytest.fixture
def world(engine: Engine, regions, now, tmp_path) -> Engine:
    """200 people in Đà Nẵng and the whole catalogue approved."""
    people(engine, regions, now, tmp_path, 200, seed=5)
    catalogue(engine, now)
    return engine


def _campaign(engine: Engine, tmp_path: Path, now: datetime, text: str = WEEKLY, name: str = "da-nang") -> ScheduleSpec:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    spec = parse_file(path, "Asia/Ho_Chi_Minh")
    with engine.begin() as conn:
        scheduling.sync(conn, [spec], "liaison", now)
        scheduling.approve(conn, name, "chief", now)
    return spec


def _run(engine: Engine, settings: Settings, regions, now: datetime) -> list[dict]:
    with engine.begin() as conn:
        return scheduling.run_due(conn, settings, regions, now)


def _runs(engine: Engine) -> list[tuple[datetime, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(schedule_runs.c.run_at, schedule_runs.c.outcome).order_by(schedule_runs.c.run_at))
        return [(blasts.utc(at), outcome) for at, outcome in rows]


# -- the lease ------------------------------------------------------------------------------


def test_one_holder_leads_and_another_takes_over_when_the_lease_runs_out(engine: Engine, now) -> None:
    """While the leader renews, a second process stands by; once it stops renewing, the second leads."""
    first = scheduling.LeaderLease(engine, "a:1", seconds=30)
    second = scheduling.LeaderLease(engine, "b:2", seconds=30)
    assert first.hold(now) and not second.hold(now)
    assert first.hold(now + timedelta(seconds=20)) and not second.hold(now + timedelta(seconds=40))
    assert second.hold(now + timedelta(seconds=51)) and not first.hold(now + timedelta(seconds=52))


def test_a_released_lease_is_taken_at_once(engine: Engine, now) -> None:
    """A leader stopping cleanly hands over without the standby waiting for the lease to run out."""
    first = scheduling.LeaderLease(engine, "a:1", seconds=30)
    second = scheduling.LeaderLease(engine, "b:2", seconds=30)
    assert first.hold(now)
    first.release()
    assert second.hold(now + timedelta(seconds=1))


def test_a_process_that_lost_the_lease_decides_nothing(world: Engine, settings, regions, now, tmp_path) -> None:
    """run_due through a service that no longer leads fires nothing, even when a run is due."""
    _campaign(world, tmp_path, now - timedelta(days=1))
    service = scheduling.SchedulerService(world, settings, regions, "a:1", clock=lambda: now)
    scheduling.LeaderLease(world, "b:2", seconds=30).hold(now)
    assert service.run_due() == []
    assert _runs(world) == []


def test_a_scheduler_tells_its_listener_it_leads_then_each_run_it_fired(
    world, settings, regions, now, tmp_path
) -> None:
    """`on_event` hears 'leading' first, then the campaign run it started (committed, with its blast)."""
    _campaign(world, tmp_path, now - timedelta(days=1))
    heard, stop = [], threading.Event()

    def listen(kind: str, detail: dict) -> None:
        heard.append((kind, detail))
        if kind == "campaign_run":
            stop.set()

    scheduling.SchedulerService(world, settings, regions, "a:1", clock=lambda: now, on_event=listen).serve(stop)
    assert [kind for kind, _ in heard] == ["leading", "campaign_run"]
    assert heard[0][1] == {"holder": "a:1"} and heard[1][1]["outcome"] == "started"
    with world.connect() as conn:
        assert blasts.get(conn, heard[1][1]["blast_id"])["state"] == BlastState.RUNNING.value


def test_a_standby_scheduler_says_it_waits(world, settings, regions, now) -> None:
    """While another process holds the lease, a scheduler's first step tells its listener 'standby', once."""
    scheduling.LeaderLease(world, "b:2", seconds=30).hold(now)
    heard: list = []
    service = scheduling.SchedulerService(world, settings, regions, "a:1", clock=lambda: now,
                                          on_event=lambda kind, detail: heard.append((kind, detail)))  # fmt: skip
    assert not service.step() and not service.step()
    assert heard == [("standby", {"holder": "a:1"})]


# -- campaigns ------------------------------------------------------------------------------


def test_a_campaign_run_fires_once_at_its_time(world: Engine, settings, regions, now, tmp_path) -> None:
    """Monday 09:00 local: one blast of the campaign starts; calling again, as a restart would, adds none."""
    _campaign(world, tmp_path, now - timedelta(days=1))
    assert _run(world, settings, regions, now - timedelta(seconds=1)) == []
    fired = _run(world, settings, regions, now)
    assert [f["outcome"] for f in fired] == ["started"]
    assert _run(world, settings, regions, now + timedelta(minutes=1)) == []
    with world.connect() as conn:
        blast = blasts.get(conn, fired[0]["blast_id"])
    assert blast["state"] == BlastState.RUNNING.value and blast["schedule"] == "da-nang"
    assert blast["approved_by"] == "chief" and blast["recipients"] > 0
    assert blasts.utc(blast["not_after"]) == now + timedelta(hours=10)


def test_the_scheduler_restarted_mid_schedule_fires_each_run_once(world: Engine, settings, regions, now, tmp_path):
    """Over three weeks with restarts between calls, every Monday fires exactly once."""
    _campaign(world, tmp_path, now - timedelta(days=1))
    for week in range(3):
        monday = now + timedelta(weeks=week)
        for offset in (0, 30, 600):  # the leader's loop, a job wake-up, a restarted process
            service = scheduling.SchedulerService(world, settings, regions, f"p{offset}", clock=lambda m=monday,
                                                  o=offset: m + timedelta(seconds=o))  # fmt: skip
            assert service.lease.hold(monday + timedelta(seconds=offset))
            service.run_due()
            service.lease.release()
    assert [outcome for _, outcome in _runs(world)] == ["started"] * 3


def test_a_run_missed_while_everything_was_down_is_marked_not_sent(world, settings, regions, now, tmp_path) -> None:
    """Down from Sunday to Monday 12:00 with one hour of grace: the 09:00 run is recorded missed, no blast."""
    _campaign(world, tmp_path, now - timedelta(days=1))
    fired = _run(world, settings, regions, now + timedelta(hours=3))
    assert fired == [{"schedule": "da-nang", "run_at": now.isoformat(), "outcome": "missed", "blast_id": None}]
    with world.connect() as conn:
        assert conn.execute(select(func.count()).select_from(blasts_table)).scalar() == 0


def test_after_a_long_outage_only_the_latest_run_within_grace_fires(world, settings, regions, now, tmp_path) -> None:
    """Down for two weeks, back 20 minutes after a Monday 09:00: the two older Mondays are missed, this one runs."""
    _campaign(world, tmp_path, now - timedelta(weeks=2, days=1))
    fired = _run(world, settings, regions, now + timedelta(minutes=20))
    assert [(f["run_at"], f["outcome"]) for f in fired] == [
        ((now - timedelta(weeks=2)).isoformat(), "missed"),
        ((now - timedelta(weeks=1)).isoformat(), "missed"),
        (now.isoformat(), "started"),
    ]


def test_rotation_over_four_runs_gives_each_person_four_different_alerts(world, settings, regions, now, tmp_path):
    """Each weekly run sends every person the next alert of the series they have not received."""
    _campaign(world, tmp_path, now - timedelta(days=1))
    for week in range(4):
        fired = _run(world, settings, regions, now + timedelta(weeks=week))
        assert [f["outcome"] for f in fired] == ["started"]
        with world.begin() as conn:  # the week's messages went out and arrived
            conn.execute(update(deliveries).values(status="delivered"))
    with world.connect() as conn:
        got = conn.execute(select(deliveries.c.subscriber_id, alerts_table.c.slug).select_from(sent_alerts)).all()
    per_person: dict[int, list[str]] = {}
    for person, slug in got:
        per_person.setdefault(person, []).append(slug)
    assert per_person and all(len(slugs) == 4 == len(set(slugs)) for slugs in per_person.values())
    assert all(set(slugs) <= set(ROTATION) for slugs in per_person.values())


def test_rotation_starts_someone_new_at_the_first_alert_they_have_not_had(world, settings, regions, now, tmp_path):
    """A person who already received the first alert of the series by another blast gets the second."""
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    earlier = now - timedelta(days=40)
    with world.begin() as conn:
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(ROTATION[0], segment), "liaison", settings, regions,
                                    earlier)  # fmt: skip
        blasts.approve(conn, blast_id, "chief", earlier)
        blasts.start_due(conn, settings, earlier)
        conn.execute(update(deliveries).values(status="delivered"))
    _campaign(world, tmp_path, now - timedelta(days=1))
    _run(world, settings, regions, now)
    with world.connect() as conn:
        others = select(alerts_table.c.slug).select_from(sent_alerts).where(deliveries.c.blast_id != blast_id)
        slugs = set(conn.execute(others).scalars())
    assert slugs == {ROTATION[1]}


@pytest.mark.parametrize(
    ("content", "audiences", "wanted"),
    [
        pytest.param('alert = "viec-nhe-luong-cao"', "", ("student", "worker"), id="one-alert-its-audiences"),
        pytest.param('rotation = ["viec-nhe-luong-cao", "gia-danh-lanh-dao-nhan-tin"]', "",
                     ("student", "worker", "official", "leader", "business"), id="rotation-the-union-of-its-alerts"),
        pytest.param('alert = "viec-nhe-luong-cao"', 'audiences = ["tất cả"]', (), id="asked-for-all"),
    ],
)  # fmt: skip
def test_a_campaign_without_audiences_reaches_its_alerts_audiences(
    world, settings, regions, now, tmp_path, content, audiences, wanted
) -> None:
    """As a blast does: a run reaches the audiences its alerts (together, for a rotation) were written for."""
    text = WEEKLY.replace(f"rotation = {json.dumps(ROTATION)}", content).replace("[content]", f"{audiences}\n[content]")
    _campaign(world, tmp_path, now - timedelta(days=1), text)
    _run(world, settings, regions, now)
    s = subscribers.c
    meant = select(s.id).where(s.opted_out_at.is_(None))
    if wanted:
        meant = meant.where(s.audience_mask.op("&")(audience_mask({Audience.parse(a) for a in wanted})) != 0)
    with world.connect() as conn:
        sent = set(conn.execute(select(deliveries.c.subscriber_id)).scalars())
        assert sent and sent == set(conn.execute(meant).scalars())


def test_a_run_with_no_approved_alert_is_recorded_and_sends_nothing(world, settings, regions, now, tmp_path) -> None:
    """Every alert of the campaign retired: the run is recorded 'no_alert' and no blast is made."""
    _campaign(world, tmp_path, now - timedelta(days=1))
    with world.begin() as conn:
        for slug in ROTATION:
            alerts.retire(conn, slug, "chief", now)
    assert [f["outcome"] for f in _run(world, settings, regions, now)] == [RunOutcome.NO_ALERT.value]


def test_sync_asks_for_approval_again_after_a_change_and_removes_vanished_files(world, now, tmp_path) -> None:
    """A changed file waits for a second person again; a deleted one stops firing; nobody approves their own."""
    spec = _campaign(world, tmp_path, now)
    changed = parse_file(Path(spec.origin), "Asia/Ho_Chi_Minh")
    Path(spec.origin).write_text(WEEKLY.replace("09:00", "10:00"), encoding="utf-8")
    changed = parse_file(Path(spec.origin), "Asia/Ho_Chi_Minh")
    with world.begin() as conn:
        assert scheduling.sync(conn, [changed], "liaison", now)["changed"] == ["da-nang"]
        with pytest.raises(UsageError, match="bốn mắt"):
            scheduling.approve(conn, "da-nang", "liaison", now)
        assert scheduling.sync(conn, [], "liaison", now)["removed"] == ["da-nang"]
        assert scheduling.listing(conn, now)[0]["state"] == ScheduleState.REMOVED.value


def test_listing_shows_the_next_five_runs(world, now, tmp_path) -> None:
    """The next five Mondays 09:00 local, strictly after now."""
    _campaign(world, tmp_path, now - timedelta(days=1))
    with world.connect() as conn:
        shown = scheduling.listing(conn, now)
    assert shown[0]["next_runs"] == [(now + timedelta(weeks=w)).isoformat() for w in range(1, 6)]


# -- one-off blasts -------------------------------------------------------------------------


def test_a_timed_blast_starts_at_its_time_and_one_missed_while_down_is_marked(world, settings, regions, now) -> None:
    """Found at 09:30 with an hour of grace: the 09:00 blast runs late, the 08:00 one is missed, 10:00 waits."""
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    ids = {}
    with world.begin() as conn:
        for label, hours in (("ten", 1), ("nine", 0), ("eight", -1)):
            ids[label], _ = blasts.create(conn, blasts.BlastRequest(ROTATION[0], segment, channel="sms",
                                          start_at=now + timedelta(hours=hours)), "liaison", settings, regions,
                                          now - timedelta(hours=2))  # fmt: skip
            blasts.approve(conn, ids[label], "chief", now - timedelta(hours=2))
    _run(world, settings, regions, now + timedelta(minutes=30))
    with world.connect() as conn:
        states = {label: blasts.get(conn, i)["state"] for label, i in ids.items()}
        missed = conn.execute(select(func.count()).where(deliveries.c.blast_id == ids["eight"])).scalar()
    assert states == {"ten": "scheduled", "nine": "running", "eight": "missed"} and missed == 0
    _run(world, settings, regions, now + timedelta(hours=1))
    with world.connect() as conn:
        assert blasts.get(conn, ids["ten"])["state"] == "running"


def test_approving_after_the_planned_start_starts_it_on_approval(world, settings, regions, now) -> None:
    """A blast approved three hours after it was created (no --start-at) runs at approval, not 'missed'."""
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with world.begin() as conn:
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(ROTATION[0], segment), "liaison", settings, regions,
                                    now - timedelta(hours=3))  # fmt: skip
        blasts.approve(conn, blast_id, "chief", now)
    assert _run(world, settings, regions, now) == [{"blast_id": blast_id}]


# -- two real processes ---------------------------------------------------------------------


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CANHBAO_DATABASE__URL": url, "CANHBAO_LOGGING__FORMAT": "json",
            "CANHBAO_LOGGING__LEVEL": "info", "CANHBAO_SCHEDULER__LEASE_SECONDS": "2",
            "CANHBAO_SCHEDULER__RECONCILE_SECONDS": "0.3", "CANHBAO_CONFIG": str(tmp_path / "none.toml")}  # fmt: skip


def _events(stderr: str) -> list[dict]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_two_scheduler_processes_fire_each_timed_blast_once(world: Engine, settings, regions, tmp_path) -> None:
    """Two `canhbao scheduler` processes: one leads; killed, the other takes over; each blast starts once."""
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)

    def timed_blast(delay: float, alert: str = ROTATION[0]) -> int:
        start = datetime.now().astimezone()
        with world.begin() as conn:
            blast_id, _ = blasts.create(conn, blasts.BlastRequest(alert, segment, start_at=start + timedelta(
                seconds=delay)), "liaison", settings, regions, start)  # fmt: skip
            blasts.approve(conn, blast_id, "chief", start)
        return blast_id

    ids = [timed_blast(2.0), timed_blast(3.0)]
    env = _env(world.url.render_as_string(hide_password=False), tmp_path)
    command = [sys.executable, "-m", "dispatcher", "scheduler"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)  # let the first one lead
    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait(lambda: _started(world, ids) == 2, 30)
    # The third is made once both run, however slowly they started: its job is the leader's to hand over.
    ids.append(timed_blast(4.0, ROTATION[1]))  # another alert: everyone has the first one already
    _wait(lambda: f"blast:{ids[2]}" in _jobs(world) or _started(world, ids[2:]) == 1, 10)
    with world.connect() as conn:
        leader = conn.execute(select(leases.c.holder)).scalar_one()
    assert _started(world, ids[2:]) == 0, "the machine is too slow for this test: the third started already"
    killed, survivor = (first, second) if leader.endswith(f":{first.pid}") else (second, first)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    _wait(lambda: _started(world, ids) == 3, 30)
    survivor.send_signal(signal.SIGTERM)
    _, stderr = survivor.communicate(timeout=20)
    assert survivor.returncode == 0, stderr
    events = _events(stderr) + _events(killed.stderr.read())
    started = [e["blast_id"] for e in events if e.get("event") == "blast.started"]
    assert sorted(started) == ids, "a blast was started twice, or not at all"
    assert any(e.get("event") == "scheduler.leading" for e in _events(stderr))
    with world.connect() as conn:
        assert blasts.utc(conn.execute(select(leases.c.expires_at)).scalar_one()).year == 2000  # released on SIGTERM


def _jobs(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(scheduler_jobs.c.id)).scalars())


def _started(engine: Engine, ids: list[int]) -> int:
    with engine.connect() as conn:
        states = conn.execute(select(blasts_table.c.state).where(blasts_table.c.id.in_(ids))).scalars().all()
    return sum(1 for s in states if s == BlastState.RUNNING.value)


def _wait(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_a_campaign_that_cannot_run_stops_no_other(world, settings, regions, now, tmp_path) -> None:
    """A campaign whose region no longer resolves is logged and skipped; another due at the same time runs."""
    specs = []
    for name in ("da-nang", "hong"):
        (tmp_path / f"{name}.toml").write_text(WEEKLY, encoding="utf-8")
        specs.append(parse_file(tmp_path / f"{name}.toml", "Asia/Ho_Chi_Minh"))
    with world.begin() as conn:
        scheduling.sync(conn, specs, "liaison", now - timedelta(days=1))
        for spec in specs:
            scheduling.approve(conn, spec.name, "chief", now - timedelta(days=1))
    broken = specs[1]
    definition = {**broken.to_json(), "segment": {**broken.to_json()["segment"], "provinces": ["Tỉnh Không Có"]}}
    with world.begin() as conn:
        conn.execute(update(schedules).where(schedules.c.name == "hong").values(definition=definition))
    with structlog.testing.capture_logs() as logs:
        fired = _run(world, settings, regions, now)
    assert [(f["schedule"], f["outcome"]) for f in fired] == [("da-nang", "started")]
    assert any(e["event"] == "schedule.run_failed" and e["schedule"] == "hong" for e in logs)
    assert [outcome for _, outcome in _runs(world)] == ["started"]
