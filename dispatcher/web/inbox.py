"""The inbox page: what people texted us that was no opt-out, masked, with a reveal for operators.

It reads through the same query as `canhbao inbox` (dispatcher/inbound.py). The sender and any
number written in a text are masked; an operator who must call someone back reveals the one
number with a reason (dispatcher/privacy.py, audited). A number searched for is posted, never
put in a URL.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from dispatcher import inbound, privacy
from dispatcher.errors import CanhBaoError
from dispatcher.phones import InvalidNumber, PhoneBook
from dispatcher.web import i18n
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import day_range, in_transaction, revealed
from dispatcher.web.templating import render

router = APIRouter()
Operator = Annotated[Principal, allow("operator")]
PAGE_SIZE = 50

i18n.register(
    {
        "Nội dung": "Text",
        "Có chữ": "Containing",
        "Chưa có tin nhắn đến nào.": "No text has come in yet.",
        "Người dân nhắn đến số của chúng ta; lời từ chối (HUỶ, TỪ CHỐI…) được áp dụng ngay, không nằm ở đây.": (
            "What people texted our numbers; refusals (HUY, TU CHOI…) are applied at once and are not listed here."
        ),
    }
)


def _filter(request: Request, fields: dict[str, Any]) -> inbound.InboxFilter:
    since, until = day_range(fields["since"], fields["until"], request.app.state.settings.app.timezone)
    number = PhoneBook().normalize(fields["msisdn"]).e164 if fields.get("msisdn", "").strip() else None
    return inbound.InboxFilter(gateway=fields["gateway"].strip() or None, contains=fields["contains"].strip() or None,
                               msisdn=number, since=since, until=until, before_id=fields.get("before"))  # fmt: skip


async def _inbox_page(request: Request, fields: dict[str, Any], **context: Any) -> Response:
    shown = {"fields": fields, **context}
    try:
        found = _filter(request, fields)
    except (CanhBaoError, InvalidNumber) as exc:
        return render(request, "inbox.html", {**shown, "rows": [], "gateways": [], "error": str(exc)}, 400)

    def read(conn: Any, _now: Any) -> tuple[list[dict[str, Any]], int | None, list[str]]:
        return (*inbound.page(conn, found, PAGE_SIZE), inbound.gateways(conn))

    rows, next_before, gateways = await in_transaction(request, read, write=False)
    filtered = any(fields[key] for key in ("gateway", "contains", "since", "until", "msisdn") if key in fields)
    return render(request, "inbox.html", {**shown, "rows": rows, "next_before": next_before, "gateways": gateways,
                                          "filtered": filtered})  # fmt: skip


@router.get("/inbox")
async def inbox_page(
    request: Request,
    principal: Operator,
    gateway: str = "",
    contains: Annotated[str, Query(max_length=100)] = "",
    since: str = "",
    until: str = "",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The inbox, newest first, filtered, fifty texts a page (paged by key)."""
    fields = {"gateway": gateway, "contains": contains, "since": since, "until": until, "before": before}
    return await _inbox_page(request, fields)


@router.post("/inbox/search")
async def inbox_search(
    request: Request,
    principal: Operator,
    msisdn: Annotated[str, Form(max_length=32)] = "",
    gateway: Annotated[str, Form()] = "",
    contains: Annotated[str, Form(max_length=100)] = "",
    since: Annotated[str, Form()] = "",
    until: Annotated[str, Form()] = "",
    before: Annotated[int | None, Form(ge=1)] = None,
) -> Response:
    """The texts of one number: posted, so that the number stays out of URLs, history and proxies' logs."""
    fields = {"gateway": gateway, "contains": contains, "since": since, "until": until, "msisdn": msisdn,
              "before": before}  # fmt: skip
    return await _inbox_page(request, fields, searched=True)


@router.post("/inbox/{message_id}/reveal")
async def inbox_reveal(
    request: Request, principal: Operator, message_id: int, reason: Annotated[str, Form(max_length=300)] = ""
) -> Response:
    """The full number a text came from, for an operator who says why (kept in the audit log)."""
    return await revealed(
        request,
        lambda conn, now: privacy.reveal_inbox(conn, now, principal.actor, message_id, reason),
        {"delivery_id": message_id, "reason": reason, "back": "/inbox", "back_label": "Tin đến"},
    )
