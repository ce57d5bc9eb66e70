"""What route functions share: the database work of a request, the region index (loaded once, on first use).

The database work runs where the audit log knows its origin: a console session or an API token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dispatcher import db
from dispatcher.audit import acting_through
from dispatcher.errors import CanhBaoError, UsageError
from dispatcher.formats import parse_moment
from dispatcher.regions import RegionIndex
from dispatcher.web.proxies import client_address
from dispatcher.web.templating import render

_loading = threading.Lock()


def regions(request: Request) -> RegionIndex:
    """The region index (about a second to load, so only when a page first needs it)."""
    state = request.app.state
    if state.regions is None:
        with _loading:
            if state.regions is None:
                state.regions = RegionIndex.load()
    return state.regions


async def in_transaction(request: Request, work: Callable[[Connection, datetime], Any], write: bool = True) -> Any:
    """`work(conn, now)` off the event loop: in one transaction when it writes, on a plain connection when it reads."""
    state = request.app.state
    source, via = origin(request)
    address = client_address(request)

    def inside() -> Any:
        with acting_through(source, via, address), state.engine.begin() if write else db.reading(state.engine) as conn:
            return work(conn, state.clock())

    return await run_in_threadpool(inside)


async def revealed(request: Request, reveal: Callable[[Connection, datetime], str], shown: dict[str, Any]) -> Response:
    """The page showing a full number that `reveal` gave (it audits the reason), or why it was refused."""
    try:
        number = await in_transaction(request, reveal)
    except CanhBaoError as exc:
        return render(request, "refused.html", {"message": str(exc)}, 404 if exc.code == "not_found" else 400)
    return render(request, "revealed.html", {**shown, "number": number})


def origin(request: Request) -> tuple[str, str | None]:
    """(source, via) the audit log records for this request: a console session or an API token, by its id."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return "system", None
    if principal.via == "token":
        return "api", f"token:{principal.token_id}"
    return "web", f"session:{principal.session_ref}"


def day_range(since: str, until: str, zone: str) -> tuple[datetime | None, datetime | None]:
    """A page's 'from day' and 'to day' (both included, local days as a date field sends them) as UTC bounds."""

    def day(text: str, field: str) -> datetime | None:
        if not text.strip():
            return None
        try:
            return parse_moment(text, zone)
        except ValueError:
            raise UsageError(f"{field}: không hiểu ngày {text.strip()!r} (dạng 01/12/2026 hoặc 2026-12-01).") from None

    start, end = day(since, "Từ ngày"), day(until, "Đến ngày")
    return start, None if end is None else end + timedelta(days=1)
