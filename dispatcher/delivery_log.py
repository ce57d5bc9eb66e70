"""The delivery log: what became of each message, as an operator asks for it, and the tally of running blasts.

Both faces read it here (`canhbao log` and its exports; the console's log page). Rows are read
as a stream, so an export of a million rows stays in flat memory, and every phone number leaves
this module masked.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, case, func, or_, select

from dispatcher import labels
from dispatcher.blasts import id_range
from dispatcher.domain import BlastState, DeliveryStatus
from dispatcher.errors import UsageError
from dispatcher.models import (
    alerts,
    blasts,
    claims,
    deliveries,
    delivery_attempts,
    delivery_queue,
    receipt_waits,
    subscribers,
)
from dispatcher.phones import Carrier, InvalidNumber, mask, parse_carrier
from dispatcher.regions import SCHEME_2025, Level, RegionIndex, Resolution

EXPORT_FORMATS = ("csv", "xlsx")
# (key, header): the columns of an export, as a Vietnamese operator reads them in Excel.
EXPORT_COLUMNS = (
    ("id", "mã tin"), ("blast_id", "đợt gửi"), ("msisdn", "số điện thoại"), ("carrier", "nhà mạng"),
    ("province_code", "mã tỉnh"), ("province", "tỉnh/thành phố"), ("channel", "kênh"), ("status", "trạng thái"),
    ("attempts", "số lần gửi"), ("gateway", "cổng"), ("provider_id", "mã của nhà cung cấp"), ("error_code", "mã lỗi"),
    ("error", "lỗi"), ("queued_at", "xếp hàng lúc"), ("sent_at", "gửi lúc"), ("finished_at", "có kết quả lúc"),
)  # fmt: skip
TIMES = ("queued_at", "sent_at", "finished_at")
# A console page reads ids downward this many at a time, and at most PAGE_SCAN of them: a filter that
# matches rarely (a rare state, a small commune) then costs a bounded read, not the whole log, and the
# page says where the next one goes on. Measured on SQLite: ~0.2 s of CPU per million ids read, more
# within a blast that is sending (its pages are in the write-ahead log, rewritten as it goes); a state
# or gateway filter over a sending blast's rows finds none among them (all queued or sent), so its
# pages cost their whole scan: 200,000 ids keep such a page near 50 ms beside the worker.
PAGE_WINDOW = 100_000
PAGE_SCAN = 200_000


@dataclass(frozen=True)
class LogFilter:
    """Which deliveries to read; each field set narrows the log, `limit` caps it (None: all)."""

    blast_id: int | None = None
    status: DeliveryStatus | None = None
    carrier: Carrier | None = None
    province_codes: frozenset[int] | None = None
    commune_codes: frozenset[int] | None = None
    since: datetime | None = None
    msisdn: str | None = None
    gateway: str | None = None
    limit: int | None = None
    # A page of the console: newest first, older than `before_id` (paging by key, never OFFSET).
    newest_first: bool = False
    before_id: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"Số dòng tối đa phải từ 1 trở lên (nhận được {self.limit}).", field="limit")


@dataclass(frozen=True)
class Place:
    """Where a log is narrowed to, in today's codes (None: anywhere), and what a former unit asked for became."""

    province_codes: frozenset[int] | None = None
    commune_codes: frozenset[int] | None = None
    notes: tuple[str, ...] = ()


def place(regions: RegionIndex, province: str | None = None, commune: str | None = None) -> Place:
    """Today's codes for a province and a commune as typed; both narrow the log.

    Deliveries carry today's codes only, and an old province code may be a province of today
    (Kiên Giang's 91 is An Giang's): a former unit is read as the communes it became.
    """
    found = Place()
    for text, level in ((province, Level.PROVINCE), (commune, Level.COMMUNE)):
        if text is not None:
            found = _narrowed(found, regions, regions.resolve(text, frozenset({level})))
    return found


def _narrowed(found: Place, regions: RegionIndex, resolution: Resolution) -> Place:
    if resolution.whole_province:
        return Place(frozenset({resolution.matched.code}), found.commune_codes, found.notes)
    codes = frozenset(cover.unit.code for cover in resolution.communes)
    communes = codes if found.commune_codes is None else found.commune_codes & codes
    notes = found.notes
    if resolution.matched.scheme != SCHEME_2025:
        notes += (f"{regions.label(resolution)}: chỉ các tin gửi tới những xã/phường này.",)
    return Place(found.province_codes, communes, notes)


