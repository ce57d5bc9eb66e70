"""Blasts (đợt gửi): preview, four-eyes approval, materialising recipients, state changes.

A blast is created with the preview the liaison saw and waits for a second person. When it
starts, its recipients become one delivery row each with a single INSERT … SELECT, so opt-outs
made until then are respected, and running it twice adds nothing (unique blast × subscriber).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, and_, case, func, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dispatcher import alerts as catalogue
from dispatcher import queue
from dispatcher.audit import audit
from dispatcher.config import ZALO_ROUTE, Settings
from dispatcher.db import compare_and_set
from dispatcher.domain import AlertStatus, BlastState, Channel, DeliveryStatus, Priority
from dispatcher.errors import ConfigError, InputRejected, NotAllowed, NotFound, StateError, UsageError
from dispatcher.models import alerts, blasts, deliveries, receipt_waits, subscribers, utc
from dispatcher.policy import quiet_hours
from dispatcher.regions import RegionIndex
from dispatcher.segments import CHANNEL_POLICIES, Segment, exclusions, matches, rotation_choice

log = structlog.get_logger(__name__)
ENCODINGS = ("auto", "unicode", "ascii")
REASONS = ("opted_out", "no_channel", "already_received", "capped")
# What a Vietnamese user reads for each BlastState (console, CLI, errors).
STATE_VI = {
    "pending_approval": "chờ duyệt", "scheduled": "đã lên lịch", "running": "đang gửi", "paused": "tạm dừng",
    "completed": "hoàn tất", "cancelled": "đã huỷ", "expired": "quá hạn", "missed": "lỡ giờ",
}  # fmt: skip
DEFER = timedelta(days=1)  # how long a person at their cap waits: their oldest message leaves the 24 h window


@dataclass(frozen=True)
class BlastRequest:
    """What the liaison asks for."""

    alert_slug: str
    segment: Segment
    channel: str = "sms"
    encoding: str = "auto"
    start_at: datetime | None = None
    not_after: datetime | None = None
    rate: float | None = None


def approved_alert(conn: Connection, slug: str) -> dict[str, Any]:
    """The approved version of alert `slug`, or a refusal saying why there is none."""
    row = conn.execute(select(alerts).where(alerts.c.slug == slug, alerts.c.status == AlertStatus.APPROVED.value))
    found = row.mappings().first()
    if found is not None:
        return dict(found)
    latest = catalogue.latest(conn, slug)
    if latest is None:
        raise NotFound(f"Không có mẫu cảnh báo '{slug}'.")
    if latest["status"] == AlertStatus.RETIRED.value:
        raise StateError(f"Mẫu '{slug}' đã ngừng dùng: không thể gửi.")
    status = catalogue.STATUS_VI[latest["status"]]
    raise StateError(f"Mẫu '{slug}' chưa được duyệt (trạng thái '{status}'): cần duyệt trước khi gửi.")


def rendering_for(alert_row: dict[str, Any], encoding: str) -> catalogue.Rendering:
    """The worst-case rendering a blast sends (longest region names): what parts are counted on."""
    renderings = catalogue.render(catalogue.spec_of(alert_row))
    return renderings.ascii if catalogue.MessageTemplate.of(alert_row, encoding).ascii else renderings.unicode


# -- preview ------------------------------------------------------------------------------


def preview(
    conn: Connection, request: BlastRequest, settings: Settings, regions: RegionIndex, now: datetime
) -> dict[str, Any]:
    """Recipients, exclusions by reason, per carrier and region, parts, cost and time to send."""
    _check_request(request, settings, now)
    return _preview(conn, request, approved_alert(conn, request.alert_slug), settings, regions, now)


def _preview(
    conn: Connection,
    request: BlastRequest,
    alert_row: dict[str, Any],
    settings: Settings,
    regions: RegionIndex,
    now: datetime,
) -> dict[str, Any]:
    start = request.start_at or now
    found = _count(conn, request, alert_row["slug"], settings, start)
    defer = settings.policy.capped == "defer"
    excluded: dict[str, int] = defaultdict(int)
    by_carrier: dict[str, int] = defaultdict(int)
    by_commune: dict[tuple[int, int | None], int] = defaultdict(int)
    recipients = deferred = 0
    for (reason, carrier, province, commune), n in found.items():
        if reason is None or (reason == "capped" and defer):
            recipients += n
            deferred += n if reason else 0
            by_carrier[carrier] += n
            by_commune[(province, commune)] += n
        else:
            excluded[reason] += n
    rendering = rendering_for(alert_row, request.encoding)
    parts = rendering.info.parts
    largest = max(by_commune, key=by_commune.__getitem__, default=None)
    sample = catalogue.MessageTemplate.of(alert_row, request.encoding).render(regions, *largest)[0] if largest else ""
    cost = sum(n * parts * settings.sms.price_for(carrier) for carrier, n in by_carrier.items())
    finish = _finish_time(settings, request.channel, start, recipients, request.rate, deferred)
    return {
        "alert": {"id": alert_row["slug"], "version": alert_row["version"], "title": alert_row["title"]},
        "segment": list(request.segment.labels), "channel": request.channel,
        "encoding": str(rendering.info.encoding), "text": sample,
        "matched": recipients + sum(excluded.values()), "recipients": recipients,
        "excluded": {reason: excluded.get(reason, 0) for reason in REASONS},
        "deferred": deferred,
        "by_carrier": dict(sorted(by_carrier.items(), key=lambda kv: -kv[1])),
        "by_province": _by_province(by_commune, regions),
        "partial_communes": list(request.segment.partial_communes),
        "parts_per_message": parts, "total_parts": recipients * parts,
        "cost": round(cost), "currency": settings.sms.currency,
        "start_at": start.isoformat(), "not_after": request.not_after.isoformat() if request.not_after else None,
        "eta_seconds": round((finish - start).total_seconds()), "finish_at": finish.isoformat(),
    }  # fmt: skip


def _check_request(request: BlastRequest, settings: Settings, now: datetime) -> None:
    if request.channel not in CHANNEL_POLICIES:
        raise UsageError(f"Kênh '{request.channel}' không hợp lệ (nhận: {', '.join(CHANNEL_POLICIES)}).")
    if request.encoding not in ENCODINGS:
        raise UsageError(f"Bảng mã '{request.encoding}' không hợp lệ (nhận: {', '.join(ENCODINGS)}).")
    start = request.start_at or now
    if request.not_after is not None and request.not_after <= start:
        raise UsageError("--not-after phải sau thời điểm bắt đầu gửi.")
    if request.rate is not None and request.rate <= 0:
        raise UsageError("--rate phải lớn hơn 0 tin/giây.")
    # One message's wait must fit well inside a claim's lease, or it would go out after the lease.
    slowest = 4 / settings.dispatch.lease_seconds
    if request.rate is not None and request.rate < slowest:
        raise UsageError(f"--rate tối thiểu {slowest:.3g} tin/giây (một tin mỗi {1 / slowest:.0f} giây) "
                         "với [dispatch] lease_seconds hiện tại.")  # fmt: skip


def _count(conn: Connection, request: BlastRequest, slug: str, settings: Settings, start: datetime) -> dict:
    """People of the segment grouped by (exclusion reason or None, carrier, province, commune)."""
    rules = exclusions(
        conn, request.channel, slug, start, settings.dispatch.already_received_days, settings.dispatch.cap_per_day
    )
    reason = case(*[(predicate, literal(name)) for name, predicate in rules.items()], else_=literal(None))
    s = subscribers.c
    query = (
        select(reason.label("reason"), s.carrier, s.province_code, s.commune_code, func.count())
        .select_from(rules.from_())
        .where(matches(request.segment, conn.dialect.name))
        .group_by(reason, s.carrier, s.province_code, s.commune_code)
    )
    return {(r, c, p, m): n for r, c, p, m, n in conn.execute(query)}


def _by_province(by_commune: dict[tuple[int, int | None], int], regions: RegionIndex) -> dict[str, Any]:
    provinces: dict[str, Any] = {}
    for (province, commune), n in sorted(by_commune.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        entry = provinces.setdefault(
            str(province), {"name": regions.province(province).name, "recipients": 0, "communes": {}}
        )
        entry["recipients"] += n
        name = regions.commune(commune).name if commune else "(chưa rõ xã)"
        entry["communes"][str(commune or 0)] = {"name": name, "recipients": n}
    return provinces


def _finish_time(
    settings: Settings, channel: str, start: datetime, messages: int, rate: float | None, deferred: int = 0
) -> datetime:
    """When the last message goes, nights waited out; people at their cap go a day later."""
    limits = [g.rate for g in (settings.gateways.file, settings.gateways.simulator) if g.rate]
    effective = rate or (min(limits) if limits else settings.policy.assumed_rate)
    quiet = quiet_hours(settings, channel)
    finish = quiet.finish_time(start, messages - deferred, effective)
    if deferred:
        finish = max(finish, quiet.finish_time(start + DEFER, deferred, effective))
    return finish


# -- lifecycle ----------------------------------------------------------------------------


def create(
    conn: Connection, request: BlastRequest, actor: str, settings: Settings, regions: RegionIndex, now: datetime
) -> tuple[int, dict[str, Any]]:
    """Store a blast waiting for approval, with its preview; refuses an empty one."""
    _check_request(request, settings, now)
    if request.channel != "sms" and ZALO_ROUTE not in settings.routes:  # a preview may still count Zalo users
        raise ConfigError(f"Kênh '{request.channel}' cần cổng Zalo trong [routes] zalo = [...]; chưa cấu hình cổng "
                         "Zalo nào: dùng --channel sms.")  # fmt: skip
    alert_row = approved_alert(conn, request.alert_slug)
    shown = _preview(conn, request, alert_row, settings, regions, now)
    if shown["recipients"] == 0:
        raise InputRejected("Phân đoạn này không có người nhận nào (sau khi loại trừ): không tạo đợt gửi.")
    blast_id = conn.execute(
        insert(blasts).values(
            alert_id=alert_row["id"], segment=request.segment.to_json(), channel=request.channel,
            encoding=request.encoding, start_at=request.start_at or now, not_after=request.not_after,
            rate=request.rate, priority=1 if alert_row["priority"] == Priority.URGENT.value else 0,
            state=BlastState.PENDING_APPROVAL.value, preview=shown, created_by=actor, created_at=now,
        )
    ).inserted_primary_key[0]  # fmt: skip
    audit(conn, now, actor, "blast.create", f"blast:{blast_id}", {"alert": request.alert_slug, **_brief(shown)})
    log.info("blast.created", blast_id=blast_id, alert=request.alert_slug, recipients=shown["recipients"])
    return blast_id, {**shown, "blast_id": blast_id, "state": BlastState.PENDING_APPROVAL.value}


def _brief(shown: dict[str, Any]) -> dict[str, Any]:
    return {k: shown[k] for k in ("recipients", "total_parts", "cost", "eta_seconds")}


def get(conn: Connection, blast_id: int) -> dict[str, Any]:
    """One blast, or UsageError."""
    row = conn.execute(select(blasts).where(blasts.c.id == blast_id)).mappings().first()
    if row is None:
        raise NotFound(f"Không có đợt gửi số {blast_id}.")
    return dict(row)


def approve(conn: Connection, blast_id: int, actor: str, now: datetime) -> dict[str, Any]:
    """Second-person approval: the blast becomes scheduled; its creator cannot approve it."""
    blast = get(conn, blast_id)
    if blast["created_by"].casefold() == actor.casefold():
        raise NotAllowed(f"'{actor}' đã tạo đợt gửi {blast_id}: cần một người khác duyệt (nguyên tắc bốn mắt).")
    # A start already past means "as soon as approved": approving late is not a start missed while down.
    start_at = max(utc(blast["start_at"]), now)
    _move(conn, blast, {BlastState.PENDING_APPROVAL}, BlastState.SCHEDULED, approved_by=actor, approved_at=now,
          start_at=start_at)  # fmt: skip
    audit(conn, now, actor, "blast.approve", f"blast:{blast_id}", {})
    log.info("blast.approved", blast_id=blast_id, actor=actor)
    return get(conn, blast_id)


def pause(conn: Connection, blast_id: int, actor: str, now: datetime) -> dict[str, Any]:
    """Hold a scheduled or running blast: workers claim nothing more of it."""
    blast = get(conn, blast_id)
    _move(conn, blast, {BlastState.SCHEDULED, BlastState.RUNNING}, BlastState.PAUSED)
    audit(conn, now, actor, "blast.pause", f"blast:{blast_id}", {"from": blast["state"]})
    return get(conn, blast_id)


def resume(conn: Connection, blast_id: int, actor: str, now: datetime) -> dict[str, Any]:
    """Let a paused blast go on where it stopped."""
    blast = get(conn, blast_id)
    target = BlastState.RUNNING if blast["started_at"] is not None else BlastState.SCHEDULED
    _move(conn, blast, {BlastState.PAUSED}, target)
    audit(conn, now, actor, "blast.resume", f"blast:{blast_id}", {})
    return get(conn, blast_id)


def cancel(conn: Connection, blast_id: int, actor: str, now: datetime) -> dict[str, Any]:
    """Stop a blast for good: what was not sent yet is cancelled, what is in flight finishes."""
    blast = get(conn, blast_id)
    live = {BlastState.PENDING_APPROVAL, BlastState.SCHEDULED, BlastState.RUNNING, BlastState.PAUSED}
    _move(conn, blast, live, BlastState.CANCELLED, finished_at=now)
    cancelled = conn.execute(
        update(deliveries)
        .where(deliveries.c.blast_id == blast_id, deliveries.c.status == DeliveryStatus.QUEUED.value)
        .values(status=DeliveryStatus.CANCELLED.value, finished_at=now)
    ).rowcount
    queue.forget_blast(conn, blast_id)
    audit(conn, now, actor, "blast.cancel", f"blast:{blast_id}", {"cancelled_messages": cancelled})
    return get(conn, blast_id)


def resend_unknown(conn: Connection, blast_id: int, actor: str, now: datetime) -> int:
    """The operator's decision to send again the messages a dead worker left unknown."""
    blast = get(conn, blast_id)
    if blast["state"] in (BlastState.CANCELLED.value, BlastState.EXPIRED.value):
        raise StateError(f"Đợt gửi {blast_id} ở trạng thái '{STATE_VI[blast['state']]}': không gửi lại.")
    count = conn.execute(
        update(deliveries)
        .where(deliveries.c.blast_id == blast_id, deliveries.c.status == DeliveryStatus.UNKNOWN.value)
        .values(status=DeliveryStatus.QUEUED.value, next_attempt_at=now, lease_until=None, claimed_by=None)
    ).rowcount
    queue.enqueue(conn, deliveries.c.blast_id == blast_id)
    if count and blast["state"] == BlastState.COMPLETED.value:
        conn.execute(update(blasts).where(blasts.c.id == blast_id).values(state=BlastState.RUNNING.value))
    audit(conn, now, actor, "blast.resend_unknown", f"blast:{blast_id}", {"messages": count})
    return count


