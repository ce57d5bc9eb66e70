"""`/hooks/<gateway>/…`: what providers call. Each request goes to its gateway module, which verifies and reads it.

A request that does not prove it comes from the provider (unsigned, forged, tampered) is
refused with 403 and changes nothing; a signed one that does not say what the provider's
webhooks say is refused with 400. A report is answered only once it is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_plus

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import Engine
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher import inbound, metrics
from dispatcher.config import TwilioSettings
from dispatcher.gateways import twilio, zalo
from dispatcher.gateways.base import InboundMessage
from dispatcher.web.auth import public_endpoint
from dispatcher.web.security import HEADERS

log = structlog.get_logger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
# A provider's report or inbound text is a few KB. The body is read before its signature can be
# checked, so anyone may post one: a larger one is refused before it fills the process's memory.
HOOK_MAX_BYTES = 64 * 1024


async def twilio_status(request: Request) -> Response:
    """A Twilio status callback: the message's delivery report, and an opt-out when Twilio says the person refused."""
    signed = await _twilio_request(request, twilio.STATUS_PATH)
    if isinstance(signed, Response):
        return signed
    name, form, raw = signed
    try:
        report = twilio.status_report(form, name, request.app.state.clock(), raw)
    except twilio.MalformedRequest as exc:
        return _refused(request, 400, "malformed", "Yêu cầu không đúng dạng báo cáo trạng thái của Twilio.", str(exc))
    if disabled := twilio.disabled(form):  # the circuit opens for every worker: the operator sees it and why
        log.error("twilio.gateway_disabled", gateway=name, code=form.get("ErrorCode"), error=disabled)
    refusal = twilio.opted_out(form)
    if report is not None or refusal or disabled:
        await request.app.state.writer.apply(report, refusal, name, disabled)
    return Response(status_code=204)


async def twilio_inbound(request: Request) -> Response:
    """A message a person sent our Twilio number: an opt-out or words for the inbox, stored before the
    empty TwiML reply (no answer SMS) says Twilio may forget it."""
    signed = await _twilio_request(request, twilio.INBOUND_PATH)
    if isinstance(signed, Response):
        return signed
    name, form, raw = signed
    try:
        message = twilio.inbound_message(form, name, request.app.state.clock(), raw)
    except twilio.MalformedRequest as exc:
        return _refused(request, 400, "malformed", "Yêu cầu không đúng dạng tin nhắn đến của Twilio.", str(exc))
    log.info("twilio.inbound", gateway=name, msisdn=message.msisdn, provider_id=message.provider_id)
    await asyncio.to_thread(_receive, request.app.state.engine, message)
    return Response(EMPTY_TWIML, media_type="text/xml")


def _receive(engine: Engine, message: InboundMessage) -> None:
    with engine.begin() as conn:
        inbound.receive(conn, message.msisdn, message.text, message.gateway, message.at, message.raw,
                        message.provider_id)  # fmt: skip


async def _twilio_request(request: Request, path: str) -> tuple[str, dict[str, str], str] | Response:
    """(gateway name, form, body) of a request Twilio signed for one of our Twilio gateways, else the 4xx to answer."""
    sections = [(name, s) for name, s in request.app.state.settings.gateways.items() if isinstance(s, TwilioSettings)]
    raw, form = await _form(request)
    if form is None:
        return _refused(
            request, 400, "malformed", "Nội dung yêu cầu không đọc được (cần biểu mẫu x-www-form-urlencoded)."
        )
    try:
        name, section = twilio.section_for(sections, form)
        twilio.verify(section, path, request.scope["query_string"].decode(), form, request.headers)
    except twilio.ForgedRequest as exc:
        metrics.WEBHOOK_VERIFICATIONS_FAILED.labels("twilio").inc()
        return _refused(
            request, 403, "forbidden", "Chữ ký X-Twilio-Signature không hợp lệ: yêu cầu bị từ chối.", str(exc)
        )
    return name, form, raw


async def _form(request: Request) -> tuple[str, dict[str, str] | None]:
    """The request's body and form fields (None for a body that is not one form: a field given twice is not).

    Twilio posts x-www-form-urlencoded bodies only: read here as `parse_qsl(strict_parsing=True,
    keep_blank_values=True)` reads them (a field without a name refused too), at half its cost:
    most names and values need no unquoting, on the path every delivery report takes.
    """
    try:
        raw = (await request.body()).decode()
        fields = [_field(piece) for piece in raw.split("&")] if raw else []
    except (UnicodeDecodeError, ValueError):
        return "", None
    form = dict(fields)
    return raw, form if fields and len(form) == len(fields) else None


