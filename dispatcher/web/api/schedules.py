"""`/api/v1/schedules`: recurring campaigns with their next runs, and their four-eyes approval."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from dispatcher import scheduler as scheduling
from dispatcher.web.api.schemas import Schedule, ScheduleChange
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction

router = APIRouter(prefix="/schedules", tags=["schedules"])
Readers = Annotated[Principal, allow("liaison", "approver", "operator")]
Approver = Annotated[Principal, allow("approver")]


@router.get("")
async def list_schedules(
    request: Request,
    principal: Readers,
    next: Annotated[int, Query(ge=1, le=50, description="how many next runs to show")] = 5,
) -> list[Schedule]:
    """Every campaign, its state, content, last run and next runs."""
    shown = await in_transaction(request, lambda conn, now: scheduling.listing(conn, now, next), write=False)
    return [Schedule(**item) for item in shown]


@router.post("/{name}/approve")
async def approve_schedule(
    request: Request, principal: Approver, name: Annotated[str, Path(max_length=80)]
) -> ScheduleChange:
    """Approve a synced campaign (never one's own sync: four-eyes, answered 403): its runs fire from now on."""
    await in_transaction(request, lambda conn, now: scheduling.approve(conn, name, principal.actor, now))
    return ScheduleChange(name=name, state="active", actor=principal.actor)