def _move(conn: Connection, blast: dict[str, Any], allowed: set[BlastState], target: BlastState, **values: Any) -> None:
    if blast["state"] not in {s.value for s in allowed}:
        raise StateError(f"Đợt gửi {blast['id']} ở trạng thái '{STATE_VI[blast['state']]}': "
                         f"không thể chuyển sang '{STATE_VI[target.value]}'.")  # fmt: skip
    if not compare_and_set(conn, blasts, blast["id"], "state", blast["state"], state=target.value, **values):
        raise StateError(f"Đợt gửi {blast['id']} vừa được người khác thay đổi; hãy thử lại.")


# -- starting -----------------------------------------------------------------------------


def start_due(conn: Connection, settings: Settings, now: datetime) -> list[int]:
    """Start every scheduled blast whose time has come (see `start`); returns those started."""
    due = conn.execute(
        select(blasts.c.id).where(blasts.c.state == BlastState.SCHEDULED.value, blasts.c.start_at <= now)
    ).scalars()
    return [blast_id for blast_id in list(due) if start(conn, get(conn, blast_id), settings, now)]


def start(conn: Connection, blast: dict[str, Any], settings: Settings, now: datetime) -> bool:
    """Materialise and run a scheduled blast; one whose time is gone is marked instead, never sent stale.

    Past its not_after it is `expired`; started later than `[scheduler] grace_seconds` after its
    start_at (everything was down) it is `missed`. False when it did not start, also when another
    worker or the scheduler started it first.
    """
    late = (now - utc(blast["start_at"])).total_seconds()
    gone = blast["not_after"] is not None and utc(blast["not_after"]) <= now
    if gone or late > settings.scheduler.grace_seconds:
        state = BlastState.EXPIRED if gone else BlastState.MISSED
        if compare_and_set(conn, blasts, blast["id"], "state", BlastState.SCHEDULED.value, state=state.value,
                           finished_at=now):  # fmt: skip
            log.warning("blast.not_started", blast_id=blast["id"], state=state.value, late_seconds=round(late))
        return False
    _serialise_materialising(conn)
    scheduled = BlastState.SCHEDULED.value
    if not compare_and_set(conn, blasts, blast["id"], "state", scheduled, state=BlastState.RUNNING.value,
                           started_at=now):  # fmt: skip
        return False
    count, held = materialise(conn, blast, settings, now)
    conn.execute(update(blasts).where(blasts.c.id == blast["id"]).values(recipients=count, held=held))
    log.info("blast.started", blast_id=blast["id"], recipients=count, **held)
    return True


