"""Statutory reports prepared ahead of their deadlines and kept: every format's bytes in the database.

The plans want the 6-month report before 10 June and the annual one before 10 November, while the
half-year ends on 30 June and the year on 31 December. A report prepared on 1 June therefore covers
the year from 1 January to the end of the day before its preparation (the plans' practice: "from
the start of the year to the preparation day"; the day of preparation itself is not over yet), and
says so in its own title and notes. A report of a past year covers its whole half-year or year.

Preparing again makes a new version; the old ones stay byte for byte as they were handed in. The
files are stored in the database, not on a disk, so every host serves the same bytes.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection, Engine, func, insert, select

from dispatcher import report_formats, reports, rollups
from dispatcher.audit import audit
from dispatcher.config import Settings, month_day
from dispatcher.errors import NotFound, UsageError
from dispatcher.models import prepared_report_files, prepared_reports
from dispatcher.regions import RegionIndex

log = structlog.get_logger(__name__)
FORMATS = report_formats.FORMATS
SCHEDULER = "scheduler"  # who prepared a report the scheduler's job prepared


class Kind(StrEnum):
    """Which statutory report."""

    H1 = "h1"  # the 6-month report, due before 10 June
    YEAR = "year"  # the annual report, due before 10 November

    @property
    def label(self) -> str:
        """The report's name, as a reader says it."""
        return "Báo cáo 6 tháng" if self is Kind.H1 else "Báo cáo năm"


def kind_of(value: str) -> Kind:
    """The statutory report named `value` ('h1' or 'year'); a UsageError otherwise."""
    try:
        return Kind(value.strip().lower())
    except ValueError:
        raise UsageError(f"Loại báo cáo '{value}' không có: dùng h1 (6 tháng) hoặc year (năm).") from None


@dataclass(frozen=True)
class Prepared:
    """One stored version of a statutory report, and the size of each of its files."""

    id: int
    kind: Kind
    year: int
    version: int
    province: str
    place: str
    first: date
    last: date
    deadline: date
    prepared_at: datetime
    prepared_by: str
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Draft:
    """A report rendered and not stored yet: what `store` writes in one short transaction."""

    kind: Kind
    year: int
    province: str
    place: str
    period: reports.Period
    deadline: date
    prepared_at: datetime
    prepared_by: str
    files: dict[str, bytes]


def schedule(settings: Settings, kind: Kind, year: int) -> tuple[date, date]:
    """(preparation day, deadline) of `kind` in `year`, as `[reports]` sets them."""
    config = settings.reports
    if kind is Kind.H1:
        prepare_on, deadline = config.h1_prepare_on, config.h1_deadline
    else:
        prepare_on, deadline = config.year_prepare_on, config.year_deadline
    return date(year, *month_day(prepare_on)), date(year, *month_day(deadline))


def period(kind: Kind, year: int, today: date) -> reports.Period:
    """From 1 January to the end of the period, or to the end of the day before `today` if that comes first."""
    end = date(year, 6, 30) if kind is Kind.H1 else date(year, 12, 31)
    last = min(end, today - timedelta(days=1))
    if last.year < year:
        raise UsageError(f"Năm {year} chưa có ngày nào trọn vẹn để báo cáo (hôm nay {today:%d/%m/%Y}).")
    base = f"6 tháng đầu năm {year}" if kind is Kind.H1 else f"năm {year}"
    title = base if last == end else f"{base} (số liệu tính đến hết ngày {last:%d/%m/%Y})"
    return reports.Period(f"{year}-H1" if kind is Kind.H1 else str(year), title, date(year, 1, 1), last)


def draft(
    engine: Engine, settings: Settings, regions: RegionIndex, kind: Kind, year: int, now: datetime, actor: str,
    province: str | None = None,
) -> Draft:  # fmt: skip
    """Roll up, build and render the report in every format; nothing is stored (rendering takes seconds)."""
    zone = settings.app.timezone
    chosen = period(kind, year, now.astimezone(ZoneInfo(zone)).date())
    where = reports.scope(regions, province)
    deadline = schedule(settings, kind, year)[1]
    rollups.run(engine, zone, now)  # the figures include what finished until now
    with engine.connect() as conn:
        found = reports.build(conn, settings, regions, chosen, where, now)
    found.notes.insert(0, _note(kind, chosen, deadline, now, zone, actor))
    files = {fmt: render(found, fmt) for fmt in FORMATS}
    return Draft(kind, year, province or "", found.place, chosen, deadline, now, actor, files)


def _note(kind: Kind, chosen: reports.Period, deadline: date, now: datetime, zone: str, actor: str) -> str:
    """What the report says of itself: the deadline it serves, the days it counts, who prepared it when."""
    who = "tự động theo lịch" if actor == SCHEDULER else f"bởi {actor}"
    local = now.astimezone(ZoneInfo(zone))
    return (f"{kind.label} phục vụ hạn nộp trước ngày {deadline:%d/%m/%Y}; số liệu tính từ ngày "
            f"{chosen.first:%d/%m/%Y} đến hết ngày {chosen.last:%d/%m/%Y}; chuẩn bị lúc {local:%H:%M %d/%m/%Y} "
            f"({who}).")  # fmt: skip


