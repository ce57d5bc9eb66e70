"""Blasts (đợt gửi): preview, four-eyes approval, materialising recipients, state changes.

A blast is created with the preview the liaison saw and waits for a second person. When it
starts, its recipients become one delivery row each with a single INSERT … SELECT, so opt-outs
made until then are respected, and running it twice adds nothing (unique blast × subscriber).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, and_, case, func, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dispatcher import alerts as catalogue
from dispatcher import labels, queue
from dispatcher.audit import audit
from dispatcher.config import ZALO_ROUTE, Settings
from dispatcher.db import compare_and_set
from dispatcher.domain import (
    AlertStatus,
    Audience,
    BlastState,
    Channel,
    DeliveryStatus,
    Priority,
    audience_mask,
    audiences_of,
    means_everyone,
)
from dispatcher.errors import ConfigError, InputRejected, NotAllowed, NotFound, StateError, UsageError
from dispatcher.formats import moment, number
from dispatcher.models import alerts, blasts, deliveries, receipt_waits, subscriber_counts, subscribers, utc
from dispatcher.policy import QuietHours, quiet_hours
from dispatcher.regions import RegionIndex
from dispatcher.segments import (
    CHANNEL_POLICIES,
    Exclusions,
    Segment,
    exclusions,
    lacks_channel,
    matches,
    rotation_choice,
)

log = structlog.get_logger(__name__)
ENCODINGS = ("auto", "unicode", "ascii")
REASONS = ("opted_out", "no_channel", "already_received", "capped")
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
    status = labels.alert_status(latest["status"])
    raise StateError(f"Mẫu '{slug}' chưa được duyệt (trạng thái '{status}'): cần duyệt trước khi gửi.")


def approved_alerts(conn: Connection) -> list[dict[str, Any]]:
    """The alerts a blast may send now (their approved version), by id: what a liaison picks from."""
    a = alerts.c
    query = select(a.slug, a.version, a.title, a.priority).where(a.status == AlertStatus.APPROVED.value)
    return [dict(row) for row in conn.execute(query.order_by(a.slug)).mappings()]


def rendering_for(alert_row: dict[str, Any], encoding: str) -> catalogue.Rendering:
    """The worst-case rendering a blast sends (longest region names): what parts are counted on."""
    renderings = catalogue.render(catalogue.spec_of(alert_row))
    return renderings.ascii if catalogue.MessageTemplate.of(alert_row, encoding).ascii else renderings.unicode


# -- preview ------------------------------------------------------------------------------

START_SKEW = timedelta(minutes=1)  # a start this little in the past is clocks disagreeing, not a mistake
ZALO_ROUTE_NEEDED = ("Kênh '{channel}' cần cổng Zalo trong [routes] zalo = [...]; chưa cấu hình cổng Zalo nào: "
                     "hãy gửi qua kênh SMS.")  # fmt: skip
NOT_AFTER = "giờ 'không gửi sau'"  # the console's "Không gửi sau" field, the CLI's --not-after
# Who a blast's people go to on each channel policy: "zalo_then_sms" sends people without Zalo by SMS.
VIA = {"sms": ("sms",), "zalo": ("zalo",), "zalo_then_sms": ("zalo", "sms")}


def preview(
    conn: Connection, request: BlastRequest, settings: Settings, regions: RegionIndex, now: datetime
) -> dict[str, Any]:
    """Recipients, exclusions by reason, per carrier and region, parts, cost by channel and time to send.

    Refuses, as `create` does, a window in which none of the messages could go out.
    """
    _check_request(request, settings, now)
    alert_row = approved_alert(conn, request.alert_slug)
    shown = _preview(conn, _for_alert(request, alert_row), alert_row, settings, regions, now)
    _refuse_hopeless(shown, settings)
    return shown


def for_alert(segment: Segment, audiences: Iterable[str]) -> Segment:
    """`segment` narrowed to `audiences` (an alert's, or a rotation's together) when it names none itself.

    An alert for the public ('public') is for everyone; a segment asking 'all' takes everyone.
    """
    groups = {Audience.parse(name) for name in audiences}
    if segment.spec.audiences or not groups or Audience.PUBLIC in groups:
        return segment
    return replace(segment, audience_mask=audience_mask(groups))


def _for_alert(request: BlastRequest, alert_row: dict[str, Any]) -> BlastRequest:
    return replace(request, segment=for_alert(request.segment, alert_row["audiences"]))


def _preview(
    conn: Connection,
    request: BlastRequest,
    alert_row: dict[str, Any],
    settings: Settings,
    regions: RegionIndex,
    now: datetime,
) -> dict[str, Any]:
    start = request.start_at or now
    tally = _tally(_count(conn, request, alert_row["slug"], settings, start), settings.policy.capped == "defer")
    rendering = rendering_for(alert_row, request.encoding)
    parts = rendering.info.parts
    largest = max(tally.by_commune, key=tally.by_commune.__getitem__, default=None)
    sample = catalogue.MessageTemplate.of(alert_row, request.encoding).render(regions, *largest)[0] if largest else ""
    channels = _by_channel(tally, parts, settings, request.channel)
    timing = _timing(request, settings, alert_row["priority"] == Priority.URGENT.value, start, tally)
    return {
        "alert": {"id": alert_row["slug"], "version": alert_row["version"], "title": alert_row["title"]},
        "segment": list(request.segment.labels), "audiences": _audiences_shown(request.segment, alert_row),
        "channel": request.channel, "encoding": str(rendering.info.encoding), "text": sample,
        "matched": tally.recipients + sum(tally.excluded.values()), "recipients": tally.recipients,
        "excluded": {reason: tally.excluded.get(reason, 0) for reason in REASONS},
        "deferred": tally.deferred,
        "by_carrier": dict(sorted(tally.by_carrier.items(), key=lambda kv: -kv[1])),
        "by_province": _by_province(tally.by_commune, regions),
        "partial_communes": list(request.segment.partial_communes),
        "parts_per_message": parts, "total_parts": channels["recipients_by_channel"].get("sms", 0) * parts,
        "cost": sum(channels["cost_by_channel"].values()), "currency": settings.sms.currency, **channels,
        **timing, "warnings": _warnings(request, settings, timing, tally.recipients),
    }  # fmt: skip


def _check_request(request: BlastRequest, settings: Settings, now: datetime) -> None:
    if request.channel not in CHANNEL_POLICIES:
        raise UsageError(f"Kênh '{request.channel}' không hợp lệ (nhận: {', '.join(CHANNEL_POLICIES)}).")
    if request.encoding not in ENCODINGS:
        raise UsageError(f"Bảng mã '{request.encoding}' không hợp lệ (nhận: {', '.join(ENCODINGS)}).")
    _check_times(request, settings.app.timezone, now)
    if request.rate is not None and not math.isfinite(request.rate):
        raise UsageError(f"Tốc độ gửi phải là một số hữu hạn tin/giây, nhận được {request.rate}.", field="rate")
    if request.rate is not None and request.rate <= 0:
        raise UsageError("Tốc độ gửi phải lớn hơn 0 tin/giây.", field="rate")
    # One message's wait must fit well inside a claim's lease, or it would go out after the lease.
    slowest = 4 / settings.dispatch.lease_seconds
    if request.rate is not None and request.rate < slowest:
        shown = math.ceil(slowest * 1000) / 1000  # rounded up: the rate the message names is itself accepted
        raise UsageError(f"Tốc độ gửi tối thiểu {number(shown, 3)} tin/giây (một tin mỗi {number(1 / slowest)} giây) "
                         "với [dispatch] lease_seconds hiện tại.", field="rate")  # fmt: skip


def _check_times(request: BlastRequest, zone: str, now: datetime) -> None:
    """A start already past would send at once what the liaison meant for later: refused beyond the skew."""
    if request.start_at is not None and request.start_at < now - START_SKEW:
        raise UsageError(f"Giờ bắt đầu {moment(request.start_at, zone)} đã qua (bây giờ là {moment(now, zone)}): "
                         "chọn một thời điểm sắp tới, hoặc để trống giờ bắt đầu để gửi ngay khi được duyệt.",
                         field="start_at")  # fmt: skip
    start = request.start_at or now
    if request.not_after is not None and request.not_after <= start:
        raise UsageError(f"{NOT_AFTER.capitalize()} phải sau thời điểm bắt đầu gửi.", field="not_after")


def _count(conn: Connection, request: BlastRequest, slug: str, settings: Settings, start: datetime) -> dict:
    """People of the segment grouped by (exclusion reason or None, carrier, province, commune, channel it goes on).

    Summed from `subscriber_counts`, which knows every reason but the history ones: whoever
    already received the alert or is at the cap is then counted on the subscribers themselves,
    joined to those sets, and moved from the recipients to their reason.
    """
    rules = exclusions(
        conn, request.channel, slug, start, settings.dispatch.already_received_days, settings.dispatch.cap_per_day
    )
    found = _counted(conn, request)
    if rules.received is None and rules.busy is None:
        return found
    for (reason, *key), n in _held_by_history(conn, request, rules).items():
        found[(None, *key)] = found.get((None, *key), 0) - n
        found[(reason, *key)] = found.get((reason, *key), 0) + n
    return {group: n for group, n in found.items() if n}


def _counted(conn: Connection, request: BlastRequest) -> dict:
    """`_count`'s groups from the counts, as if nobody had received the alert or reached the cap."""
    c = subscriber_counts.c
    # A missing commune or district is 0 there: NULL again, as `matches` and the preview read it.
    people = select(
        c.province_code, func.nullif(c.commune_code, 0).label("commune_code"),
        func.nullif(c.legacy_district_code, 0).label("legacy_district_code"), c.carrier, c.audience_mask,
        c.channel_mask, c.opted_out, c.people,
    ).subquery("people")  # fmt: skip
    p = people.c
    reason = case((p.opted_out, literal("opted_out")), (lacks_channel(request.channel, p.channel_mask),
                  literal("no_channel")), else_=literal(None))  # fmt: skip
    via = _via(request.channel, p.channel_mask)
    query = (
        select(reason.label("reason"), p.carrier, p.province_code, p.commune_code, via.label("via"), func.sum(p.people))
        .where(matches(request.segment, conn.dialect.name, p))
        .group_by(reason, p.carrier, p.province_code, p.commune_code, via)
        .having(func.sum(p.people) > 0)
    )
    return {tuple(row[:-1]): int(row[-1]) for row in conn.execute(query)}


