"""The dashboard's figures: blasts running and scheduled, today's deliveries, gateways, quiet hours now.

One function both faces may call. Today's counts are those of the blasts that ran today (in
the deployment's time zone): they are read through the deliveries' blast index, so the
dashboard costs the same whether the log holds a thousand rows or ten million.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, or_, select

from dispatcher import blasts as blast_ops
from dispatcher import health, policy
from dispatcher.config import Settings
from dispatcher.domain import BlastState, DeliveryStatus
from dispatcher.models import blasts, deliveries

LIVE = (BlastState.RUNNING.value, BlastState.PAUSED.value, BlastState.SCHEDULED.value,
        BlastState.PENDING_APPROVAL.value)  # fmt: skip


def dashboard(conn: Connection, settings: Settings, now: datetime) -> dict[str, Any]:
    """Everything the dashboard shows, as of `now`."""
    zone = ZoneInfo(settings.app.timezone)
    midnight = datetime.combine(now.astimezone(zone).date(), time(), zone)
    today = select(blasts.c.id).where(or_(blasts.c.started_at >= midnight, blasts.c.state == BlastState.RUNNING.value))
    read_today = set(conn.execute(today).scalars())
    by_carrier, by_state, by_blast = _today(conn, read_today)
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


def _today(conn: Connection, blast_ids: set[int]) -> tuple[dict, dict, dict[int, dict[str, int]]]:
    """The deliveries of `blast_ids` by carrier then state, by state, and by blast then state: one read of their rows.

    A running blast's own counts come from it too, rather than from a second read of its million rows.
    """
    d = deliveries.c
    by_carrier: dict[str, dict[str, int]] = {}
    by_state: dict[str, int] = {}
    by_blast: dict[int, dict[str, int]] = {}
    query = (
        select(d.blast_id, d.carrier, d.status, func.count())
        .where(d.blast_id.in_(sorted(blast_ids)))
        .group_by(d.blast_id, d.carrier, d.status)
    )
    for blast_id, carrier, status, n in conn.execute(query):
        by_carrier.setdefault(carrier, {})[status] = by_carrier.get(carrier, {}).get(status, 0) + n
        by_state[status] = by_state.get(status, 0) + n
        by_blast.setdefault(blast_id, {})[status] = by_blast.get(blast_id, {}).get(status, 0) + n
    return by_carrier, by_state, by_blast
