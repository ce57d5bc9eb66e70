"""The alerts' pages: the catalogue with filters, an alert with both renderings and its cost, the new-alert and edit
forms with a live preview, submit, approve or reject with a reason, and the history of versions with their diffs.

Every action is the CLI's own call into dispatcher/alerts.py (`alerts add` and the form are one
`create`, four-eyes included). A new alert or an edit is also written to messages/, so the
catalogue files stay the reviewed source and the next `alerts sync` finds nothing changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from dispatcher import alerts as catalogue
from dispatcher import smstext
from dispatcher.domain import AlertStatus, Audience, Priority
from dispatcher.errors import CanhBaoError
from dispatcher.web import i18n
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction
from dispatcher.web.templating import render

router = APIRouter()
Readers = Annotated[Principal, allow("police", "approver", "liaison", "operator")]
Police = Annotated[Principal, allow("police")]
Approver = Annotated[Principal, allow("approver")]
# The form's fields as a person reads them, for the problems the domain names by key.
FIELDS = {
    "id": "Mã mẫu", "method": "Phương thức lừa đảo", "title": "Tiêu đề", "body": "Nội dung (có dấu)",
    "body_ascii": "Bản không dấu", "source": "Nguồn chính thức", "audiences": "Nhóm đối tượng",
    "priority": "Mức ưu tiên", "valid_days": "Số ngày hiệu lực", "variables": "Biến", "zalo": "Zalo",
}  # fmt: skip
STATUS_CODES = {"not_found": 404, "forbidden": 403, "state": 409}

i18n.register(
    {
        "Mẫu cảnh báo": "Alerts",
        "Mẫu cảnh báo mới": "New alert",
        "Tạo mẫu mới": "New alert",
        "Mã mẫu": "Alert id",
        "Phương thức lừa đảo": "Scam method",
        "Tiêu đề": "Title",
        "Nội dung (có dấu)": "Text (Vietnamese)",
        "Bản không dấu": "Text without diacritics",
        "Nguồn chính thức": "Official source",
        "Nhóm đối tượng": "Audiences",
        "Mức ưu tiên": "Priority",
        "Số ngày hiệu lực": "Valid for (days)",
        "Biến": "Variables",
        "Tìm trong mã, tiêu đề, nội dung": "Search id, title, text",
        "Bản": "Version",
        "Số bản": "Versions",
        "Tác giả": "Author",
        "Người duyệt": "Approver",
        "Có dấu": "Vietnamese",
        "Không dấu": "Without diacritics",
        "Bảng mã": "Encoding",
        "Ký tự": "Characters",
        "Phần tin": "Parts",
        "Giá/phần": "Price a part",
        "Có dấu/tin": "Vietnamese a message",
        "Không dấu/tin": "Without diacritics a message",
        "Chi phí theo nhà mạng": "Cost by carrier",
        "Xem trước": "Preview",
        "Số phần tin tính với giá trị dài nhất của các biến ({ten_tinh}, {ten_xa}).": (
            "Parts are counted for the longest values of the variables ({ten_tinh}, {ten_xa})."
        ),
        "Cần sửa trước khi lưu:": "To fix before saving:",
        "Hợp lệ: có thể lưu.": "Valid: ready to save.",
        "Lưu bản nháp": "Save draft",
        "Lưu phiên bản mới": "Save as a new version",
        "Sửa": "Edit",
        "Sửa mẫu": "Edit alert",
        "Gửi duyệt": "Submit for approval",
        "Trả lại": "Send back",
        "Lý do trả lại": "Why it is sent back",
        "Bị trả lại": "Sent back",
        "Lịch sử phiên bản": "Version history",
        "Khác với bản trước": "Changes from the previous version",
        "bản đầu tiên": "first version",
        "Mỗi dòng một biến: ten = giá trị dài nhất": "One variable a line: name = longest value",
        "Để trống: tự tạo từ bản có dấu": "Leave empty: made from the Vietnamese text",
        "Không có mẫu nào khớp.": "No alert matches.",
        "Đang xem bản cũ": "An older version",
        "xem bản mới nhất": "see the newest",
        "Lọc": "Filter",
        "Hiệu lực": "Valid",
        "ngày": "days",
        "Nguồn": "Source",
        "Đối tượng": "Audiences",
        "Ưu tiên": "Priority",
        "Phương thức": "Method",
    }
)


def _fail(exc: CanhBaoError) -> int:
    return STATUS_CODES.get(exc.code, 400)


def _methods(request: Request) -> dict[str, str]:
    return catalogue.catalogue_for(request.app.state.settings).methods


def _choices(request: Request) -> dict[str, Any]:
    """What the filters and the form offer: methods, audiences, statuses, priorities."""
    return {"methods": _methods(request), "audiences": list(Audience), "statuses": list(AlertStatus),
            "priorities": list(Priority)}  # fmt: skip


# -- the list -----------------------------------------------------------------------------


@router.get("/alerts")
async def alerts_page(
    request: Request, principal: Readers, status: str = "", method: str = "", audience: str = "", q: str = ""
) -> Response:
    """The newest version of every alert, filtered by status, method, audience and words of its text."""
    fields = {"status": status, "method": method, "audience": audience, "q": q}
    rows = await in_transaction(request, lambda conn, _now: catalogue.listing(conn), write=False)
    shown = catalogue.matching(rows, status, method, audience, q)
    return render(request, "alerts.html", {"alerts": shown, "fields": fields, **_choices(request)})


# -- the form and its live preview ----------------------------------------------------------


def _form_spec(request: Request, form: dict[str, Any], author: str) -> tuple[catalogue.AlertSpec, list]:
    """The AlertSpec a form describes and the problems of its fields (the domain's checks included)."""
    problems: list[catalogue.Problem] = []
    variables: dict[str, str] = {}
    for line in form["variables"].splitlines():
        if line.strip():
            name, sep, value = line.partition("=")
            if not sep:
                problems.append(catalogue.Problem("variables", f"dòng {line.strip()!r} cần dạng ten = giá trị"))
            variables[name.strip()] = smstext.normalize(value.strip())
    days = form["valid_days"].strip()
    whole = re.fullmatch(r"[0-9]{1,6}", days) is not None  # not str.isdigit: '²' is a digit int() refuses
    if not whole:
        problems.append(catalogue.Problem("valid_days", f"cần số ngày (số nguyên), nhận được {days!r}"))
    spec = catalogue.AlertSpec(
        id=form["id"].strip(), method=form["method"], title=smstext.normalize(form["title"].strip()),
        body=smstext.normalize(form["body"].strip()), source=form["source"].strip(),
        body_ascii=form["body_ascii"].strip() or None, variables=variables,
        audiences=tuple(form["audiences"]) or ("public",), priority=form["priority"],
        valid_days=int(days) if whole else 180, zalo=form.get("zalo"), author=author,
    )  # fmt: skip
    problems += catalogue.missing(spec) + catalogue.problems_of(
        spec, catalogue.catalogue_for(request.app.state.settings)
    )
    return spec, problems


def _preview(request: Request, spec: catalogue.AlertSpec, problems: list, checking: bool = True) -> dict[str, Any]:
    """Both renderings, their measures and cost per carrier, and (`checking` a form) the problems by field."""
    renderings = catalogue.render(spec)
    return {
        "checking": checking,
        "renderings": [("Có dấu", renderings.unicode), ("Không dấu", renderings.ascii)],
        "costs": catalogue.costs(renderings, request.app.state.settings.sms),
        "currency": request.app.state.settings.sms.currency,
        "problems": [(FIELDS.get(p.key.split(".")[0], p.key), p.text) for p in problems],
    }


async def _form(request: Request) -> dict[str, Any]:
    """The alert form's fields as posted (a missing field is empty)."""
    posted = await request.form()
    form = {key: str(posted.get(key, "")) for key in ("id", "method", "title", "body", "body_ascii", "source",
                                                        "priority", "valid_days", "variables")}  # fmt: skip
    form["audiences"] = [str(a) for a in posted.getlist("audiences")]
    return form


def _form_page(request: Request, form: dict[str, Any], editing: dict[str, Any] | None, status: int = 200,
               checking: bool = True, **context: Any) -> Response:  # fmt: skip
    """The form with `form`'s values and its preview (and what is wrong, unless it is the blank form just opened)."""
    spec, problems = _form_spec(request, form, "")
    preview = _preview(request, spec, problems, checking)
    shown = {"form": form, "editing": editing, **_choices(request), **preview, **context}
    return render(request, "alert_form.html", shown, status)


def _blank() -> dict[str, Any]:
    return {"id": "", "method": "", "title": "", "body": "", "body_ascii": "", "source": "", "priority": "normal",
            "valid_days": "180", "variables": "", "audiences": ["public"]}  # fmt: skip


def _filled(row: dict[str, Any]) -> dict[str, Any]:
    """The form's fields for a stored version."""
    return {
        "id": row["slug"], "method": row["method"], "title": row["title"], "body": row["body"],
        "body_ascii": row["body_ascii"] if row["body_ascii_reviewed"] else "", "source": row["source"],
        "priority": row["priority"], "valid_days": str(row["valid_days"]), "audiences": list(row["audiences"]),
        "variables": "\n".join(f"{k} = {v}" for k, v in row["variables"].items()),
    }  # fmt: skip


@router.get("/alerts/new")
async def alert_new(request: Request, principal: Police) -> Response:
    """The form for a new alert, with its preview."""
    return _form_page(request, _blank(), None, checking=False)


@router.post("/alerts/preview")
async def alert_preview(request: Request, principal: Police) -> Response:
    """Both renderings, encoding, characters, parts, cost and what is wrong, as the officer types (htmx)."""
    spec, problems = _form_spec(request, await _form(request), principal.actor)
    return render(request, "_alert_preview.html", _preview(request, spec, problems))


@router.post("/alerts")
async def alert_create(request: Request, principal: Police) -> Response:
    """Store a new alert as a draft (and its catalogue file); a refusal shows the form again with every problem."""
    form = await _form(request)
    spec, problems = _form_spec(request, form, principal.actor)
    if problems:
        return _form_page(request, form, None, 400)
    settings = request.app.state.settings
    rules, folder = catalogue.catalogue_for(settings), settings.catalogue.messages_dir

    def create(conn: Any, now: Any) -> Any:
        return catalogue.create(conn, spec, rules, folder, principal.actor, "web", now)

    try:
        await in_transaction(request, create)
    except CanhBaoError as exc:
        return _form_page(request, form, None, _fail(exc), error=str(exc))
    return RedirectResponse(f"/alerts/{spec.id}", 303)


# -- one alert ----------------------------------------------------------------------------


async def _alert_page(request: Request, slug: str, number: int | None = None, status: int = 200,
                      **context: Any) -> Response:  # fmt: skip
    """The alert page: the version asked (newest by default), its renderings, costs and the actions allowed."""

    def read(conn: Any, _now: Any) -> dict[str, Any]:
        row = catalogue.version(conn, slug, number)
        newest = catalogue.latest(conn, slug)
        return {"alert": row, "newest": newest["version"], "rejection": catalogue.rejections(conn, slug).get(
            row["version"])}  # fmt: skip

    try:
        found = await in_transaction(request, read, write=False)
    except CanhBaoError as exc:
        return render(request, "refused.html", {"message": str(exc)}, _fail(exc))
    spec = catalogue.spec_of(found["alert"])
    shown = {**found, **_preview(request, spec, [], checking=False), "methods": _methods(request), **context}
    return render(request, "alert.html", shown, status)


@router.get("/alerts/{slug}")
async def alert_page(request: Request, principal: Readers, slug: str, version: int | None = None) -> Response:
    """An alert: both renderings with encoding, characters, parts and cost per carrier; the actions the roles allow."""
    return await _alert_page(request, slug, version)


async def _act(request: Request, slug: str, action: Callable[[Any, Any], Any]) -> Response:
    """Run a lifecycle action; a refusal (four-eyes, a state that does not allow it) is shown on the alert's page."""
    try:
        await in_transaction(request, action)
    except CanhBaoError as exc:
        if exc.code == "not_found":
            return render(request, "refused.html", {"message": str(exc)}, 404)
        return await _alert_page(request, slug, None, _fail(exc), error=str(exc))
    return RedirectResponse(f"/alerts/{slug}", 303)


@router.post("/alerts/{slug}/submit")
async def alert_submit(request: Request, principal: Police, slug: str) -> Response:
    """Offer the newest draft for approval."""
    return await _act(request, slug, lambda conn, now: catalogue.submit(conn, slug, principal.actor, now))


@router.post("/alerts/{slug}/approve")
async def alert_approve(request: Request, principal: Approver, slug: str) -> Response:
    """Approve the submitted version (never one's own: four-eyes)."""
    return await _act(request, slug, lambda conn, now: catalogue.approve(conn, slug, principal.actor, now))


@router.post("/alerts/{slug}/reject")
async def alert_reject(
    request: Request, principal: Approver, slug: str, reason: Annotated[str, Form()] = ""
) -> Response:
    """Send the submitted version back to its author with the reason (never one's own: four-eyes)."""
    return await _act(request, slug, lambda conn, now: catalogue.reject(conn, slug, principal.actor, reason, now))


# -- editing ------------------------------------------------------------------------------


async def _editable(request: Request, slug: str) -> dict[str, Any]:
    return await in_transaction(request, lambda conn, _now: catalogue.version(conn, slug), write=False)


@router.get("/alerts/{slug}/edit")
async def alert_edit_form(request: Request, principal: Police, slug: str) -> Response:
    """The form holding the newest version, to be saved as a new one."""
    try:
        row = await _editable(request, slug)
    except CanhBaoError as exc:
        return render(request, "refused.html", {"message": str(exc)}, _fail(exc))
    return _form_page(request, _filled(row), row)


@router.post("/alerts/{slug}/edit")
async def alert_edit(request: Request, principal: Police, slug: str) -> Response:
    """Save the form as a new version of a draft or rejected alert (its file rewritten); refusals show the form."""
    try:
        row = await _editable(request, slug)
    except CanhBaoError as exc:
        return render(request, "refused.html", {"message": str(exc)}, _fail(exc))
    form = {**await _form(request), "id": slug, "zalo": row["zalo"]}  # the id is the alert's; Zalo is kept as is
    spec, problems = _form_spec(request, form, principal.actor)
    if problems:
        return _form_page(request, form, row, 400)
    settings = request.app.state.settings
    rules, folder = catalogue.catalogue_for(settings), settings.catalogue.messages_dir

    def revise(conn: Any, now: Any) -> Any:
        return catalogue.revise(conn, spec, rules, folder, principal.actor, "web", now)

    try:
        await in_transaction(request, revise)
    except CanhBaoError as exc:
        return _form_page(request, form, row, _fail(exc), error=str(exc))
    return RedirectResponse(f"/alerts/{slug}", 303)


# -- history ------------------------------------------------------------------------------


@router.get("/alerts/{slug}/history")
async def alert_history(request: Request, principal: Readers, slug: str) -> Response:
    """Every version, newest first, each with what changed from the one before."""

    def read(conn: Any, _now: Any) -> dict[str, Any]:
        return {"versions": catalogue.history(conn, slug), "rejections": catalogue.rejections(conn, slug)}

    try:
        found = await in_transaction(request, read, write=False)
    except CanhBaoError as exc:
        return render(request, "refused.html", {"message": str(exc)}, _fail(exc))
    versions = found["versions"]
    shown = [(row, found["rejections"].get(row["version"]), lines)
             for row, lines in zip(versions, catalogue.changes(versions), strict=True)]  # fmt: skip
    return render(request, "alert_history.html", {"slug": slug, "versions": shown})
