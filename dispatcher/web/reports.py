"""The reports page: a period picker, the figures and charts of `canhbao report`, and its downloads in every format.

The page builds the same `reports.Report` as the CLI (the domain's `build`), shows
`Report.tables()` and the charts of the statutory form (report_formats.SECTIONS), and streams the
files report_formats writes. Nothing is counted here. Viewing writes nothing: the page reads the
rollups as the scheduler left them (every `[reports] rollup_minutes`) and says as of when; an
operator's button rolls up now (`canhbao rollup`'s work, which no face audits: it changes no fact,
only adds what is final).
The report holds no phone number: operators, administrators, approvers (the agency's leaders,
who sign it) and liaisons (whose agency reports its own reach) may read it; police may not.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from dispatcher import db, prepared, report_formats, reports, rollups
from dispatcher.errors import CanhBaoError, NotFound, UsageError
from dispatcher.formats import number
from dispatcher.regions import SCHEME_2025, Level, RegionIndex
from dispatcher.smstext import to_ascii
from dispatcher.web import i18n, security
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import regions
from dispatcher.web.templating import render

log = structlog.get_logger(__name__)
router = APIRouter()
Readers = Annotated[Principal, allow("operator", "admin", "approver", "liaison")]
Operators = Annotated[Principal, allow("operator", "admin")]
UPDATERS = ("operator", "admin")  # who sees the button that rolls up now
KINDS = {"h1": "6 tháng đầu năm", "h2": "6 tháng cuối năm", "year": "Cả năm", "quarter": "Quý", "month": "Tháng",
         "range": "Khoảng ngày"}  # fmt: skip
MEDIA = {"html": "text/html; charset=utf-8", "pdf": "application/pdf", "csv": "text/csv; charset=utf-8",
         "json": "application/json",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}  # fmt: skip
YEARS_BACK = 5

# Words other pages already translate ("Người duyệt", "Lỗi", "Địa bàn", "Nhóm đối tượng") keep their
# English: the registry is one for the whole console.
i18n.register(
    {
        "Báo cáo": "Reports",
        "Báo cáo kết quả tuyên truyền": "Outreach report",
        "Kỳ báo cáo": "Period",
        "Năm": "Year",
        "Quý": "Quarter",
        "Tháng": "Month",
        "Từ ngày": "From day",
        "Đến ngày": "To day",
        "6 tháng đầu năm": "First half of the year",
        "6 tháng cuối năm": "Second half of the year",
        "Cả năm": "Whole year",
        "Khoảng ngày": "Date range",
        "Tỉnh/thành phố (không bắt buộc)": "Province (optional)",
        "cả tên cũ, ví dụ Quảng Nam (cũ)": "former names too, e.g. Quảng Nam (cũ)",
        "Xem báo cáo": "Show the report",
        "Tải về": "Download",
        "Báo cáo định kỳ đã chuẩn bị": "Statutory reports prepared",
        "Báo cáo 6 tháng": "6-month report",
        "Báo cáo năm": "Annual report",
        "Bản": "Version",
        "Số liệu": "Figures",
        "Chuẩn bị lúc": "Prepared at",
        "Hạn nộp": "Deadline",
        "theo lịch": "by the schedule",
        "Chưa có báo cáo nào: lịch tự chuẩn bị trước hạn nộp, hoặc dùng 'canhbao report prepare'.": (
            "None yet: the schedule prepares them before their deadlines, or use 'canhbao report prepare'."
        ),
        "Báo cáo theo mẫu (HTML)": "Statutory form (HTML)",
        "Báo cáo theo mẫu (PDF)": "Statutory form (PDF)",
        "Bảng tính (XLSX)": "Workbook (XLSX)",
        "Dữ liệu (CSV)": "Data (CSV)",
        "Dữ liệu (JSON)": "Data (JSON)",
        "Bản PDF được dàn trang khi tải về: báo cáo dài có thể mất tới một phút.": (
            "The PDF is laid out when downloaded: a long report may take up to a minute."
        ),
        "Số liệu tính đến": "Figures as of",
        "Số liệu chưa được tổng hợp lần nào.": "The figures have never been rolled up.",
        "Cập nhật số liệu ngay": "Update the figures now",
        "Lịch tự cập nhật số liệu định kỳ; nút này cộng ngay các tin đã xong.": (
            "The schedule updates the figures regularly; this button adds the finished messages now."
        ),
        "Kỳ này chưa có tin nào được gửi.": "Nothing was sent in this period.",
        "Kết quả chung": "Overall results",
        "Độ bao phủ theo nhóm đối tượng": "Coverage by audience",
        "Kết quả theo địa bàn": "Results by area",
        "Kết quả theo nhà mạng và kênh gửi": "Results by carrier and channel",
        "Kết quả theo phương thức lừa đảo và mẫu cảnh báo": "Results by scam method and alert",
        "Các đợt gửi": "Blasts",
        "Xu hướng theo tuần": "Weekly trend",
        "Tổng hợp": "Summary",
        "Theo tỉnh/thành phố": "By province",
        "Theo xã/phường": "By commune",
        "Theo nhà mạng": "By carrier",
        "Theo kênh": "By channel",
        "Theo phương thức lừa đảo": "By scam method",
        "Theo mẫu cảnh báo": "By alert",
        "Theo nhóm đối tượng": "By audience",
        "Số người đã nhận theo tỉnh/thành phố": "People reached by province",
        "Số người đã nhận theo phương thức": "People reached by method",
        "Mẫu cảnh báo tới nhiều người nhất": "Alerts that reached the most people",
        "Chỉ tiêu": "Item",
        "Giá trị": "Value",
        "Tin": "Messages",
        "Đã gửi": "Sent",
        "Số phần": "Parts",
        "Đã nhận": "Delivered",
        "Không tới được": "Undeliverable",
        "Quá hạn": "Expired",
        "Đã huỷ": "Cancelled",
        "Chưa xong": "Not final",
        "Xã/phường": "Commune",
        "Phương thức": "Method",
        "Nhóm": "Audience",
        "Số người đã nhận": "People reached",
        "Số thuê bao": "Subscribers",
        "Tỷ lệ (%)": "Share (%)",
        "Chỉ tiêu (%)": "Target (%)",
        "Đạt": "Met",
        "Số người": "People",
        "Số": "No.",
        "Người tạo": "Created by",
        "Tuần (từ ngày)": "Week (from)",
        "Tin đã gửi": "Messages sent",
    }
)


@dataclass(frozen=True)
class PeriodForm:
    """What the period picker sent, as typed: the domain reads it, so a bad value gets the domain's message."""

    kind: str
    year: str
    quarter: str = "1"
    month: str = "1"
    since: str = ""
    until: str = ""
    province: str = ""
    fmt: str = ""

    def period_text(self) -> str:
        """The period as `canhbao report --period` takes it: 2026-H1, 2026, 2026-Q3, 2026-11, FROM..TO."""
        year, quarter, month = self.year.strip(), self.quarter.strip(), self.month.strip()
        texts = {"h1": f"{year}-H1", "h2": f"{year}-H2", "year": year, "quarter": f"{year}-Q{quarter}",
                 "month": f"{year}-{month}", "range": f"{self.since.strip()}..{self.until.strip()}"}  # fmt: skip
        if self.kind not in texts:
            raise UsageError(f"Loại kỳ báo cáo '{self.kind}' không có: chọn {', '.join(KINDS.values())}.")
        return texts[self.kind]

    def query(self) -> str:
        """The picker's fields as a query string (for the download links)."""
        fields = {"kind": self.kind, "year": self.year, "quarter": self.quarter, "month": self.month,
                  "since": self.since, "until": self.until, "province": self.province}  # fmt: skip
        return "&".join(f"{key}={quote(value)}" for key, value in fields.items() if value)


