"""The operators' pages: the dashboard and the delivery log with its export (blasts: dispatcher/web/blasts.py).

Each page calls the same domain functions as the CLI. Numbers are masked everywhere; a full
number is shown only to an operator who reveals it with a reason (dispatcher/privacy.py). A
number typed to search the log is posted in a form, never put in a URL.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response, StreamingResponse

from dispatcher import db, labels, overview, privacy
from dispatcher import delivery_log as log_ops
from dispatcher.domain import DeliveryStatus
from dispatcher.errors import CanhBaoError
from dispatcher.phones import InvalidNumber, PhoneBook
from dispatcher.web import i18n
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction, regions, revealed
from dispatcher.web.templating import render

router = APIRouter()
Everyone = Annotated[Principal, allow("operator", "liaison", "approver", "police", "admin")]
LogReaders = Annotated[Principal, allow("operator", "liaison")]
Operator = Annotated[Principal, allow("operator")]
PAGE_SIZE = 50

i18n.register(
    {
        "Đang chạy và sắp chạy": "Running and scheduled",
        "Hôm nay": "Today",
        "Theo nhà mạng": "By carrier",
        "Cổng gửi": "Gateways",
        "Giờ yên lặng": "Quiet hours",
        "đang trong giờ yên lặng": "quiet hours now",
        "đang được gửi": "sending allowed",
        "Không có đợt nào đang chạy hay chờ.": "No blast is running or waiting.",
        "Đợt gửi": "Blasts",
        "Mẫu": "Alert",
        "Phân đoạn": "Segment",
        "Kênh": "Channel",
        "Người nhận": "Recipients",
        "Bắt đầu": "Starts",
        "khi được duyệt": "on approval",
        "Tạo → duyệt": "Created → approved",
        "Tiến độ": "Progress",
        "Duyệt": "Approve",
        "Tạm dừng": "Pause",
        "Tiếp tục": "Resume",
        "Huỷ đợt": "Cancel",
        "Gửi lại tin chưa rõ": "Resend unknown",
        "Nhật ký gửi của đợt này": "This blast's delivery log",
        "Trạng thái": "State",
        "Nhà mạng": "Carrier",
        "Tỉnh/thành phố": "Province",
        "Xã/phường": "Commune",
        "Số điện thoại": "Phone number",
        "Tìm": "Search",
        "Trang sau": "Next page",
        "Trang này đã dò tới tin số": "This page searched down to message",
        "mà chưa đủ 50 tin khớp; bấm “Trang sau” để dò tiếp các tin cũ hơn.": (
            "without finding 50 matches; “Next page” searches the older messages."
        ),
        "Xuất CSV": "Export CSV",
        "Lỗi": "Error",
        "Gửi lúc": "Sent at",
        "Xong lúc": "Finished at",
        "Cổng": "Gateway",
        "Lần": "Attempts",
        "Xem số đầy đủ": "Reveal the number",
        "Lý do": "Reason",
        "Không có tin nào khớp.": "No message matches.",
        "Tìm theo số (không đưa vào địa chỉ trang)": "Search by number (kept out of the address bar)",
        "tất cả": "all",
        "Số đầy đủ": "Full number",
    }
)


def read_only(request: Request, work: Callable[[Any, Any], Any]) -> Any:
    """`work(conn, now)` on a connection that only reads."""
    return in_transaction(request, work, write=False)


# -- dashboard ----------------------------------------------------------------------------


async def _dashboard(request: Request) -> dict[str, Any]:
    settings, tallies = request.app.state.settings, request.app.state.tallies
    return await request.app.state.dashboard.get(
        lambda: read_only(request, lambda conn, now: overview.dashboard(conn, settings, now, tallies))
    )


@router.get("/")
async def dashboard(request: Request, principal: Everyone) -> Response:
    """Blasts running and scheduled, today's deliveries by state and carrier, gateways, quiet hours."""
    return render(request, "dashboard.html", {"board": await _dashboard(request)})


@router.get("/dashboard/live")
async def dashboard_live(request: Request, principal: Everyone) -> Response:
    """The dashboard's figures alone, for htmx to swap in every few seconds."""
    return render(request, "_dashboard.html", {"board": await _dashboard(request)})


# -- the delivery log ---------------------------------------------------------------------


def _filter(request: Request, blast: int | None, status: str, carrier: str, province: str, commune: str,
            gateway: str = "", msisdn: str = "", before: int | None = None,
            ) -> tuple[log_ops.LogFilter, list[str]]:  # fmt: skip
    place = log_ops.place(regions(request), province.strip() or None, commune.strip() or None)
    number = PhoneBook().normalize(msisdn).e164 if msisdn.strip() else None
    log = log_ops.LogFilter(
        blast_id=blast, status=labels.parse_delivery_state(status) if status.strip() else None,
        carrier=log_ops.carrier_named(carrier) if carrier.strip() else None,
        province_codes=place.province_codes, commune_codes=place.commune_codes, msisdn=number, before_id=before,
        gateway=gateway.strip() or None,
    )  # fmt: skip
    return log, list(place.notes)