def _held_by_history(conn: Connection, request: BlastRequest, rules: Exclusions) -> dict:
    """The segment's people left out only for having received the alert or reached the cap, grouped as `_count`'s."""
    s = subscribers.c
    reason = case(*[(predicate, literal(name)) for name, predicate in rules.items()], else_=literal(None))
    via = _via(request.channel, s.channel_mask)
    query = (
        select(reason.label("reason"), s.carrier, s.province_code, s.commune_code, via.label("via"), func.count())
        .select_from(rules.from_())
        .where(
            matches(request.segment, conn.dialect.name),
            or_(rules.already_received, rules.capped),
            ~rules.opted_out,
            ~rules.no_channel,
        )  # fmt: skip
        .group_by(reason, s.carrier, s.province_code, s.commune_code, via)
    )
    return {tuple(row[:-1]): row[-1] for row in conn.execute(query)}


def _via(channel: str, channel_mask: Any) -> Any:
    """The channel a person of this `channel_mask` is sent first: "zalo_then_sms" sends people without Zalo by SMS."""
    if channel == "zalo_then_sms":
        return case((channel_mask.op("&")(Channel.ZALO.mask) == 0, literal("sms")), else_=literal("zalo"))
    return literal(VIA[channel][0])


@dataclass
class _Tally:
    """The people of a preview, added up the ways its sections show them."""

    recipients: int = 0
    deferred: int = 0
    excluded: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_carrier: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_commune: dict[tuple[int, int | None], int] = field(default_factory=lambda: defaultdict(int))
    by_via: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (channel, carrier)


