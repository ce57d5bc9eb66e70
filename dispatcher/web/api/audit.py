"""`/api/v1/audit`: the audit log, filtered, newest first, paged by key."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime

from dispatcher import audit as audit_log
from dispatcher.web.api.schemas import AuditPage
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction

router = APIRouter(prefix="/audit", tags=["audit"])
Readers = Annotated[Principal, allow("operator", "admin")]
Text = Annotated[str | None, Query(max_length=200)]


@router.get("")
async def list_audit(
    request: Request,
    principal: Readers,
    actor: Text = None,
    action: Annotated[
        str | None, Query(max_length=60, description="'blast.approve', or 'blast' for every blast.*")
    ] = None,
    subject: Annotated[str | None, Query(max_length=200, examples=["blast:7"])] = None,
    source: Annotated[Literal["cli", "web", "api", "system"] | None, Query(description="where it was done")] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="the `next_before` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AuditPage:
    """Who did what to which subject, and when."""
    found = audit_log.AuditFilter(actor=actor, action=action, subject=subject, source=source, since=since,
                                  until=until, before_id=before)  # fmt: skip
    rows, next_before = await in_transaction(
        request, lambda conn, _now: audit_log.page(conn, found, limit), write=False
    )
    return AuditPage(items=rows, next_before=next_before)