async def _log_page(request: Request, fields: dict[str, Any], status: int = 200, **context: Any) -> Response:
    province_name = regions(request).province
    try:
        log, notes = _filter(request, **fields)
    except (CanhBaoError, InvalidNumber) as exc:
        return render(request, "deliveries.html", {"fields": fields, "rows": [], "error": str(exc),
                                                   "states": list(DeliveryStatus)}, 400)  # fmt: skip
    rows, next_before = await read_only(request, lambda conn, _now: log_ops.page(conn, log, PAGE_SIZE))
    for row in rows:
        row["province"] = province_name(row["province_code"]).name
    shown = {"fields": fields, "rows": rows, "next_before": next_before, "notes": notes,
             "states": list(DeliveryStatus), **context}  # fmt: skip
    return render(request, "deliveries.html", shown, status)


@router.get("/deliveries")
async def deliveries_page(
    request: Request,
    principal: LogReaders,
    blast: Annotated[int | None, Query(ge=1)] = None,
    status: str = "",
    carrier: str = "",
    province: str = "",
    commune: str = "",
    gateway: Annotated[str, Query(max_length=64)] = "",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The delivery log, newest first, filtered, fifty rows a page (paged by key)."""
    fields = {"blast": blast, "status": status, "carrier": carrier, "province": province, "commune": commune,
              "gateway": gateway, "before": before}  # fmt: skip
    return await _log_page(request, fields)


@router.post("/deliveries/search")
async def deliveries_search(
    request: Request,
    principal: LogReaders,
    msisdn: Annotated[str, Form(max_length=32)] = "",
    blast: Annotated[int | None, Form(ge=1)] = None,
    status: Annotated[str, Form()] = "",
    carrier: Annotated[str, Form()] = "",
    province: Annotated[str, Form()] = "",
    commune: Annotated[str, Form()] = "",
    gateway: Annotated[str, Form(max_length=64)] = "",
    before: Annotated[int | None, Form(ge=1)] = None,
) -> Response:
    """The log of one number: posted, so that the number stays out of URLs, history and proxies' logs."""
    fields = {"blast": blast, "status": status, "carrier": carrier, "province": province, "commune": commune,
              "gateway": gateway, "msisdn": msisdn, "before": before}  # fmt: skip
    return await _log_page(request, fields, searched=True)


@router.get("/deliveries.csv")
async def deliveries_csv(
    request: Request,
    principal: LogReaders,
    blast: Annotated[int | None, Query(ge=1)] = None,
    status: str = "",
    carrier: str = "",
    province: str = "",
    commune: str = "",
    gateway: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """The filtered log as CSV for Excel (numbers masked), streamed as it is read."""
    try:
        log, _notes = _filter(request, blast, status, carrier, province, commune, gateway)
    except CanhBaoError as exc:
        return render(request, "refused.html", {"message": str(exc)}, 400)
    engine, zone = request.app.state.engine, request.app.state.settings.app.timezone
    province_name = regions(request).province

    headers = {"Content-Disposition": 'attachment; filename="nhat-ky-gui.csv"'}
    return StreamingResponse(_chunks(engine, log, zone, province_name), media_type="text/csv; charset=utf-8",
                             headers=headers)  # fmt: skip


def _chunks(engine: Any, log: log_ops.LogFilter, zone: str, province_name: Any) -> Iterator[bytes]:
    """The CSV in pieces of a few thousand rows: memory stays flat however long the log."""

    with db.reading(engine) as conn:
        pipe = io.StringIO()
        batch: list[dict[str, Any]] = []
        first = True
        for row in log_ops.read(conn, log):
            batch.append(row)
            if len(batch) == 2_000:
                yield _csv(batch, pipe, zone, province_name, first)
                batch, first = [], False
        if batch or first:
            yield _csv(batch, pipe, zone, province_name, first)


def _csv(rows: list[dict[str, Any]], pipe: io.StringIO, zone: str, province_name: Any, header: bool) -> bytes:
    pipe.seek(0)
    pipe.truncate()
    log_ops.write_csv(rows, pipe, zone, lambda code: province_name(code).name, header)  # the first piece heads it
    return pipe.getvalue().encode("utf-8")


@router.post("/deliveries/{delivery_id}/reveal")
async def delivery_reveal(
    request: Request, principal: Operator, delivery_id: int, reason: Annotated[str, Form(max_length=300)] = ""
) -> Response:
    """The full number of one delivery, for an operator who says why (kept in the audit log)."""
    return await revealed(
        request,
        lambda conn, now: privacy.reveal_delivery(conn, now, principal.actor, delivery_id, reason),
        {"delivery_id": delivery_id, "reason": reason},
    )
