"""The work list beside the delivery log: what waits, what is in flight, whose a provider id is.

A delivery row keeps its state (the truth the operators read); three narrow tables find rows
fast without an index on any column the sending path changes, so that on PostgreSQL a claim, a
result and a report each rewrite the delivery in place (a HOT update, no index touched):

- `delivery_queue`: one row per delivery waiting in state `queued`, keyed in the order they go
  (priority, due time, id). A claim deletes the rows it takes; every move back to `queued`
  (a retry, a release, a requeue) adds one. A stale row (its delivery no longer `queued`) is
  dropped by the next claim that meets it and never sends anything.
- `claims`: one row per worker batch and blast, holding the delivery ids it took under a
  lease, deleted in the transaction that records their results. A claim whose lease ran out
  belongs to a worker that died: the reaper takes it over (`take_expired`).
- `provider_refs`: the gateway's id of each message sent → the delivery, for delivery reports,
  keyed (gateway, provider id): two carriers' SMSCs may hand out the same id.
- `delivery_reports`: every report, raw, with the delivery it was about. One whose id no ref
  holds yet (a fast SMSC beat the worker's commit; an id we never sent) waits there unmatched
  and is applied when `record_sent` records that id; the others stay for reconciliation.
- `message_parts`: each part's id of a multi-part SMPP message and its receipt, so the message
  settles (delivered when every part is, undeliverable when any is) even when the worker that
  sent it restarted before the receipts came (`record_parts`, `apply_parts`).
- `receipt_waits`: the Zalo messages of `zalo_then_sms` blasts whose delivery receipt has not
  come yet. Past its due time (or at once, if Zalo reports a failure instead), a message goes
  again, by SMS (`fall_back_unconfirmed`); a blast is not complete while it has any.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, literal, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from dispatcher.db import driver_time, executemany
from dispatcher.domain import BlastState, DeliveryStatus
from dispatcher.gateways.base import DeliveryReport, ReportStatus
from dispatcher.models import (
    UtcDateTime,
    blasts,
    claims,
    deliveries,
    delivery_attempts,
    delivery_queue,
    delivery_reports,
    message_parts,
    provider_refs,
    receipt_waits,
    utc,
)

CLAIMED = "id, blast_id, alert_id, channel, msisdn, carrier, province_code, commune_code, attempts, next_attempt_at"
_TAKE = "status = 'sending', attempts = attempts + 1, claimed_by = :worker, lease_until = :lease"


def _due(after: bool) -> str:
    """Queue rows of the blasts that may send now (`:blasts`), in order.

    The blasts come as a list, not a subquery: joined, the planner took a blast's million rows
    for a few thousand and sorted them all at each claim instead of reading the first in order.

    `after`: only past the last key this worker claimed. A claimed row leaves a dead entry in
    PostgreSQL's index until VACUUM, and every claim from the start would walk all of them again.
    """
    past = "AND (due_at, delivery_id) > (:after_due, :after_id) " if after else ""
    return (
        f"FROM delivery_queue WHERE priority = :priority AND due_at <= :now {past}AND blast_id IN :blasts "
        "ORDER BY priority, due_at, delivery_id LIMIT :limit"
    )


@functools.cache
def _claim_statements(dialect: str, after: bool) -> list[Any]:
    due = _due(after)
    if dialect == "postgresql":  # workers claim side by side, each skipping the queue rows another one holds
        return [text(
            f"WITH taken AS (DELETE FROM delivery_queue WHERE ctid = ANY(ARRAY(SELECT ctid {due} FOR UPDATE SKIP "
            f"LOCKED)) RETURNING delivery_id) UPDATE deliveries SET {_TAKE} WHERE id = ANY(ARRAY(SELECT delivery_id "
            f"FROM taken)) AND status = 'queued' RETURNING {CLAIMED}"
        ).bindparams(*_DUE_PARAMS, _LEASE)]  # fmt: skip
    # SQLite: the writer lock makes the claim one at a time; the same ordered selection is read twice.
    return [
        text(f"UPDATE deliveries SET {_TAKE} WHERE id IN (SELECT delivery_id {due}) AND status = 'queued' "
             f"RETURNING {CLAIMED}").bindparams(*_DUE_PARAMS, _LEASE),
        text(f"DELETE FROM delivery_queue WHERE (priority, due_at, delivery_id) IN (SELECT priority, due_at, "
             f"delivery_id {due})").bindparams(*_DUE_PARAMS),
    ]  # fmt: skip


_DUE_PARAMS = (bindparam("now", type_=UtcDateTime()), bindparam("blasts", expanding=True))
_LEASE = bindparam("lease", type_=UtcDateTime())
Key = tuple[Any, int]  # (due_at as the driver gives it, delivery id): a place in the queue's order


def claim(conn: Any, worker: str, now: datetime, lease: datetime, priority: int, channels: Sequence[str],
          limit: int, after: Key | None = None) -> tuple[list[Any], list[int]]:  # fmt: skip
    """Take up to `limit` due deliveries of `priority` (past `after`, if given) off the queue, mark them `sending`.

    Only deliveries of running blasts on one of `channels` (those outside their quiet hours).

    Returns the rows (CLAIMED columns) and the ids of the claims opened for them. Whatever is
    put back on the queue is due now or later, so it lands past any key claimed before; rows
    of a blast resumed meanwhile may lie behind it: the caller starts from the beginning again
    every second and whenever a claim comes back short.
    """
    b = blasts.c
    running = conn.execute(select(b.id).where(b.state == BlastState.RUNNING.value, b.channel.in_(channels))).scalars()
    params = {"worker": worker, "now": now, "lease": lease, "limit": limit, "priority": priority,
              "blasts": list(running)}  # fmt: skip
    if not params["blasts"]:
        return [], []
    if after is not None:
        params["after_due"], params["after_id"] = after
    take, *then = _claim_statements(conn.dialect.name, after is not None)
    rows = conn.execute(take, params).all()
    for statement in then:
        conn.execute(statement, params)
    by_blast: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        by_blast[row[1]].append(row[0])
    opened = [{"worker": worker, "blast_id": blast_id, "lease_until": lease, "delivery_ids": _join(ids)}
              for blast_id, ids in by_blast.items()]  # fmt: skip
    claim_ids = [conn.execute(claims.insert().returning(claims.c.id), row).scalar_one() for row in opened]
    return rows, claim_ids


def take_expired(conn: Any, worker: str, now: datetime, lease: datetime) -> list[tuple[int, list[int]]]:
    """Claims whose lease ran out before `now`, now held by `worker` until `lease`: [(claim id, delivery ids)].

    Taking one over is a compare-and-set on its lease: of two reapers, one gets it.
    """
    c = claims.c
    rows = conn.execute(
        update(claims).where(c.lease_until < now).values(worker=worker, lease_until=lease)
        .returning(c.id, c.delivery_ids)
    ).all()  # fmt: skip
    return [(claim_id, [int(i) for i in ids.split(",") if i]) for claim_id, ids in rows]


def drop(conn: Any, claim_ids: Sequence[int]) -> None:
    """Claims whose deliveries are settled (recorded by their worker, or by a reaper)."""
    if claim_ids:
        conn.execute(delete(claims).where(claims.c.id.in_(claim_ids)))


def enqueue(conn: Any, where: Any) -> int:
    """Put the `queued` deliveries matching `where` on the queue (those already on it stay as they are)."""
    d = deliveries.c
    return _fill(
        conn,
        select(d.priority, d.next_attempt_at, d.id, d.blast_id).where(d.status == DeliveryStatus.QUEUED.value, where),
    )


def enqueue_started(conn: Any, blast_id: int, priority: int, after_id: int, due: datetime | None) -> int:
    """Put the deliveries a blast's start just wrote (ids above `after_id`) on the queue, due at `due`.

    They are all `queued`, of the blast's priority and, unless some were deferred (`due` None:
    each row's own time), due at the start: then only their ids are read, from the blast's
    unique index, without visiting a row (on SQLite 0.35 s less a million than `enqueue`).
    """
    d = deliveries.c
    if due is None:
        return enqueue(conn, and_(d.blast_id == blast_id, d.id > after_id))
    due_at = literal(due, delivery_queue.c.due_at.type)
    return _fill(
        conn, select(literal(priority), due_at, d.id, d.blast_id).where(d.blast_id == blast_id, d.id > after_id)
    )


def _fill(conn: Any, rows: Any) -> int:
    """INSERT the (priority, due_at, delivery_id, blast_id) `rows` into the queue, skipping those on it."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(delivery_queue).from_select(["priority", "due_at", "delivery_id", "blast_id"], rows)
    added = conn.execute(statement.on_conflict_do_nothing().execution_options(preserve_rowcount=True)).rowcount
    if added > 10_000 and conn.dialect.name == "postgresql":
        # Fresh statistics, or the planner may take a blast's million waiting rows for a few
        # hundred and sort them all at each claim instead of reading the first ones in order.
        conn.exec_driver_sql("ANALYZE delivery_queue")
    return added


