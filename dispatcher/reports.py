"""Reach reports of a period: what went, what arrived, whom it reached, against the plans' targets.

Every figure comes from the rollups (dispatcher/rollups.py), never from `deliveries`: a report is
a few sums over small tables, and comes out the same after old deliveries are purged. The report
is one plain structure, `Report`, that every format renders (`tables()` gives it as tables).
"""

from __future__ import annotations

import calendar
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, text

from dispatcher import labels
from dispatcher.config import Settings
from dispatcher.delivery_log import place
from dispatcher.domain import METHODS, Audience, DeliveryStatus
from dispatcher.errors import UsageError
from dispatcher.formats import moment
from dispatcher.models import alerts, blasts
from dispatcher.regions import SCHEME_2025, Level, RegionIndex

BREAKDOWNS = ("province", "commune", "carrier", "channel", "method", "alert", "audience")
COUNTED = ("delivered", "failed", "undeliverable", "expired", "cancelled")
CHANNEL_LABELS = {"sms": "SMS", "zalo": "Zalo", "zalo_sms": "Zalo chuyển sang SMS"}
_PERIOD = re.compile(r"^(?P<y>\d{4})(?:-(?:(?P<h>H[12])|(?P<q>Q[1-4])|(?P<m>\d{1,2})))?$", re.IGNORECASE)


@dataclass(frozen=True)
class Period:
    """Local calendar days `first`..`last` (inclusive) in the deployment's time zone."""

    name: str
    title: str
    first: date
    last: date

    @property
    def days(self) -> tuple[int, int]:
        """The first and last day as the rollups key them (yyyymmdd)."""
        return day_key(self.first), day_key(self.last)


def day_key(day: date) -> int:
    """A local date as the rollups store it: 20260630."""
    return day.year * 10000 + day.month * 100 + day.day


def key_day(key: int) -> date:
    """The local date of a yyyymmdd key."""
    return date(key // 10000, key // 100 % 100, key % 100)


def parse_period(text_: str) -> Period:
    """'2026-H1', '2026', '2026-Q3', '2026-11' or 'FROM..TO' (2026-01-15..2026-02-14); a UsageError otherwise."""
    raw = text_.strip()
    if ".." in raw:
        return _range(raw)
    found = _PERIOD.match(raw)
    if not found:
        raise UsageError(f"Kỳ báo cáo '{raw}' không hiểu được: dùng 2026-H1, 2026, 2026-Q3, 2026-11 hoặc TỪ..ĐẾN "
                         "(2026-01-15..2026-02-14).")  # fmt: skip
    year = int(found["y"])
    if found["h"]:
        half = int(found["h"][1])
        title = "6 tháng đầu năm" if half == 1 else "6 tháng cuối năm"
        return _months(raw.upper(), f"{title} {year}", year, 6 * half - 5, 6 * half)
    if found["q"]:
        quarter = int(found["q"][1])
        return _months(raw.upper(), f"quý {quarter} năm {year}", year, 3 * quarter - 2, 3 * quarter)
    if found["m"]:
        month = int(found["m"])
        if not 1 <= month <= 12:
            raise UsageError(f"Kỳ báo cáo '{raw}': tháng {month} không có.")
        return _months(raw, f"tháng {month}/{year}", year, month, month)
    return _months(raw, f"năm {year}", year, 1, 12)


def _months(name: str, title: str, year: int, first: int, last: int) -> Period:
    return Period(name, title, date(year, first, 1), date(year, last, calendar.monthrange(year, last)[1]))


def _range(raw: str) -> Period:
    start, _, end = raw.partition("..")
    try:
        first, last = date.fromisoformat(start.strip()), date.fromisoformat(end.strip())
    except ValueError:
        raise UsageError(f"Kỳ báo cáo '{raw}': ngày phải viết YYYY-MM-DD (2026-01-15..2026-02-14).") from None
    if last < first:
        raise UsageError(f"Kỳ báo cáo '{raw}': ngày cuối trước ngày đầu.")
    title = f"từ {first:%d/%m/%Y} đến {last:%d/%m/%Y}"
    return Period(raw, title, first, last)


@dataclass
class Counts:
    """Messages of one row of a breakdown: how many, by final state, and what is not final yet."""

    messages: int = 0
    sent: int = 0
    parts: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))
    pending: int = 0

    def add(self, status: str, messages: int, sent: int, parts: int, final: bool) -> None:
        """Count `messages` in `status` (`final`: a counted state; else still open)."""
        self.messages += messages
        self.sent += sent
        self.parts += parts
        if final:
            self.by_status[status] = self.by_status.get(status, 0) + messages
        else:
            self.pending += messages


