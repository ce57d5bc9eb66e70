"""The dashboard's figures: blasts running and scheduled, today's deliveries, gateways, quiet hours now.

One function both faces may call. Today's counts are those of the blasts that ran today (in
the deployment's time zone): each blast's are read by its range of ids, so the dashboard costs
the same whether the log holds a thousand rows or ten million. Counting a million rows by
carrier and state costs SQLite ~1 s of CPU; a long-running face keeps a `Tallies` between
refreshes so that a blast that has ended is not counted again at every one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, or_, select

from dispatcher import blasts as blast_ops
from dispatcher import health, policy
from dispatcher.config import Settings
from dispatcher.domain import BlastState, DeliveryStatus
from dispatcher.models import blasts, deliveries

# A blast's rows are counted this many ids at a time: SQLite groups by sorting, and many small
# sorts cost less than one of a million rows (measured: 1.0 s instead of 1.5 s of CPU a million).
CHUNK = 20_000
ENDED = (BlastState.COMPLETED.value, BlastState.CANCELLED.value, BlastState.EXPIRED.value)

LIVE = (BlastState.RUNNING.value, BlastState.PAUSED.value, BlastState.SCHEDULED.value,
        BlastState.PENDING_APPROVAL.value)  # fmt: skip


@dataclass
class Tallies:
    """Counts by carrier and state of the blasts that ended, kept between the dashboard's refreshes.

    An ended blast changes only as late delivery reports come in, so its counts are read again
    at most every `ended_every`; a blast that runs is counted at every refresh.
    """

    ended_every: timedelta = timedelta(seconds=60)
    _ended: dict[int, tuple[datetime, dict[tuple[str, str], int]]] = field(default_factory=dict)

    def counts(self, conn: Connection, blast: dict[str, Any], now: datetime) -> dict[tuple[str, str], int]:
        """The blast's deliveries by (carrier, state): kept ones if it ended less than `ended_every` ago."""
        kept = self._ended.get(blast["id"])
        if blast["state"] in ENDED and kept is not None and now - kept[0] < self.ended_every:
            return kept[1]
        found = _counted(conn, blast)
        if blast["state"] in ENDED:
            self._ended[blast["id"]] = (now, found)
        else:
            self._ended.pop(blast["id"], None)
        return found

    def keep_only(self, blast_ids: set[int]) -> None:
        """Forget the counts of blasts no longer shown (yesterday's)."""
        for blast_id in self._ended.keys() - blast_ids:
            del self._ended[blast_id]


def dashboard(conn: Connection, settings: Settings, now: datetime, tallies: Tallies | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, as of `now`; `tallies` keeps ended blasts' counts between calls."""
    zone = ZoneInfo(settings.app.timezone)
    midnight = datetime.combine(now.astimezone(zone).date(), time(), zone)
    b = blasts.c
    today = select(b.id, b.state, b.first_delivery_id, b.last_delivery_id).where(
        or_(b.started_at >= midnight, b.state == BlastState.RUNNING.value)
    )
    ran = [dict(row) for row in conn.execute(today).mappings()]
    read_today = {blast["id"] for blast in ran}
    by_carrier, by_state, by_blast = _today(conn, ran, tallies or Tallies(), now)
    live = blast_ops.listing(conn, 20, LIVE)
    for blast in live:
        found = by_blast.get(blast["id"], {})
        counts = {s.value: found.get(s.value, 0) for s in DeliveryStatus}
        blast["counts"] = counts if blast["id"] in read_today else blast_ops.counts(conn, blast["id"])
        blast["done"] = sum(n for state, n in blast["counts"].items() if state not in ("queued", "sending"))
        blast["total"] = sum(blast["counts"].values())
    found = health.load(conn)
    states = [found.get(name) or health.Health(name) for name in health.gateway_names(settings)]
    gateways = [{"name": h.name, "state": h.state.value, "last_error": h.last_error, "last_error_at": h.last_error_at}
                for h in states]  # fmt: skip
    quiet = {channel: policy.quiet_hours(settings, channel).is_quiet(now) for channel in ("sms", "zalo")}
    return {"live": live, "today_by_state": by_state, "today_by_carrier": by_carrier, "gateways": gateways,
            "quiet": quiet, "now": now}  # fmt: skip


def _today(
    conn: Connection, ran: list[dict[str, Any]], tallies: Tallies, now: datetime
) -> tuple[dict, dict, dict[int, dict[str, int]]]:
    """The deliveries of the blasts `ran` by carrier then state, by state, and by blast then state.

    A running blast's own counts come from it too, rather than from a second read of its million rows.
    """
    by_carrier: dict[str, dict[str, int]] = {}
    by_state: dict[str, int] = {}
    by_blast: dict[int, dict[str, int]] = {}
    for blast in ran:
        for (carrier, status), n in tallies.counts(conn, blast, now).items():
            by_carrier.setdefault(carrier, {})[status] = by_carrier.get(carrier, {}).get(status, 0) + n
            by_state[status] = by_state.get(status, 0) + n
            by_blast.setdefault(blast["id"], {})[status] = by_blast.get(blast["id"], {}).get(status, 0) + n
    tallies.keep_only({blast["id"] for blast in ran})
    return by_carrier, by_state, by_blast


def _counted(conn: Connection, blast: dict[str, Any]) -> dict[tuple[str, str], int]:
    """A blast's deliveries by (carrier, state), read by its range of ids `CHUNK` at a time (or by its index)."""
    d = deliveries.c
    query = select(d.carrier, d.status, func.count()).group_by(d.carrier, d.status)
    low, high = blast["first_delivery_id"], blast["last_delivery_id"]
    if low is None or high is None:  # not started, or started before blasts kept their range
        ranges = [query.where(d.blast_id == blast["id"])]
    else:
        query = query.where(d.blast_id + 0 == blast["id"])  # a filter within the range, not an index to read
        starts = range(low, high + 1, CHUNK)
        ranges = [query.where(d.id.between(start, min(start + CHUNK - 1, high))) for start in starts]
    found: dict[tuple[str, str], int] = {}
    for statement in ranges:
        for carrier, status, n in conn.execute(statement):
            found[carrier, status] = found.get((carrier, status), 0) + n
    return found