def enqueue_ids(conn: Any, ids: Sequence[int]) -> int:
    """Put these deliveries back on the queue, if they are `queued` (after a retry or a release)."""
    if not ids:
        return 0
    return enqueue(conn, deliveries.c.id.in_(list(ids)))


def forget_blast(conn: Any, blast_id: int) -> None:
    """A cancelled blast's waiting rows leave the queue, and its Zalo messages wait for no receipt."""
    conn.execute(delete(delivery_queue).where(delivery_queue.c.blast_id == blast_id))
    conn.execute(delete(receipt_waits).where(receipt_waits.c.blast_id == blast_id))


LIVE = (BlastState.SCHEDULED.value, BlastState.RUNNING.value, BlastState.PAUSED.value)
OPTED_OUT = "OPTED-OUT"  # the error code of a message cancelled because its person refused our messages


def cancel_for_subscriber(conn: Any, subscriber_id: int, now: datetime, reason: str) -> int:
    """Cancel one person's messages of live blasts not yet claimed; their Zalo messages wait for no SMS fallback.

    Two statements whatever the number of blasts, each on the (blast, subscriber) key; the queue
    rows left behind are stale and dropped by the next claim that meets them.
    """
    d = deliveries.c
    theirs = and_(d.subscriber_id == subscriber_id, d.blast_id.in_(select(blasts.c.id).where(blasts.c.state.in_(LIVE))))
    waiting = select(d.id).where(theirs, d.status == DeliveryStatus.SENT.value)
    conn.execute(delete(receipt_waits).where(receipt_waits.c.delivery_id.in_(waiting)))
    cancel = update(deliveries).where(theirs, d.status == DeliveryStatus.QUEUED.value)
    values = {"status": DeliveryStatus.CANCELLED.value, "finished_at": now, "error_code": OPTED_OUT, "error": reason}
    return conn.execute(cancel.values(values)).rowcount


