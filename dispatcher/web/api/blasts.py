"""`/api/v1/blasts`: preview, create, approve, pause, resume, cancel, resend-unknown, as `canhbao blast`.

Every action is one call to dispatcher/blasts.py, four-eyes and state checks included; a
refusal becomes a problem document (see problems.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import select

from dispatcher import blasts as blast_ops
from dispatcher.models import alerts
from dispatcher.segments import SegmentSpec, resolve
from dispatcher.web.api.schemas import Blast, BlastChange, BlastRequest, BlastSummary, CreatedBlast, Preview, Resent
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction, regions

router = APIRouter(prefix="/blasts", tags=["blasts"])
Readers = Annotated[Principal, allow("liaison", "approver", "operator")]
Liaison = Annotated[Principal, allow("liaison")]
Approver = Annotated[Principal, allow("approver")]
BlastId = Annotated[int, Path(ge=1, le=2**31 - 1)]
SUMMARY_KEYS = ("id", "state", "channel", "encoding", "recipients", "created_by", "approved_by", "start_at")


@router.get("")
async def list_blasts(
    request: Request, principal: Readers, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[BlastSummary]:
    """The newest blasts, newest first."""

    def read(conn: Any, _now: Any) -> list[BlastSummary]:
        return [_summary(conn, row) for row in blast_ops.listing(conn, limit)]

    return await in_transaction(request, read, write=False)


@router.get("/{blast_id}")
async def show_blast(request: Request, principal: Readers, blast_id: BlastId) -> Blast:
    """A blast with its messages by state, by carrier and by channel, and the preview it was approved on."""

    def read(conn: Any, _now: Any) -> Blast:
        blast = blast_ops.get(conn, blast_id)
        return Blast(**_summary(conn, blast).model_dump(), not_after=blast["not_after"], rate=blast["rate"],
                     counts=blast_ops.counts(conn, blast_id), by_carrier=blast_ops.by_carrier(conn, blast_id),
                     held=blast["held"] or {}, preview=blast["preview"], **blast_ops.channels(conn, blast))  # fmt: skip

    return await in_transaction(request, read, write=False)


def _summary(conn: Any, blast: dict[str, Any]) -> BlastSummary:
    slug = conn.execute(select(alerts.c.slug).where(alerts.c.id == blast["alert_id"]))
    return BlastSummary(**{k: blast[k] for k in SUMMARY_KEYS}, alert=slug.scalar(),
                        segment=blast["preview"].get("segment", []))  # fmt: skip


def _request(request: Request, asked: BlastRequest) -> blast_ops.BlastRequest:
    spec = SegmentSpec(*(tuple(v) for v in (asked.provinces, asked.communes, asked.legacy_districts, asked.audiences,
                                            asked.carriers)))  # fmt: skip
    return blast_ops.BlastRequest(alert_slug=asked.alert, segment=resolve(spec, regions(request)),
                                  channel=asked.channel, encoding=asked.encoding, start_at=asked.start_at,
                                  not_after=asked.not_after, rate=asked.rate)  # fmt: skip


@router.post("/preview")
async def preview_blast(request: Request, principal: Liaison, asked: BlastRequest) -> Preview:
    """What a blast would be, nothing stored: as `canhbao blast create --dry-run`."""
    wanted, settings, index = _request(request, asked), request.app.state.settings, regions(request)
    shown = await in_transaction(
        request, lambda conn, now: blast_ops.preview(conn, wanted, settings, index, now), write=False
    )
    return Preview(**shown)


@router.post("", status_code=201)
async def create_blast(request: Request, principal: Liaison, asked: BlastRequest) -> CreatedBlast:
    """Store a blast with its preview; it waits for a second person's approval."""
    wanted, settings, index = _request(request, asked), request.app.state.settings, regions(request)
    _id, shown = await in_transaction(
        request, lambda conn, now: blast_ops.create(conn, wanted, principal.actor, settings, index, now)
    )
    return CreatedBlast(**shown)


async def _change(request: Request, principal: Principal, blast_id: int, action: Callable[..., Any]) -> BlastChange:
    blast = await in_transaction(request, lambda conn, now: action(conn, blast_id, principal.actor, now))
    return BlastChange(blast_id=blast_id, state=blast["state"], actor=principal.actor)


@router.post("/{blast_id}/approve")
async def approve_blast(request: Request, principal: Approver, blast_id: BlastId) -> BlastChange:
    """Approve a blast (never one's own: four-eyes, answered 403); it is scheduled."""
    return await _change(request, principal, blast_id, blast_ops.approve)


@router.post("/{blast_id}/pause")
async def pause_blast(request: Request, principal: Liaison, blast_id: BlastId) -> BlastChange:
    """Hold a blast: nothing new is claimed until it is resumed."""
    return await _change(request, principal, blast_id, blast_ops.pause)


@router.post("/{blast_id}/resume")
async def resume_blast(request: Request, principal: Liaison, blast_id: BlastId) -> BlastChange:
    """Go on with a paused blast."""
    return await _change(request, principal, blast_id, blast_ops.resume)


@router.post("/{blast_id}/cancel")
async def cancel_blast(request: Request, principal: Liaison, blast_id: BlastId) -> BlastChange:
    """Cancel a blast: what was not sent is not sent."""
    return await _change(request, principal, blast_id, blast_ops.cancel)


@router.post("/{blast_id}/resend-unknown")
async def resend_unknown(request: Request, principal: Liaison, blast_id: BlastId) -> Resent:
    """Queue again the messages whose fate is unknown."""
    count = await in_transaction(
        request, lambda conn, now: blast_ops.resend_unknown(conn, blast_id, principal.actor, now)
    )
    return Resent(blast_id=blast_id, requeued=count)