def _tally(found: dict, defer: bool) -> _Tally:
    """Recipients from `_count`'s groups; people at their cap are recipients a day later when `defer`."""
    tally = _Tally()
    for (reason, carrier, province, commune, via), n in found.items():
        if reason is not None and not (reason == "capped" and defer):
            tally.excluded[reason] += n
            continue
        tally.recipients += n
        tally.deferred += n if reason else 0
        tally.by_carrier[carrier] += n
        tally.by_commune[(province, commune)] += n
        tally.by_via[(via, carrier)] += n
    return tally


def _by_channel(tally: _Tally, parts: int, settings: Settings, channel: str) -> dict[str, dict[str, int]]:
    """Recipients and cost per channel: SMS by parts at the carrier's price, Zalo per message at `[zalo] price`."""
    people = {via: sum(n for (v, _), n in tally.by_via.items() if v == via) for via in VIA[channel]}
    sms = sum(n * parts * settings.sms.price_for(carrier) for (v, carrier), n in tally.by_via.items() if v == "sms")
    cost = {"sms": sms, "zalo": people.get("zalo", 0) * settings.zalo.price}
    return {"recipients_by_channel": people, "cost_by_channel": {via: round(cost[via]) for via in VIA[channel]}}


def _audiences_shown(segment: Segment, alert_row: dict[str, Any]) -> dict[str, Any]:
    """Whose audiences the blast takes: the alert's ('alert'), those asked ('asked') or everyone asked ('all')."""
    asked = segment.spec.audiences
    if any(means_everyone(name) for name in asked):
        return {"source": "all", "groups": [], "everyone": True}
    groups = [a.slug for a in audiences_of(segment.audience_mask)] if asked else list(alert_row["audiences"])
    return {"source": "asked" if asked else "alert", "groups": groups, "everyone": segment.audience_mask == 0}


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