def _picker(
    request: Request,
    kind: str = "",
    year: str = "",
    quarter: str = "1",
    month: str = "1",
    since: str = "",
    until: str = "",
    province: str = "",
    format: str = "",
) -> PeriodForm:
    """The picker's fields; an empty one starts at the 6-month report of this year (local time)."""
    this_year = _this_year(request)
    return PeriodForm(kind or "h1", year or str(this_year), quarter, month, since, until, province, format)


Picker = Annotated[PeriodForm, Depends(_picker)]


@router.get("/reports")
async def reports_page(request: Request, principal: Readers, form: Picker) -> Response:
    """The report of the picked period: the figures, the charts, and a link to each download; the prepared reports."""
    with db.reading(request.app.state.engine) as conn:
        kept = prepared.listing(conn)
    context = {"form": form, "kinds": KINDS, "years": _years(request), "provinces": _province_names(request),
               "cell": _cell, "prepared": kept, "updaters": UPDATERS}  # fmt: skip
    try:
        report, rolled = await _report(request, form)
    except CanhBaoError as exc:
        return render(request, "reports.html", {**context, "error": str(exc)}, 400)
    sections = _sections(report)
    page = render(request, "reports.html", {**context, "report": report, "rolled": rolled, "sections": sections})
    page.headers["Content-Security-Policy"] = _with_chart_styles([svg for _, svg, _ in sections if svg])
    return page


@router.get("/reports/download")
async def download(request: Request, principal: Readers, form: Picker) -> Response:
    """The report of the picked period as a file (html, pdf, xlsx, csv, json), named in Vietnamese."""
    if form.fmt not in report_formats.FORMATS:
        message = f"Định dạng '{form.fmt}' không có: dùng {', '.join(report_formats.FORMATS)}."
        return render(request, "refused.html", {"message": message}, 400)
    try:
        report, _ = await _report(request, form)
    except CanhBaoError as exc:
        return render(request, "refused.html", {"message": str(exc)}, 400)
    folder = Path(tempfile.mkdtemp(prefix="canhbao-report-"))
    path = folder / f"report.{form.fmt}"
    await run_in_threadpool(_write, report, form.fmt, path)
    headers = {"Content-Disposition": _attachment(report, form.fmt)}
    return FileResponse(path, media_type=MEDIA[form.fmt], headers=headers,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))  # fmt: skip


