"""Blasts in the console: the new-blast form with its live preview, the list, a blast's page and its actions.

The form, its preview and its creation call what `canhbao blast create [--dry-run]` calls:
region names go through dispatcher/segments.py `resolve` (today's and legacy names), the
preview and the creation through dispatcher/blasts.py, so a refusal (a start already past, a
window in which nothing could go out, an unknown place, an empty segment) is the domain's own,
in Vietnamese. Region names are typed one per line: a legacy name holds commas ('Quảng Nam
(cũ), huyện Duy Xuyên'). Each is shown with what it is today, or with its candidates when
several places bear it; a candidate's button (static/blasts.js) writes it back into the form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from dispatcher import blasts as blast_ops
from dispatcher.domain import Audience, DeliveryStatus
from dispatcher.errors import CanhBaoError, UsageError
from dispatcher.formats import parse_moment
from dispatcher.phones import Carrier
from dispatcher.regions import AmbiguousRegion, Level, RegionIndex
from dispatcher.segments import CHANNEL_POLICIES, SegmentSpec, resolve
from dispatcher.web import i18n
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction, regions
from dispatcher.web.templating import render

router = APIRouter()
BlastReaders = Annotated[Principal, allow("liaison", "approver", "operator")]
Approver = Annotated[Principal, allow("approver")]
Liaison = Annotated[Principal, allow("liaison")]
REGION_FIELDS = (("provinces", Level.PROVINCE), ("communes", Level.COMMUNE), ("legacy_districts", Level.DISTRICT))
SHOWN_COMMUNES = 10

i18n.register(
    {
        "Đợt gửi mới": "New blast",
        "Mẫu cảnh báo (đã duyệt)": "Alert (approved)",
        "— chọn mẫu —": "— choose an alert —",
        "Chưa có mẫu cảnh báo nào được duyệt.": "No alert is approved yet.",
        "Địa bàn": "Where",
        "Mỗi dòng một tên hoặc mã; nhận cả tên cũ (trước 1/7/2025).": (
            "One name or code per line; former names (before 1 July 2025) are accepted."
        ),
        "Tỉnh/thành phố": "Province",
        "Xã/phường/đặc khu": "Communes",
        "Quận/huyện cũ": "Former districts",
        "Đối tượng": "Audience",
        "Để trống: theo mẫu cảnh báo.": "Left empty: the alert's own audience.",
        "tất cả": "all",
        "Nhà mạng": "Carrier",
        "Để trống: mọi nhà mạng.": "Left empty: every carrier.",
        "Cách gửi": "How it is sent",
        "Kênh": "Channel",
        "Bảng mã": "Encoding",
        "tự chọn": "automatic",
        "có dấu (Unicode)": "with diacritics (Unicode)",
        "không dấu": "without diacritics",
        "Bắt đầu lúc": "Start at",
        "Để trống: ngay khi được duyệt.": "Left empty: as soon as approved.",
        "Không gửi sau": "Not after",
        "Tốc độ (tin/giây)": "Rate (messages/second)",
        "Xem trước": "Preview",
        "Tạo đợt gửi (chờ duyệt)": "Create the blast (awaiting approval)",
        "Nhập địa bàn để xem trước người nhận, chi phí và thời gian gửi.": (
            "Enter a place to preview recipients, cost and time to send."
        ),
        "Nay là": "Today",
        "toàn tỉnh/thành phố": "the whole province",
        "xã/phường": "communes",
        "chỉ một phần": "only partly",
        "Tên này có nhiều nơi; chọn một:": "Several places bear this name; pick one:",
        "nơi khác: ghi thêm tỉnh/thành phố để thu hẹp.": "more: add the province to narrow it.",
        "Người nhận": "Recipients",
        "trong phân đoạn": "in the segment",
        "Loại trừ": "Excluded",
        "Lý do": "Reason",
        "Số người": "People",
        "hoãn 1 ngày (đã đủ số tin trong 24 giờ)": "deferred a day (daily cap reached)",
        "Theo nhà mạng": "By carrier",
        "Theo xã/phường (lớn nhất)": "By commune (largest)",
        "và": "and",
        "xã/phường khác": "other communes",
        "xã chỉ một phần thuộc địa bàn cũ đã chọn: cả xã sẽ nhận tin.": (
            "communes lie only partly in the former unit chosen: the whole commune receives the message."
        ),
        "Tin và chi phí": "Message and cost",
        "phần mỗi tin SMS": "parts per SMS",
        "tổng số phần SMS": "SMS parts in all",
        "Chi phí ước tính": "Estimated cost",
        "chưa tính SMS dự phòng khi Zalo không tới được": "not counting fallback SMS when Zalo fails",
        "Thời gian": "Timing",
        "Bắt đầu": "Starts",
        "khi được duyệt": "on approval",
        "Gửi xong sau khoảng": "Done after about",
        "nếu duyệt ngay": "if approved now",
        "lúc": "at",
        "đã tính giờ yên lặng": "quiet hours counted",
        "không có giờ yên lặng": "no quiet hours",
        "tin sẽ quá hạn": "messages would expire",
        "Lưu ý": "Note",
        "Nội dung (xã đông nhất)": "Text (largest commune)",
        "Hãy chọn một mẫu cảnh báo đã duyệt.": "Choose an approved alert.",
        "Tốc độ phải là một số tin mỗi giây, ví dụ 50.": "The rate must be a number of messages per second, e.g. 50.",
    }
)


# -- the new-blast form -------------------------------------------------------------------


@dataclass(frozen=True)
class BlastForm:
    """The new-blast form as typed: region names one per line, the other fields as chosen."""

    alert: str = ""
    provinces: str = ""
    communes: str = ""
    legacy_districts: str = ""
    audiences: tuple[str, ...] = ()
    carriers: tuple[str, ...] = ()
    channel: str = "sms"
    encoding: str = "auto"
    start_at: str = ""
    not_after: str = ""
    rate: str = ""

    @classmethod
    async def read(cls, request: Request) -> BlastForm:
        """The form's fields from the posted body (urlencoded or multipart)."""
        form = await request.form()
        text = {key: str(form.get(key) or "").strip()[:4000] for key in cls.__dataclass_fields__}
        chosen = {key: value for key, value in text.items() if value}  # a field left out keeps its default
        return cls(**{**chosen, "audiences": tuple(map(str, form.getlist("audiences"))),
                      "carriers": tuple(map(str, form.getlist("carriers")))})  # fmt: skip

    def names(self, field: str) -> list[str]:
        """The region names of one textarea, one per line."""
        return [line.strip() for line in getattr(self, field).splitlines() if line.strip()]

    def spec(self) -> SegmentSpec:
        """The segment as `canhbao blast create` options would give it."""
        return SegmentSpec(tuple(self.names("provinces")), tuple(self.names("communes")),
                           tuple(self.names("legacy_districts")), self.audiences, self.carriers)  # fmt: skip

    def request(self, regions: RegionIndex, zone: str) -> blast_ops.BlastRequest:
        """The domain's request; no alert, or a name, a moment or a rate that cannot be read is a UsageError."""
        if not self.alert:
            raise UsageError("Hãy chọn một mẫu cảnh báo đã duyệt.")
        return blast_ops.BlastRequest(
            alert_slug=self.alert, segment=resolve(self.spec(), regions), channel=self.channel,
            encoding=self.encoding, start_at=_moment(self.start_at, zone, "Bắt đầu lúc"),
            not_after=_moment(self.not_after, zone, "Không gửi sau"), rate=_rate(self.rate),
        )  # fmt: skip


