"""Retention (personal data law): delivery rows, which hold phone numbers, are purged after a period.

Only deliveries of blasts the rollup job has closed go (every figure of theirs is in the rollups),
so a report over a purged period comes out the same. Each purge is audited.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from dispatcher.audit import audit
from dispatcher.db import driver_time

_OLD = (
    "FROM deliveries WHERE COALESCE(finished_at, sent_at, next_attempt_at) < :cutoff AND blast_id IN "
    "(SELECT blast_id FROM rollup_blasts WHERE closed_at IS NOT NULL)"
)
_WITH_IDS = ("delivery_attempts", "delivery_reports", "provider_refs", "receipt_waits")


@dataclass(frozen=True)
class Purge:
    """What a purge removed (or, in a dry run, would remove)."""

    cutoff: datetime
    deliveries: int
    blasts: int
    dry_run: bool


def cutoff(now: datetime, months: int) -> datetime:
    """`months` calendar months before `now` (the last day of a shorter month when the day does not exist)."""
    total = now.year * 12 + now.month - 1 - months
    year, month = divmod(total, 12)
    return now.replace(year=year, month=month + 1, day=min(now.day, calendar.monthrange(year, month + 1)[1]))


def purge(conn: Connection, now: datetime, months: int, actor: str, dry_run: bool = False) -> Purge:
    """Delete deliveries (and their attempts, reports and refs) older than `months`, of closed blasts only."""
    limit = cutoff(now, months)
    params = {"cutoff": driver_time(conn.dialect.name, limit)}
    found = conn.execute(text(f"SELECT count(*), count(DISTINCT blast_id) {_OLD}"), params).one()
    result = Purge(limit, found[0], found[1], dry_run)
    if dry_run or not found[0]:
        return result
    for table in _WITH_IDS:
        conn.execute(text(f"DELETE FROM {table} WHERE delivery_id IN (SELECT id {_OLD})"), params)
    conn.execute(text(f"DELETE {_OLD}"), params)
    audit(conn, now, actor, "deliveries.purge", "deliveries",
          {"cutoff": limit.isoformat(), "deliveries": result.deliveries, "blasts": result.blasts})  # fmt: skip
    return result