@router.post("/reports/rollup")
async def rollup_now(request: Request, principal: Operators, form: Picker) -> Response:
    """Bring the figures up to date now (the scheduler's rollup, run at once), then show the same period again."""
    state = request.app.state
    done = await run_in_threadpool(rollups.run, state.engine, state.settings.app.timezone, state.clock())
    log.info("report.rollup", actor=principal.actor, blasts=done.blasts, deliveries=done.deliveries)
    return RedirectResponse(f"/reports?{form.query()}", 303)


@router.get("/reports/prepared/{report_id}/{fmt}")
async def prepared_file(request: Request, principal: Readers, report_id: int, fmt: str) -> Response:
    """A statutory report as the scheduler (or a person) prepared it, byte for byte."""
    try:
        with db.reading(request.app.state.engine) as conn:
            content = prepared.get(conn, report_id, fmt)
            kept = prepared.one(conn, report_id)
    except (NotFound, UsageError) as exc:
        return render(request, "refused.html", {"message": str(exc)}, 404 if isinstance(exc, NotFound) else 400)
    name = f"{kept.kind.label} {kept.year} - bản {kept.version}.{fmt}"
    return Response(content, media_type=MEDIA[fmt], headers={"Content-Disposition": _disposition(name)})


async def _report(request: Request, form: PeriodForm) -> tuple[reports.Report, bool]:
    """The domain's report of the form's period and place from the rollups as they are, dated when they were made;
    and whether they ever were."""
    state, index = request.app.state, regions(request)
    period = reports.parse_period(form.period_text())
    where = reports.scope(index, form.province.strip() or None)

    def work() -> tuple[reports.Report, bool]:
        with db.reading(state.engine) as conn:
            as_of = rollups.as_of(conn)
            return reports.build(conn, state.settings, index, period, where, as_of or state.clock()), bool(as_of)

    return await run_in_threadpool(work)


def _write(report: reports.Report, fmt: str, path: Path) -> None:
    if fmt == "json":
        path.write_text(json.dumps(report_formats.to_json(report), ensure_ascii=False, indent=2), encoding="utf-8")
    else:
        report_formats.write(report, fmt, path)


def _attachment(report: reports.Report, fmt: str) -> str:
    """Content-Disposition for the report of a period, named after its period and place."""
    name = f"Báo cáo {report.period.title}"
    if report.place != "Toàn bộ địa bàn":
        name += f" - {report.place.split(' [')[0]}"  # the unit's name, not its codes and what it became
    return _disposition(re.sub(r'[/\\:*?"<>|]+', "-", name)[:150] + f".{fmt}")


def _disposition(name: str) -> str:
    """Content-Disposition with the Vietnamese `name` (RFC 6266 filename*) and a không-dấu one for old clients."""
    plain = re.sub(r"[^A-Za-z0-9.() -]+", "-", to_ascii(name).replace("đ", "d").replace("Đ", "D"))
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name)}"


def _sections(report: reports.Report) -> list[tuple[str, str | None, list[tuple[str, list[str], list[list[Any]]]]]]:
    """The statutory form's sections: (heading, chart SVG or None, its tables), in the form's order."""
    tables = {name: (name, header, rows) for name, header, rows in report.tables()}
    return [(heading, chart(report) if chart else None, [tables[name] for name in names])
            for heading, names, chart in report_formats.SECTIONS]  # fmt: skip


def _with_chart_styles(charts: list[str]) -> str:
    """The site's policy, letting through exactly the <style> each chart carries (by its hash), nothing else."""
    # Inside inline SVG a <style> is parsed as text, so the browser hashes it with `&gt;` read as `>`.
    hashes = [base64.b64encode(hashlib.sha256(html.unescape(style).encode()).digest()).decode()
              for svg in charts for style in re.findall(r"<style[^>]*>(.*?)</style>", svg, re.DOTALL)]  # fmt: skip
    allowed = " ".join(f"'sha256-{h}'" for h in hashes)
    return security.CSP.replace("style-src 'self'", f"style-src 'self' {allowed}".rstrip())


def _cell(value: Any) -> str:
    """A table cell as the report's files show it: numbers grouped the Vietnamese way, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number(value, 1 if isinstance(value, float) and not value.is_integer() else 0)
    return str(value)


def _this_year(request: Request) -> int:
    state = request.app.state
    return state.clock().astimezone(ZoneInfo(state.settings.app.timezone)).year


def _years(request: Request) -> list[int]:
    this_year = _this_year(request)
    return list(range(this_year, this_year - YEARS_BACK - 1, -1))


def _province_names(request: Request) -> list[str]:
    """Today's provinces, then the former ones as '… (cũ)', for the field's suggestions."""
    index: RegionIndex = regions(request)
    units = [u for u in index.units.values() if u.level == Level.PROVINCE]
    today = sorted(u.name for u in units if u.scheme == SCHEME_2025)
    former = sorted(f"{u.name} (cũ)" for u in units if u.scheme != SCHEME_2025 and u.name not in today)
    return today + former
