"""The scheduler's periodic jobs: the rollup every few minutes, the retention purge daily, the statutory reports.

Each job has slots (a rollup's is its few minutes, a purge's its local day, a report's its year)
and claims a slot once in `job_marks`, moving the job's mark forward only if it is behind; so a
restarted scheduler, or a second one that believes it leads, never runs a slot twice. The report
claims its slot in the same transaction that writes its work, the purge once its last slice is
committed (it deletes in slices: dispatcher/retention.py): what failed is not marked and is tried
again, after a pause, by the next round, which carries a half-done purge on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dispatcher import prepared, retention, rollups
from dispatcher.config import Settings
from dispatcher.models import job_marks
from dispatcher.regions import RegionIndex

log = structlog.get_logger(__name__)
RETRY = timedelta(minutes=10)  # a job that failed (a PDF library missing…) waits this long in this process


def claim(conn: Connection, job: str, mark: str, now: datetime) -> bool:
    """Move `job`'s mark forward to `mark` (sortable text); False if it was there already or beyond."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(job_marks).values(job=job, mark="", ran_at=now).on_conflict_do_nothing())
    moved = conn.execute(
        update(job_marks).where(job_marks.c.job == job, job_marks.c.mark < mark).values(mark=mark, ran_at=now)
    )
    return moved.rowcount == 1


def marks(conn: Connection) -> dict[str, str]:
    """The last slot each job ran."""
    return dict(conn.execute(select(job_marks.c.job, job_marks.c.mark)).all())


@dataclass
class Jobs:
    """The periodic jobs of one scheduler process; `run(now)` runs those whose slot has come and is not taken."""

    engine: Engine
    settings: Settings
    regions: RegionIndex
    _retry_at: dict[str, datetime] = field(default_factory=dict)

    def run(self, now: datetime) -> list[dict[str, Any]]:
        """Run every due job; one failing is logged and tried again later, and stops no other."""
        with self.engine.connect() as conn:
            last = marks(conn)
        done = []
        for job, step in self._steps():
            if self._retry_at.get(job, now) > now:
                continue
            try:
                result = step(now, last.get(job, ""))
            except Exception as exc:  # noqa: BLE001  (a job must never stop the scheduler's campaigns)
                log.error("job.failed", job=job, error=str(exc) or type(exc).__name__)
                self._retry_at[job] = now + RETRY
                continue
            if result is not None:
                done.append({"job": job, **result})
        return done

    def _steps(self) -> list[tuple[str, Callable[[datetime, str], dict[str, Any] | None]]]:
        steps: list[tuple[str, Callable[[datetime, str], dict[str, Any] | None]]] = [
            ("rollup", self.rollup), ("purge", self.purge)
        ]  # fmt: skip
        for kind in prepared.Kind:
            steps.append((f"prepare:{kind.value}", lambda now, last, kind=kind: self.prepare(kind, now, last)))
        return steps

    def rollup(self, now: datetime, last: str) -> dict[str, Any] | None:
        """Every `[reports] rollup_minutes`: add what finished to the rollups."""
        minutes = self.settings.reports.rollup_minutes
        if not minutes:
            return None
        seconds = minutes * 60
        slot = datetime.fromtimestamp(now.timestamp() // seconds * seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if slot <= last:
            return None
        with self.engine.begin() as conn:
            if not claim(conn, "rollup", slot, now):
                return None
        done = rollups.run(self.engine, self.settings.app.timezone, now)
        log.info("job.rollup", blasts=done.blasts, closed=done.closed, deliveries=done.deliveries)
        return {"blasts": done.blasts, "closed": done.closed, "deliveries": done.deliveries}

    def purge(self, now: datetime, last: str) -> dict[str, Any] | None:
        """Once a local day from `[reports] purge_at`: delete deliveries past retention, audited as the CLI does."""
        at = self.settings.reports.purge_at
        local = now.astimezone(ZoneInfo(self.settings.app.timezone))
        if not at or local.time() < time.fromisoformat(at.zfill(5)) or local.date().isoformat() <= last:
            return None
        rollups.run(self.engine, self.settings.app.timezone, now)  # only what the rollups hold may go
        keep = self.settings.reports
        done = retention.purge(self.engine, now, keep.retention_months, prepared.SCHEDULER,
                               slice_rows=keep.purge_slice_rows)  # fmt: skip
        with self.engine.begin() as conn:
            if not claim(conn, "purge", local.date().isoformat(), now):
                return None  # another scheduler purged too: the slices of both are audited, once, by one
        log.info("job.purge", deliveries=done.deliveries, blasts=done.blasts, inbox=done.inbox,
                 cutoff=done.cutoff.isoformat())  # fmt: skip
        return {"deliveries": done.deliveries, "blasts": done.blasts, "inbox": done.inbox,
                "cutoff": done.cutoff.isoformat()}  # fmt: skip

    def prepare(self, kind: prepared.Kind, now: datetime, last: str) -> dict[str, Any] | None:
        """From its preparation day to its deadline, once a year: prepare statutory report `kind` and keep it."""
        today = now.astimezone(ZoneInfo(self.settings.app.timezone)).date()
        prepare_on, deadline = prepared.schedule(self.settings, kind, today.year)
        if not prepare_on <= today <= deadline or str(today.year) <= last:
            return None
        made = prepared.draft(self.engine, self.settings, self.regions, kind, today.year, now, prepared.SCHEDULER)
        with self.engine.begin() as conn:
            if not claim(conn, f"prepare:{kind.value}", str(today.year), now):
                return None
            kept = prepared.store(conn, made)
        return {"id": kept.id, "kind": kind.value, "year": kept.year, "version": kept.version}