@dataclass
class Coverage:
    """People of one audience reached in the period, against the subscribers of that audience and the target."""

    audience: str
    label: str
    reached: int
    base: int
    target: float | None

    @property
    def share(self) -> float:
        """Percent of the audience reached."""
        return round(100.0 * self.reached / self.base, 1) if self.base else 0.0

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None: no target for this audience)."""
        return None if self.target is None else self.share >= self.target


@dataclass
class Report:
    """Everything a reach report shows; every format renders this one structure."""

    period: Period
    place: str
    generated_at: datetime
    totals: Counts
    people: int
    by_province: dict[str, Counts]
    by_commune: dict[str, Counts]
    by_carrier: dict[str, Counts]
    by_channel: dict[str, Counts]
    by_method: dict[str, Counts]
    by_alert: dict[str, Counts]
    by_audience: dict[str, Counts]
    people_by_province: dict[str, int]
    people_by_method: dict[str, int]
    coverage: list[Coverage]
    top_alerts: list[dict[str, Any]]
    blasts: list[dict[str, Any]]
    cost: dict[str, float]
    weekly: list[dict[str, Any]]
    uncounted: dict[str, int]
    notes: list[str]
    issuer: str = ""
    recipients: list[str] = field(default_factory=list)

    def tables(self) -> list[tuple[str, list[str], list[list[Any]]]]:
        """The report as (title, header, rows) tables, in the order the formats show them."""
        head = ["Tin", "Đã gửi", "Số phần", "Đã nhận", "Lỗi", "Không tới được", "Quá hạn", "Đã huỷ", "Chưa xong"]
        tables = [("Tổng hợp", ["Chỉ tiêu", "Giá trị"], self._summary())]
        for title, first, rows in (
            ("Theo tỉnh/thành phố", "Tỉnh/thành phố", self.by_province),
            ("Theo xã/phường", "Xã/phường", self.by_commune),
            ("Theo nhà mạng", "Nhà mạng", self.by_carrier), ("Theo kênh", "Kênh", self.by_channel),
            ("Theo phương thức lừa đảo", "Phương thức", self.by_method), ("Theo mẫu cảnh báo", "Mẫu", self.by_alert),
            ("Theo nhóm đối tượng", "Nhóm đối tượng", self.by_audience),
        ):  # fmt: skip
            tables.append((title, [first, *head], [[name, *_cells(c)] for name, c in rows.items()]))
        tables += [
            ("Độ bao phủ theo nhóm đối tượng", ["Nhóm", "Số người đã nhận", "Số thuê bao", "Tỷ lệ (%)", "Chỉ tiêu (%)",
             "Đạt"], [[c.label, c.reached, c.base, c.share, c.target, _met(c.met)] for c in self.coverage]),
            ("Số người đã nhận theo tỉnh/thành phố", ["Tỉnh/thành phố", "Số người"],
             [[k, v] for k, v in self.people_by_province.items()]),
            ("Số người đã nhận theo phương thức", ["Phương thức", "Số người"],
             [[k, v] for k, v in self.people_by_method.items()]),
            ("Mẫu cảnh báo tới nhiều người nhất", ["Mẫu", "Phương thức", "Số người"],
             [[a["alert"], a["method"], a["people"]] for a in self.top_alerts]),
            ("Các đợt gửi", ["Số", "Mẫu", "Trạng thái", "Người tạo", "Người duyệt", "Bắt đầu", "Tin", "Đã nhận"],
             [[b["id"], b["alert"], b["state"], b["created_by"], b["approved_by"] or "", b["started_at"], b["messages"],
               b["delivered"]] for b in self.blasts]),
            ("Xu hướng theo tuần", ["Tuần (từ ngày)", "Tin đã gửi", "Đã nhận", "Số người"],
             [[w["week"], w["sent"], w["delivered"], w["people"]] for w in self.weekly]),
        ]  # fmt: skip
        return tables

    def _summary(self) -> list[list[Any]]:
        rows: list[list[Any]] = [
            ["Kỳ báo cáo", self.period.title], ["Địa bàn", self.place], ["Tổng số tin", self.totals.messages],
            ["Tin đã gửi đi", self.totals.sent], ["Số phần tin", self.totals.parts],
            ["Số người đã nhận (không trùng)", self.people],
        ]  # fmt: skip
        rows += [[f"Tin {labels.delivery_state(s)}", n] for s, n in self.totals.by_status.items()]
        rows += [[f"Chi phí {k} (VND)", round(v)] for k, v in self.cost.items()]
        rows += [[f"Chưa tính được: {k}", v] for k, v in self.uncounted.items()]
        return rows + [["Ghi chú", note] for note in self.notes]


def _cells(c: Counts) -> list[int]:
    return [c.messages, c.sent, c.parts, *(c.by_status[s] for s in COUNTED), c.pending]


def _met(met: bool | None) -> str:
    return "" if met is None else ("đạt" if met else "chưa đạt")


@dataclass(frozen=True)
class Scope:
    """Where a report looks: today's province codes and commune codes (None: anywhere), how it was asked."""

    province_codes: frozenset[int] | None
    commune_codes: frozenset[int] | None
    label: str
    notes: tuple[str, ...]

    def sql(self) -> str:
        """The WHERE fragment narrowing a rollup table to this place."""
        parts = ["1 = 1"]
        if self.province_codes is not None:
            parts.append(f"province_code IN ({_ints(self.province_codes)})")
        if self.commune_codes is not None:
            parts.append(f"commune_code IN ({_ints(self.commune_codes)})")
        return " AND ".join(parts)


