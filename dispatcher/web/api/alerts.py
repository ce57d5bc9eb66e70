"""`/api/v1/alerts`: the catalogue and its four-eyes lifecycle, as `canhbao alerts` list, show, add, submit, approve."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from dispatcher import alerts as catalogue
from dispatcher import smstext
from dispatcher.web.api.schemas import Alert, AlertChange, AlertCreate, AlertSummary
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction

router = APIRouter(prefix="/alerts", tags=["alerts"])
Readers = Annotated[Principal, allow("police", "approver", "liaison", "operator")]
Police = Annotated[Principal, allow("police")]
Approver = Annotated[Principal, allow("approver")]
SUMMARY_KEYS = ("version", "versions", "status", "method", "priority", "title", "author", "approver")


@router.get("")
async def list_alerts(
    request: Request,
    principal: Readers,
    status: Annotated[str | None, Query(max_length=20, description="draft, submitted, approved, retired")] = None,
) -> list[AlertSummary]:
    """The newest version of every alert (of `status` when given)."""
    rows = await in_transaction(request, lambda conn, _now: catalogue.listing(conn), write=False)
    return [AlertSummary(id=r["slug"], **{k: r[k] for k in SUMMARY_KEYS}) for r in rows
            if status is None or r["status"] == status]  # fmt: skip


@router.get("/{alert_id}")
async def show_alert(
    request: Request,
    principal: Readers,
    alert_id: str,
    version: Annotated[int | None, Query(ge=1, le=1_000_000, description="default: the newest")] = None,
) -> Alert:
    """One version of an alert: both renderings, encoding, characters, parts, and the price of a part."""
    row = await in_transaction(request, lambda conn, _now: catalogue.version(conn, alert_id, version), write=False)
    return _document(request, row, catalogue.render(catalogue.spec_of(row)))


@router.post("", status_code=201)
async def add_alert(request: Request, principal: Police, alert: AlertCreate) -> Alert:
    """A new alert, stored as a draft and written to the catalogue folder (the author is the caller)."""
    settings = request.app.state.settings
    spec = catalogue.AlertSpec(
        id=alert.id, method=alert.method, title=smstext.normalize(alert.title), body=smstext.normalize(alert.body),
        source=alert.source, body_ascii=alert.body_ascii, variables=alert.variables,
        audiences=tuple(alert.audiences or ["public"]), priority=alert.priority, valid_days=alert.valid_days,
    )  # fmt: skip

    def create(conn: Any, now: Any) -> tuple[dict[str, Any], catalogue.Renderings]:
        known, folder = catalogue.catalogue_for(settings), settings.catalogue.messages_dir
        row, renderings, _path = catalogue.create(conn, spec, known, folder, principal.actor, "api", now)
        return row, renderings

    row, renderings = await in_transaction(request, create)
    return _document(request, row, renderings)


@router.post("/{alert_id}/submit")
async def submit_alert(request: Request, principal: Police, alert_id: str) -> AlertChange:
    """Send the newest draft for approval."""
    return await _lifecycle(request, principal, alert_id, catalogue.submit)


@router.post("/{alert_id}/approve")
async def approve_alert(request: Request, principal: Approver, alert_id: str) -> AlertChange:
    """Approve the submitted version (never one's own: four-eyes, answered 403)."""
    return await _lifecycle(request, principal, alert_id, catalogue.approve)


async def _lifecycle(request: Request, principal: Principal, alert_id: str, action: Any) -> AlertChange:
    row = await in_transaction(request, lambda conn, now: action(conn, alert_id, principal.actor, now))
    return AlertChange(id=alert_id, version=row["version"], status=row["status"], actor=principal.actor)


def _document(request: Request, row: dict[str, Any], renderings: catalogue.Renderings) -> Alert:
    sms = request.app.state.settings.sms
    keys = ("version", "status", "method", "title", "priority", "valid_days", "audiences", "variables", "source",
            "author", "approver", "zalo")  # fmt: skip
    shown = {"unicode": renderings.unicode.to_json(), "ascii": renderings.ascii.to_json()}
    return Alert(id=row["slug"], **{k: row[k] for k in keys}, renderings=shown, currency=sms.currency,
                 cost_per_part=sms.price_per_part)  # fmt: skip