def _pace(request: BlastRequest, settings: Settings, urgent: bool) -> tuple[QuietHours, float]:
    """The quiet hours the blast keeps and the messages per second it is counted at."""
    used = {name for route in settings.routes.values() for name in route}
    limits = [g.rate for name, g in settings.gateways.items() if name in used and g.rate]
    rate = request.rate or (min(limits) if limits else settings.policy.assumed_rate)
    return quiet_hours(settings, request.channel, urgent), rate


def _timing(request: BlastRequest, settings: Settings, urgent: bool, start: datetime, tally: _Tally) -> dict:
    """When it starts and finishes, and how many messages its not_after would leave to expire.

    People at their cap go a day later; without a start it starts on approval (counted from now).
    """
    quiet, rate = _pace(request, settings, urgent)
    normal = tally.recipients - tally.deferred
    finish = quiet.finish_time(start, normal, rate)
    if tally.deferred:
        finish = max(finish, quiet.finish_time(start + DEFER, tally.deferred, rate))
    expiring = 0
    if request.not_after is not None and finish > request.not_after:
        on_time = min(normal, quiet.sendable(start, request.not_after, rate))
        on_time += min(tally.deferred, quiet.sendable(start + DEFER, request.not_after, rate))
        expiring = tally.recipients - on_time
    return {
        "start_at": request.start_at.isoformat() if request.start_at else None,
        "starts_on_approval": request.start_at is None,
        "not_after": request.not_after.isoformat() if request.not_after else None,
        "eta_seconds": round((finish - start).total_seconds()), "finish_at": finish.isoformat(),
        "expiring": expiring, "first_message_at": quiet.finish_time(start, 1, rate).isoformat(),
        "quiet_hours": None if quiet.start == quiet.end else f"{quiet.start:%H:%M}–{quiet.end:%H:%M}",
    }  # fmt: skip


def _warnings(request: BlastRequest, settings: Settings, timing: dict, recipients: int) -> list[dict[str, str]]:
    """What the liaison must know before asking for approval, each with a code and a Vietnamese message."""
    found = []
    if request.channel != "sms" and ZALO_ROUTE not in settings.routes:
        found.append({"code": "zalo_route_missing", "message": ZALO_ROUTE_NEEDED.format(channel=request.channel)})
    if timing["expiring"] and timing["expiring"] < recipients:
        deadline = moment(datetime.fromisoformat(timing["not_after"]), settings.app.timezone)
        found.append({"code": "expiring", "message": f"Chỉ {number(recipients - timing['expiring'])} trong "
                      f"{number(recipients)} tin gửi kịp trước {NOT_AFTER} {deadline}: {number(timing['expiring'])} "
                      "tin sẽ quá hạn, không được gửi."})  # fmt: skip
    return found


def _refuse_hopeless(shown: dict[str, Any], settings: Settings) -> None:
    """No blast whose every message would expire: a not_after inside the night, or too close at its rate."""
    if not shown["recipients"] or shown["expiring"] < shown["recipients"]:
        return
    zone = settings.app.timezone
    at = {key: moment(datetime.fromisoformat(shown[key]), zone) for key in ("not_after", "first_message_at")}
    start = "khi được duyệt (tính từ bây giờ)" if shown["starts_on_approval"] else moment(
        datetime.fromisoformat(shown["start_at"]), zone)  # fmt: skip
    quiet = f"giờ yên lặng {shown['quiet_hours']}" if shown["quiet_hours"] else "không có giờ yên lặng"
    raise UsageError(f"Không tin nào gửi kịp trước {NOT_AFTER} {at['not_after']}: bắt đầu {start}, {quiet}, "
                     f"tin đầu tiên sớm nhất đi lúc {at['first_message_at']}. Hãy chọn {NOT_AFTER} muộn hơn "
                     "hoặc bắt đầu sớm hơn; không tạo đợt gửi.", field="not_after")  # fmt: skip


