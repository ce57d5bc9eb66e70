"""Segments: who a blast reaches, as codes resolved from names, and as SQL over subscribers.

A segment is provinces ∪ communes ∪ legacy districts, ∩ audiences, ∩ carriers, ∩ channel;
the exclusions (opted out, no such channel, frequency cap, already received this alert) are
separate predicates so the preview can count each reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    ScalarSelect,
    Select,
    Subquery,
    and_,
    false,
    func,
    literal,
    or_,
    select,
    union_all,
)

from dispatcher.domain import Audience, BlastState, Channel, DeliveryStatus, audience_mask, means_everyone
from dispatcher.errors import UsageError
from dispatcher.models import alerts, blasts, deliveries, subscribers
from dispatcher.phones import InvalidNumber, parse_carrier
from dispatcher.regions import SCHEME_2025, Level, RegionIndex

CHANNEL_POLICIES = {
    "sms": Channel.SMS.mask,
    "zalo": Channel.ZALO.mask,
    "zalo_then_sms": Channel.SMS.mask | Channel.ZALO.mask,
}
# States in which a message counts against caps and "already received": it went or is going out.
COUNTED = (DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.UNKNOWN)
# …and for "already received" also what is queued to go: it will be received.
RECEIVING = [str(x) for x in (*COUNTED, DeliveryStatus.QUEUED)]


@dataclass(frozen=True)
class SegmentSpec:
    """The audience as the liaison wrote it."""

    provinces: tuple[str, ...] = ()
    communes: tuple[str, ...] = ()
    legacy_districts: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    carriers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Segment:
    """The audience as codes: what the SQL selects."""

    spec: SegmentSpec
    province_codes: tuple[int, ...] = ()
    commune_codes: tuple[int, ...] = ()
    legacy_district_codes: tuple[int, ...] = ()
    partial_communes: tuple[int, ...] = ()
    audience_mask: int = 0
    carriers: tuple[str, ...] = ()
    labels: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        """Stored with the blast: what was asked and what it meant."""
        return {**asdict(self), "spec": asdict(self.spec)}

    @classmethod
    def from_json(cls, data: dict) -> Segment:
        """The segment a blast stored."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "spec"}
        spec = SegmentSpec(**{k: tuple(v) for k, v in data["spec"].items()})
        return cls(spec=spec, **values)


def resolve(spec: SegmentSpec, regions: RegionIndex) -> Segment:
    """Codes for every name in `spec`; unknown or ambiguous names raise a UsageError listing candidates."""
    if not (spec.provinces or spec.communes or spec.legacy_districts):
        raise UsageError("Cần chọn ít nhất một tỉnh/thành phố, xã/phường hoặc quận/huyện cũ.", field="segment")
    provinces, communes, districts, partial, labels = set(), set(), set(), set(), []
    names = [(n, Level.PROVINCE) for n in spec.provinces] + [(n, Level.COMMUNE) for n in spec.communes]
    names += [(n, Level.DISTRICT) for n in spec.legacy_districts]
    for name, level in names:
        resolution = regions.resolve(name, frozenset({level}))
        unit = resolution.matched
        labels.append(regions.label(resolution))
        if resolution.whole_province:
            provinces.add(unit.code)
            continue
        communes.update(c.unit.code for c in resolution.communes)
        partial.update(c.unit.code for c in resolution.communes if c.partial)
        if unit.level is Level.DISTRICT:
            districts.add(unit.code)  # people listed by old district, without a commune
        elif unit.level is Level.PROVINCE and unit.scheme != SCHEME_2025:
            districts.update(_legacy_districts_of(regions, unit.code))
    return Segment(
        spec=spec, province_codes=tuple(sorted(provinces)), commune_codes=tuple(sorted(communes)),
        legacy_district_codes=tuple(sorted(districts)), partial_communes=tuple(sorted(partial)),
        audience_mask=_audiences(spec.audiences), carriers=_carriers(spec.carriers), labels=tuple(labels),
    )  # fmt: skip


def _legacy_districts_of(regions: RegionIndex, province_code: int) -> list[int]:
    """The districts a legacy province had."""
    return [
        u.code
        for u in regions.units.values()
        if u.level is Level.DISTRICT and u.scheme != SCHEME_2025 and u.province_code == province_code
    ]


