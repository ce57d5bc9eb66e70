"""A loopback Twilio: a real HTTP server on 127.0.0.1 speaking the Messages API, and Twilio's signed webhooks.

It checks every request against Twilio's published API description (tests/data/twilio_messages_api.json,
an extract of twilio/twilio-oai): a field the description does not know, a value that breaks its
pattern, type or range, a message without a sender or a body, each is answered 400 and noted in
`violations`, which a test expects empty. It answers like Twilio (201 with the message resource,
or an error body `{"code", "message", "more_info", "status"}`), can be told to refuse, and sends
status callbacks and incoming messages to our web face, signed with the account's auth token over
the public URL, as Twilio does: `python -m tests.twilio_fake --latency-ms 50` runs one alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
from aiohttp import web
from twilio.request_validator import HMAC_SHA1, RequestValidator

SPEC = json.loads((Path(__file__).parent / "data" / "twilio_messages_api.json").read_text(encoding="utf-8"))
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# Stated in the description's prose, not its schema: "Accepted values are integers from 1 to 36000".
RANGES = {"ValidityPeriod": (1, 36_000), "Attempt": (1, None)}


def check_form(form: Mapping[str, list[str]]) -> list[str]:
    """What in a Messages create request breaks Twilio's published description (empty: it conforms)."""
    schema = SPEC["create_message"]["request"]
    fields = schema["properties"]
    problems = [f"unknown field {name}" for name in form if name not in fields]
    problems += [f"missing {name}" for name in schema["required"] if name not in form]
    for name, values in form.items():
        if name in fields:
            problems += [f"{name}: {p}" for value in values if (p := _value_problem(name, fields[name], value))]
        if len(values) > 1 and fields.get(name, {}).get("type") != "array":
            problems.append(f"{name}: given {len(values)} times")
    if not ({"From", "MessagingServiceSid"} & set(form)):
        problems.append("needs From or MessagingServiceSid")
    if not ({"Body", "MediaUrl", "ContentSid"} & set(form)):
        problems.append("needs Body, MediaUrl or ContentSid")
    if len(form.get("Body", [""])[0]) > 1600:
        problems.append("Body: over 1,600 characters")
    return problems


def _value_problem(name: str, field: dict[str, Any], value: str) -> str | None:
    """Why one form value breaks its field's schema, or None."""
    kind = field.get("type")
    if kind == "array":
        field, kind = field["items"], field["items"].get("type")
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", value):
            return f"not an integer: {value!r}"
        low, high = RANGES.get(name, (None, None))
        if (low is not None and int(value) < low) or (high is not None and int(value) > high):
            return f"{value} outside {low}..{high}"
    if kind == "boolean" and value not in ("true", "false"):
        return f"not a boolean: {value!r}"
    if "enum" in field and value not in field["enum"]:
        return f"{value!r} not one of {field['enum']}"
    if "pattern" in field and not re.search(field["pattern"], value):
        return f"{value!r} does not match {field['pattern']}"
    if not field.get("minLength", 0) <= len(value) <= field.get("maxLength", len(value)):
        return f"length {len(value)}"
    return _format_problem(field.get("format"), value, field)


def _format_problem(fmt: str | None, value: str, field: dict[str, Any]) -> str | None:
    if fmt == "phone-number" and not (E164.match(value) or re.fullmatch(r"[a-z]+:\S+|[A-Za-z0-9 ]{1,11}", value)):
        return f"not E.164, a channel address or an alphanumeric sender: {value!r}"
    if fmt == "uri" and not field.get("x-twilio", {}).get("ignoreFormat"):
        url = urlparse(value)
        # "URL must contain a valid hostname and underscores are not allowed."
        if url.scheme not in ("http", "https") or not url.hostname or "_" in value:
            return f"not a valid callback URL: {value!r}"
    return None


