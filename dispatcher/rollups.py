"""The rollup job: final deliveries added once to the daily facts and the reach tables a report reads.

Each run looks at the blasts not closed yet. A blast's final deliveries not in `rollup_seen` are
added to `delivery_facts` and their ids to `rollup_seen` in the same transaction, so a re-run
changes nothing; a concurrent run on the same blast stops at the blast's `rollup_blasts` row (or
at `rollup_seen`'s primary key) and adds nothing. What is not final yet is kept apart, replaced at
each run (`rollup_pending`). A blast that ended with every delivery final is closed: never read
again, its `rollup_seen` rows dropped (or never written, when it closes in the run that adds them).

People reached (`reach_rows`, `reach_counts`): each row carries the day the person was reached
before it, so a period counts each person once without reading anyone's history. A late report
that reaches someone on a day before days already counted re-links that person's later rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from dispatcher.domain import FINAL_DELIVERY_STATES, BlastState, DeliveryStatus
from dispatcher.models import blasts, job_marks, rollup_blasts

FINAL = ", ".join(f"'{s.value}'" for s in sorted(FINAL_DELIVERY_STATES))
ENDED = (BlastState.COMPLETED, BlastState.CANCELLED, BlastState.EXPIRED, BlastState.MISSED)
FACT_KEYS = "day, blast_id, alert_id, province_code, commune_code, carrier, channel, status, audience_mask"
REACH_KEYS = "scope, key, day, prev_day, province_code, commune_code, audience_mask"
# Zalo that fell back to SMS is its own channel in reports: the delivery's channel says the fallback.
CHANNEL = "CASE WHEN b.channel = 'sms' THEN 'sms' WHEN d.channel = 'sms' THEN 'zalo_sms' ELSE 'zalo' END"
# The job_marks row of the last complete run, from whoever ran it (scheduler, CLI, console): a
# page reads the rollups as they are and says "as of" its time rather than rolling up on each view.
ROLLED = "rolled_up"


@dataclass(frozen=True)
class RollupRun:
    """What one run did: blasts looked at and closed, deliveries and people-days added."""

    blasts: int
    closed: int
    deliveries: int
    reached: int


def local_day(dialect: str, column: str, zone: str) -> str:
    """SQL for the local date (yyyymmdd integer) of a UTC timestamp column in `zone`.

    SQLite has no time zones: the zone's offset now is used, exact for zones without daylight
    saving (Asia/Ho_Chi_Minh has kept +07:00 since 1975).
    """
    if dialect == "postgresql":
        return f"CAST(to_char({column} AT TIME ZONE '{ZoneInfo(zone).key}', 'YYYYMMDD') AS INTEGER)"
    offset = datetime.now(ZoneInfo(zone)).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    return f"CAST(strftime('%Y%m%d', {column}, '{minutes:+d} minutes') AS INTEGER)"


def run(engine: Engine, zone: str, now: datetime) -> RollupRun:
    """Roll up every open blast, one transaction each; re-running changes nothing."""
    with engine.connect() as conn:
        open_ids = conn.execute(
            select(blasts.c.id)
            .outerjoin(rollup_blasts, rollup_blasts.c.blast_id == blasts.c.id)
            .where(blasts.c.started_at.is_not(None), rollup_blasts.c.closed_at.is_(None))
            .order_by(blasts.c.id)
        ).scalars().all()  # fmt: skip
    closed = added = reached = 0
    for blast_id in open_ids:
        try:
            with engine.begin() as conn:
                done, n, people = roll_blast(conn, blast_id, zone, now)
        except (Raced, IntegrityError):  # another run took this blast at the same moment: its work stands
            continue
        closed, added, reached = closed + done, added + n, reached + people
    _stamp(engine, now)
    return RollupRun(len(open_ids), closed, added, reached)


def as_of(conn: Connection) -> datetime | None:
    """When the last complete run started: the rollups hold every delivery final by then (None: never run)."""
    return conn.execute(select(job_marks.c.ran_at).where(job_marks.c.job == ROLLED)).scalar()


def _stamp(engine: Engine, now: datetime) -> None:
    """Record a complete run started at `now`; an older run finishing later leaves the newer time."""
    mark = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with engine.begin() as conn:
        conn.execute(dialect.insert(job_marks).values(job=ROLLED, mark="", ran_at=now).on_conflict_do_nothing())
        conn.execute(update(job_marks).where(job_marks.c.job == ROLLED, job_marks.c.mark < mark)
                     .values(mark=mark, ran_at=now))  # fmt: skip


def roll_blast(conn: Connection, blast_id: int, zone: str, now: datetime) -> tuple[bool, int, int]:
    """(closed, deliveries added, people-days added) of rolling one blast up inside `conn`'s transaction."""
    day = local_day(conn.dialect.name, "COALESCE(d.sent_at, d.finished_at, b.started_at)", zone)
    _temp(conn, "rollup_batch", _batch_sql(day, blast_id))
    added = conn.exec_driver_sql("SELECT count(*) FROM rollup_batch").scalar_one()
    pending = _replace_pending(conn, blast_id, day)
    closed = pending == 0 and _ended(conn, blast_id)
    _mark(conn, blast_id, now, closed)  # first: the blast's row, locked, keeps a second run out
    if added:
        _add_facts(conn, "delivery_facts", "rollup_batch", upsert=True)
        if not closed:  # a closed blast is never read again: its ids need not be kept
            conn.exec_driver_sql(
                "INSERT INTO rollup_seen (delivery_id, blast_id) SELECT id, blast_id FROM rollup_batch"
            )
    people = _add_reach(conn) if added else 0
    return closed, added, people


