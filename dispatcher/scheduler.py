"""The scheduler: recurring campaigns and timed blasts, fired once by one leader among scheduler processes.

The database decides what runs; APScheduler is the alarm clock. `run_due(conn, …, now)` is the
whole decision, with time passed in: it starts the one-off blasts whose time has come and, for
each active campaign, every fire time since its last recorded run — the latest one within
`[scheduler] grace_seconds` becomes a blast, older or later ones are recorded `missed`, never sent
stale. Each fire time is recorded once (unique schedule × run_at), so a restarted or duplicated
scheduler never fires a run twice.

APScheduler 3.x does not coordinate processes sharing a job store (three processes on one store
ran each job three times when measured), so only the holder of the `scheduler` lease in the
`leases` table runs an APScheduler at all; a second `canhbao scheduler` waits on standby and takes
over when the leader stops renewing. Its jobs (one per campaign, one per timed blast) live in the
`scheduler_jobs` table through APScheduler's SQLAlchemy job store and only wake the leader at the
right moment: every job calls `run_due`, as does the leader's own loop every few seconds. That loop
also runs the periodic jobs of dispatcher/jobs.py (rollup, retention purge, statutory reports).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from dispatcher import blasts as blast_ops
from dispatcher import labels
from dispatcher.audit import audit
from dispatcher.config import Settings
from dispatcher.domain import AlertStatus, BlastState, Priority, RunOutcome, ScheduleState
from dispatcher.errors import CanhBaoError, NotAllowed, NotFound, StateError
from dispatcher.jobs import Jobs
from dispatcher.models import alerts, blasts, leases, schedule_runs, schedules
from dispatcher.regions import RegionIndex
from dispatcher.schedules import ScheduleSpec, next_runs
from dispatcher.segments import resolve

log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]
# Hears what a scheduler process does, once it is committed: ("leading" | "standby", {"holder"}),
# ("blast_started", {"blast_id"}) for a timed blast, ("campaign_run", a run as `run_due` lists it).
# The CLI turns these into status lines for a person at the terminal; the domain never prints.
Listener = Callable[[str, dict[str, Any]], None]
LEASE = "scheduler"
MAX_FIRES = 1000  # fire times looked at per campaign and call: a per-minute campaign down for a day is 1,440


# -- the leader lease -----------------------------------------------------------------------


@dataclass
class LeaderLease:
    """A named lease in the database: whoever holds it unexpired leads; renewing keeps it."""

    engine: Engine
    holder: str
    seconds: float
    name: str = LEASE

    def hold(self, now: datetime) -> bool:
        """Take or renew the lease; True while this holder leads."""
        until = now + timedelta(seconds=self.seconds)
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        with self.engine.begin() as conn:
            conn.execute(
                dialect.insert(leases)
                .values(name=self.name, holder=self.holder, expires_at=until, acquired_at=now)
                .on_conflict_do_nothing()
            )
            lease = leases.c
            mine_or_free = (lease.holder == self.holder) | (lease.expires_at < now)
            taken = conn.execute(
                update(leases).where(lease.name == self.name, mine_or_free).values(holder=self.holder, expires_at=until)
            ).rowcount
        return taken == 1

    def release(self) -> None:
        """Let a standby take over at once instead of waiting for the lease to run out."""
        past = datetime(2000, 1, 1, tzinfo=UTC)
        with self.engine.begin() as conn:
            conn.execute(
                update(leases).where(leases.c.name == self.name, leases.c.holder == self.holder).values(expires_at=past)
            )


def leads(conn: Connection, holder: str, now: datetime, name: str = LEASE) -> bool:
    """Inside a transaction: whether `holder` still holds the lease (locked on PostgreSQL until commit).

    The lock is the fence: a standby cannot take the lease over while a run it would repeat is
    being written.
    """
    query = select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    return row is not None and row.holder == holder and row.expires_at >= now


# -- campaigns in the database --------------------------------------------------------------


def sync(conn: Connection, specs: list[ScheduleSpec], actor: str, now: datetime) -> dict[str, list[str]]:
    """Store the campaigns of schedules/: new or changed ones wait for approval; vanished ones are removed."""
    stored = {row.name: row for row in conn.execute(select(schedules))}
    outcome: dict[str, list[str]] = {"added": [], "changed": [], "unchanged": [], "removed": []}
    for spec in specs:
        row = stored.pop(spec.name, None)
        state = ScheduleState.PENDING_APPROVAL if spec.enabled else ScheduleState.DISABLED
        values = {"definition": spec.to_json(), "origin": spec.origin, "content_hash": spec.content_hash,
                  "state": state.value, "synced_by": actor, "synced_at": now, "approved_by": None,
                  "approved_at": None}  # fmt: skip
        if row is None:
            conn.execute(insert(schedules).values(name=spec.name, **values))
            outcome["added"].append(spec.name)
        elif row.content_hash != spec.content_hash or row.state == ScheduleState.REMOVED.value:
            conn.execute(update(schedules).where(schedules.c.name == spec.name).values(**values))
            outcome["changed"].append(spec.name)
        else:
            outcome["unchanged"].append(spec.name)
    for name, row in stored.items():
        if row.state != ScheduleState.REMOVED.value:
            conn.execute(update(schedules).where(schedules.c.name == name).values(state=ScheduleState.REMOVED.value))
            outcome["removed"].append(name)
    audit(conn, now, actor, "schedules.sync", "schedules", {k: v for k, v in outcome.items() if k != "unchanged"})
    return outcome


def approve(conn: Connection, name: str, actor: str, now: datetime) -> None:
    """Second-person approval of a synced campaign: its runs fire from now on."""
    row = conn.execute(select(schedules).where(schedules.c.name == name)).first()
    if row is None:
        raise NotFound(f"Không có chiến dịch '{name}' (chạy 'canhbao schedules sync' trước).")
    if row.state != ScheduleState.PENDING_APPROVAL.value:
        raise StateError(f"Chiến dịch '{name}' đang '{labels.schedule_state(row.state)}': không có gì để duyệt.")
    if row.synced_by.casefold() == actor.casefold():
        raise NotAllowed(f"'{actor}' đã nạp chiến dịch '{name}': cần một người khác duyệt (nguyên tắc bốn mắt).")
    conn.execute(
        update(schedules)
        .where(schedules.c.name == name, schedules.c.content_hash == row.content_hash)
        .values(state=ScheduleState.ACTIVE.value, approved_by=actor, approved_at=now)
    )
    audit(conn, now, actor, "schedule.approve", f"schedule:{name}", {"content_hash": row.content_hash},
          before={"state": row.state}, after={"state": ScheduleState.ACTIVE.value})  # fmt: skip
    log.info("schedule.approved", schedule=name, actor=actor)


def listing(conn: Connection, now: datetime, count: int = 5) -> list[dict[str, Any]]:
    """Every campaign with its state, content, last run and next `count` fire times."""
    last = dict(conn.execute(select(schedule_runs.c.schedule, func.max(schedule_runs.c.run_at)).group_by(
        schedule_runs.c.schedule)).all())  # fmt: skip
    shown = []
    for row in conn.execute(select(schedules).order_by(schedules.c.name)):
        spec = ScheduleSpec.from_json(row.definition)
        live = row.state in (ScheduleState.ACTIVE.value, ScheduleState.PENDING_APPROVAL.value)
        shown.append({
            "name": row.name, "title": spec.title, "state": row.state, "when": spec.when, "timezone": spec.timezone,
            "segment": _segment_words(spec), "content": list(spec.alerts) or [f"method:{m}" for m in spec.methods],
            "rotation": spec.is_rotation(), "channel": spec.channel,
            "synced_by": row.synced_by, "synced_at": blast_ops.utc(row.synced_at).isoformat(),
            "approved_by": row.approved_by,
            "last_run": blast_ops.utc(last[row.name]).isoformat() if row.name in last else None,
            "next_runs": [t.astimezone(UTC).isoformat() for t in next_runs(spec.trigger(), now, count)] if live else [],
        })  # fmt: skip
    return shown


def _segment_words(spec: ScheduleSpec) -> list[str]:
    """Who a campaign reaches, as a Vietnamese reader reads it: places as written, then audiences, carriers, channel."""
    s = spec.segment
    words = [*s.provinces, *s.communes, *s.legacy_districts]
    if s.audiences:
        words.append(f"đối tượng: {labels.audiences(s.audiences)}")
    if s.carriers:
        words.append(f"nhà mạng: {labels.carriers(s.carriers)}")
    if spec.channel != "sms":  # SMS is the default; only another channel is worth the width
        words.append(f"kênh: {labels.channel(spec.channel)}")
    return words


# -- deciding what runs ---------------------------------------------------------------------


def run_due(conn: Connection, settings: Settings, regions: RegionIndex, now: datetime) -> list[dict[str, Any]]:
    """Start due one-off blasts and fire (or mark missed) every campaign run due by `now`."""
    fired = [{"blast_id": blast_id} for blast_id in blast_ops.start_due(conn, settings, now)]
    for row in conn.execute(select(schedules).where(schedules.c.state == ScheduleState.ACTIVE.value)).all():
        try:
            with conn.begin_nested():  # one campaign that cannot run (a region renamed…) stops no other
                fired += _run_campaign(conn, row, settings, regions, now)
        except CanhBaoError as exc:
            log.error("schedule.run_failed", schedule=row.name, error=str(exc))
    return fired


def _run_campaign(conn: Connection, row: Any, settings: Settings, regions: RegionIndex, now: datetime) -> list[dict]:
    """Every fire time of one campaign since its last run: the latest within the grace fires, the rest are missed."""
    spec = ScheduleSpec.from_json(row.definition)
    last = conn.execute(select(func.max(schedule_runs.c.run_at)).where(schedule_runs.c.schedule == row.name))
    since = blast_ops.utc(last.scalar()) or blast_ops.utc(row.approved_at)
    due = next_runs(spec.trigger(), since, MAX_FIRES, until=now)
    grace = timedelta(seconds=settings.scheduler.grace_seconds)
    outcomes = []
    for run_at in due:
        if run_at == due[-1] and now - run_at <= grace:
            outcomes.append(fire(conn, row, spec, run_at, settings, regions, now))
        else:
            outcomes.append(_record(conn, row.name, run_at, RunOutcome.MISSED, now))
    return [o for o in outcomes if o]


def _record(
    conn: Connection, name: str, run_at: datetime, outcome: RunOutcome, now: datetime, blast_id: int | None = None
) -> dict[str, Any] | None:
    """Claim fire time `run_at` of campaign `name` with its outcome; None if it was recorded before."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    added = conn.execute(
        dialect.insert(schedule_runs)
        .values(schedule=name, run_at=run_at, outcome=outcome.value, blast_id=blast_id, recorded_at=now)
        .on_conflict_do_nothing()
        .execution_options(preserve_rowcount=True)
    ).rowcount
    if not added:
        return None
    level = log.warning if outcome is RunOutcome.MISSED else log.info
    level("schedule.run", schedule=name, run_at=run_at.astimezone(UTC).isoformat(), outcome=outcome.value)
    return {"schedule": name, "run_at": run_at.astimezone(UTC).isoformat(), "outcome": outcome.value,
            "blast_id": blast_id}  # fmt: skip