def in_flight(conn: Any, ids: Sequence[int]) -> list[Any]:
    """(id, carrier, blast_id, channel) of the deliveries among `ids` still `sending`."""
    d = deliveries.c
    found = []
    for chunk in _chunks(ids):
        found += conn.execute(
            select(d.id, d.carrier, d.blast_id, d.channel).where(
                d.id.in_(chunk), d.status == DeliveryStatus.SENDING.value
            )
        ).all()
    return found


# -- provider ids and delivery reports ------------------------------------------------------

# A gateway may give an id again (a counter restarted): its newest message keeps it.
NEWEST_KEEPS_ID = "ON CONFLICT (gateway, provider_id) DO UPDATE SET delivery_id = excluded.delivery_id"
REFS_SQL = f"INSERT INTO provider_refs (gateway, provider_id, delivery_id) VALUES (:g, :p, :i) {NEWEST_KEEPS_ID}"
SENT_SQL = (
    "UPDATE deliveries SET status = 'sent', gateway = :g, provider_id = :p, parts = :n, sent_at = :t, "
    "lease_until = NULL, error_code = NULL, error = NULL WHERE id = :i AND status = 'sending'"
)
# On PostgreSQL the hot statements take one text parameter per column (ids and values joined,
# split in SQL): psycopg adapts a list element by element in Python, ten times slower.
SENT_SQL_PG = (
    "WITH v AS (SELECT * FROM unnest(CAST(string_to_array(:i, ',') AS integer[]), string_to_array(:p, :sep), "
    "CAST(string_to_array(:n, ',') AS integer[])) AS v(i, p, n)), "
    "s AS (UPDATE deliveries AS d SET status = 'sent', gateway = :g, provider_id = v.p, parts = v.n, sent_at = :t, "
    "lease_until = NULL, error_code = NULL, error = NULL FROM v WHERE d.id = v.i AND d.status = 'sending' "
    "AND d.id = ANY(CAST(string_to_array(:i, ',') AS integer[])) "
    "RETURNING d.id, d.provider_id) "
    "INSERT INTO provider_refs (gateway, provider_id, delivery_id) SELECT :g, provider_id, id FROM s"
)
# Checking every row for an id given again (ON CONFLICT) costs a third of recording a batch on
# PostgreSQL, so it is the fallback when the plain INSERT meets one.
SENT_SQL_PG_AGAIN = f"{SENT_SQL_PG} {NEWEST_KEEPS_ID}"
# The same types in every place a parameter appears: PostgreSQL refuses to guess between text and varchar.
_G, _P = "CAST(:g AS VARCHAR)", "CAST(:p AS VARCHAR)"
_REF = f"(SELECT delivery_id FROM provider_refs WHERE gateway = {_G} AND provider_id = {_P})"
REPORT_SQL = (
    "UPDATE deliveries SET status = :s, error_code = COALESCE(:c, error_code), finished_at = :t "
    f"WHERE id = {_REF} AND status = 'sent'"
)
KEEP_SQL = (
    "INSERT INTO delivery_reports (gateway, provider_id, delivery_id, status, error_code, at, raw) "
    f"VALUES ({_G}, {_P}, {_REF}, :s, :c, :t, :raw)"
)
# One statement: the batch's refs looked up once, every report kept (matched or not), the `sent` moved on.
REPORT_SQL_PG = (
    "WITH v AS (SELECT * FROM unnest(string_to_array(:g, :sep), string_to_array(:p, :sep), string_to_array(:s, ','), "
    "string_to_array(:c, :sep), string_to_array(:t, ','), string_to_array(:raw, :sep)) AS v(g, p, s, c, t, raw)), "
    # As the ids of SENT_SQL_PG: the refs are looked up by the batch's ids, never all read (the join
    # alone read every ref of every blast sent, for each batch of reports).
    "m AS MATERIALIZED (SELECT v.*, r.delivery_id FROM v LEFT JOIN provider_refs AS r ON r.gateway = v.g "
    "AND r.provider_id = v.p AND r.provider_id = ANY(string_to_array(:p, :sep))), "
    "kept AS (INSERT INTO delivery_reports (gateway, provider_id, delivery_id, status, error_code, at, raw) "
    "SELECT g, p, delivery_id, s, NULLIF(c, ''), CAST(t AS timestamptz), NULLIF(raw, '') FROM m), "
    "u AS (UPDATE deliveries AS d SET status = m.s, error_code = COALESCE(NULLIF(m.c, ''), d.error_code), "
    "finished_at = CAST(m.t AS timestamptz) FROM m WHERE d.id = m.delivery_id AND d.status = 'sent' RETURNING d.id) "
    "SELECT count(*) FROM u"
)
SEPARATOR = "\x1f"  # the ASCII unit separator: no gateway puts it in an id


