"""Subscribers in the console: counts by province and carrier, a file import, opt-out and opt-in by number.

The same operations as `canhbao subscribers stats|import|opt-out|opt-in` (dispatcher/subscribers.py):
an uploaded file is written to a temporary folder under its own name and imported from there,
so its rows, its refusals and its audit record are those the CLI would give. The reject
report is kept in `[subscribers] rejects_dir`, as the CLI keeps it, and downloaded from there
by its file name. A number to opt out or in is posted, never put in a URL, and shown masked.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload

from dispatcher import subscribers as subscriber_ops
from dispatcher.phones import InvalidNumber, PhoneBook, mask
from dispatcher.web import i18n, imports
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction, regions
from dispatcher.web.templating import render

router = APIRouter()
Readers = Annotated[Principal, allow("liaison", "operator")]
Liaison = Annotated[Principal, allow("liaison")]
REPORT_NAME = re.compile(r"[^/\\]+\.rejects\.csv")
SUFFIXES = (".csv", ".txt", ".tsv", ".xlsx", ".xlsm")
MAX_NAME = 120

i18n.register(
    {
        "Thuê bao": "Subscribers",
        "Nhập tệp thuê bao": "Import a subscriber file",
        "Tệp CSV (UTF-8, UTF-16 hoặc Windows-1258) hoặc XLSX; cột bắt buộc: số điện thoại.": (
            "A CSV (UTF-8, UTF-16 or Windows-1258) or XLSX file; the phone number column is required."
        ),
        "Nhập": "Import",
        "Kết quả nhập": "Import result",
        "Đã đọc": "Rows read",
        "thêm": "added",
        "cập nhật": "updated",
        "không đổi": "unchanged",
        "trùng": "duplicates",
        "từ chối": "rejected",
        "Bảng mã của tệp": "File encoding",
        "số đã từ chối nhận từ trước: nhập ở trạng thái từ chối.": "numbers had refused before: imported as opted out.",
        "Bỏ qua các cột không dùng": "Columns ignored",
        "Tải báo cáo các dòng bị từ chối (CSV)": "Download the rejected rows (CSV)",
        "Từ chối nhận / nhận lại theo số": "Opt out / opt in by number",
        "Số điện thoại": "Phone number",
        "Từ chối nhận": "Opt out",
        "Nhận lại": "Opt in",
        "Theo tỉnh và nhà mạng": "By province and carrier",
        "Tỉnh/thành phố": "Province",
        "Nhà mạng": "Carrier",
        "Từ chối": "Opted out",
        "Tổng": "Total",
        "Lời từ chối của số chưa nhập (áp dụng khi nhập)": "Refusals of numbers not imported yet (applied on import)",
        "Chưa có thuê bao nào.": "No subscriber yet.",
        "Hãy chọn một tệp CSV hoặc XLSX.": "Choose a CSV or XLSX file.",
        "Không có báo cáo này.": "No such report.",
        "Đang nhập": "Importing",
        "dòng": "rows",
        "Trang tự cập nhật; có thể rời trang, việc nhập vẫn tiếp tục.": (
            "This page updates itself; you may leave it, the import goes on."
        ),
        "Thuê bao {number} đã từ chối nhận cảnh báo.": "Subscriber {number} has opted out of alerts.",
        "Thuê bao {number} nhận lại cảnh báo.": "Subscriber {number} receives alerts again.",
        "Chưa có thuê bao {number}: đã ghi vào danh sách từ chối, mọi lần nhập sau sẽ tôn trọng.": (
            "No subscriber {number} yet: the refusal is kept and every later import honours it."
        ),
        "Chưa có thuê bao {number}: đã xoá khỏi danh sách từ chối, lần nhập sau nhận bình thường.": (
            "No subscriber {number} yet: the refusal is withdrawn, a later import takes the number as usual."
        ),
        "Không có thuê bao {number}, cũng không có lời từ chối nào của số này để huỷ.": (
            "No subscriber {number}, and no refusal of this number to withdraw."
        ),
    }
)
SAID = {
    (subscriber_ops.OptOut.SUBSCRIBER, True): "Thuê bao {number} đã từ chối nhận cảnh báo.",
    (subscriber_ops.OptOut.SUBSCRIBER, False): "Thuê bao {number} nhận lại cảnh báo.",
    (subscriber_ops.OptOut.HELD, True): (
        "Chưa có thuê bao {number}: đã ghi vào danh sách từ chối, mọi lần nhập sau sẽ tôn trọng."
    ),
    (subscriber_ops.OptOut.LIFTED, False): (
        "Chưa có thuê bao {number}: đã xoá khỏi danh sách từ chối, lần nhập sau nhận bình thường."
    ),
}


async def _page(request: Request, status: int = 200, **context: Any) -> Response:
    """The subscribers page: counts by province and carrier, the import and opt-out forms, and `context`."""
    found = await in_transaction(request, lambda conn, _now: subscriber_ops.stats(conn), write=False)
    province = regions(request).province
    groups = sorted(found["groups"], key=lambda g: (g["province_code"], -g["subscribers"]))
    rows = [{**g, "province": province(g["province_code"]).name} for g in groups]
    return render(request, "subscribers.html", {"rows": rows, "stats": found, **context}, status)


@router.get("/subscribers")
async def subscribers_page(request: Request, principal: Readers) -> Response:
    """Subscribers by province and carrier (the figures of `canhbao subscribers stats`)."""
    return await _page(request)


def _upload_name(upload: StarletteUpload) -> str:
    """The uploaded file's own name without any folder (it names the import and its reject report)."""
    name = Path((upload.filename or "").replace("\\", "/")).name.strip()[-MAX_NAME:]
    return name if name and not name.startswith(".") else "tep-tai-len.csv"


