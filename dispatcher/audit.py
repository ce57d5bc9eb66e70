"""The audit log: who did what to which alert, subscriber list or blast, and when."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, insert, select

from dispatcher.errors import UsageError
from dispatcher.models import audit_log


def audit(conn: Connection, now: datetime, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
    """Append one entry, in the caller's transaction."""
    conn.execute(insert(audit_log).values(at=now, actor=actor, action=action, subject=subject, detail=detail))


# -- reading it ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Which entries to read; each field set narrows the log. `action` without a dot is a group ('blast')."""

    actor: str | None = None
    action: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"Số dòng tối đa phải từ 1 trở lên (nhận được {self.limit}).")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise UsageError("Thời điểm kết thúc phải sau thời điểm bắt đầu.")


def _query(found: AuditFilter) -> Select[Any]:
    a = audit_log.c
    asked = [(a.actor, found.actor), (a.subject, found.subject)]
    conditions = [column == value for column, value in asked if value]
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


def page(conn: Connection, found: AuditFilter, size: int = 50) -> tuple[list[dict[str, Any]], int | None]:
    """One page, newest first; and the key of the next (older) page, or None (paging by key, never OFFSET)."""
    rows = [dict(row) for row in conn.execute(_query(replace(found, limit=size + 1))).mappings()]
    return rows[:size], (rows[size - 1]["id"] if len(rows) > size else None)