# -- lifecycle ----------------------------------------------------------------------------


def create(
    conn: Connection, request: BlastRequest, actor: str, settings: Settings, regions: RegionIndex, now: datetime
) -> tuple[int, dict[str, Any]]:
    """Store a blast waiting for approval, with its preview; refuses an empty one."""
    _check_request(request, settings, now)
    if request.channel != "sms" and ZALO_ROUTE not in settings.routes:  # a preview only warns: it may count Zalo users
        raise ConfigError(ZALO_ROUTE_NEEDED.format(channel=request.channel), field="channel")
    alert_row = approved_alert(conn, request.alert_slug)
    request = _for_alert(request, alert_row)
    shown = _preview(conn, request, alert_row, settings, regions, now)
    if shown["recipients"] == 0:
        raise InputRejected("Phân đoạn này không có người nhận nào (sau khi loại trừ): không tạo đợt gửi.")
    _refuse_hopeless(shown, settings)
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
    audit(conn, now, actor, "blast.approve", f"blast:{blast_id}", {}, before={"state": blast["state"]},
          after={"state": BlastState.SCHEDULED.value, "start_at": start_at.isoformat()})  # fmt: skip
    log.info("blast.approved", blast_id=blast_id, actor=actor)
    return get(conn, blast_id)


def pause(conn: Connection, blast_id: int, actor: str, now: datetime) -> dict[str, Any]:
    """Hold a scheduled or running blast: workers claim nothing more of it."""
    blast = get(conn, blast_id)
    _move(conn, blast, {BlastState.SCHEDULED, BlastState.RUNNING}, BlastState.PAUSED)
    audit(conn, now, actor, "blast.pause", f"blast:{blast_id}", {"from": blast["state"]},
          before={"state": blast["state"]}, after={"state": BlastState.PAUSED.value})  # fmt: skip
    return get(conn, blast_id)


def resume(conn: Connection, blast_id: int, actor: str, now: datetime) -> dict[str, Any]:
    """Let a paused blast go on where it stopped."""
    blast = get(conn, blast_id)
    target = BlastState.RUNNING if blast["started_at"] is not None else BlastState.SCHEDULED
    _move(conn, blast, {BlastState.PAUSED}, target)
    audit(conn, now, actor, "blast.resume", f"blast:{blast_id}", {}, before={"state": blast["state"]},
          after={"state": target.value})  # fmt: skip
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
    audit(conn, now, actor, "blast.cancel", f"blast:{blast_id}", {"cancelled_messages": cancelled},
          before={"state": blast["state"]}, after={"state": BlastState.CANCELLED.value})  # fmt: skip
    return get(conn, blast_id)


def resend_unknown(conn: Connection, blast_id: int, actor: str, now: datetime) -> int:
    """The operator's decision to send again the messages a dead worker left unknown."""
    blast = get(conn, blast_id)
    if blast["state"] in (BlastState.CANCELLED.value, BlastState.EXPIRED.value):
        raise StateError(f"Đợt gửi {blast_id} ở trạng thái '{labels.blast_state(blast['state'])}': không gửi lại.")
    count = conn.execute(
        update(deliveries)
        .where(deliveries.c.blast_id == blast_id, deliveries.c.status == DeliveryStatus.UNKNOWN.value)
        .values(status=DeliveryStatus.QUEUED.value, next_attempt_at=now, lease_until=None, claimed_by=None)
    ).rowcount
    queue.enqueue(conn, deliveries.c.blast_id == blast_id)
    if count and blast["state"] == BlastState.COMPLETED.value:
        conn.execute(update(blasts).where(blasts.c.id == blast_id).values(state=BlastState.RUNNING.value))
    state = BlastState.RUNNING.value if count and blast["state"] == BlastState.COMPLETED.value else blast["state"]
    audit(conn, now, actor, "blast.resend_unknown", f"blast:{blast_id}", {"messages": count},
          before={"state": blast["state"]}, after={"state": state})  # fmt: skip
    return count