SEEN_SQL = "INSERT INTO rollup_seen (delivery_id, blast_id) SELECT id, blast_id FROM rollup_batch"


def _batch_sql(day: str, blast_id: int) -> str:
    """The blast's final deliveries not counted yet, with the dimensions of the facts (an id inlined:
    PostgreSQL takes no parameters in CREATE TABLE AS)."""
    return (
        f"SELECT d.id, d.blast_id, d.subscriber_id, d.alert_id, d.province_code, COALESCE(d.commune_code, 0) "
        f"AS commune_code, d.carrier, {CHANNEL} AS channel, d.status, {day} AS day, "
        "COALESCE(s.audience_mask, 0) AS audience_mask, CASE WHEN d.sent_at IS NULL THEN 0 ELSE 1 END AS sent, "
        "CASE WHEN d.sent_at IS NULL THEN 0 ELSE COALESCE(d.parts, 1) END AS parts "
        "FROM deliveries d JOIN blasts b ON b.id = d.blast_id LEFT JOIN subscribers s ON s.id = d.subscriber_id "
        f"WHERE d.blast_id = {int(blast_id)} AND d.status IN ({FINAL}) "
        "AND NOT EXISTS (SELECT 1 FROM rollup_seen r WHERE r.delivery_id = d.id)"
    )