def _ints(values: frozenset[int]) -> str:
    return ", ".join(str(int(v)) for v in sorted(values)) or "NULL"


def scope(regions: RegionIndex, province: str | None) -> Scope:
    """The place a report covers: everywhere, a province of today, or a former unit read as the communes it became."""
    if province is None:
        return Scope(None, None, "Toàn bộ địa bàn", ())
    found = place(regions, province=province)
    resolution = regions.resolve(province, frozenset({Level.PROVINCE}))
    notes = list(found.notes)
    if resolution.matched.scheme != SCHEME_2025:
        split = [c.unit.name for c in resolution.communes if c.partial]
        if split:
            notes.append(f"Đơn vị cũ bị chia tách: {', '.join(split)} chỉ một phần thuộc {resolution.matched.label}; "
                         "số liệu tính cả xã/phường đó.")  # fmt: skip
    return Scope(found.province_codes, found.commune_codes, regions.label(resolution), tuple(notes))


def build(conn: Connection, settings: Settings, regions: RegionIndex, period: Period, where: Scope,
          now: datetime) -> Report:  # fmt: skip
    """The report of `period` over `where`, from the rollups alone."""
    facts = _Facts(conn, *period.days, where)
    alert_info = _alerts(conn)
    tally = _tally(facts, regions, alert_info)
    reach = _reach(conn, *period.days, where)
    return Report(
        period=period, place=where.label, generated_at=now, totals=tally["totals"][""], people=reach["all"],
        by_province=tally["province"], by_commune=tally["commune"], by_carrier=tally["carrier"],
        by_channel=tally["channel"], by_method=tally["method"], by_alert=tally["alert"],
        by_audience=tally["audience"], people_by_province=_province_people(reach, regions),
        people_by_method={_method(m): n for m, n in sorted(reach["method"].items(), key=lambda kv: -kv[1])},
        coverage=_coverage(conn, settings, reach, where), top_alerts=_top_alerts(reach, alert_info),
        blasts=_blasts(conn, facts.both("blast_id"), settings.app.timezone),
        cost=_cost(facts.both("carrier", "channel"), settings), weekly=_weekly(conn, facts.rows("day"), period, where),
        uncounted=_uncounted(facts.pending()), notes=list(where.notes), issuer=settings.reports.issuer,
        recipients=list(settings.reports.recipients),
    )  # fmt: skip


FACT_COLUMNS = ("day", "blast_id", "alert_id", "province_code", "commune_code", "carrier", "channel", "status",
                "audience_mask")  # fmt: skip


@dataclass
class _Facts:
    """The period's facts (final) and pending rows, summed in SQL by the columns a breakdown keeps.

    Rows keep the shape of the tables (the other columns read 0 or ''), so every reader unpacks them alike.
    """

    conn: Connection
    first: int
    last: int
    where: Scope

    def rows(self, *keep: str, table: str = "delivery_facts") -> list[tuple]:
        """Rows of `table` summed by `keep` and the status."""
        kept = (*keep, "status")
        shown = [c if c in kept else ("''" if c in ("carrier", "channel") else "0") for c in FACT_COLUMNS]
        group = ", ".join(dict.fromkeys(kept))
        sql = (f"SELECT {', '.join(shown)}, sum(messages), sum(sent), sum(parts) FROM {table} "
               f"WHERE day BETWEEN :a AND :b AND {self.where.sql()} GROUP BY {group}")  # fmt: skip
        return [tuple(row) for row in self.conn.execute(text(sql), {"a": self.first, "b": self.last})]

    def pending(self, *keep: str) -> list[tuple]:
        """Rows not final yet, summed by `keep` and the status."""
        return self.rows(*keep, table="rollup_pending")

    def both(self, *keep: str) -> list[tuple]:
        """Final and pending rows together."""
        return self.rows(*keep) + self.pending(*keep)