def fire(
    conn: Connection, row: Any, spec: ScheduleSpec, run_at: datetime, settings: Settings, regions: RegionIndex,
    now: datetime,
) -> dict[str, Any] | None:  # fmt: skip
    """One run of a campaign: a blast of its content to its segment, approved by the campaign's approver, started."""
    series = _series(conn, spec)
    if not series:
        return _record(conn, row.name, run_at, RunOutcome.NO_ALERT, now)
    recorded = _record(conn, row.name, run_at, RunOutcome.STARTED, now)
    if recorded is None:
        return None  # fired already, by this process before a restart or by another
    first = conn.execute(select(alerts).where(alerts.c.id == series[0][1])).mappings().one()
    urgent = not spec.is_rotation() and first["priority"] == Priority.URGENT.value
    segment = blast_ops.for_alert(resolve(spec.segment, regions), _audiences(conn, series))
    shown = {"alert": {"id": first["slug"], "version": first["version"], "title": first["title"]},
             "segment": list(segment.labels), "recipients": 0, "schedule": row.name,
             "run_at": run_at.astimezone(UTC).isoformat(),
             "series": [slug for slug, _ in series]}  # fmt: skip
    if spec.is_rotation():
        shown["alert"] = {"id": f"xoay vòng {len(series)} mẫu", "version": None, "title": spec.title}
    blast_id = conn.execute(insert(blasts).values(
        alert_id=first["id"], series=series if spec.is_rotation() else None, schedule=row.name,
        segment=segment.to_json(), channel=spec.channel, encoding=spec.encoding,
        start_at=run_at, not_after=run_at + timedelta(hours=spec.valid_hours), rate=spec.rate,
        priority=1 if urgent else 0, state=BlastState.SCHEDULED.value, preview=shown,
        created_by=row.synced_by, approved_by=row.approved_by, created_at=now, approved_at=now,
    )).inserted_primary_key[0]  # fmt: skip
    conn.execute(update(schedule_runs).where(schedule_runs.c.schedule == row.name, schedule_runs.c.run_at == run_at)
                 .values(blast_id=blast_id))  # fmt: skip
    audit(conn, now, "scheduler", "schedule.run", f"schedule:{row.name}", {"blast": blast_id, "run_at": str(run_at)})
    blast_ops.start(conn, blast_ops.get(conn, blast_id), settings, now)
    return {**recorded, "blast_id": blast_id}


