"""`/api/v1/deliveries`: the delivery log, filtered and paged by key (as the console's page and `canhbao log`).

Numbers are masked (dispatcher/delivery_log.py masks every row it gives). A number to look for
is posted (`/deliveries/search`), never put in a URL.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from dispatcher import delivery_log as log_ops
from dispatcher import labels
from dispatcher.errors import UsageError
from dispatcher.phones import InvalidNumber, PhoneBook
from dispatcher.web.api.schemas import DeliveryPage, NumberSearch
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction, regions

router = APIRouter(prefix="/deliveries", tags=["deliveries"])
Readers = Annotated[Principal, allow("operator", "liaison")]
Key = Annotated[int | None, Query(ge=1, le=2**62, description="the `next_before` of the previous page")]
Text = Annotated[str, Query(max_length=120)]


@router.get("")
async def list_deliveries(
    request: Request,
    principal: Readers,
    blast: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    status: Annotated[str, Query(max_length=30, description="queued, sent, delivered, failed…")] = "",
    carrier: Annotated[str, Query(max_length=30)] = "",
    province: Text = "",
    commune: Text = "",
    gateway: Annotated[str, Query(max_length=64)] = "",
    before: Key = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeliveryPage:
    """The log, newest first, `limit` rows a page."""
    log, notes = _filter(request, blast, status, carrier, province, commune, gateway, None, before)
    return await _page(request, log, notes, limit)


@router.post("/search")
async def search_deliveries(request: Request, principal: Readers, asked: NumberSearch) -> DeliveryPage:
    """The log of one number (in the body, so that it stays out of URLs)."""
    try:
        number = PhoneBook().normalize(asked.msisdn).e164
    except InvalidNumber as exc:
        raise UsageError(f"Số điện thoại không hợp lệ: {exc}.") from None
    log, notes = _filter(request, asked.blast, asked.status, asked.carrier, "", "", asked.gateway, number, asked.before)
    return await _page(request, log, notes, asked.limit)


def _filter(request: Request, blast: int | None, status: str, carrier: str, province: str, commune: str, gateway: str,
            msisdn: str | None, before: int | None) -> tuple[log_ops.LogFilter, list[str]]:  # fmt: skip
    place = log_ops.place(regions(request), province.strip() or None, commune.strip() or None)
    log = log_ops.LogFilter(
        blast_id=blast, status=labels.parse_delivery_state(status) if status.strip() else None,
        carrier=log_ops.carrier_named(carrier) if carrier.strip() else None,
        province_codes=place.province_codes, commune_codes=place.commune_codes, msisdn=msisdn,
        gateway=gateway.strip() or None, before_id=before,
    )  # fmt: skip
    return log, list(place.notes)


async def _page(request: Request, log: log_ops.LogFilter, notes: list[str], limit: int) -> DeliveryPage:
    rows, next_before = await in_transaction(request, lambda conn, _now: log_ops.page(conn, log, limit), write=False)
    return DeliveryPage(items=rows, next_before=next_before, notes=notes)
