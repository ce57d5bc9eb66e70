"""Retention (personal data law): delivery rows, which hold phone numbers, are purged after a period.

Only deliveries of blasts the rollup job has closed go (every figure of theirs is in the rollups),
so a report over a purged period comes out the same. Texts received (the inbox, with the sender's
number) and the ids kept to handle each text once go after the same period. Each purge is audited.
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
_WITH_IDS = ("delivery_attempts", "delivery_reports", "provider_refs", "receipt_waits", "message_parts")


@dataclass(frozen=True)
class Purge:
    """What a purge removed (or, in a dry run, would remove)."""

    cutoff: datetime
    deliveries: int
    blasts: int
    dry_run: bool
    inbox: int = 0  # texts received before the cutoff


def cutoff(now: datetime, months: int) -> datetime:
    """`months` calendar months before `now` (the last day of a shorter month when the day does not exist)."""
    total = now.year * 12 + now.month - 1 - months
    year, month = divmod(total, 12)
    return now.replace(year=year, month=month + 1, day=min(now.day, calendar.monthrange(year, month + 1)[1]))


def purge(conn: Connection, now: datetime, months: int, actor: str, dry_run: bool = False) -> Purge:
    """Delete deliveries (with their attempts, reports, refs and parts) older than `months`, of closed blasts only,
    and the texts received before then."""
    limit = cutoff(now, months)
    params = {"cutoff": driver_time(conn.dialect.name, limit)}
    found = conn.execute(text(f"SELECT count(*), count(DISTINCT blast_id) {_OLD}"), params).one()
    received = conn.execute(text("SELECT count(*) FROM inbox WHERE received_at < :cutoff"), params).scalar_one()
    result = Purge(limit, found[0], found[1], dry_run, received)
    if dry_run:
        return result
    if found[0]:
        for table in _WITH_IDS:
            conn.execute(text(f"DELETE FROM {table} WHERE delivery_id IN (SELECT id {_OLD})"), params)
        conn.execute(text(f"DELETE {_OLD}"), params)
    for table in ("inbox", "inbound_ids"):
        conn.execute(text(f"DELETE FROM {table} WHERE received_at < :cutoff"), params)
    if found[0] or received:
        audit(conn, now, actor, "deliveries.purge", "deliveries",
              {"cutoff": limit.isoformat(), "deliveries": result.deliveries, "blasts": result.blasts,
               "inbox": received})  # fmt: skip
    return result