def _audiences(conn: Connection, series: list[list[Any]]) -> set[str]:
    """Every audience the series' alerts were written for: a run without its own reaches those, as a blast does."""
    found = conn.execute(select(alerts.c.audiences).where(alerts.c.id.in_([alert_id for _, alert_id in series])))
    return {audience for audiences in found.scalars() for audience in audiences}


def _series(conn: Connection, spec: ScheduleSpec) -> list[list[Any]]:
    """[slug, approved alert id] of the campaign's content, in order: its alerts, or every alert of its methods."""
    a = alerts.c
    approved = select(a.slug, a.id).where(a.status == AlertStatus.APPROVED.value)
    if spec.alerts:
        found = dict(conn.execute(approved.where(a.slug.in_(spec.alerts))).all())
        return [[slug, found[slug]] for slug in spec.alerts if slug in found]
    return [[slug, i] for slug, i in conn.execute(approved.where(a.method.in_(spec.methods)).order_by(a.slug))]


# -- the running service --------------------------------------------------------------------

# APScheduler keeps jobs by the textual reference of an importable function; that function finds
# this process's service here (one per process).
_SERVICE: dict[str, SchedulerService] = {}


def _wake() -> None:
    """What every APScheduler job calls: decide and fire what is due now."""
    service = _SERVICE.get("running")
    if service is not None:
        service.run_due()