def _serialise_materialising(conn: Connection) -> None:
    """One blast materialises at a time, so the caps of one see the queue of the other.

    SQLite serialises writers already; on PostgreSQL two workers starting blasts at once would
    each count the other's rows as not yet there.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7410001)")


def materialise(conn: Connection, blast: dict[str, Any], settings: Settings, now: datetime) -> tuple[int, dict]:
    """One queued delivery per recipient, one INSERT … SELECT; returns the rows added and who was held back.

    People at their cap go a day later (`policy.capped = "defer"`) or not at all ("skip"). A
    rotation gives each person the next alert of its series they have not received.
    """
    series = [(slug, alert_id) for slug, alert_id in blast["series"]] if blast["series"] else None
    slug = None if series else conn.execute(select(alerts.c.slug).where(alerts.c.id == blast["alert_id"])).scalar_one()
    segment = Segment.from_json(blast["segment"])
    days = settings.dispatch.already_received_days
    rules = exclusions(conn, blast["channel"], slug, now, days, settings.dispatch.cap_per_day)
    content = rotation_choice(series, now, days) if series else literal(blast["alert_id"])
    excluded = or_(rules.opted_out, rules.no_channel, rules.already_received)
    eligible = and_(matches(segment, conn.dialect.name), ~excluded)
    defer = settings.policy.capped == "defer"
    at, capping = deliveries.c.next_attempt_at.type, rules.busy is not None
    due = literal(now, at)
    if defer and capping:
        due = case((rules.capped, literal(now + DEFER, at)), else_=due)
    # Counted before the insert, whose own rows would make everyone "already received". Few people
    # are at their cap: counting them walks the capped set, not the segment.
    rotating = [content.is_not(None)] if series else []
    held = select(func.count()).select_from(rules.from_()).where(rules.capped, eligible, *rotating)
    held_back = {"deferred" if defer else "capped": conn.execute(held).scalar() if capping else 0}
    where = eligible if defer else and_(eligible, ~rules.capped)
    before = conn.execute(select(func.max(deliveries.c.id))).scalar() or 0
    added = _insert(conn, blast, content, rules.from_(), where, due)
    queue.enqueue_started(conn, blast["id"], blast["priority"], before, None if defer and capping else now)
    return added, held_back


def _insert(conn: Connection, blast: dict[str, Any], content: Any, source: Any, where: Any, due: Any) -> int:
    """INSERT … SELECT the deliveries of `blast` for the subscribers of `source` matching `where`, due at `due`.

    `content` is the alert id each gets: a literal, or a rotation's per-person choice, which
    may be None (nothing left to send them) and then adds no row.
    """
    s = subscribers.c
    chosen = select(
        literal(blast["id"]).label("blast_id"), s.id.label("subscriber_id"), content.label("alert_id"), s.msisdn,
        s.carrier, s.province_code, s.commune_code, literal(blast["priority"]).label("priority"),
        literal(DeliveryStatus.QUEUED.value).label("status"), literal(0).label("attempts"),
        due.label("next_attempt_at"),
    ).select_from(source).where(where)  # fmt: skip
    columns = ["blast_id", "subscriber_id", "alert_id", "msisdn", "carrier", "province_code", "commune_code",
               "priority", "status", "attempts", "next_attempt_at"]  # fmt: skip
    if blast["channel"] == "zalo_then_sms":  # who has no Zalo goes by SMS from the start
        no_zalo = s.channel_mask.op("&")(Channel.ZALO.mask) == 0
        chosen = chosen.add_columns(case((no_zalo, literal("sms")), else_=literal(None)).label("channel"))
        columns.append("channel")
    if blast["series"]:
        inner = chosen.subquery()
        chosen = select(inner).where(inner.c.alert_id.is_not(None))
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(deliveries).from_select(columns, chosen).on_conflict_do_nothing()
    # psycopg's cursor is closed before rowcount is read unless SQLAlchemy is told to keep it.
    return conn.execute(statement.execution_options(preserve_rowcount=True)).rowcount


def counts(conn: Connection, blast_id: int) -> dict[str, int]:
    """Deliveries of a blast by status (every status present, zeros included)."""
    found = dict(
        conn.execute(
            select(deliveries.c.status, func.count())
            .where(deliveries.c.blast_id == blast_id)
            .group_by(deliveries.c.status)
        ).all()
    )
    return {status.value: found.get(status.value, 0) for status in DeliveryStatus}


def channels(conn: Connection, blast: dict[str, Any]) -> dict[str, Any]:
    """Messages of a blast by the channel they go (or went) on, and how many wait for Zalo's receipt.

    A row without a channel of its own goes on the blast's first: Zalo in a `zalo_then_sms` blast.
    """
    d = deliveries.c
    first = "zalo" if blast["channel"] == "zalo_then_sms" else blast["channel"]
    on = func.coalesce(d.channel, first)
    found = dict(conn.execute(select(on, func.count()).where(d.blast_id == blast["id"]).group_by(on)).all())
    waiting = select(func.count()).select_from(receipt_waits).where(receipt_waits.c.blast_id == blast["id"])
    return {"by_channel": found, "awaiting_receipt": conn.execute(waiting).scalar_one()}