def _alerts(conn: Connection) -> dict[int, dict[str, Any]]:
    a = alerts.c
    found = conn.execute(select(a.id, a.slug, a.version, a.method, a.title))
    return {i: {"name": f"{slug} (v{version})", "method": method, "title": title} for i, slug, version, method, title
            in found}  # fmt: skip


# The breakdowns: the column each sums by.
_BY = {"province": "province_code", "commune": "commune_code", "carrier": "carrier", "channel": "channel",
       "alert": "alert_id", "audience": "audience_mask", "totals": "status"}  # fmt: skip


def _tally(facts: _Facts, regions: RegionIndex, info: dict[int, dict]) -> dict[str, Any]:
    """Every breakdown of the messages, each summed by its own column in SQL (methods from the alerts')."""
    out: dict[str, dict[str, Counts]] = defaultdict(lambda: defaultdict(Counts))
    for name, column in _BY.items():
        index = FACT_COLUMNS.index(column)
        for final, rows in ((True, facts.rows(column)), (False, facts.pending(column))):
            for row in rows:
                status, (messages, sent, parts) = row[7], row[9:]
                for key in _keys(name, row[index], regions, info):
                    out[name][key].add(status, messages, sent, parts, final)
                if name == "alert":
                    method = _method(info.get(row[index], {}).get("method", ""))
                    out["method"][method].add(status, messages, sent, parts, final)
    out["totals"][""]  # noqa: B018  (an empty period still has its totals row)
    return {name: {} for name in BREAKDOWNS} | {
        name: dict(sorted(table.items(), key=lambda kv: -kv[1].messages)) for name, table in out.items()
    }


def _keys(name: str, value: Any, regions: RegionIndex, info: dict[int, dict]) -> list[str]:
    """The rows of breakdown `name` a value counts in (an audience mask counts in each of its audiences)."""
    if name == "totals":
        return [""]
    if name == "audience":
        return [a.label for a in Audience if value & a.mask]
    named = {"province": lambda: _province(regions, value), "commune": lambda: _commune(regions, value),
             "carrier": lambda: labels.carrier(value), "channel": lambda: CHANNEL_LABELS.get(value, value),
             "alert": lambda: info.get(value, {}).get("name", str(value))}  # fmt: skip
    return [named[name]()]


def _province(regions: RegionIndex, code: int) -> str:
    try:
        return regions.province(code).name
    except Exception:  # noqa: BLE001  (a code no scheme knows is still shown, as a code)
        return f"mã tỉnh {code}"


def _commune(regions: RegionIndex, code: int) -> str:
    if not code:
        return "(chưa rõ xã)"
    try:
        unit = regions.commune(code)
        return f"{unit.name}, {regions.province(unit.province_code).name}"
    except Exception:  # noqa: BLE001
        return f"mã xã {code}"


def _method(slug: str) -> str:
    return METHODS.get(slug, slug)


def _reach(conn: Connection, first: int, last: int, where: Scope) -> dict[str, Any]:
    """Unique people of the period: each counted at the row whose previous reach lies before the period."""
    sql = ("SELECT scope, key, province_code, audience_mask, sum(people) FROM reach_counts "
           f"WHERE day BETWEEN :a AND :b AND prev_day < :a AND {where.sql()} "
           "GROUP BY scope, key, province_code, audience_mask")  # fmt: skip
    reach: dict[str, Any] = {"all": 0, "province": defaultdict(int), "mask": defaultdict(int),
                             "method": defaultdict(int), "alert": defaultdict(int)}  # fmt: skip
    for scope_, key, province, mask, people in conn.execute(text(sql), {"a": first, "b": last}):
        if scope_ == "all":
            reach["all"] += people
            reach["province"][province] += people
            reach["mask"][mask] += people
        else:
            reach[scope_][key] += people
    return reach


def _province_people(reach: dict[str, Any], regions: RegionIndex) -> dict[str, int]:
    return {_province(regions, code): n for code, n in sorted(reach["province"].items(), key=lambda kv: -kv[1])}