def _temp(conn: Connection, name: str, query: str) -> None:
    """A temporary table `name` holding `query`'s rows (replacing one left by an earlier blast)."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} AS {query}")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {name}")  # autovacuum never looks at temporary tables


def _add_facts(conn: Connection, table: str, source: str, upsert: bool) -> None:
    # `WHERE 1 = 1`: SQLite reads an ON CONFLICT after a bare SELECT … GROUP BY as part of the SELECT.
    on_conflict = (
        f" ON CONFLICT ({FACT_KEYS}) DO UPDATE SET messages = {table}.messages + excluded.messages, "
        f"sent = {table}.sent + excluded.sent, parts = {table}.parts + excluded.parts"
    )
    conn.exec_driver_sql(
        f"INSERT INTO {table} ({FACT_KEYS}, messages, sent, parts) "
        f"SELECT {FACT_KEYS}, count(*), sum(sent), sum(parts) FROM {source} WHERE 1 = 1 GROUP BY {FACT_KEYS}"
        + (on_conflict if upsert else "")
    )


def _add_reach(conn: Connection) -> int:
    """Link the batch's delivered messages into the people reached; the people-days it added.

    A person's new row usually comes after all of theirs (the common case, linked as it is
    inserted); one that comes before some (a late report) re-links that person's later rows.
    """
    _temp(conn, "rollup_reached", (
        "SELECT r.subscriber_id, r.day, r.alert_id, a.method, r.province_code, r.commune_code, r.audience_mask "
        "FROM rollup_batch r JOIN alerts a ON a.id = r.alert_id "
        f"WHERE r.status = '{DeliveryStatus.DELIVERED.value}' AND NOT EXISTS (SELECT 1 FROM reach_rows x "
        "WHERE x.subscriber_id = r.subscriber_id AND x.day = r.day AND x.alert_id = r.alert_id)"
    ))  # fmt: skip
    _temp(conn, "rollup_linked", LINKED_SQL)
    conn.exec_driver_sql(f"INSERT INTO reach_rows ({REACH_ROW}) SELECT {REACH_ROW} FROM rollup_linked WHERE late = 0")
    _count(conn, "FROM rollup_linked r WHERE r.late = 0", 1)
    if conn.exec_driver_sql("SELECT 1 FROM rollup_linked WHERE late = 1 LIMIT 1").first():
        _relink_late(conn)
    return conn.exec_driver_sql("SELECT count(*) FROM rollup_linked").scalar_one()


REACH_ROW = (
    "subscriber_id, day, alert_id, method, province_code, commune_code, audience_mask, "  # fmt: skip
    "prev_any, prev_method, prev_alert"
)
_THEIRS = "FROM reach_rows p WHERE p.subscriber_id = n.subscriber_id"
# Each new row with the last day its person was reached before it, valid when it comes after all of
# theirs (`late` = 0): every row they have then precedes it.
LINKED_SQL = (
    f"SELECT n.*, COALESCE((SELECT max(p.day) {_THEIRS}), 0) AS prev_any, "
    f"COALESCE((SELECT max(p.day) {_THEIRS} AND p.method = n.method), 0) AS prev_method, "
    f"COALESCE((SELECT max(p.day) {_THEIRS} AND p.alert_id = n.alert_id), 0) AS prev_alert, "
    f"CASE WHEN EXISTS (SELECT 1 {_THEIRS} AND (p.day > n.day OR (p.day = n.day AND p.alert_id > n.alert_id))) "
    "THEN 1 ELSE 0 END AS late FROM rollup_reached n"
)


def _relink_late(conn: Connection) -> None:
    """Rows that come before some of their person's: that person's rows from there on are counted again, re-linked."""
    _temp(conn, "rollup_touched", "SELECT subscriber_id, min(day) AS from_day FROM rollup_linked WHERE late = 1 "
          "GROUP BY subscriber_id")  # fmt: skip
    conn.exec_driver_sql("CREATE INDEX ix_rollup_touched ON rollup_touched (subscriber_id)")
    _count(conn, f"FROM reach_rows r WHERE {TOUCHED}", -1)
    conn.exec_driver_sql(f"INSERT INTO reach_rows ({REACH_ROW}) SELECT {REACH_ROW} FROM rollup_linked WHERE late = 1")
    conn.exec_driver_sql(RELINK_SQL)
    _count(conn, f"FROM reach_rows r WHERE {TOUCHED}", 1)
    conn.exec_driver_sql("DELETE FROM reach_counts WHERE people = 0")


TOUCHED = (
    "r.subscriber_id IN (SELECT subscriber_id FROM rollup_touched) "
    "AND r.day >= (SELECT t.from_day FROM rollup_touched t WHERE t.subscriber_id = r.subscriber_id)"
)
_BEFORE = "p.subscriber_id = r.subscriber_id AND (p.day < r.day OR (p.day = r.day AND p.alert_id < r.alert_id))"
RELINK_SQL = (
    "UPDATE reach_rows AS r SET "
    f"prev_any = COALESCE((SELECT max(p.day) FROM reach_rows p WHERE {_BEFORE}), 0), "
    f"prev_method = COALESCE((SELECT max(p.day) FROM reach_rows p WHERE p.method = r.method AND {_BEFORE}), 0), "
    "prev_alert = COALESCE((SELECT max(p.day) FROM reach_rows p WHERE p.subscriber_id = r.subscriber_id "
    "AND p.alert_id = r.alert_id AND p.day < r.day), 0) "
    f"WHERE {TOUCHED}"
)


def _count(conn: Connection, source: str, sign: int) -> None:
    """Add (sign 1) or take away (-1) the reach rows of `source` ('FROM … r WHERE …') in all three scopes."""
    cols = "r.day, {prev}, r.province_code, r.commune_code, r.audience_mask"
    scopes = [
        f"SELECT 'all' AS scope, '' AS key, {cols.format(prev='r.prev_any AS prev_day')}",
        f"SELECT 'method', r.method, {cols.format(prev='r.prev_method')}",
        f"SELECT 'alert', CAST(r.alert_id AS VARCHAR(60)), {cols.format(prev='r.prev_alert')}",
    ]
    group = "1, 2, 3, 4, 5, 6, 7"
    for scope in scopes:
        conn.exec_driver_sql(
            f"INSERT INTO reach_counts ({REACH_KEYS}, people) {scope}, {sign} * count(*) {source} GROUP BY {group} "
            f"ON CONFLICT ({REACH_KEYS}) DO UPDATE SET people = reach_counts.people + excluded.people"
        )


def _replace_pending(conn: Connection, blast_id: int, day: str) -> int:
    """The blast's deliveries not final yet, as of now, in place of the last run's; how many."""
    conn.execute(text("DELETE FROM rollup_pending WHERE blast_id = :b"), {"b": blast_id})
    _temp(conn, "rollup_open", _batch_sql(day, blast_id).replace(f"d.status IN ({FINAL})", f"d.status NOT IN ({FINAL})")
          .replace("AND NOT EXISTS (SELECT 1 FROM rollup_seen r WHERE r.delivery_id = d.id)", ""))  # fmt: skip
    _add_facts(conn, "rollup_pending", "rollup_open", upsert=False)
    return conn.exec_driver_sql("SELECT count(*) FROM rollup_open").scalar_one()


def _ended(conn: Connection, blast_id: int) -> bool:
    state = conn.execute(select(blasts.c.state).where(blasts.c.id == blast_id)).scalar_one()
    return state in {s.value for s in ENDED}


class Raced(Exception):
    """Another run closed the blast while this one was rolling it up."""


def _mark(conn: Connection, blast_id: int, now: datetime, closed: bool) -> None:
    """Record the run (a second run on the same blast fails here); a closed blast's seen ids go."""
    closed_at = now.astimezone(UTC) if closed else None
    r = rollup_blasts.c
    found = conn.execute(select(r.blast_id).where(r.blast_id == blast_id)).first()
    if not found:  # two runs inserting the same blast: the primary key refuses the second
        conn.execute(rollup_blasts.insert().values(blast_id=blast_id, rolled_at=now, closed_at=closed_at))
    elif not conn.execute(
        rollup_blasts.update().where(r.blast_id == blast_id, r.closed_at.is_(None))
        .values(rolled_at=now, closed_at=closed_at)
    ).rowcount:  # fmt: skip
        raise Raced(blast_id)
    if closed:
        conn.execute(text("DELETE FROM rollup_seen WHERE blast_id = :b"), {"b": blast_id})