def _move(conn: Connection, blast: dict[str, Any], allowed: set[BlastState], target: BlastState, **values: Any) -> None:
    if blast["state"] not in {s.value for s in allowed}:
        raise StateError(f"Đợt gửi {blast['id']} ở trạng thái '{labels.blast_state(blast['state'])}': "
                         f"không thể chuyển sang '{labels.blast_state(target)}'.")  # fmt: skip
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
    count, held, (first, last) = materialise(conn, blast, settings, now)
    ids = {"first_delivery_id": first, "last_delivery_id": last} if count else {}
    conn.execute(update(blasts).where(blasts.c.id == blast["id"]).values(recipients=count, held=held, **ids))
    log.info("blast.started", blast_id=blast["id"], recipients=count, **held)
    return True


def _serialise_materialising(conn: Connection) -> None:
    """One blast materialises at a time, so the caps of one see the queue of the other.

    SQLite serialises writers already; on PostgreSQL two workers starting blasts at once would
    each count the other's rows as not yet there.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7410001)")


def materialise(
    conn: Connection, blast: dict[str, Any], settings: Settings, now: datetime
) -> tuple[int, dict, tuple[int, int]]:
    """One queued delivery per recipient, one INSERT … SELECT; returns the rows added, who was held back, their ids.

    The ids are one range, (first, last): no other blast writes deliveries meanwhile.

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
    last = conn.execute(select(func.max(deliveries.c.id))).scalar() or 0
    return added, held_back, (before + 1, last)


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


def listing(conn: Connection, limit: int = 50, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The newest blasts (of `states` when given), newest first: what `blast list` and the console show."""
    query = select(blasts).order_by(blasts.c.id.desc()).limit(limit)
    if states is not None:
        query = query.where(blasts.c.state.in_(list(states)))
    return [dict(row) for row in conn.execute(query).mappings()]


def id_range(conn: Connection, blast_id: int) -> tuple[int | None, int | None] | None:
    """The lowest and highest id of a blast's deliveries ((None, None) before it starts); None for no such blast.

    A blast's deliveries are materialised together, so their ids are one range: reading it in order
    needs no index on deliveries.blast_id (which would cost the materialisation and PostgreSQL's HOT updates).
    """
    b = blasts.c
    found = conn.execute(select(b.first_delivery_id, b.last_delivery_id).where(b.id == blast_id)).first()
    return None if found is None else (found[0], found[1])


def _its_deliveries(conn: Connection, blast_id: int) -> list[Any]:
    """The conditions that select a blast's deliveries: its range of ids when known (read in order, no index)."""
    d = deliveries.c
    ids = id_range(conn, blast_id)
    if ids is None or ids[0] is None:
        return [d.blast_id == blast_id]
    return [d.id.between(*ids), d.blast_id + 0 == blast_id]


def by_carrier(conn: Connection, blast_id: int) -> dict[str, dict[str, int]]:
    """Deliveries of a blast by carrier, then status (only what occurs)."""
    d = deliveries.c
    found: dict[str, dict[str, int]] = {}
    its = _its_deliveries(conn, blast_id)
    query = select(d.carrier, d.status, func.count()).where(*its).group_by(d.carrier, d.status)
    for carrier, status, n in conn.execute(query):
        found.setdefault(carrier, {})[status] = n
    return found


def counts(conn: Connection, blast_id: int) -> dict[str, int]:
    """Deliveries of a blast by status (every status present, zeros included)."""
    state, its = deliveries.c.status, _its_deliveries(conn, blast_id)
    found = dict(conn.execute(select(state, func.count()).where(*its).group_by(state)).all())
    return {status.value: found.get(status.value, 0) for status in DeliveryStatus}


def channels(conn: Connection, blast: dict[str, Any]) -> dict[str, Any]:
    """Messages of a blast by the channel they go (or went) on, and how many wait for Zalo's receipt.

    A row without a channel of its own goes on the blast's first: Zalo in a `zalo_then_sms` blast.
    """
    d = deliveries.c
    first = "zalo" if blast["channel"] == "zalo_then_sms" else blast["channel"]
    on = func.coalesce(d.channel, first)
    found = dict(conn.execute(select(on, func.count()).where(*_its_deliveries(conn, blast["id"])).group_by(on)).all())
    waiting = select(func.count()).select_from(receipt_waits).where(receipt_waits.c.blast_id == blast["id"])
    return {"by_channel": found, "awaiting_receipt": conn.execute(waiting).scalar_one()}
