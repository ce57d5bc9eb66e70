"""The audit log: who changed what, when, from where (CLI, console, API), before and after, and why.

The log is append-only: this module only inserts and reads, and the database refuses UPDATE and
DELETE on `audit_log` by triggers (migration 0018, SQLite and PostgreSQL). Where an action came
from is not threaded through every domain signature: each face says it once around a command or
a request (`with acting_through("web", via="session", address=...)`), and `audit` reads it from a
context variable. Code that runs outside any face (the scheduler, the worker, inbound texts)
is recorded as `system`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, insert, select

from dispatcher.errors import UsageError
from dispatcher.models import audit_log

SOURCES = ("cli", "web", "api", "system")
# What a Vietnamese reader is told of each source (a NULL source is the system).
SOURCE_LABELS = {"cli": "dòng lệnh", "web": "bảng điều khiển", "api": "API", "system": "hệ thống"}
# What each action is called in Vietnamese (an action not listed shows as its code).
ACTION_LABELS = {
    "alert.store": "lưu mẫu cảnh báo", "alert.submit": "gửi duyệt mẫu", "alert.approve": "duyệt mẫu",
    "alert.retire": "ngừng dùng mẫu", "blast.create": "tạo đợt gửi", "blast.approve": "duyệt đợt gửi",
    "blast.pause": "tạm dừng đợt gửi", "blast.resume": "tiếp tục đợt gửi", "blast.cancel": "huỷ đợt gửi",
    "blast.resend_unknown": "gửi lại tin chưa rõ", "schedules.sync": "nạp lịch định kỳ",
    "schedule.approve": "duyệt lịch định kỳ", "schedule.run": "chạy lịch định kỳ",
    "subscribers.import": "nhập thuê bao", "subscriber.opt_out": "từ chối nhận tin",
    "subscriber.opt_in": "nhận tin trở lại", "number.reveal": "xem số đầy đủ", "user.add": "thêm người dùng",
    "user.passwd": "đổi mật khẩu", "user.roles": "đổi vai trò", "user.disable": "khoá người dùng",
    "user.enable": "mở khoá người dùng", "token.issue": "cấp khoá API", "token.revoke": "thu hồi khoá API",
    "report.prepare": "chuẩn bị báo cáo định kỳ", "deliveries.purge": "xoá tin quá hạn lưu giữ",
}  # fmt: skip
# (key, header): the columns of an export, as a Vietnamese operator reads them in Excel.
EXPORT_COLUMNS = (
    ("id", "mã"), ("at", "lúc"), ("actor", "người thực hiện"), ("source", "từ đâu"), ("via", "cách xác thực"),
    ("address", "địa chỉ"), ("action", "thao tác"), ("subject", "đối tượng"), ("reason", "lý do"),
    ("before", "trước"), ("after", "sau"), ("detail", "chi tiết"),
)  # fmt: skip


@dataclass(frozen=True)
class Origin:
    """Where an action came from: the face, how the person proved who they are, and their address."""

    source: str
    """cli, web (a console session), api (a bearer token) or system (no face: scheduler, worker, inbound texts).

    The system is stored as NULL, as are entries written before the column existed."""
    via: str | None = None
    """'session:3f9a0c12de' (the session's short reference), 'token:12', 'os-user:root', '--as, os-user:root': never a
    secret."""
    address: str | None = None
    """The client's IP address for web and api (behind a trusted proxy, the one it forwarded)."""


SYSTEM = Origin("system")
_origin: ContextVar[Origin] = ContextVar("audit_origin", default=SYSTEM)  # frozen: safe to share


@contextmanager
def acting_through(source: str, via: str | None = None, address: str | None = None) -> Iterator[Origin]:
    """Record every entry written inside the block as coming from `source` (a face sets this, the domain never)."""
    if source not in SOURCES:
        raise ValueError(f"unknown audit source {source!r}")
    token = _origin.set(Origin(source, via, address))
    try:
        yield _origin.get()
    finally:
        _origin.reset(token)


def origin() -> Origin:
    """Where the action under way comes from."""
    return _origin.get()


def audit(
    conn: Connection,
    now: datetime,
    actor: str,
    action: str,
    subject: str,
    detail: dict[str, Any],
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """Append one entry, in the caller's transaction; `before`/`after` where the subject changes, `reason` if given."""
    where = _origin.get()
    told = {"before": before, "after": after, "reason": reason[:300] if reason else None,
            "via": where.via and where.via[:80], "address": where.address and where.address[:64],
            "source": None if where.source == "system" else where.source}  # fmt: skip
    # Only what is known is written: a NULL source is the system (and entries older than 0018).
    values = {key: value for key, value in told.items() if value is not None}
    conn.execute(insert(audit_log).values(at=now, actor=actor, action=action, subject=subject, detail=detail, **values))


# -- reading it ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Which entries to read; each field set narrows the log. `action` without a dot is a group ('blast')."""

    actor: str | None = None
    action: str | None = None
    subject: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in SOURCES:
            raise UsageError(f"Nguồn {self.source!r} không có (nhận: {', '.join(SOURCES)}).")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"Số dòng tối đa phải từ 1 trở lên (nhận được {self.limit}).")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise UsageError("Thời điểm kết thúc phải sau thời điểm bắt đầu.")


def _query(found: AuditFilter) -> Select[Any]:
    a = audit_log.c
    asked = [(a.actor, found.actor), (a.subject, found.subject)]
    conditions = [column == value for column, value in asked if value]
    if found.source:
        conditions.append(a.source.is_(None) if found.source == "system" else a.source == found.source)
    if found.action:
        grouped = "." not in found.action  # 'blast' is every blast.* action
        conditions.append(a.action.startswith(found.action + ".") if grouped else a.action == found.action)
    if found.since is not None:
        conditions.append(a.at >= found.since)
    if found.until is not None:
        conditions.append(a.at < found.until)
    if found.before_id is not None:
        conditions.append(a.id < found.before_id)
    return select(audit_log).where(*conditions).order_by(a.id.desc()).limit(found.limit)


def read(conn: Connection, found: AuditFilter) -> Iterator[dict[str, Any]]:
    """The entries `found` asks for, newest first, fetched a few thousand at a time."""
    result = conn.execution_options(yield_per=2_000).execute(_query(found))  # a server-side cursor on PostgreSQL
    for row in result.mappings():
        yield dict(row)


def page(conn: Connection, found: AuditFilter, size: int = 50) -> tuple[list[dict[str, Any]], int | None]:
    """One page, newest first; and the key of the next (older) page, or None (paging by key, never OFFSET)."""
    rows = [dict(row) for row in conn.execute(_query(replace(found, limit=size + 1))).mappings()]
    return rows[:size], (rows[size - 1]["id"] if len(rows) > size else None)


def actions(conn: Connection) -> list[str]:
    """Every action the log holds, for a filter's choices."""
    return list(conn.execute(select(audit_log.c.action).distinct().order_by(audit_log.c.action)).scalars())


def action_label(action: str) -> str:
    """The action as a person reads it ('duyệt đợt gửi'), or its code when it has no name yet."""
    return ACTION_LABELS.get(action, action)


def change(row: dict[str, Any]) -> str:
    """'{"state": "running"} → {"state": "paused"}', or the entry's detail when it has neither before nor after."""
    if row["before"] is None and row["after"] is None:
        return _compact(row["detail"]) if row["detail"] else ""
    return f"{_compact(row['before'])} → {_compact(row['after'])}"


def _compact(value: Any) -> str:
    return "—" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def source_label(source: str | None) -> str:
    """The source as a person reads it: 'dòng lệnh', 'bảng điều khiển', 'API', 'hệ thống'."""
    return SOURCE_LABELS[source or "system"]


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    """An entry for `--json` and the API: times in ISO 8601."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


def write_csv(rows: Iterable[dict[str, Any]], out: TextIO, zone: str, header: bool = True) -> int:
    """Write `rows` as CSV for Excel (a BOM, Vietnamese headers and sources, local times); returns how many rows.

    `header` False writes the rows alone: a later piece of a CSV streamed in pieces.
    """
    writer = csv.writer(out)
    if header:
        out.write("\ufeff")  # Excel reads UTF-8 only behind a BOM
        writer.writerow([title for _, title in EXPORT_COLUMNS])
    local = ZoneInfo(zone)
    written = 0
    for row in rows:
        writer.writerow([_cell(key, row.get(key), local) for key, _ in EXPORT_COLUMNS])
        written += 1
    return written


def _cell(key: str, value: Any, zone: ZoneInfo) -> Any:
    if key == "source":
        return source_label(value)
    if value is None:
        return ""
    if key == "at":
        return value.astimezone(zone).replace(tzinfo=None, microsecond=0)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return value