def record_sent(conn: Any, gateway: str, at: datetime, sent: Sequence[tuple[int, str, int]]) -> int:
    """Deliveries accepted by `gateway` at `at`, as (delivery id, provider id, parts): `sent`, and their refs."""
    if not sent:
        return 0
    if conn.dialect.name == "postgresql" and not any(SEPARATOR in p for _, p, _ in sent):
        params = {"i": _join(i for i, _, _ in sent), "p": SEPARATOR.join(p for _, p, _ in sent),
                  "n": _join(n for _, _, n in sent), "sep": SEPARATOR, "g": gateway, "t": at}  # fmt: skip
        _by_index(conn)
        try:
            with conn.begin_nested():
                changed = conn.execute(_sent_pg(SENT_SQL_PG), params).rowcount
        except IntegrityError:  # a provider id seen before: the batch again, its newest delivery keeping the id
            changed = conn.execute(_sent_pg(SENT_SQL_PG_AGAIN), params).rowcount
        apply_early(conn, gateway, [p for _, p, _ in sent])
        return changed
    t = driver_time(conn.dialect.name, at)
    changed = executemany(conn, SENT_SQL, [{"i": i, "g": gateway, "p": p, "n": n, "t": t} for i, p, n in sent])
    executemany(conn, REFS_SQL, [{"g": gateway, "p": p, "i": i} for i, p, _ in sent])
    apply_early(conn, gateway, [p for _, p, _ in sent])
    return changed


def apply_early(conn: Any, gateway: str, provider_ids: Sequence[str], parts: bool = False) -> int:
    """Reports that came before these ids of `gateway` were recorded: applied now, as if they came now.

    With `parts` the ids are parts' (`record_parts`): each report settles its message with the others.

    Costs one lookup in an index of the unmatched reports alone when there are none.
    """
    r = delivery_reports.c
    unmatched = and_(r.gateway == gateway, r.delivery_id.is_(None))
    if not provider_ids or conn.execute(select(r.id).where(unmatched).limit(1)).first() is None:
        return 0
    early = []
    for chunk in _chunks(list(provider_ids)):
        early += conn.execute(
            delete(delivery_reports).where(unmatched, r.provider_id.in_(chunk))
            .returning(r.provider_id, r.status, r.at, r.error_code, r.raw)
        ).all()  # fmt: skip
    reports = [DeliveryReport(p, ReportStatus(s), utc(at), c, gateway, raw, parts) for p, s, at, c, raw in early]
    return apply_reports(conn, sorted(reports, key=lambda report: report.at))


@functools.cache
def _sent_pg(sql: str) -> Any:
    return text(sql).bindparams(bindparam("t", type_=UtcDateTime())).execution_options(preserve_rowcount=True)


def apply_reports(conn: Any, reports: Sequence[DeliveryReport]) -> int:
    """Move `sent` deliveries on by (gateway, provider id); a final state is never overwritten.

    Every report is kept with its raw text; one whose id is not recorded yet waits for `apply_early`.
    A part's receipt settles its message with the others (`apply_parts`).
    """
    whole, changed = apply_parts(conn, reports) if any(r.part for r in reports) else (reports, 0)
    if any(r.aliases for r in whole):
        whole = _as_recorded(conn, whole)
    if any(r.delivery_id is not None for r in whole):
        whole, tracked = apply_tracked(conn, whole)
        changed += tracked
    return changed + _apply_whole(conn, whole)