def _coverage(conn: Connection, settings: Settings, reach: dict[str, Any], where: Scope) -> list[Coverage]:
    """Reached against subscribers (not opted out) per audience, and the configured target."""
    sql = (f"SELECT audience_mask, count(*) FROM subscribers WHERE opted_out_at IS NULL AND {where.sql()} "
           "GROUP BY audience_mask")  # fmt: skip
    base = dict(conn.execute(text(sql)).all())
    targets = settings.reports.targets
    shown = []
    for audience in Audience:
        members = sum(n for mask, n in base.items() if mask & audience.mask)
        reached = sum(n for mask, n in reach["mask"].items() if mask & audience.mask)
        if members or reached or audience.slug in targets:
            shown.append(Coverage(audience.slug, audience.label, reached, members, targets.get(audience.slug)))
    return shown


def _top_alerts(reach: dict[str, Any], info: dict[int, dict], limit: int = 10) -> list[dict[str, Any]]:
    top = sorted(reach["alert"].items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"alert": info.get(int(k), {}).get("name", k), "title": info.get(int(k), {}).get("title", ""),
             "method": _method(info.get(int(k), {}).get("method", "")), "people": n} for k, n in top]  # fmt: skip


def _blasts(conn: Connection, rows: list[tuple], zone: str) -> list[dict[str, Any]]:
    """The blasts with messages in the period, who created and who approved each."""
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for _, blast, *_, status, _, messages, _, _ in rows:
        sums[blast][0] += messages
        sums[blast][1] += messages if status == DeliveryStatus.DELIVERED.value else 0
    if not sums:
        return []
    b, a = blasts.c, alerts.c
    found = conn.execute(
        select(b.id, a.slug, b.state, b.created_by, b.approved_by, b.started_at)
        .join(alerts, a.id == b.alert_id).where(b.id.in_(list(sums))).order_by(b.id)
    )  # fmt: skip
    return [{"id": i, "alert": slug, "state": labels.blast_state(state), "created_by": creator,
             "approved_by": approver, "started_at": moment(started, zone) if started else "",
             "messages": sums[i][0], "delivered": sums[i][1]}
            for i, slug, state, creator, approver, started in found]  # fmt: skip


def _cost(rows: list[tuple], settings: Settings) -> dict[str, float]:
    """As in the preview: SMS parts at the carrier's price, Zalo per message at `[zalo] price`."""
    cost = {"SMS": 0.0, "Zalo": 0.0}
    for *_, carrier, channel, _, _, _, sent, parts in rows:
        if channel == "zalo":
            cost["Zalo"] += sent * settings.zalo.price
        else:
            cost["SMS"] += parts * settings.sms.price_for(carrier)
    return {**cost, "tổng": cost["SMS"] + cost["Zalo"]}


def _weekly(conn: Connection, rows: list[tuple], period: Period, where: Scope) -> list[dict[str, Any]]:
    """Messages sent, delivered and people reached per week (Monday to Sunday, cut at the period's edges)."""
    weeks = _weeks(period)
    found: dict[date, dict[str, int]] = {start: {"sent": 0, "delivered": 0, "people": 0} for start, _ in weeks}
    for day, *_, status, _, _, sent, _ in rows:
        week = _week_of(key_day(day), period)
        found[week]["sent"] += sent
        found[week]["delivered"] += sent if status == DeliveryStatus.DELIVERED.value else 0
    first, last = period.days
    sql = (f"SELECT day, prev_day, sum(people) FROM reach_counts WHERE scope = 'all' AND day BETWEEN :a AND :b "
           f"AND {where.sql()} GROUP BY day, prev_day")  # fmt: skip
    for day, prev, people in conn.execute(text(sql), {"a": first, "b": last}):
        week = _week_of(key_day(day), period)
        if prev < day_key(week):
            found[week]["people"] += people
    return [{"week": f"{start:%d/%m/%Y}", **found[start]} for start, _ in weeks]


def _weeks(period: Period) -> list[tuple[date, date]]:
    weeks, start = [], period.first
    while start <= period.last:
        end = min(start + timedelta(days=6 - start.weekday()), period.last)
        weeks.append((start, end))
        start = end + timedelta(days=1)
    return weeks


def _week_of(day: date, period: Period) -> date:
    return max(day - timedelta(days=day.weekday()), period.first)


def _uncounted(pending: list[tuple]) -> dict[str, int]:
    """What the period could not count yet, by state: reports awaited, outcomes unknown, messages not sent yet."""
    found: dict[str, int] = defaultdict(int)
    for *_, status, _, messages, _, _ in pending:
        found[labels.delivery_state(status)] += messages
    return dict(found)
