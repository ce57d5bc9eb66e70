"""The audit log page: who changed what, when and from where, filtered, paged by key, exported as CSV.

It reads through the same query as `canhbao audit` (dispatcher/audit.py). Operators and
administrators read it; nobody can change it (the domain has no such path, the database
refuses one).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from itertools import batched
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from dispatcher import audit as audit_ops
from dispatcher import db
from dispatcher.errors import CanhBaoError
from dispatcher.web import i18n
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import day_range, in_transaction
from dispatcher.web.templating import render

router = APIRouter()
Readers = Annotated[Principal, allow("operator", "admin")]
PAGE_SIZE = 50
FIELDS = ("actor", "action", "subject", "source", "since", "until")

i18n.register(
    {
        "Người thực hiện": "Actor",
        "Thao tác": "Action",
        "Đối tượng": "Subject",
        "Từ đâu": "From",
        "Từ ngày": "From day",
        "Đến ngày": "To day",
        "Trước → sau": "Before → after",
        "Chi tiết": "Detail",
        "Lúc": "At",
        "Không có thao tác nào khớp.": "No action matches.",
        "dòng lệnh": "command line",
        "bảng điều khiển": "console",
        "hệ thống": "system",
        "lưu mẫu cảnh báo": "alert stored",
        "gửi duyệt mẫu": "alert submitted",
        "duyệt mẫu": "alert approved",
        "ngừng dùng mẫu": "alert retired",
        "tạo đợt gửi": "blast created",
        "duyệt đợt gửi": "blast approved",
        "tạm dừng đợt gửi": "blast paused",
        "tiếp tục đợt gửi": "blast resumed",
        "huỷ đợt gửi": "blast cancelled",
        "gửi lại tin chưa rõ": "unknown messages resent",
        "nạp lịch định kỳ": "schedules synced",
        "duyệt lịch định kỳ": "schedule approved",
        "chạy lịch định kỳ": "schedule run",
        "nhập thuê bao": "subscribers imported",
        "từ chối nhận tin": "opted out",
        "nhận tin trở lại": "opted in",
        "xem số đầy đủ": "number revealed",
        "thêm người dùng": "user added",
        "đổi mật khẩu": "password changed",
        "đổi vai trò": "roles changed",
        "khoá người dùng": "user disabled",
        "mở khoá người dùng": "user enabled",
        "cấp khoá API": "API token issued",
        "thu hồi khoá API": "API token revoked",
    }
)


def _filter(fields: dict[str, Any], zone: str) -> audit_ops.AuditFilter:
    since, until = day_range(fields["since"], fields["until"], zone)
    asked = {key: fields[key].strip() or None for key in ("actor", "action", "subject", "source")}
    return audit_ops.AuditFilter(**asked, since=since, until=until, before_id=fields.get("before"))


@router.get("/audit")
async def audit_page(
    request: Request,
    principal: Readers,
    actor: str = "",
    action: str = "",
    subject: str = "",
    source: str = "",
    since: str = "",
    until: str = "",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The audit log, newest first, filtered, fifty entries a page (paged by key)."""
    fields = {"actor": actor, "action": action, "subject": subject, "source": source, "since": since,
              "until": until, "before": before}  # fmt: skip
    context: dict[str, Any] = {"fields": fields, "sources": audit_ops.SOURCES, "audit": audit_ops}
    try:
        found = _filter(fields, request.app.state.settings.app.timezone)
    except CanhBaoError as exc:
        return render(request, "audit.html", {**context, "rows": [], "actions": [], "error": str(exc)}, 400)

    def read(conn: Any, _now: Any) -> tuple[list[dict[str, Any]], int | None, list[str]]:
        return (*audit_ops.page(conn, found, PAGE_SIZE), audit_ops.actions(conn))

    rows, next_before, actions = await in_transaction(request, read, write=False)
    return render(request, "audit.html", {**context, "rows": rows, "next_before": next_before, "actions": actions})


@router.get("/audit.csv")
async def audit_csv(
    request: Request,
    principal: Readers,
    actor: str = "",
    action: str = "",
    subject: str = "",
    source: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    """The filtered audit log as CSV for Excel, streamed as it is read."""
    zone = request.app.state.settings.app.timezone
    fields = {"actor": actor, "action": action, "subject": subject, "source": source, "since": since, "until": until}
    try:
        found = _filter(fields, zone)
    except CanhBaoError as exc:
        return render(request, "refused.html", {"message": str(exc)}, 400)
    headers = {"Content-Disposition": 'attachment; filename="nhat-ky-thao-tac.csv"'}
    return StreamingResponse(_chunks(request.app.state.engine, found, zone), media_type="text/csv; charset=utf-8",
                             headers=headers)  # fmt: skip


def _chunks(engine: Any, found: audit_ops.AuditFilter, zone: str) -> Iterator[bytes]:
    """The CSV in pieces of a few thousand entries: memory stays flat however long the log."""
    pipe = io.StringIO()
    header = True
    with db.reading(engine) as conn:
        for rows in batched(audit_ops.read(conn, found), 2_000):
            yield _piece(rows, pipe, zone, header)
            header = False
    if header:  # nothing matched: the header alone
        yield _piece((), pipe, zone, header)


def _piece(rows: Any, pipe: io.StringIO, zone: str, header: bool) -> bytes:
    pipe.seek(0)
    pipe.truncate()
    audit_ops.write_csv(rows, pipe, zone, header)
    return pipe.getvalue().encode("utf-8")