def _as_recorded(conn: Any, reports: Sequence[DeliveryReport]) -> list[DeliveryReport]:
    """Reports whose id the refs hold in another of its spellings, renamed to the one recorded.

    A receipt whose gateway forgot the message (it restarted) carries its id as the SMSC wrote it
    there (decimal, say) and its other spellings; the ref holds the id as the submit's answer gave
    it (hex, perhaps upper case).
    """
    r, known = provider_refs.c, set()
    for gateway in {report.gateway for report in reports if report.aliases}:
        names = sorted({name for report in reports if report.gateway == gateway for name in _spellings(report)})
        for chunk in _chunks(names):
            found = conn.execute(select(r.provider_id).where(r.gateway == gateway, r.provider_id.in_(chunk)))
            known |= {(gateway, name) for name in found.scalars()}
    return [_renamed(report, known) for report in reports]


def _renamed(report: DeliveryReport, known: set[tuple[str, str]]) -> DeliveryReport:
    """`report` under the spelling of its id that a ref holds (`known`: gateway, id), when not the one given."""
    names = _spellings(report) if report.aliases else []
    name = next((n for n in names if (report.gateway, n) in known), report.provider_id)
    return replace(report, provider_id=name) if name != report.provider_id else report


def _spellings(report: DeliveryReport) -> list[str]:
    """The id as given first, then its other spellings in lower and upper case."""
    return [report.provider_id, *(name for alias in report.aliases for name in (alias, alias.upper()))]


def _apply_whole(conn: Any, reports: Sequence[DeliveryReport]) -> int:
    if not reports:
        return 0
    if _awaiting_receipts(conn):
        return _apply_with_receipts(conn, reports)
    texts = [value for r in reports for value in (r.gateway, r.provider_id, r.error_code or "", r.raw or "")]
    if conn.dialect.name == "postgresql" and not any(SEPARATOR in value for value in texts):
        params = {"g": SEPARATOR.join(r.gateway for r in reports), "p": SEPARATOR.join(r.provider_id for r in reports),
                  "s": ",".join(r.status.value for r in reports),
                  "c": SEPARATOR.join(r.error_code or "" for r in reports), "sep": SEPARATOR,
                  "t": ",".join(utc(r.at).isoformat() for r in reports),
                  "raw": SEPARATOR.join(r.raw or "" for r in reports)}  # fmt: skip
        _by_index(conn)
        return conn.execute(text(REPORT_SQL_PG), params).scalar_one()
    rows = _report_rows(conn, reports)
    changed = executemany(conn, REPORT_SQL, rows)
    executemany(conn, KEEP_SQL, rows)
    return changed


def _report_rows(conn: Any, reports: Sequence[DeliveryReport]) -> list[dict[str, Any]]:
    dialect = conn.dialect.name
    return [{"g": r.gateway, "p": r.provider_id, "s": r.status.value, "c": r.error_code,
             "t": driver_time(dialect, r.at), "raw": r.raw} for r in reports]  # fmt: skip


# -- reports that name our delivery (Zalo's tracking_id) ----------------------------------------

TRACKED_SQL = (
    "UPDATE deliveries SET status = :s, error_code = COALESCE(:c, error_code), finished_at = :t "
    "WHERE id = :i AND status IN ('sent', 'unknown')"
)


def apply_tracked(conn: Any, reports: Sequence[DeliveryReport]) -> tuple[list[DeliveryReport], int]:
    """Reports naming our delivery whose provider id no ref holds: matched by the delivery id itself.

    The provider's id was never recorded when the worker died after the provider took the message
    (the delivery went `unknown`): the report says what became of it. A delivery still `sending`
    is left to the provider id, which its worker is about to record (`apply_early`); its report
    waits with the delivery it names, applied by that if the worker dies first (`apply_named`).
    Returns the reports for the provider-id path and how many deliveries moved on.
    """
    d = deliveries.c
    ids = _unplaced(conn, [report for report in reports if report.delivery_id is not None])
    placed, sending = set(), set()
    for chunk in _chunks(list(ids)):
        states = [DeliveryStatus.SENT.value, DeliveryStatus.UNKNOWN.value, DeliveryStatus.SENDING.value]
        query = select(d.id, d.status).where(d.id.in_(chunk), d.status.in_(states))
        for delivery_id, status in conn.execute(query):
            (sending if status == DeliveryStatus.SENDING.value else placed).add(delivery_id)

    def unplaced(report: DeliveryReport) -> bool:
        return id(report) in ids.get(report.delivery_id, ())  # type: ignore[arg-type]

    if waiting := [report for report in reports if report.delivery_id in sending and unplaced(report)]:
        _wait_named(conn, waiting)
        reports = [report for report in reports if not (report.delivery_id in sending and unplaced(report))]
    direct = [report for report in reports if report.delivery_id in placed and unplaced(report)]
    if not direct:
        return list(reports), 0
    rows = [{"i": x.delivery_id, "s": x.status.value, "c": x.error_code, "t": driver_time(conn.dialect.name, x.at),
             "at": x.at, "g": x.gateway, "p": x.provider_id, "raw": x.raw} for x in direct]  # fmt: skip
    received = [x.delivery_id for x in direct if x.status is ReportStatus.DELIVERED]
    conn.execute(delete(receipt_waits).where(receipt_waits.c.delivery_id.in_(received)))
    conn.execute(delivery_reports.insert(), [{"gateway": x["g"], "provider_id": x["p"], "delivery_id": x["i"],
                                              "status": x["s"], "error_code": x["c"], "at": x["at"], "raw": x["raw"]}
                                             for x in rows])  # fmt: skip
    taken = {id(x) for x in direct}
    return [report for report in reports if id(report) not in taken], executemany(conn, TRACKED_SQL, rows)


