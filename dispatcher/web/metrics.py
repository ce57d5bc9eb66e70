"""`/metrics`: Prometheus' scrape, for a bearer token of an `operator` or `admin` account.

A token rather than an address allowlist: the figures name gateways and carriers and the
volume of every campaign, the app often runs behind a proxy (every request then comes from the
proxy's address), and Prometheus sends a bearer token natively
(`authorization: {credentials_file: …}` in its scrape config). The figures are described in
dispatcher/metrics.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from dispatcher import metrics
from dispatcher.web.auth import Principal, allow

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request, principal: Annotated[Principal, allow("operator", "admin")]) -> Response:
    """The figures in Prometheus' text format."""
    state = request.app.state
    body = await run_in_threadpool(metrics.exposition, state.engine, state.settings, state.clock)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
