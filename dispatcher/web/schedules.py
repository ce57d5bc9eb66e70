"""The recurring campaigns' page: each campaign with its state, content, segment and next runs, and approval.

Approval is the CLI's `schedules approve`: one call to dispatcher/scheduler.py, where four-eyes
lives (nobody approves a campaign they synced).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from dispatcher import scheduler as scheduling
from dispatcher.errors import CanhBaoError
from dispatcher.web import i18n
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction
from dispatcher.web.templating import render

router = APIRouter()
Readers = Annotated[Principal, allow("liaison", "approver", "operator")]
Approver = Annotated[Principal, allow("approver")]
NEXT_RUNS = 5
STATUS_CODES = {"not_found": 404, "forbidden": 403, "state": 409}

i18n.register(
    {
        "Chiến dịch": "Campaign",
        "Lịch": "When",
        "Nội dung": "Content",
        "Lượt tới": "Next runs",
        "Lượt trước": "Last run",
        "xoay vòng": "rotating",
        "mẫu": "alerts",
        "Đồng bộ": "Synced",
        "duyệt": "approved by",
        "Thứ Hai": "Monday",
        "Thứ Ba": "Tuesday",
        "Thứ Tư": "Wednesday",
        "Thứ Năm": "Thursday",
        "Thứ Sáu": "Friday",
        "Thứ Bảy": "Saturday",
        "Chủ Nhật": "Sunday",
        "phương thức": "methods",
        "Chưa có chiến dịch nào: chạy 'canhbao schedules sync'.": "No campaign yet: run 'canhbao schedules sync'.",
    }
)


async def _page(request: Request, status: int = 200, **context: Any) -> Response:
    """Every campaign with its next runs (as datetimes, for the page to show in local time)."""
    shown = await in_transaction(request, lambda conn, now: scheduling.listing(conn, now, NEXT_RUNS), write=False)
    for item in shown:
        item["next_runs"] = [datetime.fromisoformat(at) for at in item["next_runs"]]
        item["last_run"] = datetime.fromisoformat(item["last_run"]) if item["last_run"] else None
        item["synced_at"] = datetime.fromisoformat(item["synced_at"])
    return render(request, "schedules.html", {"campaigns": shown, **context}, status)


@router.get("/schedules")
async def schedules_page(request: Request, principal: Readers) -> Response:
    """The campaigns, their state, what and whom they send, and their next runs."""
    return await _page(request)


@router.post("/schedules/{name}/approve")
async def schedule_approve(request: Request, principal: Approver, name: str) -> Response:
    """Approve a synced campaign (never one's own sync: four-eyes); its runs fire from then on."""
    try:
        await in_transaction(request, lambda conn, now: scheduling.approve(conn, name, principal.actor, now))
    except CanhBaoError as exc:
        return await _page(request, STATUS_CODES.get(exc.code, 400), error=str(exc))
    return RedirectResponse("/schedules", 303)