def carrier_named(text: str) -> Carrier:
    """A carrier as people write it ('Viettel', 'vina', 'MobiFone'), or a UsageError listing the known ones."""
    try:
        return parse_carrier(text)
    except InvalidNumber as exc:
        reason = str(exc)
        raise UsageError(f"{reason[:1].upper()}{reason[1:]}.") from None


def export_format(text: str) -> str:
    """'CSV' → 'csv'; a format we cannot write is a UsageError."""
    key = text.strip().lower().lstrip(".")
    if key not in EXPORT_FORMATS:
        raise UsageError(f"Định dạng xuất {text.strip()!r} không có (nhận: {', '.join(EXPORT_FORMATS)}).")
    return key


def _query(log: LogFilter, ids: tuple[int, int] | None = None) -> Select[Any]:
    """The log's statement; with `ids` (low, high) only that range of ids, read by the primary key."""
    d = deliveries.c
    queued_at = blasts.c.started_at  # every delivery is queued when its blast starts
    # The channel it went on: its own after a fallback, else the blast's first.
    channel = func.coalesce(d.channel, case((blasts.c.channel == "sms", "sms"), else_="zalo"))
    # Within a range of ids the blast is a filter, not an index to read (SQLite would take all of
    # the blast's entries of (blast_id, subscriber_id) and sort them by id).
    blast = d.blast_id if ids is None else d.blast_id + 0
    asked = [(blast, log.blast_id), (d.status, log.status), (d.carrier, log.carrier), (d.msisdn, log.msisdn),
             (d.gateway, log.gateway)]  # fmt: skip
    conditions = [column == value for column, value in asked if value is not None]
    if log.msisdn is not None:  # one person's messages, through (alert_id, subscriber_id): no scan of the log
        person = select(subscribers.c.id).where(subscribers.c.msisdn == log.msisdn).scalar_subquery()
        conditions += [d.alert_id.in_(select(alerts.c.id)), d.subscriber_id == person]
    if ids is not None:
        conditions.append(d.id.between(*ids))
    within = [(d.province_code, log.province_codes), (d.commune_code, log.commune_codes)]
    conditions += [column.in_(sorted(codes)) for column, codes in within if codes is not None]
    if log.since is not None:
        conditions.append(queued_at >= log.since)
    if log.before_id is not None:
        conditions.append(d.id < log.before_id)
    query = select(
        *(d.id, d.blast_id, d.msisdn, d.carrier, d.province_code, channel.label("channel"), d.status, d.attempts),
        *(d.gateway, d.provider_id, d.error_code, d.error, queued_at.label("queued_at"), d.sent_at, d.finished_at),
    ).select_from(deliveries.join(blasts, blasts.c.id == d.blast_id))
    return query.where(*conditions).order_by(d.id.desc() if log.newest_first else d.id).limit(log.limit)


def read(conn: Connection, log: LogFilter) -> Iterator[dict[str, Any]]:
    """The deliveries `log` asks for, oldest first, fetched a few thousand at a time; numbers masked."""
    result = conn.execution_options(yield_per=2_000).execute(_query(log))  # a server-side cursor on PostgreSQL
    for row in result.mappings():
        yield {**row, "msisdn": mask(row["msisdn"])}