def _moment(text: str, zone: str, field: str) -> datetime | None:
    if not text:
        return None
    try:
        return parse_moment(text, zone)
    except ValueError:
        raise UsageError(f"{field}: không hiểu thời điểm {text!r} (dạng 01/12/2026 09:00).") from None


def _rate(text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text.replace(",", "."))  # a Vietnamese decimal comma too
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UsageError("Tốc độ phải là một số tin mỗi giây, ví dụ 50.")
    return value


def place_names(form: BlastForm, index: RegionIndex) -> list[dict[str, Any]]:
    """Each name typed, with what it is today, its candidates when ambiguous, or why it is not known."""
    shown = []
    for field, level in REGION_FIELDS:
        for name in form.names(field):
            entry: dict[str, Any] = {"field": field, "name": name}
            try:
                found = index.resolve(name, frozenset({level}))
            except AmbiguousRegion as exc:
                entry.update(candidates=exc.choices, more=len(exc.candidates) - len(exc.choices))
            except CanhBaoError as exc:
                entry["error"] = str(exc)
            else:
                entry.update(label=index.label(found), whole=found.whole_province, communes=[
                    {"name": c.unit.name, "province": index.province(c.unit.province_code).name,
                     "partial": c.partial} for c in found.communes])  # fmt: skip
            shown.append(entry)
    return shown