def _field(piece: str) -> tuple[str, str]:
    """One `name=value` of a form body, unquoted; a piece without '=' or a name is not a form (ValueError)."""
    name, equals, value = piece.partition("=")
    if not equals or not name:
        raise ValueError(f"not a form field: {piece[:40]!r}")
    return _unquoted(name), _unquoted(value)


def _unquoted(text: str) -> str:
    return unquote_plus(text) if "%" in text or "+" in text else text


# Plain routes, not FastAPI's: a provider's request has no parameters to validate, and FastAPI's
# dependency solving cost a tenth of each callback's time.
async def zalo_event(request: Request) -> Response:
    """A Zalo webhook call: its delivery receipts, stored before it is answered (Zalo wants an answer within 2 s).

    The call is believed only if one of our Zalo gateways' secrets signs it and it is recent (the
    Zalo module decides); otherwise 403 and nothing changes.
    """
    body = await request.body()
    now = request.app.state.clock()
    sections = [(name, s) for name, s in request.app.state.settings.gateways.items() if s.kind == "zalo"]
    reasons = []
    for name, section in sections:
        try:
            reports = zalo.parse_webhook(section, request.headers, body, now, gateway=name)
        except zalo.WebhookRejected as exc:
            reasons.append(f"{name}: {exc}")
            continue
        for report in reports:
            await request.app.state.writer.apply(report, None, name)
        return Response(status_code=200)
    reason = "; ".join(reasons) or "no zalo gateway is configured"
    metrics.WEBHOOK_VERIFICATIONS_FAILED.labels("zalo").inc()
    return _refused(request, 403, "forbidden", "Chữ ký X-ZEvent-Signature không hợp lệ: yêu cầu bị từ chối.", reason)


ROUTES: dict[str, Endpoint] = {
    twilio.STATUS_PATH: twilio_status,
    twilio.INBOUND_PATH: twilio_inbound,
    "/hooks/zalo": zalo_event,
}


def install(app: FastAPI) -> None:
    """Put the providers' routes on the app's own router (where the route rules and the schema see them), and
    answer them in a lane ahead of the app's middleware (`ProviderLane`).

    Not an included router: FastAPI matches a request through each included router twice and
    wraps the route it finds anew every time, a fifth of a status callback's time in the app.
    """
    for path, endpoint in ROUTES.items():
        app.add_route(path, public_endpoint(endpoint), methods=["POST"])
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: ProviderLane(build())  # type: ignore[method-assign]


class ProviderLane:
    """What providers post, answered by its endpoint without the app's middleware stack around it.

    Seven layers (errors, telemetry, body limit, our headers, exceptions, the exit stack, the
    router), each wrapping the request and every message sent, cost as much of a status
    callback's time as the endpoint itself; none of them does anything for a provider's POST. A
    crash is logged and answered 500, as the stack would; the security headers are added as theirs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a provider's POST here, anything else through the app."""
        endpoint = ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, _capped(receive))
        try:
            declared = int(request.headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > HOOK_MAX_BYTES:
                raise _TooLarge
            response = await endpoint(request)
        except ClientDisconnect:  # the provider hung up: it will post again
            return
        except _TooLarge:
            message = f"Nội dung yêu cầu quá lớn (tối đa {HOOK_MAX_BYTES // 1024} KB)."
            response = _refused(request, 413, "too_large", message)
        except Exception:
            log.exception("webhook.crashed", path=scope["path"])
            response = PlainTextResponse("Internal Server Error", 500)
        response.raw_headers.extend(LANE_HEADERS)
        await response(scope, receive, send)


LANE_HEADERS = [*HEADERS, (b"cache-control", b"no-store")]


class _TooLarge(Exception):
    """A provider's POST carried more than HOOK_MAX_BYTES."""


def _capped(receive: Receive) -> Receive:
    """`receive`, raising _TooLarge once the body read passes HOOK_MAX_BYTES (whatever Content-Length said)."""
    read = 0

    async def capped() -> Message:
        nonlocal read
        message = await receive()
        read += len(message.get("body", b""))
        if read > HOOK_MAX_BYTES:
            raise _TooLarge
        return message

    return capped


def _refused(request: Request, status: int, code: str, message: str, reason: str = "") -> JSONResponse:
    """The error answered, in the CLI's JSON shape, and logged (without the form: it names a person)."""
    log.warning("webhook.refused", path=request.url.path, status=status, reason=reason or code)
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status)