def _wait_named(conn: Any, reports: Sequence[DeliveryReport]) -> None:
    """Keep reports on deliveries still `sending` unmatched, as any early report, and with the delivery they name."""
    conn.execute(delivery_reports.insert(), [
        {"gateway": x.gateway, "provider_id": x.provider_id, "delivery_id": None, "status": x.status.value,
         "error_code": x.error_code, "at": x.at, "raw": x.raw, "named_delivery_id": x.delivery_id} for x in reports
    ])  # fmt: skip


def apply_named(conn: Any, delivery_ids: Sequence[int]) -> int:
    """Reports that came while these deliveries were `sending`, whose worker will never record their ids
    (the deliveries went `unknown`): applied now by the delivery they name. Returns how many moved on."""
    r, named = delivery_reports.c, []
    for chunk in _chunks(list(delivery_ids)):
        named += conn.execute(
            delete(delivery_reports).where(r.delivery_id.is_(None), r.named_delivery_id.in_(chunk))
            .returning(r.gateway, r.provider_id, r.status, r.at, r.error_code, r.raw, r.named_delivery_id)
        ).all()  # fmt: skip
    reports = [DeliveryReport(p, ReportStatus(s), utc(at), c, g, raw, delivery_id=i)
               for g, p, s, at, c, raw, i in named]  # fmt: skip
    return apply_reports(conn, sorted(reports, key=lambda report: report.at)) if reports else 0


def _unplaced(conn: Any, reports: Sequence[DeliveryReport]) -> dict[int, set[int]]:
    """delivery id → the reports (by `id()`) naming it whose (gateway, provider id) no ref holds."""
    r, known = provider_refs.c, set()
    for chunk in _chunks([report.provider_id for report in reports]):
        known |= {(g, p) for g, p in conn.execute(select(r.gateway, r.provider_id).where(r.provider_id.in_(chunk)))}
    unplaced: dict[int, set[int]] = defaultdict(set)
    for report in reports:
        if (report.gateway, report.provider_id) not in known:
            unplaced[report.delivery_id].add(id(report))  # type: ignore[index]
    return unplaced


# -- the parts of multi-part messages -------------------------------------------------------

PARTS_SQL = (
    "INSERT INTO message_parts (gateway, provider_id, delivery_id) VALUES (:g, :p, :i) "
    "ON CONFLICT (gateway, provider_id) DO UPDATE SET delivery_id = excluded.delivery_id, status = NULL, "
    "error_code = NULL"
)
PART_SQL = (
    "UPDATE message_parts SET status = :s, error_code = :c WHERE gateway = :g AND provider_id = :p AND status IS NULL"
)
SETTLE_SQL = (
    "UPDATE deliveries SET status = :s, error_code = COALESCE(:c, error_code), finished_at = :t "
    "WHERE id = :i AND status = 'sent'"
)


def record_parts(conn: Any, gateway: str, sent: Sequence[tuple[int, Sequence[str]]]) -> None:
    """The parts' ids of multi-part messages `gateway` took, as (delivery id, part ids); a resend's replace the old."""
    if not sent:
        return
    p = message_parts.c
    for chunk in _chunks([i for i, _ in sent]):
        conn.execute(delete(message_parts).where(p.delivery_id.in_(chunk)))
    executemany(conn, PARTS_SQL, [{"g": gateway, "p": part, "i": i} for i, ids in sent for part in ids])
    apply_early(conn, gateway, [part for _, ids in sent for part in ids], parts=True)