async def _form_context(request: Request, form: BlastForm) -> dict[str, Any]:
    found = await in_transaction(request, lambda conn, _now: blast_ops.approved_alerts(conn), write=False)
    return {"form": form, "alerts": found, "audience_choices": list(Audience), "carrier_choices": list(Carrier),
            "channels": list(CHANNEL_POLICIES), "encodings": blast_ops.ENCODINGS}  # fmt: skip


async def _preview(request: Request, form: BlastForm) -> dict[str, Any]:
    """What the preview panel shows: the names as understood, then the domain's preview or its refusal."""
    index = regions(request)
    places = place_names(form, index)
    shown: dict[str, Any] = {"places": places}
    if not places or any("label" not in place for place in places):
        return shown  # the names say what is wrong; the domain would only repeat the first
    settings = request.app.state.settings
    try:
        asked = form.request(index, settings.app.timezone)
        preview = await in_transaction(
            request, lambda conn, now: blast_ops.preview(conn, asked, settings, index, now), write=False
        )
    except CanhBaoError as exc:
        return {**shown, "refusal": i18n.translator(i18n.page_language(request))(str(exc))}
    return {**shown, "preview": preview, **_view(preview)}


def _view(preview: dict[str, Any]) -> dict[str, Any]:
    """The preview's moments as datetimes and its largest communes, as the page shows them."""
    moments = {key: datetime.fromisoformat(preview[key]) for key in ("start_at", "finish_at", "not_after")
               if preview.get(key)}  # fmt: skip
    communes = [(p["name"], c["name"], c["recipients"]) for p in preview["by_province"].values()
                for c in p["communes"].values()]  # fmt: skip
    communes.sort(key=lambda row: -row[2])
    rest = communes[SHOWN_COMMUNES:]
    return {"moments": moments, "communes": communes[:SHOWN_COMMUNES],
            "other_communes": (len(rest), sum(n for *_, n in rest))}  # fmt: skip


@router.get("/blasts/new")
async def blast_new(request: Request, principal: Liaison, alert: str = "") -> Response:
    """The new-blast form (an alert may be chosen in advance, from the alert's page)."""
    return render(request, "blast_new.html", await _form_context(request, BlastForm(alert=alert)))


@router.post("/blasts/preview")
async def blast_preview(request: Request, principal: Liaison) -> Response:
    """The preview panel for the form as it stands: htmx asks for it as the liaison types."""
    return render(request, "_blast_preview.html", await _preview(request, await BlastForm.read(request)))


@router.post("/blasts")
async def blast_create(request: Request, principal: Liaison) -> Response:
    """Create the blast as previewed; it waits for a second person's approval."""
    form = await BlastForm.read(request)
    settings, index = request.app.state.settings, regions(request)
    try:
        asked = form.request(index, settings.app.timezone)
        blast_id, _ = await in_transaction(
            request, lambda conn, now: blast_ops.create(conn, asked, principal.actor, settings, index, now)
        )
    except CanhBaoError as exc:
        context = await _form_context(request, form)
        said = i18n.translator(i18n.page_language(request))(str(exc))
        shown = {k: v for k, v in (await _preview(request, form)).items() if k != "refusal"}  # said once, on top
        return render(request, "blast_new.html", {**context, **shown, "error": said}, 400)
    return RedirectResponse(f"/blasts/{blast_id}", 303)