class TwilioFake:
    """Twilio's Messages API on a loopback port, in a thread of its own (`with TwilioFake() as fake:`)."""

    def __init__(self, latency_ms: float = 0, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN,
                 port: int = 0) -> None:  # fmt: skip
        self.latency = latency_ms / 1000
        self.account_sid, self.auth_token, self.port = account_sid, auth_token, port
        self.messages: list[dict[str, str]] = []
        """Every message accepted: its form fields and the `sid` given."""
        self.violations: list[str] = []
        """Every way a request broke Twilio's published description."""
        self.requests = 0
        self.arrivals: list[float] = []
        """When (time.monotonic()) each create request arrived."""
        self._throttle_next: list[str | None] = []
        self._refuse_to: dict[str, tuple[int, int]] = {}
        self._refuse_next: list[tuple[int, int]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="twilio-fake", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """Where the gateway's `base_url` points."""
        return f"http://127.0.0.1:{self.port}"

    def refuse(self, to: str, code: int, status: int = 400) -> None:
        """Answer every message to `to` with Twilio's error `code`."""
        self._refuse_to[to] = (code, status)

    def refuse_next(self, count: int, code: int, status: int = 400) -> None:
        """Answer the next `count` messages with Twilio's error `code` (HTTP `status`)."""
        self._refuse_next += [(code, status)] * count

    def throttle_next(self, count: int, retry_after: str | None) -> None:
        """Answer the next `count` messages 429 Too Many Requests, with this Retry-After header (None: without one)."""
        self._throttle_next += [retry_after] * count

    def __enter__(self) -> TwilioFake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        app.router.add_get("/2010-04-01/Accounts/{sid}.json", self._account)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    # -- the API ----------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.arrivals.append(time.monotonic())
        if not self._authorised(request):
            return _error(20003, "Authenticate", 401)
        form = await request.post()
        fields = {name: form.getall(name) for name in form}
        if problems := check_form(fields) + _path_problems(request.match_info["sid"], "create_message"):
            self.violations += problems
            return _error(21999, "; ".join(problems), 400)
        flat = {name: values[0] for name, values in fields.items()}
        if self._throttle_next:  # Twilio's answer when an account sends faster than its queue takes (code 20429)
            wait = self._throttle_next.pop(0)
            return _error(20429, "Too Many Requests", 429, {} if wait is None else {"Retry-After": wait})
        if refusal := self._refuse_to.get(flat["To"]) or (self._refuse_next and self._refuse_next.pop(0)):
            await asyncio.sleep(self.latency)
            return _error(refusal[0], f"refused by the fake ({refusal[0]})", refusal[1])
        accepted = self._accept(flat)
        if self.latency:  # Twilio has it from here on, however long its answer takes
            await asyncio.sleep(self.latency)
        return web.json_response(accepted, status=201)

    def _accept(self, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        self.messages.append({**form, "sid": sid})
        return {"sid": sid, "account_sid": self.account_sid, "api_version": "2010-04-01", "body": form.get("Body"),
                "to": form["To"], "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
                "status": "accepted" if "MessagingServiceSid" in form else "queued", "num_segments": "0",
                "num_media": "0", "direction": "outbound-api", "error_code": None, "error_message": None,
                "price": None, "price_unit": None, "date_created": None, "date_sent": None, "date_updated": None,
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
                "subresource_uris": {}}  # fmt: skip

    async def _account(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(20003, "Authenticate", 401)
        return web.json_response({"sid": self.account_sid, "status": "active", "friendly_name": "Cảnh Báo (fake)"})

    def _authorised(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}" and request.match_info["sid"] == (
            self.account_sid
        )

    # -- webhooks to our web face -----------------------------------------------------------

    def status_form(self, sid: str, status: str, error_code: int | None = None) -> dict[str, str]:
        """The form Twilio posts to a message's StatusCallback when it reaches `status` (one it never gave: to +84…)."""
        message = next((m for m in self.messages if m["sid"] == sid), {"To": "+84905999999"})
        form = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
                "AccountSid": self.account_sid, "To": message["To"], "ApiVersion": "2010-04-01",
                "From": message.get("From", "CanhBao")}  # fmt: skip
        if "MessagingServiceSid" in message:
            form["MessagingServiceSid"] = message["MessagingServiceSid"]
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        return form

    def inbound_form(self, from_: str, body: str, to: str = "+12025550100") -> dict[str, str]:
        """The form Twilio posts to a number's messaging webhook when a person texts it."""
        sid = "SM" + secrets.token_hex(16)
        return {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": self.account_sid, "From": from_,
                "To": to, "Body": body, "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01"}  # fmt: skip

    def sign(self, url: str, form: Mapping[str, str], shared_key: str | None = None, algorithm: str = HMAC_SHA1) -> str:
        """X-Twilio-Signature of `form` posted to `url`, as Twilio computes it: with the auth token (HMAC-SHA1),
        or with a SharedKey's secret and its Setting's algorithm when a Webhook Rule matches the URL."""
        return RequestValidator(shared_key or self.auth_token).compute_signature(url, dict(form), algorithm)

    def post(self, public_url: str, reach: str, form: Mapping[str, str], signature: str | None = "sign") -> int:
        """POST `form` to `reach` (where our app listens), signed over `public_url` (Twilio's URL); the HTTP status."""
        headers = {} if signature is None else {"X-Twilio-Signature": self.sign(public_url, form)
                                                if signature == "sign" else signature}  # fmt: skip
        return asyncio.run_coroutine_threadsafe(_post(reach, form, headers), self._loop).result(30)


async def _post(url: str, form: Mapping[str, str], headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session, session.post(url, data=dict(form), headers=headers) as response:
        await response.read()
        return response.status


def _path_problems(sid: str, operation: str) -> list[str]:
    parameter = SPEC[operation]["parameters"][0]["schema"]
    return [] if re.search(parameter["pattern"], sid) else [f"AccountSid {sid!r} does not match {parameter['pattern']}"]


def _error(code: int, message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}  # fmt: skip
    return web.json_response(body, status=status, headers=headers)


def main() -> None:
    """Run the fake alone until killed, printing its base URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0)
    args = parser.parse_args()
    with TwilioFake(args.latency_ms, port=args.port) as fake:
        print(fake.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