def render(found: reports.Report, fmt: str) -> bytes:
    """The report's bytes in `fmt`, written by the same code as `canhbao report --format`."""
    if fmt == "json":
        document = report_formats.to_json(found)
        return json.dumps(document, ensure_ascii=False, indent=2, default=str).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="canhbao-report-") as folder:
        path = Path(folder) / f"report.{fmt}"
        report_formats.write(found, fmt, path)
        return path.read_bytes()


def store(conn: Connection, made: Draft) -> Prepared:
    """Keep `made` as the next version of its report, with its files, and audit it (inside `conn`'s transaction)."""
    r = prepared_reports.c
    same = (r.kind == made.kind.value, r.year == made.year, r.province == made.province)
    version = (conn.execute(select(func.max(r.version)).where(*same)).scalar() or 0) + 1
    report_id = conn.execute(insert(prepared_reports).values(
        kind=made.kind.value, year=made.year, province=made.province, version=version, place=made.place,
        period_first=made.period.first, period_last=made.period.last, deadline=made.deadline,
        prepared_at=made.prepared_at, prepared_by=made.prepared_by,
    )).inserted_primary_key[0]  # fmt: skip
    sizes = {fmt: len(content) for fmt, content in made.files.items()}
    conn.execute(insert(prepared_report_files),
                 [{"report_id": report_id, "format": fmt, "size": len(content), "content": content}
                  for fmt, content in made.files.items()])  # fmt: skip
    audit(conn, made.prepared_at, made.prepared_by, "report.prepare", f"prepared_report:{report_id}",
          {"kind": made.kind.value, "year": made.year, "province": made.province, "version": version,
           "first": made.period.first.isoformat(), "last": made.period.last.isoformat(), "sizes": sizes})  # fmt: skip
    log.info("report.prepared", id=report_id, kind=made.kind.value, year=made.year, version=version,
             actor=made.prepared_by, bytes=sum(sizes.values()))  # fmt: skip
    return Prepared(report_id, made.kind, made.year, version, made.province, made.place, made.period.first,
                    made.period.last, made.deadline, made.prepared_at, made.prepared_by, sizes)  # fmt: skip


def prepare(
    engine: Engine, settings: Settings, regions: RegionIndex, kind: Kind, year: int, now: datetime, actor: str,
    province: str | None = None,
) -> Prepared:  # fmt: skip
    """Prepare the statutory report `kind` of `year` now and keep it as a new version."""
    made = draft(engine, settings, regions, kind, year, now, actor, province)
    with engine.begin() as conn:
        return store(conn, made)


def listing(conn: Connection) -> list[Prepared]:
    """Every prepared report, newest first, with the sizes of its files (no content is read)."""
    return _kept(conn)


def one(conn: Connection, report_id: int) -> Prepared:
    """Prepared report `report_id`, with the sizes of its files; NotFound when there is none."""
    found = _kept(conn, report_id)
    if not found:
        raise NotFound(f"Không có báo cáo đã chuẩn bị số {report_id} (xem 'canhbao report list').")
    return found[0]


def _kept(conn: Connection, report_id: int | None = None) -> list[Prepared]:
    """The prepared reports (only `report_id` when given), newest first, with their files' sizes."""
    f, r = prepared_report_files.c, prepared_reports.c
    files, rows = select(f.report_id, f.format, f.size), select(prepared_reports).order_by(r.id.desc())
    if report_id is not None:
        files, rows = files.where(f.report_id == report_id), rows.where(r.id == report_id)
    sizes: dict[int, dict[str, int]] = {}
    for kept_id, fmt, size in conn.execute(files):
        sizes.setdefault(kept_id, {})[fmt] = size
    return [_prepared(row, sizes.get(row.id, {})) for row in conn.execute(rows)]


def _prepared(row: Any, sizes: dict[str, int]) -> Prepared:
    return Prepared(row.id, Kind(row.kind), row.year, row.version, row.province, row.place, row.period_first,
                    row.period_last, row.deadline, row.prepared_at, row.prepared_by,
                    {fmt: sizes[fmt] for fmt in FORMATS if fmt in sizes})  # fmt: skip


def get(conn: Connection, report_id: int, fmt: str) -> bytes:
    """The file of prepared report `report_id` in `fmt`, byte for byte as prepared."""
    if fmt not in FORMATS:
        raise UsageError(f"Định dạng '{fmt}' không có: dùng {', '.join(FORMATS)}.")
    f = prepared_report_files.c
    content = conn.execute(select(f.content).where(f.report_id == report_id, f.format == fmt)).scalar()
    if content is None:
        raise NotFound(f"Không có báo cáo đã chuẩn bị số {report_id} (xem 'canhbao report list').")
    return bytes(content)