def page(
    conn: Connection, log: LogFilter, size: int = 50, window: int = PAGE_WINDOW, scan: int = PAGE_SCAN
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the log, newest first, numbers masked; and the key of the next (older) page, or None.

    The page reads ids downward (from `before_id`, within the blast's range when one is asked),
    `window` at a time, until it has `size` rows or has read `scan` ids: a rare filter gives a
    short page, or an empty one, whose key says where the next goes on. Paging stays by key, and
    a page's cost bounded, at any size of log.
    """
    asked = replace(log, newest_first=True, before_id=None)
    if log.msisdn is not None:  # a person's messages are few and found by index: one statement
        rows = _masked(conn, replace(asked, limit=size + 1), None, log.before_id)
        return rows[:size], (rows[size - 1]["id"] if len(rows) > size else None)
    low, high = _ids(conn, log)
    top, rows = high, []
    while high >= low and len(rows) <= size and top - high < scan:
        start = max(low, high - window + 1)
        rows += _masked(conn, replace(asked, limit=size + 1 - len(rows)), (start, high), None)
        high = start - 1
    if len(rows) > size:
        return rows[:size], rows[size - 1]["id"]
    return rows, (high + 1 if high >= low else None)


def _masked(conn: Connection, log: LogFilter, ids: tuple[int, int] | None, before: int | None) -> list[dict[str, Any]]:
    query = _query(log, ids)
    if before is not None:
        query = query.where(deliveries.c.id < before)
    return [{**row, "msisdn": mask(row["msisdn"])} for row in conn.execute(query).mappings()]


def _ids(conn: Connection, log: LogFilter) -> tuple[int, int]:
    """(lowest, highest) id a page of `log` may hold: the blast's range, below `before_id`."""
    found = None
    if log.blast_id is not None:
        found = id_range(conn, log.blast_id)
        if found is None:  # no such blast: nothing to read
            return 1, 0
    if found is not None and found[0] is not None:
        low, high = found
    else:  # the whole log (a blast not started yet has no rows, and its filter finds none)
        low, high = 1, conn.execute(select(func.max(deliveries.c.id))).scalar() or 0
    return low, high if log.before_id is None else min(high, log.before_id - 1)


def count(conn: Connection, log: LogFilter) -> int:
    """How many rows `read` would give (for an export's progress)."""
    return conn.execute(select(func.count()).select_from(_query(log).order_by(None).subquery())).scalar_one()


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    """A log row for `--json` and the API: codes as stored, times in ISO 8601."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


# -- exports ------------------------------------------------------------------------------


def _cells(row: dict[str, Any], zone: ZoneInfo, province: Callable[[int], str]) -> dict[str, Any]:
    """A row as an export shows it: labels for codes, local wall-clock times without offset."""
    shown = {**row, "carrier": labels.carrier(row["carrier"]), "channel": labels.channel(row["channel"]),
             "status": labels.delivery_state(row["status"]), "province": province(row["province_code"])}  # fmt: skip
    for key in TIMES:
        shown[key] = row[key].astimezone(zone).replace(tzinfo=None, microsecond=0) if row[key] else None
    return shown


def write_csv(
    rows: Iterable[dict[str, Any]], out: TextIO, zone: str, province: Callable[[int], str], header: bool = True
) -> int:
    """Write `rows` as CSV for Excel: a BOM, Vietnamese headers, local times; returns how many rows.

    `header` False writes the rows alone: a later piece of a CSV streamed in pieces.
    """
    writer = csv.writer(out)
    if header:
        out.write("\ufeff")  # Excel reads UTF-8 only behind a BOM
        writer.writerow([title for _, title in EXPORT_COLUMNS])
    written = 0
    local = ZoneInfo(zone)
    for row in rows:
        cells = _cells(row, local, province)
        writer.writerow(["" if cells[key] is None else cells[key] for key, _ in EXPORT_COLUMNS])
        written += 1
    return written


def write_xlsx(rows: Iterable[dict[str, Any]], path: Path, zone: str, province: Callable[[int], str]) -> int:
    """Write `rows` as an XLSX sheet in openpyxl's write-only mode (rows go to disk as they come); returns the count."""
    from openpyxl import Workbook  # only exports need it: its import is kept off every other command

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Nhật ký gửi")
    sheet.freeze_panes = "A2"
    for letter, (_, header) in zip("ABCDEFGHIJKLMNOP", EXPORT_COLUMNS, strict=True):
        sheet.column_dimensions[letter].width = max(12, len(header) + 2)
    sheet.append([_xlsx_cell(sheet, header, bold=True) for _, header in EXPORT_COLUMNS])
    written = 0
    local = ZoneInfo(zone)
    for row in rows:
        cells = _cells(row, local, province)
        sheet.append([_xlsx_cell(sheet, cells[key]) for key, _ in EXPORT_COLUMNS])
        written += 1
    book.save(path)
    return written


def _xlsx_cell(sheet: Any, value: Any, bold: bool = False) -> Any:
    if not isinstance(value, datetime) and not bold:
        return value  # a plain value costs openpyxl no cell object
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    cell = WriteOnlyCell(sheet, value=value)
    if bold:
        cell.font = Font(bold=True)
    else:
        cell.number_format = "dd/mm/yyyy hh:mm:ss"  # a real date Excel sorts and filters, shown day first
    return cell


def export(rows: Iterable[dict[str, Any]], fmt: str, path: Path, zone: str, province: Callable[[int], str]) -> int:
    """Export `rows` to `path` whole or not at all: written beside it, then moved into place; returns the count."""
    if path.is_dir():
        raise UsageError(f"{path} là một thư mục: hãy cho tên tệp, ví dụ {path / ('nhat-ky.' + fmt)}.")
    partial = path.with_name(f".{path.name}.part")
    try:
        if fmt == "xlsx":
            written = write_xlsx(rows, partial, zone, province)
        else:
            with partial.open("w", encoding="utf-8", newline="") as fh:
                written = write_csv(rows, fh, zone, province)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return written


# -- the tally of running blasts (the worker's progress) ----------------------------------


@dataclass
class BlastsProgress:
    """The deliveries of every blast running (or finished) since `since`: the worker's progress bar and summary.

    A delivery counts as done once it no longer waits: not on the queue, not in flight, not
    waiting for Zalo's receipt. A retry or a fallback to SMS puts it back on the queue, so the
    bar never counts a message twice, whatever mix of blasts, channels and workers.
    """

    since: datetime
    totals: dict[int, int] = field(default_factory=dict)

    def refresh(self, conn: Connection) -> tuple[int, int]:
        """(done, total) now, taking in the blasts that started since the last refresh."""
        b = blasts.c
        seen = select(b.id).where(or_(b.state == BlastState.RUNNING.value, b.finished_at >= self.since))
        for blast_id in set(conn.execute(seen).scalars()) - self.totals.keys():
            total = select(func.count()).where(deliveries.c.blast_id == blast_id)
            self.totals[blast_id] = conn.execute(total).scalar_one()
        total = sum(self.totals.values())
        return total - self._waiting(conn), total

    def _waiting(self, conn: Connection) -> int:
        ids = list(self.totals)
        if not ids:
            return 0
        queued, waits = (select(func.count()).select_from(t).where(t.c.blast_id.in_(ids))
                         for t in (delivery_queue, receipt_waits))  # fmt: skip
        in_flight = conn.execute(select(claims.c.delivery_ids).where(claims.c.blast_id.in_(ids))).scalars().all()
        held = sum(text.count(",") + 1 for text in in_flight if text)  # a claim lists its deliveries
        return conn.execute(queued).scalar_one() + conn.execute(waits).scalar_one() + held

    def by_state(self, conn: Connection) -> dict[str, int]:
        """The deliveries of the blasts seen, by state (only states that occur)."""
        if not self.totals:
            return {}
        d = deliveries.c
        query = select(d.status, func.count()).where(d.blast_id.in_(list(self.totals))).group_by(d.status)
        found = dict(conn.execute(query).all())
        return {status.value: found[status.value] for status in DeliveryStatus if found.get(status.value)}


def attempts(conn: Connection, delivery_id: int) -> list[dict[str, Any]] | None:
    """Every attempt of one delivery, oldest first, ending with its success when a gateway accepted it;
    None when there is no such delivery. Each says the gateway, the provider's id and the error as given."""
    d, a = deliveries.c, delivery_attempts.c
    row = conn.execute(select(d.status, d.gateway, d.provider_id, d.parts, d.attempts, d.sent_at)
                       .where(d.id == delivery_id)).mappings().first()  # fmt: skip
    if row is None:
        return None
    query = select(a.attempt, a.gateway, a.outcome, a.provider_id, a.error_code, a.error, a.at)
    found = [dict(r) for r in conn.execute(query.where(a.delivery_id == delivery_id).order_by(a.id)).mappings()]
    if row["provider_id"] is not None:
        found.append({"attempt": row["attempts"], "gateway": row["gateway"], "outcome": "sent", "error": None,
                      "provider_id": row["provider_id"], "error_code": None, "at": row["sent_at"]})  # fmt: skip
    return found