@dataclass
class SchedulerService:
    """A scheduler process: holds or waits for the lease; while leading, runs APScheduler and `run_due`."""

    engine: Engine
    settings: Settings
    regions: RegionIndex
    holder: str
    clock: Clock = field(default=lambda: datetime.now(UTC))
    on_event: Listener = field(default=lambda kind, detail: None)
    _aps: BackgroundScheduler | None = None
    _leading: bool | None = None  # as the last step found it: None before the first
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _jobs_thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.lease = LeaderLease(self.engine, self.holder, self.settings.scheduler.lease_seconds)
        self.jobs = Jobs(self.engine, self.settings, self.regions)

    def step(self) -> bool:
        """Renew or take the lease; while leading, align the jobs with the database, run what is due and the
        periodic jobs (rollup, purge, statutory reports)."""
        leading = self.lease.hold(self.clock())
        if leading != self._leading:
            self._change(leading)
        if leading:
            self._reconcile()
            self.run_due()
            self._start_jobs()
        return leading

    def _start_jobs(self) -> None:
        """The periodic jobs on a thread of their own: preparing a report takes seconds, a campaign must not wait."""
        if self._jobs_thread is None or not self._jobs_thread.is_alive():
            self._jobs_thread = threading.Thread(target=self._jobs_round, name="scheduler-jobs", daemon=True)
            self._jobs_thread.start()

    def _jobs_round(self) -> None:
        try:
            self.jobs.run(self.clock())
        except OperationalError as exc:  # database locked or down: the next round tries again
            log.warning("scheduler.database_unavailable", error=str(exc.orig))

    def wait_for_jobs(self) -> None:
        """Until the round of periodic jobs under way (if any) has finished."""
        if self._jobs_thread is not None:
            self._jobs_thread.join()

    def _change(self, leading: bool) -> None:
        """Start or stop the alarm clock as the lease came or went, and say so before any run it fires."""
        if leading and self._aps is None:
            self._start_aps()
        elif not leading and self._aps is not None:
            log.warning("scheduler.lost_lease", holder=self.holder)
            self._stop_aps()
        log.info("scheduler.leading" if leading else "scheduler.standby", holder=self.holder)
        self.on_event("leading" if leading else "standby", {"holder": self.holder})
        self._leading = leading

    def run_due(self) -> list[dict[str, Any]]:
        """`run_due` at the clock's now, only while this process still leads; `on_event` hears each run committed."""
        with self._lock:
            fired = self._run_due_leading()
        for item in fired:
            self.on_event("campaign_run" if "schedule" in item else "blast_started", item)
        return fired

    def _run_due_leading(self) -> list[dict[str, Any]]:
        with self.engine.begin() as conn:
            now = self.clock()
            if not leads(conn, self.holder, now):
                return []
            return run_due(conn, self.settings, self.regions, now)

    def serve(self, stop: threading.Event) -> None:
        """Lead or stand by until `stop` is set; then stop APScheduler and hand the lease back."""
        _SERVICE["running"] = self
        try:
            while not stop.is_set():
                try:
                    self.step()
                except OperationalError as exc:  # database locked or down: wait and go on
                    log.warning("scheduler.database_unavailable", error=str(exc.orig))
                    stop.wait(1.0)
                    continue
                stop.wait(min(self.settings.scheduler.reconcile_seconds, self.settings.scheduler.lease_seconds / 3))
        finally:
            self._stop_aps()
            self.wait_for_jobs()
            self.lease.release()
            _SERVICE.pop("running", None)
            log.info("scheduler.stopped", holder=self.holder)

    def _start_aps(self) -> None:
        store = SQLAlchemyJobStore(engine=self.engine, tablename="scheduler_jobs")
        grace = max(1, int(self.settings.scheduler.grace_seconds))
        self._aps = BackgroundScheduler(
            jobstores={"default": store}, timezone=self.settings.app.timezone,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
        )  # fmt: skip
        self._aps.start()

    def _stop_aps(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=True)
            self._aps = None

    def _reconcile(self) -> None:
        """One job per active campaign and per future timed blast; nothing else."""
        assert self._aps is not None
        wanted = self._wanted_jobs(self.clock())
        for job in self._aps.get_jobs():
            if job.id not in wanted or str(job.trigger) != str(wanted[job.id]):
                job.remove()
        present = {job.id for job in self._aps.get_jobs()}
        for job_id, trigger in wanted.items():
            if job_id not in present:
                self._aps.add_job(_wake, trigger, id=job_id, name=job_id, replace_existing=True)

    def _wanted_jobs(self, now: datetime) -> dict[str, Any]:
        with self.engine.connect() as conn:
            campaigns = conn.execute(select(schedules.c.name, schedules.c.definition).where(
                schedules.c.state == ScheduleState.ACTIVE.value)).all()  # fmt: skip
            timed = conn.execute(select(blasts.c.id, blasts.c.start_at).where(
                blasts.c.state == BlastState.SCHEDULED.value, blasts.c.start_at > now)).all()  # fmt: skip
        wanted: dict[str, Any] = {f"schedule:{n}": ScheduleSpec.from_json(d).trigger() for n, d in campaigns}
        wanted |= {f"blast:{i}": DateTrigger(run_date=blast_ops.utc(at)) for i, at in timed}
        return wanted