def apply_parts(conn: Any, reports: Sequence[DeliveryReport]) -> tuple[list[DeliveryReport], int]:
    """Part receipts of the messages in `message_parts`: each kept, and the message settled when its parts say.

    Returns the reports that are no known part (for the whole-message path) and how many deliveries moved on.
    """
    found = _parts_of(conn, [r for r in reports if r.part])
    rest, rows = [], []
    for r in reports:
        hit = next((found[(r.gateway, s)] for s in (r.provider_id, *r.aliases) if (r.gateway, s) in found), None)
        if not r.part or hit is None:
            rest.append(r)
            continue
        rows.append({"g": r.gateway, "p": hit[0], "i": hit[1], "s": r.status.value, "c": r.error_code, "at": r.at,
                     "t": driver_time(conn.dialect.name, r.at), "raw": r.raw})  # fmt: skip
    if not rows:
        return rest, 0
    executemany(conn, PART_SQL, rows)
    conn.execute(delivery_reports.insert(), [{"gateway": r["g"], "provider_id": r["p"], "delivery_id": r["i"],
                                              "status": r["s"], "error_code": r["c"], "at": r["at"], "raw": r["raw"]}
                                             for r in rows])  # fmt: skip
    return rest, _settle_parts(conn, {r["i"]: r["at"] for r in sorted(rows, key=lambda r: r["at"])})


def _parts_of(conn: Any, reports: Sequence[DeliveryReport]) -> dict[tuple[str, str], tuple[str, int]]:
    """(gateway, spelling) → (the part's stored id, its delivery) for every spelling of these reports' ids."""
    p, found = message_parts.c, {}
    for gateway in {r.gateway for r in reports}:
        spellings = sorted({s for r in reports if r.gateway == gateway for s in (r.provider_id, *r.aliases)})
        for chunk in _chunks(spellings):
            query = select(p.provider_id, p.delivery_id).where(p.gateway == gateway, p.provider_id.in_(chunk))
            found |= {(gateway, part): (part, delivery_id) for part, delivery_id in conn.execute(query)}
    return found


def _settle_parts(conn: Any, touched: dict[int, datetime]) -> int:
    """Deliveries among `touched` (→ when their last part's receipt came) whose parts' receipts settle them."""
    d, p = deliveries.c, message_parts.c
    states: dict[int, list[tuple[str | None, str | None]]] = defaultdict(list)
    for chunk in _chunks(list(touched)):
        query = select(p.delivery_id, p.status, p.error_code).join(deliveries, d.id == p.delivery_id)
        for delivery_id, status, code in conn.execute(query.where(d.id.in_(chunk), d.status == "sent")):
            states[delivery_id].append((status, code))
    settled = []
    for delivery_id, parts in states.items():
        final = message_state(parts)
        if final is not None:
            t = driver_time(conn.dialect.name, touched[delivery_id])
            settled.append({"i": delivery_id, "s": final[0], "c": final[1], "t": t})
    return executemany(conn, SETTLE_SQL, settled)


def message_state(parts: Sequence[tuple[str | None, str | None]]) -> tuple[str, str | None] | None:
    """A message's final state and error code from its parts' (receipt, code): None while it is open.

    Undeliverable as soon as any part is; else, once every part has a receipt, delivered when all
    are, or the first other state.
    """
    undeliverable = [code for status, code in parts if status == ReportStatus.UNDELIVERABLE.value]
    if undeliverable:
        return ReportStatus.UNDELIVERABLE.value, undeliverable[0]
    if any(status is None for status, _ in parts):
        return None
    worse = [(status, code) for status, code in parts if status != ReportStatus.DELIVERED.value]
    return worse[0] if worse else (ReportStatus.DELIVERED.value, None)


# -- Zalo receipts (zalo_then_sms) ------------------------------------------------------------

RECEIVED_SQL = f"DELETE FROM receipt_waits WHERE delivery_id = {_REF}"
REFUSED_SQL = f"UPDATE receipt_waits SET due_at = :t, error_code = :c WHERE delivery_id = {_REF}"
UNLESS_WAITING = " AND NOT EXISTS (SELECT 1 FROM receipt_waits w WHERE w.delivery_id = deliveries.id)"


def await_receipts(conn: Any, sent: Sequence[tuple[int, int]], due: datetime) -> None:
    """Zalo messages of `zalo_then_sms` blasts just accepted, (delivery id, blast id): SMS at `due` unless confirmed."""
    if not sent:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(receipt_waits)
    # A message sent again (resent after `unknown`) waits anew.
    statement = statement.on_conflict_do_update(
        index_elements=["delivery_id"], set_={"due_at": due, "error_code": None}
    )
    conn.execute(statement, [{"delivery_id": i, "blast_id": b, "due_at": due} for i, b in sent])


