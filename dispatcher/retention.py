"""Retention (personal data law): delivery rows, which hold phone numbers, are purged after a period.

Only deliveries of blasts the rollup job has closed go (every figure of theirs is in the rollups),
so a report over a purged period comes out the same. Texts received (the inbox, with the sender's
number) and the ids kept to handle each text once go after the same period. Each purge is audited.

A purge deletes in slices of a few thousand deliveries (with their attempts, reports, refs and
parts), each its own transaction: the first purge of millions of rows would otherwise hold
SQLite's write lock for minutes and stall the workers and the webhooks. Each slice adds what it
deleted to its run's row (`purge_runs`) in the same transaction, so a purge killed between
slices leaves whole deliveries only, and the next purge carries the run on and audits it once.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text, update

from dispatcher.audit import audit
from dispatcher.db import driver_time
from dispatcher.models import purge_runs

SLICE_ROWS = 5000  # deliveries a transaction: tens of milliseconds of write lock on SQLite
# Between two slices on SQLite: a writer waiting for the lock retries every 100 ms at most (SQLite's
# busy handler), and a purge starting its next slice at once took the lock first again and again.
SLICE_PAUSE = 0.1

# `+blast_id`: not the (blast_id, subscriber_id) index, which SQLite otherwise prefers to the id range
# of a slice, reading every delivery of the closed blasts again for each slice.
_OLD_WHERE = (
    "COALESCE(finished_at, sent_at, next_attempt_at) < :cutoff AND +blast_id IN "
    "(SELECT blast_id FROM rollup_blasts WHERE closed_at IS NOT NULL)"
)
_OLD = f"FROM deliveries WHERE {_OLD_WHERE}"
_NEXT = f"SELECT id, blast_id, gateway, provider_id {_OLD} AND id > :after ORDER BY id LIMIT :rows"
_SLICE = f"FROM deliveries WHERE id BETWEEN :lo AND :hi AND {_OLD_WHERE}"
_BY_DELIVERY = ("delivery_attempts", "delivery_reports", "receipt_waits", "message_parts")
# provider_refs has no index on delivery_id (it is written on every send): its rows go by their key,
# the (gateway, id) pairs the slice's deliveries and their attempts carry.
_ATTEMPT_REFS = (
    "SELECT gateway, provider_id, delivery_id FROM delivery_attempts "
    "WHERE delivery_id BETWEEN :lo AND :hi AND provider_id IS NOT NULL"
)
_REF = "DELETE FROM provider_refs WHERE gateway = :g AND provider_id = :p AND delivery_id = :i"
_INBOX = (
    "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE received_at < :cutoff ORDER BY received_at LIMIT :rows)"
)
_INBOUND_IDS = (
    "DELETE FROM inbound_ids WHERE (gateway, provider_id) IN "
    "(SELECT gateway, provider_id FROM inbound_ids WHERE received_at < :cutoff LIMIT :rows)"
)


@dataclass(frozen=True)
class Purge:
    """What a purge removed (or, in a dry run, would remove); a purge carried on counts its first part too."""

    cutoff: datetime
    deliveries: int
    blasts: int
    dry_run: bool
    inbox: int = 0  # texts received before the cutoff
    slices: int = 0  # transactions that deleted something


def cutoff(now: datetime, months: int) -> datetime:
    """`months` calendar months before `now` (the last day of a shorter month when the day does not exist)."""
    total = now.year * 12 + now.month - 1 - months
    year, month = divmod(total, 12)
    return now.replace(year=year, month=month + 1, day=min(now.day, calendar.monthrange(year, month + 1)[1]))


def purge(
    engine: Engine,
    now: datetime,
    months: int,
    actor: str,
    dry_run: bool = False,
    slice_rows: int = SLICE_ROWS,
    pause: Callable[[float], None] = time.sleep,
) -> Purge:
    """Delete deliveries (with their attempts, reports, refs and parts) older than `months`, of closed blasts only,
    and the texts received before then: slice by slice, audited once at the end."""
    if dry_run:
        with engine.connect() as conn:
            return found(conn, now, months)
    gap = SLICE_PAUSE if engine.dialect.name == "sqlite" else 0.0
    for _ in slices(engine, now, months, actor, slice_rows):
        pause(gap)
    return finish(engine, now, actor)


def found(conn: Connection, now: datetime, months: int) -> Purge:
    """What a purge at `now` would delete (a dry run)."""
    limit = cutoff(now, months)
    params = {"cutoff": driver_time(conn.dialect.name, limit)}
    old = conn.execute(text(f"SELECT count(*), count(DISTINCT blast_id) {_OLD}"), params).one()
    received = conn.execute(text("SELECT count(*) FROM inbox WHERE received_at < :cutoff"), params).scalar_one()
    return Purge(limit, old[0], old[1], True, received)


def slices(engine: Engine, now: datetime, months: int, actor: str, slice_rows: int = SLICE_ROWS) -> Iterator[int]:
    """Delete what is past retention one committed slice at a time, yielding the run's deliveries deleted so far.

    Stopping between two yields (a kill) leaves a consistent database; `finish` is not to be called then."""
    limit = cutoff(now, months)
    run = _open_run(engine, now, actor, limit)
    params: dict[str, Any] = {"rows": slice_rows, "after": 0}
    while True:
        with engine.begin() as conn:
            params["cutoff"] = driver_time(conn.dialect.name, limit)
            total = _delivery_slice(conn, run, params)
        if total is None:
            break
        yield total
    for sql in (_INBOX, _INBOUND_IDS):
        while True:
            with engine.begin() as conn:
                gone = conn.execute(text(sql), params).rowcount
                if gone and sql == _INBOX:
                    _add(conn, run, {"inbox": purge_runs.c.inbox + gone, "slices": purge_runs.c.slices + 1})
            if gone < slice_rows:
                break


def finish(engine: Engine, now: datetime, actor: str) -> Purge:
    """Close the open purge run and audit it once with its totals (nothing deleted: no audit entry)."""
    r = purge_runs.c
    with engine.begin() as conn:
        run = conn.execute(select(purge_runs).where(r.finished_at.is_(None)).order_by(r.id)).first()
        if run is None or not conn.execute(update(purge_runs).where(r.id == run.id, r.finished_at.is_(None))
                                           .values(finished_at=now)).rowcount:  # fmt: skip
            return Purge(now, 0, 0, False)  # another purge finished it meanwhile
        blasts = len({b for b in run.blast_ids.split(",") if b})
        done = Purge(run.cutoff, run.deliveries, blasts, False, run.inbox, run.slices)
        if run.deliveries or run.inbox:
            detail = {"cutoff": run.cutoff.isoformat(), "deliveries": run.deliveries, "blasts": blasts,
                      "inbox": run.inbox}  # fmt: skip
            audit(conn, now, actor, "deliveries.purge", "deliveries", detail)
    return done


def _open_run(engine: Engine, now: datetime, actor: str, limit: datetime) -> int:
    """The purge run left open by a purge killed between slices (now with cutoff `limit`), else a new one."""
    r = purge_runs.c
    with engine.begin() as conn:
        left = conn.execute(select(r.id).where(r.finished_at.is_(None)).order_by(r.id)).scalar()
        if left is not None:
            conn.execute(update(purge_runs).where(r.id == left).values(cutoff=limit))
            return left
        fresh = {"started_at": now, "actor": actor, "cutoff": limit, "slices": 0, "deliveries": 0, "inbox": 0,
                 "blast_ids": ""}  # fmt: skip
        return conn.execute(insert(purge_runs).values(**fresh)).inserted_primary_key[0]


def _delivery_slice(conn: Connection, run: int, params: dict[str, Any]) -> int | None:
    """Delete the next slice of old deliveries with everything about them; the run's total, None when none is left."""
    rows = conn.execute(text(_NEXT), params).all()
    if not rows:
        return None
    params.update(lo=rows[0].id, hi=rows[-1].id, after=rows[-1].id)
    ids = {row.id for row in rows}
    attempts = conn.execute(text(_ATTEMPT_REFS), params).all()
    refs = {(g, p, i) for i, _, g, p in rows if p} | {(g, p, i) for g, p, i in attempts if i in ids}
    if refs:
        conn.execute(text(_REF), [{"g": g, "p": p, "i": i} for g, p, i in refs])
    for table in _BY_DELIVERY:
        conn.execute(text(f"DELETE FROM {table} WHERE delivery_id BETWEEN :lo AND :hi AND delivery_id IN "
                          f"(SELECT id {_SLICE})"), params)  # fmt: skip
    gone = conn.execute(text(f"DELETE {_SLICE}"), params).rowcount
    # Locked: a second purge at the same moment (the CLI beside the scheduler) adds its blasts after ours.
    known = conn.execute(select(purge_runs.c.blast_ids).where(purge_runs.c.id == run).with_for_update()).scalar_one()
    merged = ",".join(sorted({str(row.blast_id) for row in rows} | {b for b in known.split(",") if b}, key=int))
    _add(conn, run, {"deliveries": purge_runs.c.deliveries + gone, "slices": purge_runs.c.slices + 1,
                     "blast_ids": merged})  # fmt: skip
    return conn.execute(select(purge_runs.c.deliveries).where(purge_runs.c.id == run)).scalar_one()


def _add(conn: Connection, run: int, values: dict[str, Any]) -> None:
    """Add a slice's work to its run, in the slice's transaction."""
    conn.execute(update(purge_runs).where(purge_runs.c.id == run).values(**values))