# -- the list, a blast's page, its actions ------------------------------------------------


@router.get("/blasts")
async def blasts_page(request: Request, principal: BlastReaders) -> Response:
    """The newest blasts."""
    found = await in_transaction(request, lambda conn, _now: blast_ops.listing(conn, 100), write=False)
    return render(request, "blasts.html", {"blasts": found})


async def _blast_view(request: Request, blast_id: int, template: str, status: int = 200, **context: Any) -> Response:
    """`template` with the blast, its counts by state and by carrier; a blast that does not exist is a 404 page."""

    def read(conn: Any, _now: Any) -> dict[str, Any]:
        return {"blast": blast_ops.get(conn, blast_id), "counts": blast_ops.counts(conn, blast_id),
                "by_carrier": blast_ops.by_carrier(conn, blast_id)}  # fmt: skip

    try:
        found = await in_transaction(request, read, write=False)
    except CanhBaoError as exc:
        return render(request, "refused.html", {"message": str(exc)}, 404)
    return render(request, template, {**found, "states": list(DeliveryStatus), **context}, status)


async def _blast_page(request: Request, blast_id: int, status: int = 200, **context: Any) -> Response:
    return await _blast_view(request, blast_id, "blast.html", status, **context)


@router.get("/blasts/{blast_id}")
async def blast_page(request: Request, principal: BlastReaders, blast_id: int) -> Response:
    """A blast: its preview, counts by state and carrier, and the actions the person's roles allow."""
    return await _blast_page(request, blast_id)


@router.get("/blasts/{blast_id}/counts")
async def blast_counts(request: Request, principal: BlastReaders, blast_id: int) -> Response:
    """The counts alone, refreshed by htmx while the blast runs."""
    return await _blast_view(request, blast_id, "_blast_counts.html")


async def _act(request: Request, blast_id: int, action: Callable[[Any, Any], Any]) -> Response:
    """Run a blast action; a refusal (four-eyes, a state that does not allow it) is shown on the blast's page."""
    try:
        await in_transaction(request, action)
    except CanhBaoError as exc:
        status = 404 if exc.code == "not_found" else 403 if exc.code == "forbidden" else 409
        return await _blast_page(request, blast_id, status, error=str(exc))
    return RedirectResponse(f"/blasts/{blast_id}", 303)


@router.post("/blasts/{blast_id}/approve")
async def blast_approve(request: Request, principal: Approver, blast_id: int) -> Response:
    """Approve a blast (never one's own: four-eyes)."""
    return await _act(request, blast_id, lambda conn, now: blast_ops.approve(conn, blast_id, principal.actor, now))


@router.post("/blasts/{blast_id}/pause")
async def blast_pause(request: Request, principal: Liaison, blast_id: int) -> Response:
    """Hold a blast: nothing new is claimed until it is resumed."""
    return await _act(request, blast_id, lambda conn, now: blast_ops.pause(conn, blast_id, principal.actor, now))


@router.post("/blasts/{blast_id}/resume")
async def blast_resume(request: Request, principal: Liaison, blast_id: int) -> Response:
    """Go on with a paused blast."""
    return await _act(request, blast_id, lambda conn, now: blast_ops.resume(conn, blast_id, principal.actor, now))


@router.post("/blasts/{blast_id}/cancel")
async def blast_cancel(request: Request, principal: Liaison, blast_id: int) -> Response:
    """Cancel a blast: what was not sent is not sent."""
    return await _act(request, blast_id, lambda conn, now: blast_ops.cancel(conn, blast_id, principal.actor, now))


@router.post("/blasts/{blast_id}/resend-unknown")
async def blast_resend_unknown(request: Request, principal: Liaison, blast_id: int) -> Response:
    """Queue again the messages whose fate is unknown (an operator's choice: the carrier may have them)."""
    return await _act(
        request, blast_id, lambda conn, now: blast_ops.resend_unknown(conn, blast_id, principal.actor, now)
    )