@router.post("/subscribers/import")
async def subscribers_import(request: Request, principal: Liaison) -> Response:
    """Import an uploaded CSV/XLSX file as `canhbao subscribers import FILE` would; a long one in the background."""
    _ = i18n.translator(i18n.page_language(request))
    web = request.app.state.settings.web
    if imports.declared_too_large(request):
        return await _page(request, 413, error=imports.too_large(_, web))
    upload = (await request.form()).get("file")
    if not isinstance(upload, StarletteUpload) or not upload.filename:
        return await _page(request, 400, error=_("Hãy chọn một tệp CSV hoặc XLSX."))
    folder = imports.upload_folder()
    try:
        path = folder / _upload_name(upload)
        size = await run_in_threadpool(imports.copy_upload, upload.file, path, imports.upload_limit(web))
    except imports.TooLarge:
        shutil.rmtree(folder, ignore_errors=True)
        return await _page(request, 413, error=imports.too_large(_, web))
    job = imports.start_import(request, principal.actor, path, size)
    if await imports.waited(request, job):
        return await _ended(request, job)
    return RedirectResponse(f"/subscribers/imports/{job.id}", 303)


async def _ended(request: Request, job: imports.ImportJob) -> Response:
    """The subscribers page with an ended import's result (or why it was refused)."""
    if job.error is not None:
        return await _page(request, 400, error=job.error)
    summary = job.summary
    assert summary is not None
    return await _page(request, 200, summary=summary, encoding=subscriber_ops.ENCODINGS.get(summary.encoding or ""))


def _job(request: Request, principal: Principal, job_id: str) -> imports.ImportJob | None:
    return imports.jobs_of(request.app.state).find(job_id, principal.actor)


def _unknown_job(request: Request) -> Response:
    _ = i18n.translator(i18n.page_language(request))
    return render(request, "refused.html", {"message": _(imports.UNKNOWN_JOB)}, 404)


@router.get("/subscribers/imports/{job_id}")
async def subscribers_import_job(request: Request, principal: Liaison, job_id: str) -> Response:
    """An import going on in the background: how far it got, updated every second, then its result."""
    job = _job(request, principal, job_id)
    if job is None:
        return _unknown_job(request)
    if job.done:
        return await _ended(request, job)
    return await _page(request, 200, **_progress(job))


@router.get("/subscribers/imports/{job_id}/progress")
async def subscribers_import_progress(request: Request, principal: Liaison, job_id: str) -> Response:
    """The progress box the job's page asks for every second; once ended, the result in its place."""
    job = _job(request, principal, job_id)
    if job is None:
        return _unknown_job(request)
    return render(request, "_import_progress.html", _progress(job))


def _progress(job: imports.ImportJob) -> dict[str, Any]:
    """What the progress box shows, read once: the import thread may end the job while the page is made."""
    finished = job.done  # first: once it is set, the summary or the error is final
    summary = job.summary if finished else None
    encoding = subscriber_ops.ENCODINGS.get(summary.encoding or "") if summary else None
    return {"job": job, "finished": finished, "summary": summary, "encoding": encoding,
            "error": job.error if finished else None, "megabytes": imports.megabytes}  # fmt: skip


@router.get("/subscribers/rejects/{name}")
async def subscribers_rejects(request: Request, principal: Liaison, name: str) -> Response:
    """A reject report of an earlier import, by its file name (only reports, only from the rejects folder)."""
    folder = Path(request.app.state.settings.subscribers.rejects_dir)
    path = folder / name
    if not REPORT_NAME.fullmatch(name) or not path.is_file():
        _ = i18n.translator(i18n.page_language(request))
        return render(request, "refused.html", {"message": _("Không có báo cáo này.")}, 404)
    return FileResponse(path, media_type="text/csv; charset=utf-8", filename=name)


@router.post("/subscribers/opt-out")
async def subscribers_opt_out(
    request: Request,
    principal: Liaison,
    msisdn: Annotated[str, Form(max_length=32)] = "",
    action: Annotated[str, Form(pattern="^(out|in)$")] = "out",
) -> Response:
    """Record that a number refuses alerts (`out`) or accepts them again (`in`); the domain audits it."""
    _ = i18n.translator(i18n.page_language(request))
    opted_out = action == "out"
    try:
        number = PhoneBook().normalize(msisdn).e164
    except InvalidNumber as exc:
        return await _page(request, 400, error=str(exc))
    outcome = await in_transaction(
        request, lambda conn, now: subscriber_ops.set_opt_out(conn, number, opted_out, now, principal.actor)
    )
    if outcome is subscriber_ops.OptOut.UNKNOWN:
        message = "Không có thuê bao {number}, cũng không có lời từ chối nào của số này để huỷ."
        return await _page(request, 404, error=_(message).format(number=mask(number)))
    return await _page(request, 200, done=_(SAID[outcome, opted_out]).format(number=mask(number)))
