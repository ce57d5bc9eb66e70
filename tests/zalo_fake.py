"""A loopback Zalo for the tests and the benchmark: the ZBS template API and OAuth v4, over real HTTP.

It speaks what dispatcher/gateways/zalo.py speaks to Zalo (shared/reference/vietnam-domain.md
§1): `POST /message/template` with the bare `access_token` header, errors as HTTP 200 with
`error != 0`, `GET /template/info/v2`, `GET /message/quota`, and `POST /v4/oa/access_token`
with the `secret_key` header, whose refresh tokens work once and whose access tokens expire.
A test changes its state (templates, quota, errors to give, a refresh to hold) between calls.

It runs on its own event loop in a thread (`ZaloFake.start()`), or as a process of its own for
the benchmark: `python -m tests.zalo_fake --latency-ms 50` prints its port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

APP_ID, APP_SECRET, OA_ID = "4321098765", "app-secret-xyz", "2468013579"
TEMPLATE = "301245"
PARAMS = [
    {"name": "ten_tinh", "require": True, "type": "STRING", "maxLength": 30, "minLength": 1, "acceptNull": False},
    {"name": "noi_dung", "require": True, "type": "STRING", "maxLength": 100, "minLength": 1, "acceptNull": False},
]


@dataclass
class ZaloFake:
    """Zalo's state as the tests set it; every request the gateway makes is counted in `calls`."""

    latency_ms: float = 0
    expires_in: int = 90_000  # 25 h, as Zalo gives
    refresh_tokens: set[str] = field(default_factory=lambda: {"refresh-0"})
    access_tokens: dict[str, float] = field(default_factory=dict)  # token → expiry (epoch seconds)
    templates: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {TEMPLATE: {"status": "ENABLE", "listParams": [dict(p) for p in PARAMS]}}
    )
    daily_quota: int = 1_000_000
    remaining_quota: int = 1_000_000
    errors_by_phone: dict[str, int] = field(default_factory=dict)
    """phone (84…) → the error code every send to it gets."""
    next_errors: list[int] = field(default_factory=list)
    """Codes the next sends get, one each, before anything else is looked at."""
    oauth_error: dict[str, Any] | None = None
    """An OAuth answer to give instead of a new pair."""
    hold_refresh: str | None = None
    """'before': a refresh waits before spending its token; 'after': after, before answering."""
    hold_path: str | None = None
    """Requests to this path wait (forever) before they are answered: the process that made one is to be killed."""
    sent: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    used_access: list[str] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    """Set when a request is being held."""
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """The base URL of both its APIs (the template API and OAuth)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ZaloFake:
        """Serve on 127.0.0.1 from a thread of its own, until `stop()`."""
        ready = threading.Event()
        threading.Thread(target=self._serve_forever, args=(ready,), daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)

    def _serve_forever(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=1024)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            async with self._server:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serve_forever()

        asyncio.run(main())

    # -- HTTP/1.1, just enough: keep-alive, Content-Length bodies ---------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
                headers = _headers(head)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, answer = await self._answer(method, target, headers, body)
                payload = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        url = urlsplit(target)
        self.calls[url.path] += 1
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if url.path == "/v4/oa/access_token" and method == "POST":
            return 200, await self._refresh(headers, {k: v[0] for k, v in parse_qs(body.decode()).items()})
        if url.path == self.hold_path:
            self._access_ok(headers.get("access_token", ""))
            self.held.set()
            await asyncio.sleep(3600)
        if not self._access_ok(headers.get("access_token", "")):
            return 200, {"error": -124, "message": "Access token is invalid"}
        if url.path == "/message/template" and method == "POST":
            return 200, await self._send(json.loads(body))
        if url.path == "/template/info/v2":
            return 200, self._template_info(parse_qs(url.query).get("template_id", [""])[0])
        if url.path == "/message/quota":
            quota = {"dailyQuota": str(self.daily_quota), "remainingQuota": str(self.remaining_quota)}
            return 200, {"error": 0, "message": "Success", "data": quota}
        return 404, {"error": 404, "message": "not found"}

    # -- OAuth v4 -------------------------------------------------------------------------

    async def _refresh(self, headers: dict[str, str], form: dict[str, str]) -> dict[str, Any]:
        """A new pair for a refresh token not yet spent; the token is spent by the answer."""
        if headers.get("secret_key") != APP_SECRET or form.get("app_id") != APP_ID:
            return {"error": -14002, "error_name": "Invalid app", "error_description": "Invalid secret key or app id"}
        if form.get("grant_type") != "refresh_token":
            return {"error": -14001, "error_description": "Invalid grant type"}
        await self._hold("before")
        token = form.get("refresh_token", "")
        if self.oauth_error is not None:
            return self.oauth_error
        if token not in self.refresh_tokens:
            return {"error": -14014, "error_name": "Invalid refresh token", "error_description": "Token is spent"}
        self.refresh_tokens.discard(token)  # single use
        access, refresh = f"access-{secrets.token_hex(6)}", f"refresh-{secrets.token_hex(6)}"
        self.access_tokens[access] = time.time() + self.expires_in
        self.refresh_tokens.add(refresh)
        await self._hold("after")
        return {"access_token": access, "refresh_token": refresh, "expires_in": str(self.expires_in)}

    async def _hold(self, moment: str) -> None:
        if self.hold_refresh == moment:
            self.held.set()
            await asyncio.sleep(3600)

    def _access_ok(self, token: str) -> bool:
        ok = self.access_tokens.get(token, 0) > time.time()
        if ok:
            self.used_access.append(token)
        return ok

    def revoke_access(self) -> None:
        """Every access token stops working (Zalo revoked or expired them)."""
        self.access_tokens.clear()

    def issue(self, expires_in: int | None = None) -> tuple[str, str]:
        """A pair as a refresh would give it, for a test to store: (access token, refresh token)."""
        access, refresh = f"access-{secrets.token_hex(6)}", f"refresh-{secrets.token_hex(6)}"
        self.access_tokens[access] = time.time() + (expires_in or self.expires_in)
        self.refresh_tokens.add(refresh)
        return access, refresh

    # -- the template API -----------------------------------------------------------------

    async def _send(self, request: dict[str, Any]) -> dict[str, Any]:
        template = self.templates.get(str(request.get("template_id")))
        code = self._refusal(request, template)
        if code:
            return {"error": code, "message": f"fake error {code}"}
        self.remaining_quota -= 1
        self.sent.append(request)
        quota = {"dailyQuota": str(self.daily_quota), "remainingQuota": str(self.remaining_quota)}
        data = {"msg_id": secrets.token_hex(10), "sent_time": str(int(time.time() * 1000)), "quota": quota}
        return {"error": 0, "message": "Success", "data": data}

    def _refusal(self, request: dict[str, Any], template: dict[str, Any] | None) -> int:
        """Zalo's error code for this send, 0 if it is taken."""
        if self.next_errors:
            return self.next_errors.pop(0)
        if template is None:
            return -109
        if template["status"] != "ENABLE":
            return -131
        data = request.get("template_data") or {}
        for param in template["listParams"]:
            value = str(data.get(param["name"], ""))
            if param["require"] and not value:
                return -1122
            if len(value) > param["maxLength"]:
                return -1121
        if self.remaining_quota <= 0:
            return -144
        return self.errors_by_phone.get(str(request.get("phone")), 0)

    def _template_info(self, template_id: str) -> dict[str, Any]:
        template = self.templates.get(template_id)
        if template is None:
            return {"error": -109, "message": "Template id is invalid"}
        data = {"templateId": template_id, "templateName": "Cảnh báo lừa đảo", "price": "300", **template}
        return {"error": 0, "message": "Success", "data": data}


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


def main() -> None:
    """Serve a fake Zalo until killed; print its port, then the refresh token it accepts first."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency-ms", type=float, default=0)
    args = parser.parse_args()
    fake = ZaloFake(latency_ms=args.latency_ms).start()
    print(fake.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