def _audiences(names: tuple[str, ...]) -> int:
    if any(means_everyone(name) for name in names):  # mask 0: no audience filter
        if len(names) > 1:
            raise UsageError("Nhóm đối tượng 'tất cả' (all) không đi cùng nhóm khác: chọn một trong hai.")
        return 0
    try:
        return audience_mask({Audience.parse(name) for name in names})
    except ValueError as exc:
        known = ", ".join(a.slug for a in Audience)
        raise UsageError(f"Nhóm đối tượng không rõ '{exc}' (nhận: {known}).") from None


def _carriers(names: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(sorted({parse_carrier(name).value for name in names}))
    except InvalidNumber as exc:
        raise UsageError(f"Nhà mạng: {exc}.") from None


def matches(segment: Segment, dialect: str = "postgresql", people: Any = None) -> ColumnElement[bool]:
    """Subscribers inside the segment's regions, audiences and carriers (before exclusions).

    `people`: the columns to test, when not those of `subscribers` (the preview's counts). On
    SQLite a province is matched as `province_code + 0`: a whole province is most of the table,
    and one sequential scan (2.4 s for a million) beats an index walk with a random row fetch
    per subscriber (6.6 s).
    """
    s = subscribers.c if people is None else people
    province = s.province_code + 0 if dialect == "sqlite" else s.province_code
    region = or_(
        province.in_(segment.province_codes) if segment.province_codes else false(),
        s.commune_code.in_(segment.commune_codes) if segment.commune_codes else false(),
        and_(s.commune_code.is_(None), s.legacy_district_code.in_(segment.legacy_district_codes))
        if segment.legacy_district_codes
        else false(),
    )
    conditions = [region]
    if segment.audience_mask:
        conditions.append(s.audience_mask.op("&")(segment.audience_mask) != 0)
    if segment.carriers:
        conditions.append(s.carrier.in_(segment.carriers))
    return and_(*conditions)


@dataclass(frozen=True)
class Exclusions:
    """Why a subscriber inside the segment is not sent this blast, as SQL predicates.

    The history predicates look at sets LEFT JOINed to subscribers (`from_()`), computed once per
    statement: an `IN (subquery)` inside a CASE is re-run per subscriber by PostgreSQL.
    """

    opted_out: ColumnElement[bool]
    no_channel: ColumnElement[bool]
    received: Subquery | None  # who already received the alert; None: not asked (rotations, or turned off)
    busy: Subquery | None  # who is at the cap; None: nobody is

    @property
    def already_received(self) -> ColumnElement[bool]:
        return false() if self.received is None else self.received.c.subscriber_id.is_not(None)

    @property
    def capped(self) -> ColumnElement[bool]:
        return false() if self.busy is None else self.busy.c.subscriber_id.is_not(None)

    def any(self) -> ColumnElement[bool]:
        """Excluded for some reason."""
        return or_(self.opted_out, self.no_channel, self.already_received, self.capped)

    def items(self) -> list[tuple[str, ColumnElement[bool]]]:
        """(reason, predicate) in the order reasons are reported: one reason per person."""
        return [("opted_out", self.opted_out), ("no_channel", self.no_channel),
                ("already_received", self.already_received), ("capped", self.capped)]  # fmt: skip

    def from_(self) -> FromClause:
        """Subscribers with the history sets the predicates need, to select from."""
        joined: FromClause = subscribers
        for source in (self.received, self.busy):
            if source is not None:
                joined = joined.outerjoin(source, source.c.subscriber_id == subscribers.c.id)
        return joined


def exclusions(
    conn: Connection, channel: str, alert_slug: str | None, now: datetime, received_days: int, cap_per_day: int
) -> Exclusions:
    """The exclusion predicates for a blast of `alert_slug` on `channel` starting at `now`.

    A rotation (`alert_slug` None) picks each person's alert itself (`rotation_choice`), so
    "already received" is decided there. History sets that hold nobody now are left out: joined,
    a set costs a lookup per subscriber even when empty (~0.4 s a million on SQLite), and it
    usually is: nobody is at the cap unless blasts went out that day.
    """
    s, d, b = subscribers.c, deliveries.c, blasts.c
    received = None
    if received_days > 0 and alert_slug:
        # Any version of the alert, from the blasts started since: their deliveries, not the whole log.
        recent = select(b.id).where(b.started_at >= now - timedelta(days=received_days))
        received = (
            select(d.subscriber_id)
            .where(d.blast_id.in_(recent), d.alert_id.in_(versions(alert_slug)), d.status.in_(RECEIVING))
            .group_by(d.subscriber_id)
            .subquery("received")
        )
    return Exclusions(
        opted_out=s.opted_out_at.is_not(None),
        no_channel=lacks_channel(channel, s.channel_mask),
        received=received if received is not None and _holds_anyone(conn, received) else None,
        busy=_busy(conn, now, cap_per_day),
    )


def lacks_channel(channel: str, channel_mask: ColumnElement[int]) -> ColumnElement[bool]:
    """Whoever has none of the channels a blast on `channel` may use (by their `channel_mask`)."""
    return channel_mask.op("&")(CHANNEL_POLICIES[channel]) == 0


def _holds_anyone(conn: Connection, found: Subquery) -> bool:
    return conn.execute(select(literal(1)).select_from(found).limit(1)).first() is not None


def _busy(conn: Connection, now: datetime, cap_per_day: int) -> Subquery | None:
    """Who reaches the cap in the 24 h around `now` (sent in the last day, or queued to go in the next); None: nobody.

    Counting what other running blasts still hold in their queues keeps two blasts that start
    together from each filling the same person's cap.
    """
    d, b = deliveries.c, blasts.c
    day = timedelta(days=1)
    in_window = or_(
        and_(d.status.in_([str(x) for x in COUNTED]), d.sent_at >= now - day),
        and_(d.status == DeliveryStatus.QUEUED.value, d.next_attempt_at < now + day),
    )
    # Only blasts still going or finished within the day can hold such rows: the log's older
    # millions are not read. (A blast sends nothing after its finished_at, but one taken up
    # again to resend its unknowns is running until it finishes anew.)
    live = [str(x) for x in (BlastState.RUNNING, BlastState.PAUSED)]
    recent = select(b.id).where(or_(b.state.in_(live), b.finished_at >= now - day))
    # A person has one delivery per blast: with fewer such blasts than the cap nobody can be at
    # it, and counting (a read of every row they wrote: ~0.5 s a million) is skipped.
    if conn.execute(select(func.count()).select_from(recent.subquery())).scalar_one() < cap_per_day:
        return None
    found = (
        select(d.subscriber_id)
        .where(d.blast_id.in_(recent), in_window)
        .group_by(d.subscriber_id)
        .having(func.count() >= cap_per_day)
        .subquery("busy")
    )
    return found if _holds_anyone(conn, found) else None


def versions(slug: str | ColumnElement[str]) -> Select:
    """The ids of every version of an alert: "already received" means any of them."""
    return select(alerts.c.id).where(alerts.c.slug == slug)


def rotation_choice(series: Sequence[tuple[str, int]], now: datetime, received_days: int) -> ScalarSelect:
    """Per subscriber, the id of the next alert of `series` ((slug, id), in order): SQL, correlated to `subscribers`.

    Never-received alerts (no version of them) come first, in series order; once every alert has
    been received, the one received longest ago; an alert received within `received_days` is
    never chosen (None: the person has had them all recently).
    """
    s, d = subscribers.c, deliveries.c
    # A UNION ALL of literal rows: SQLite does not take column names on a VALUES derived table.
    ranked = union_all(*(select(literal(slug).label("slug"), literal(alert_id).label("alert_id"),
                                literal(rank).label("rank"))
                         for rank, (slug, alert_id) in enumerate(series))).subquery("series")  # fmt: skip
    version = alerts.alias("version")
    history = deliveries.join(version, version.c.id == d.alert_id).join(blasts, blasts.c.id == d.blast_id)
    received = and_(d.subscriber_id == s.id, version.c.slug == ranked.c.slug, d.status.in_(RECEIVING))
    last = func.max(blasts.c.started_at)
    cutoff = now - timedelta(days=received_days)
    return (
        select(ranked.c.alert_id)
        .select_from(ranked.outerjoin(history, received))
        .group_by(ranked.c.alert_id, ranked.c.rank)
        .having(or_(last.is_(None), last < cutoff))
        .order_by(last.is_not(None), last, ranked.c.rank)
        .limit(1)
        .correlate(subscribers)
        .scalar_subquery()
    )