def _awaiting_receipts(conn: Any) -> bool:
    return conn.execute(select(receipt_waits.c.delivery_id).limit(1)).first() is not None


def _apply_with_receipts(conn: Any, reports: Sequence[Any]) -> int:
    """Reports while Zalo messages wait for receipts: a receipt ends the wait; a failure sends the SMS at once.

    A Zalo message that failed is not marked failed: it is about to go by SMS.
    """
    dialect = conn.dialect.name
    delivered = [{"g": r.gateway, "p": r.provider_id} for r in reports if r.status is ReportStatus.DELIVERED]
    executemany(conn, RECEIVED_SQL, delivered)
    refused = [r for r in reports if r.status is not ReportStatus.DELIVERED]
    executemany(conn, REFUSED_SQL, [{"g": r.gateway, "p": r.provider_id, "t": driver_time(dialect, r.at),
                                     "c": r.error_code or r.status.value} for r in refused])  # fmt: skip
    rows = _report_rows(conn, reports)
    changed = executemany(conn, REPORT_SQL + UNLESS_WAITING, rows)
    executemany(conn, KEEP_SQL, rows)
    return changed


def fall_back_unconfirmed(conn: Any, now: datetime, waited: float) -> list[int]:
    """Zalo messages whose wait is over go again by SMS, due now; returns their ids (queued, not yet on the queue).

    Only messages still `sent` (nothing confirmed or failed them) of blasts running or paused;
    the waits of other blasts just end. The Zalo send stays in the attempts, and its provider
    id no longer leads to the row: a receipt that comes after all changes nothing.
    """
    w, b, d = receipt_waits.c, blasts.c, deliveries.c
    due = conn.execute(
        select(w.delivery_id, w.error_code, b.state).outerjoin(blasts, b.id == w.blast_id).where(w.due_at <= now)
    ).all()
    if not due:
        return []
    by_code: dict[str | None, list[int]] = defaultdict(list)
    for delivery_id, code, state in due:
        if state in (BlastState.RUNNING.value, BlastState.PAUSED.value):
            by_code[code].append(delivery_id)
    moved, attempts = [], []
    for code, ids in by_code.items():
        error = f"Zalo reported {code}" if code else f"no Zalo receipt within {waited:g} s"
        for chunk in _chunks(ids):
            again = (
                update(deliveries)
                .where(d.id.in_(chunk), d.status == DeliveryStatus.SENT.value)
                .values(
                    status=DeliveryStatus.QUEUED.value,
                    channel="sms",
                    error_code=code or "NO-RECEIPT",
                    error=error,
                    next_attempt_at=now,
                    claimed_by=None,
                )  # fmt: skip
                .returning(d.id, d.attempts, d.gateway, d.provider_id, d.parts)
            )
            for delivery_id, attempt, gateway, provider_id, parts in conn.execute(again):
                moved.append((delivery_id, gateway, provider_id))
                attempts.append({"delivery_id": delivery_id, "attempt": attempt, "gateway": gateway or "-", "at": now,
                                 "outcome": "fallback", "provider_id": provider_id, "parts": parts,
                                 "error_code": code or "NO-RECEIPT", "error": error})  # fmt: skip
    if attempts:
        conn.execute(delivery_attempts.insert(), attempts)
    refs: dict[str, list[str]] = defaultdict(list)
    for _, gateway, provider_id in moved:
        if provider_id:
            refs[gateway or ""].append(provider_id)
    for gateway, ids in refs.items():
        for chunk in _chunks(ids):
            conn.execute(delete(provider_refs).where(provider_refs.c.gateway == gateway,
                                                     provider_refs.c.provider_id.in_(chunk)))  # fmt: skip
    for chunk in _chunks([delivery_id for delivery_id, _, _ in due]):
        conn.execute(delete(receipt_waits).where(w.delivery_id.in_(chunk)))
    return [delivery_id for delivery_id, _, _ in moved]


def _chunks(values: Sequence[Any], size: int = 5000) -> Iterator[list[Any]]:
    """`values` in lists of at most `size`: a statement's parameters are limited."""
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _by_index(conn: Any) -> None:
    """On PostgreSQL, for the rest of the transaction: reach deliveries by their id, never by reading them all.

    Statistics taken when a blast started say no row is `sending` or `sent`; the planner then
    guesses that a scan of the whole table filtered on status is cheaper than 5,000 lookups by
    id, and recording a batch took 200 ms instead of 65 at 300,000 rows, growing with the table.
    (Not for the claim: there it would trade the ordered walk of the queue for a sort.) Each
    batch is planned for its own values: the generic plan of the prepared statement, blind to
    how many ids the text holds, took 4.6 s a batch.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_custom_plan")


def _join(values: Iterable[int]) -> str:
    return ",".join(map(str, values))
