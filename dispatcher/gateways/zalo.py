"""Zalo ZBS template messages (ex-ZNS) sent by phone number, over httpx.

Every Zalo quirk lives here (shared/reference/vietnam-domain.md §1): the bare `access_token`
header, errors as HTTP 200 with `error != 0`, one table (`ERRORS`) from Zalo's codes to ours,
the template's own parameter list (fetched once from /template/info/v2) that a message is
checked against before it goes, OAuth v4 refreshes with single-use refresh tokens, and the
signed webhook that brings delivery receipts (`parse_webhook`).

Tokens live in `gateway_tokens`, shared by every worker. A refresh is announced in the row
first (an UPDATE only one worker wins), then asked of Zalo, and the pair Zalo returns is
committed before the new access token is used. The old access token is kept until then, and a
refresh starts `refresh_margin_seconds` (6 h) before it expires: a crash between Zalo's answer
and our commit, the one moment a single-use refresh token can be lost, leaves an access token
that works for hours. The next worker sees the announcement gone stale, tries the stored
refresh token again (it works if the request never reached Zalo) and, if Zalo refuses it,
keeps sending on the old access token and says what the operator must do.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import httpx
import structlog
from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dispatcher.config import ZaloGatewaySettings
from dispatcher.errors import ConfigError
from dispatcher.formats import moment
from dispatcher.gateways.base import (
    ChannelClosedError,
    ChannelUnavailableError,
    DeliveryReport,
    GatewayDisabledError,
    GatewayError,
    Outcome,
    OutgoingMessage,
    PermanentError,
    ReportStatus,
    SendResult,
    TemporaryError,
    ThrottledError,
)
from dispatcher.models import gateway_tokens

log = structlog.get_logger(__name__)
VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")  # Zalo's night window and daily quota run on Vietnam's clock
NIGHT_ENDS = time(6, 0)
STALE_REFRESH = timedelta(seconds=60)  # an announced refresh older than this was cut short
REFRESH_BACKOFF = timedelta(seconds=60)  # between refreshes that failed while the old token still works
WEBHOOK_MAX_AGE = timedelta(minutes=5)
RECEIPT = "user_received_message"

# Zalo's code → (what we do, what it means for an operator). What we do: `unreachable` this person
# cannot get it on Zalo (SMS instead); `night` / `quota` / `person_limit` the channel is closed
# until 06:00 / tomorrow; `token` refresh and ask once more; `template` that template stops,
# `gateway` the whole gateway stops (the operator must act); `payload` the template's parameters
# may have changed (its list is fetched again); `retry`, `throttled`, `permanent` as they say.
ERRORS: dict[int, tuple[str, str]] = {
    -100: ("retry", "lỗi không rõ của Zalo, thử lại sau"),
    -101: ("gateway", "ứng dụng Zalo không hợp lệ"),
    -102: ("gateway", "ứng dụng Zalo không tồn tại"),
    -103: ("gateway", "ứng dụng Zalo chưa được kích hoạt"),
    -104: ("gateway", "khoá bí mật (app secret) của ứng dụng Zalo sai"),
    -105: ("gateway", "ứng dụng Zalo chưa liên kết với OA"),
    -106: ("permanent", "Zalo không hỗ trợ phương thức này"),
    -107: ("permanent", "mã tin không hợp lệ"),
    -108: ("unreachable", "số điện thoại không hợp lệ với Zalo"),
    -109: ("template", "mã mẫu Zalo không hợp lệ"),
    -110: ("unreachable", "ứng dụng Zalo của người nhận quá cũ"),
    -111: ("payload", "dữ liệu mẫu trống"),
    -112: ("payload", "dữ liệu mẫu không hợp lệ"),
    -1121: ("payload", "giá trị tham số dài quá mức mẫu cho"),
    -1122: ("payload", "thiếu tham số của mẫu"),
    -1124: ("payload", "tham số sai định dạng"),
    -113: ("template", "nút bấm của mẫu không hợp lệ"),
    -114: ("unreachable", "người nhận không nhận được tin Zalo (tài khoản, đã tắt tin ZNS, ứng dụng cũ)"),
    -115: ("gateway", "tài khoản ZNS hết số dư"),
    -116: ("permanent", "nội dung không hợp lệ"),
    -117: ("template", "OA hoặc ứng dụng không có quyền dùng mẫu này"),
    -118: ("unreachable", "số này không dùng Zalo (tài khoản không có hoặc bị khoá)"),
    -119: ("unreachable", "tài khoản này không nhận được tin ZNS"),
    -120: ("gateway", "OA chưa có tính năng gửi tin này"),
    -124: ("token", "mã truy cập (access token) không hợp lệ"),
    -1241: ("gateway", "appsecret_proof sai"),
    -125: ("gateway", "mã OA không hợp lệ"),
    -130: ("template", "nội dung mẫu vượt giới hạn ký tự"),
    -131: ("template", "mẫu chưa được Zalo duyệt"),
    -132: ("payload", "tham số không hợp lệ"),
    -133: ("night", "Zalo không cho gửi mẫu này ban đêm (22:00–06:00)"),
    -134: ("permanent", "người nhận chưa đồng ý nhận tin ZNS"),
    -135: ("gateway", "OA không được phép gửi ZNS (chưa xác thực hoặc gói miễn phí)"),
    -1351: ("gateway", "OA bị chặn gửi ZNS vì vi phạm"),
    -136: ("gateway", "cần kết nối tài khoản ZBS"),
    -137: ("gateway", "thanh toán ZBS không thành công"),
    -138: ("gateway", "ứng dụng không có quyền ZBS"),
    -139: ("unreachable", "người nhận đã từ chối loại tin ZNS này"),
    -140: ("permanent", "OA không được gửi tin hậu mãi cho người này"),
    -141: ("unreachable", "người nhận đã từ chối tin ZNS của OA này"),
    -144: ("quota", "OA đã dùng hết hạn mức tin trong ngày"),
    -1441: ("quota", "OA đã dùng hết hạn mức tin khuyến mãi trong tháng"),
    -145: ("template", "OA không được gửi loại nội dung này"),
    -146: ("template", "mẫu bị Zalo tắt vì chất lượng thấp"),
    -147: ("person_limit", "người nhận đã nhận đủ tin của mẫu này trong ngày"),
    -1471: ("person_limit", "người nhận đã nhận đủ tin hậu mãi trong tháng"),
    -32: ("throttled", "ứng dụng gọi Zalo quá nhanh"),
}
UNLISTED = ("permanent", "lỗi Zalo chưa có trong bảng mã")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Pair(NamedTuple):
    """An access token and when it expires."""

    access: str
    expires_at: datetime


@dataclass(frozen=True)
class _Param:
    """One parameter of a template, as /template/info/v2 lists it."""

    required: bool
    max_length: int | None
    min_length: int | None


class ZaloGateway:
    """Template messages by phone number through a Zalo Official Account."""

    name = "zalo"
    needs_database = True  # gateways.build hands it the engine: the token pair lives there

    def __init__(
        self,
        settings: ZaloGatewaySettings,
        engine: Engine | None = None,
        clock: Callable[[], datetime] = _utc_now,
        holder: str | None = None,
    ) -> None:
        if engine is None:
            raise ConfigError("Cổng Zalo cần cơ sở dữ liệu: mã truy cập Zalo được giữ ở đó cho mọi tiến trình gửi.")
        self.settings = settings
        self._engine = engine
        self._clock = clock
        self._holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._access: _Pair | None = None
        self._refresh_after: datetime | None = None
        self._params: dict[str, asyncio.Future[dict[str, _Param]]] = {}
        self._template_stopped: dict[str, GatewayDisabledError] = {}
        self._disabled: GatewayDisabledError | None = None
        self._closed: tuple[datetime, str] | None = None  # the daily quota: until when, and why
        self._lowest_quota: str | None = None
        self._clients: asyncio.Queue[httpx.AsyncClient] | None = None  # the free ones
        self._made = 0
        self._tls: ssl.SSLContext | None = None
        self._lock = asyncio.Lock()

    # -- the protocol ---------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Send each message (at most `concurrency` requests at once); one outcome each, in order."""
        self._bind_loop()
        outcomes = list(await asyncio.gather(*map(self._send, messages)))
        if self._lowest_quota is not None:  # once a batch: a line per message would drown the log
            log.info("zalo.quota", gateway=self.name, remaining_quota=self._lowest_quota)
            self._lowest_quota = None
        return outcomes

    def reports(self, now: datetime) -> list[DeliveryReport]:
        """Zalo's receipts come by webhook (`parse_webhook`), never through the worker: none here."""
        return []

    async def check(self) -> str:
        """In Vietnamese: the token works (refreshed if due) and today's quota; a GatewayError says what is wrong."""
        self._bind_loop()
        body = await self._api("GET", "/message/quota", idempotent=True)
        if body.get("error"):
            raise self._error(int(body["error"]), body.get("message"))
        problem = self._stored_problem()
        if problem:
            raise GatewayDisabledError(problem, code="ZALO-REFRESH")
        data = body.get("data") or {}
        until = moment(self._access.expires_at, VIETNAM) if self._access else "?"
        return (
            f"Zalo OA {self.settings.oa_id or '?'}: mã truy cập dùng được đến {until}; hạn mức hôm nay còn "
            f"{data.get('remainingQuota', '?')}/{data.get('dailyQuota', '?')} tin."
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        clients, self._clients = self._clients, None
        while clients is not None and not clients.empty():
            await clients.get_nowait().aclose()
        self._loop = None

    # -- one message ----------------------------------------------------------------------

    async def _send(self, message: OutgoingMessage) -> Outcome:
        try:
            self._refuse_if_stopped(message)
            payload = await self._payload(message)
            # Checked again once a connection is free: a quota used up meanwhile stops the rest here.
            body = await self._api("POST", "/message/template", json=payload,
                                   guard=lambda: self._refuse_if_stopped(message))  # fmt: skip
        except GatewayError as error:
            return error
        if body.get("error"):
            return self._failed(payload["template_id"], int(body["error"]), body.get("message"))
        data = body.get("data") or {}
        remaining = (data.get("quota") or {}).get("remainingQuota")
        if remaining is not None and (self._lowest_quota is None or int(remaining) < int(self._lowest_quota)):
            self._lowest_quota = str(remaining)
        return SendResult(str(data.get("msg_id")), 1)  # Zalo bills a message, whatever its length

    def _refuse_if_stopped(self, message: OutgoingMessage) -> None:
        """A stopped gateway or template, or a quota used up today, refuses without asking Zalo."""
        if self._disabled is not None:
            raise self._disabled
        template_id = str((message.template or {}).get("template_id", ""))
        if template_id in self._template_stopped:
            raise self._template_stopped[template_id]
        if self._closed is not None and self._clock() < self._closed[0]:
            raise ChannelClosedError(self._closed[1], code="-144", retry_after=self._until(self._closed[0]))

    async def _payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The request body, its values checked against the template's own parameters."""
        template = message.template or {}
        if not template.get("template_id"):
            raise PermanentError("tin Zalo không có mẫu: mẫu cảnh báo cần khối [zalo]", code="ZALO-NO-TEMPLATE")
        template_id = str(template["template_id"])
        data = {key: str(value) for key, value in (template.get("template_data") or {}).items()}
        _check_params(template_id, await self._template_params(template_id), data)
        # tracking_id is our delivery id: Zalo echoes it back, and it names no person.
        phone = message.msisdn.removeprefix("+")
        return {"phone": phone, "template_id": template_id, "template_data": data,
                "tracking_id": str(message.delivery_id)}  # fmt: skip

    def _failed(self, template_id: str, code: int, zalo_message: str | None) -> GatewayError:
        """Our error for Zalo's `code`, after what it changes: a stopped template or gateway, a closed day."""
        error = self._error(code, zalo_message)
        kind = ERRORS.get(code, UNLISTED)[0]
        if kind == "template" and isinstance(error, GatewayDisabledError):
            self._template_stopped[template_id] = error
            log.error("zalo.template_stopped", gateway=self.name, template_id=template_id, code=code)
        elif kind in ("gateway", "token") and isinstance(error, GatewayDisabledError):
            self._disabled = error
            log.error("zalo.gateway_stopped", gateway=self.name, code=code, error=str(error))
        elif kind == "quota":
            self._closed = (self._clock() + timedelta(seconds=self._until_tomorrow()), error.message)
            log.warning("zalo.quota_used_up", gateway=self.name, until=self._closed[0].isoformat())
        elif kind == "payload":
            self._params.pop(template_id, None)  # its parameters may have changed at Zalo: ask again
        return error

    def _error(self, code: int, zalo_message: str | None) -> GatewayError:
        """The one mapping from Zalo's error codes to ours (see ERRORS)."""
        kind, meaning = ERRORS.get(code, UNLISTED)
        text = f"{meaning} (Zalo: {zalo_message})" if zalo_message else meaning
        if kind == "unreachable":
            return ChannelUnavailableError(text, code=str(code))
        if kind == "night":
            return ChannelClosedError(text, code=str(code), retry_after=self._until_morning())
        if kind in ("quota", "person_limit"):
            return ChannelClosedError(text, code=str(code), retry_after=self._until_tomorrow())
        if kind in ("template", "gateway", "token"):
            return GatewayDisabledError(f"{text}: cổng '{self.name}' dừng, cần quản trị viên xử lý", code=str(code))
        if kind == "retry":
            return TemporaryError(text, code=str(code))
        if kind == "throttled":
            return ThrottledError(text, code=str(code), retry_after=1.0)
        return PermanentError(text, code=str(code))

    def _until_morning(self) -> float:
        """Seconds until 06:00 in Vietnam, when Zalo takes templates again."""
        local = self._clock().astimezone(VIETNAM)
        morning = datetime.combine(local.date(), NIGHT_ENDS, VIETNAM)
        return self._until(morning if morning > local else morning + timedelta(days=1))

    def _until_tomorrow(self) -> float:
        """Seconds until midnight in Vietnam (and a minute), when Zalo's daily quota starts again."""
        local = self._clock().astimezone(VIETNAM)
        return self._until(datetime.combine(local.date() + timedelta(days=1), time(0, 1), VIETNAM))

    def _until(self, moment_: datetime) -> float:
        return max(1.0, (moment_ - self._clock()).total_seconds())

    # -- templates ------------------------------------------------------------------------

    async def _template_params(self, template_id: str) -> dict[str, _Param]:
        """The template's parameters, asked of Zalo once (one call however many messages wait for it)."""
        if template_id not in self._params:
            self._params[template_id] = asyncio.ensure_future(self._fetch_params(template_id))
        try:
            return await asyncio.shield(self._params[template_id])
        except GatewayError:
            self._params.pop(template_id, None)  # not cached: the next message asks again
            raise

    async def _fetch_params(self, template_id: str) -> dict[str, _Param]:
        body = await self._api("GET", "/template/info/v2", params={"template_id": template_id}, idempotent=True)
        if body.get("error"):
            raise self._failed(template_id, int(body["error"]), body.get("message"))
        data = body.get("data") or {}
        if str(data.get("status", "")).upper() != "ENABLE":
            error = GatewayDisabledError(
                f"mẫu Zalo {template_id} không dùng được (trạng thái {data.get('status')!r}, cần ENABLE): "
                "cần quản trị viên OA xử lý", code="ZALO-TEMPLATE")  # fmt: skip
            self._template_stopped[template_id] = error
            raise error
        return {str(p["name"]): _Param(bool(p.get("require")), p.get("maxLength"), p.get("minLength"))
                for p in data.get("listParams") or []}  # fmt: skip

    # -- HTTP -----------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        """httpx clients and futures belong to one event loop: a new loop (a new asyncio.run) gets new ones."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._clients, self._made = asyncio.Queue(), 0
            self._lock = asyncio.Lock()
            self._params.clear()

    async def _api(
        self, method: str, path: str, idempotent: bool = False, guard: Callable[[], None] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Zalo's answer to one call with the access token; on -124 refreshed and asked once more."""
        token = await self._token()
        url = self.settings.base_url.rstrip("/") + path
        body = await self._request(method, url, idempotent, guard, headers={"access_token": token}, **kwargs)
        if body.get("error") == -124:  # not taken: asking again cannot send anything twice
            token = await self._token(rejected=token)
            body = await self._request(method, url, idempotent, guard, headers={"access_token": token}, **kwargs)
        return body

    async def _client(self) -> httpx.AsyncClient:
        """A client with no request in flight, made when none is free and fewer than `concurrency` exist.

        One connection per client: httpcore's pool scans all its connections for every request,
        which at 64 connections costs more CPU than the request (5× slower, measured). They share
        one TLS context: making one per client costs ~20 ms each.
        """
        if self._clients.empty() and self._made < self.settings.concurrency:  # type: ignore[union-attr]
            self._made += 1
            self._tls = self._tls or ssl.create_default_context()
            one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            return httpx.AsyncClient(timeout=self.settings.timeout_seconds, limits=one, verify=self._tls)
        return await self._clients.get()  # type: ignore[union-attr]

    async def _request(
        self, method: str, url: str, idempotent: bool, guard: Callable[[], None] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The JSON object Zalo answered; our errors for no answer, an HTTP error or a body that is not JSON.

        `guard`, called once a client is free, may refuse the request (a GatewayError) before it goes.
        """
        client = await self._client()
        try:
            if guard is not None:
                guard()
            response = await client.request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TemporaryError(f"không kết nối được Zalo ({type(exc).__name__})", code="ZALO-CONNECT") from exc
        except httpx.HTTPError as exc:
            raise _unanswered(idempotent, type(exc).__name__) from exc
        finally:
            self._clients.put_nowait(client)  # type: ignore[union-attr]
        if response.status_code == 429:
            raise ThrottledError("Zalo yêu cầu gửi chậm lại (HTTP 429)", code="HTTP-429", retry_after=1.0)
        if response.status_code >= 500:
            raise TemporaryError(f"Zalo lỗi máy chủ (HTTP {response.status_code})", code=f"HTTP-{response.status_code}")
        if response.status_code != 200:
            raise PermanentError(f"Zalo từ chối yêu cầu (HTTP {response.status_code})",
                                 code=f"HTTP-{response.status_code}")  # fmt: skip
        try:
            body = response.json()
        except ValueError as exc:
            raise _unanswered(idempotent, "not JSON") from exc
        if not isinstance(body, dict):
            raise _unanswered(idempotent, "not a JSON object")
        return body

    # -- tokens ---------------------------------------------------------------------------

    async def _token(self, rejected: str | None = None) -> str:
        """A working access token: the one held, else the stored one, else one from a refresh."""
        if self._usable(self._access, rejected):
            return self._access.access  # type: ignore[union-attr]
        async with self._lock:
            stored = self._load()
            if self._usable(stored, rejected):
                self._access = stored
                return stored.access  # type: ignore[union-attr]
            try:
                self._access = await self._refresh(stored)
            except GatewayError:
                if stored and stored.access != rejected and stored.expires_at > self._clock():
                    return self._keep(stored)
                raise
            return self._access.access

    def _usable(self, pair: _Pair | None, rejected: str | None) -> bool:
        """Not the token Zalo just refused, and not due for a refresh (unless refreshing failed lately)."""
        if pair is None or pair.access == rejected:
            return False
        now = self._clock()
        margin = timedelta(seconds=self.settings.refresh_margin_seconds)
        backing_off = self._refresh_after is not None and now < self._refresh_after
        return pair.expires_at - margin > now or (backing_off and pair.expires_at > now)

    def _keep(self, stored: _Pair) -> str:
        """The refresh failed but the old access token still works: use it, ask again in a minute."""
        self._access, self._refresh_after = stored, self._clock() + REFRESH_BACKOFF
        log.error("zalo.refresh_failed", gateway=self.name, access_token_until=stored.expires_at.isoformat(),
                  problem=self._stored_problem())  # fmt: skip
        return stored.access

    def _load(self) -> _Pair | None:
        """The stored pair, seeding the row from the environment's refresh token when it is new."""
        seed = self.settings.refresh_token.get_secret_value() if self.settings.refresh_token else ""
        seed_hash = hashlib.sha256(seed.encode()).hexdigest()
        t = gateway_tokens.c
        with self._engine.begin() as conn:
            row = conn.execute(select(gateway_tokens).where(t.gateway == self.name)).mappings().first()
            if seed and (row is None or row["seed_hash"] != seed_hash):  # a first start, or a new consent
                _seed(conn, self.name, seed, seed_hash)
                log.info("zalo.refresh_token_seeded", gateway=self.name)
                return None
        if row is None:
            raise GatewayDisabledError(
                f"Cổng '{self.name}' chưa có mã làm mới Zalo: đặt biến môi trường "
                f"{self._env('REFRESH_TOKEN')} (quản trị viên OA cấp quyền cho ứng dụng để có mã).",
                code="ZALO-NO-TOKEN")  # fmt: skip
        if row["access_token"] and row["access_expires_at"]:
            return _Pair(row["access_token"], row["access_expires_at"])
        return None

    async def _refresh(self, stored: _Pair | None) -> _Pair:
        """A new pair from Zalo, committed before it is returned; only one worker asks at a time."""
        deadline = self._clock() + STALE_REFRESH * 2
        while self._clock() < deadline:
            refresh_token = self._announce()
            if refresh_token is not None:
                return await self._ask_zalo(refresh_token)
            await asyncio.sleep(0.2)  # another worker is refreshing: its pair will be in the row
            pair = self._load()
            if pair is not None and pair != stored and pair.expires_at > self._clock():
                return pair
        raise TemporaryError("chờ tiến trình khác làm mới mã truy cập Zalo quá lâu", code="ZALO-REFRESH-WAIT")

    def _announce(self) -> str | None:
        """Mark the row as being refreshed by us; the refresh token to use, or None if another worker is at it."""
        t, now = gateway_tokens.c, self._clock()
        with self._engine.begin() as conn:
            row = conn.execute(select(gateway_tokens).where(t.gateway == self.name)).mappings().one()
            since = row["refreshing_since"]
            if since is not None and since > now - STALE_REFRESH:
                return None
            if since is not None:
                log.warning("zalo.refresh_cut_short", gateway=self.name, by=row["refreshing_by"], at=since.isoformat())
            taken = conn.execute(
                update(gateway_tokens)
                .where(t.gateway == self.name, t.refresh_token == row["refresh_token"],
                       t.refreshing_since.is_(None) if since is None else t.refreshing_since == since)
                .values(refreshing_by=self._holder, refreshing_since=now)
            ).rowcount  # fmt: skip
        return row["refresh_token"] if taken == 1 else None

    async def _ask_zalo(self, refresh_token: str) -> _Pair:
        """Spend `refresh_token` at Zalo's OAuth v4 and commit the pair it returns (or why it refused)."""
        try:
            body = await self._oauth(refresh_token)
        except GatewayError as error:
            self._settle(problem=str(error))
            raise
        now = self._clock()
        pair = _Pair(str(body["access_token"]), now + timedelta(seconds=int(body.get("expires_in") or 3600)))
        self._settle(pair=pair, refresh_token=str(body["refresh_token"]))  # committed before any use
        log.info("zalo.token_refreshed", gateway=self.name, expires_at=pair.expires_at.isoformat())
        return pair

    async def _oauth(self, refresh_token: str) -> dict[str, Any]:
        """Zalo's OAuth answer to a refresh: the new pair, or GatewayDisabledError saying what the operator must do."""
        secret = self.settings.app_secret.get_secret_value() if self.settings.app_secret else ""
        form = {"refresh_token": refresh_token, "app_id": self.settings.app_id, "grant_type": "refresh_token"}
        url = self.settings.oauth_url.rstrip("/") + "/v4/oa/access_token"
        body = await self._request("POST", url, True, data=form, headers={"secret_key": secret})
        if body.get("access_token") and body.get("refresh_token"):
            return body
        reason = body.get("error_description") or body.get("error_reason") or body.get("message") or "?"
        raise GatewayDisabledError(
            f"Zalo từ chối làm mới mã truy cập của cổng '{self.name}' ({reason}): quản trị viên OA cần cấp quyền "
            f"lại cho ứng dụng {self.settings.app_id} và đặt mã làm mới mới vào {self._env('REFRESH_TOKEN')} "
            f"(nếu lỗi là khoá bí mật: {self._env('APP_SECRET')}).",
            code=str(body.get("error", "ZALO-OAUTH")))  # fmt: skip

    def _settle(self, pair: _Pair | None = None, refresh_token: str | None = None, problem: str | None = None) -> None:
        """End our announced refresh: store the new pair (whoever announced since), or why it failed."""
        t = gateway_tokens.c
        values: dict[str, Any] = {"refreshing_by": None, "refreshing_since": None, "problem": problem}
        if pair is not None:
            values |= {"access_token": pair.access, "access_expires_at": pair.expires_at,
                       "refresh_token": refresh_token, "refreshed_at": self._clock()}  # fmt: skip
        with self._engine.begin() as conn:
            conn.execute(update(gateway_tokens).where(t.gateway == self.name).values(**values))

    def _stored_problem(self) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(select(gateway_tokens.c.problem).where(gateway_tokens.c.gateway == self.name)).scalar()

    def _env(self, key: str) -> str:
        return f"CANHBAO_GATEWAYS__{self.name.upper()}__{key}"


def _seed(conn: Any, name: str, seed: str, seed_hash: str) -> None:
    """Start the row over from the refresh token the environment gives (a first start or a new consent)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    values = {"gateway": name, "refresh_token": seed, "seed_hash": seed_hash, "access_token": None,
              "access_expires_at": None, "refreshing_by": None, "refreshing_since": None, "problem": None}  # fmt: skip
    statement = dialect.insert(gateway_tokens).values(values)
    conn.execute(statement.on_conflict_do_update(index_elements=["gateway"], set_=values))


def _unanswered(idempotent: bool, why: str) -> GatewayError:
    """No usable answer to a request that went out: a read is asked again; a send is not (it may have gone)."""
    if idempotent:
        return TemporaryError(f"Zalo không trả lời được ({why})", code="ZALO-NO-ANSWER")
    return PermanentError(
        f"không rõ Zalo đã nhận tin chưa ({why}): không gửi lại, để không ai nhận hai lần", code="ZALO-NO-ANSWER"
    )


def _check_params(template_id: str, params: dict[str, _Param], data: dict[str, str]) -> None:
    """Refuse, before sending, values the template would refuse: unknown, missing, too long or too short."""
    problems = [f"mẫu không có tham số '{key}'" for key in data if key not in params]
    for key, param in params.items():
        value = data.get(key)
        if value is None or value == "":
            problems += [f"thiếu tham số bắt buộc '{key}'"] if param.required else []
        elif param.max_length and len(value) > param.max_length:
            problems.append(f"'{key}' dài {len(value)} ký tự, mẫu cho tối đa {param.max_length}")
        elif param.min_length and len(value) < param.min_length:
            problems.append(f"'{key}' chỉ {len(value)} ký tự, mẫu cần ít nhất {param.min_length}")
    if problems:
        raise PermanentError(f"mẫu Zalo {template_id}: " + "; ".join(problems), code="ZALO-PARAMS")


# -- the webhook ------------------------------------------------------------------------------


class WebhookRejected(ValueError):
    """A webhook call not to believe: not JSON, unsigned, forged or tampered, or too old (a replay)."""


def parse_webhook(
    settings: ZaloGatewaySettings, headers: Mapping[str, str], body: bytes, now: datetime, gateway: str = "zalo"
) -> list[DeliveryReport]:
    """The delivery receipts of one Zalo webhook call (other events give none); WebhookRejected if not to be believed.

    The signature (`X-ZEvent-Signature: mac=<hex>`) is SHA-256 of the terms `webhook_signature`
    names, over the raw body bytes; the event's own timestamp must be within 5 minutes of `now`.
    """
    event = _event(body)
    _verify(settings, {key.lower(): value for key, value in headers.items()}, body, event)
    sent_at = _millis(event.get("timestamp"), "timestamp")
    if abs(now - sent_at) > WEBHOOK_MAX_AGE:
        raise WebhookRejected(f"event timestamp {sent_at.isoformat()} is more than 5 minutes from now")
    message = event.get("message") if isinstance(event.get("message"), dict) else {}
    if event.get("event_name") != RECEIPT or not message.get("delivery_time") or not message.get("msg_id"):
        return []  # other events, and OA chat deliveries (which carry no delivery_time)
    at = _millis(message["delivery_time"], "message.delivery_time")
    raw = body.decode("utf-8", errors="replace")
    tracking = str(message.get("tracking_id", ""))  # our delivery id, as we sent it
    return [DeliveryReport(str(message["msg_id"]), ReportStatus.DELIVERED, at, gateway=gateway, raw=raw,
                           delivery_id=int(tracking) if tracking.isdigit() else None)]  # fmt: skip


def _event(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise WebhookRejected("body is not JSON") from exc
    if not isinstance(event, dict):
        raise WebhookRejected("body is not a JSON object")
    return event


def _verify(settings: ZaloGatewaySettings, headers: Mapping[str, str], body: bytes, event: dict[str, Any]) -> None:
    """Compare the signature in constant time with the configured formula's."""
    given = headers.get("x-zevent-signature", "").strip().removeprefix("mac=")
    if not given:
        raise WebhookRejected("no X-ZEvent-Signature header")
    secret = settings.webhook_secret or settings.app_secret
    terms = {"app_id": settings.app_id.encode(), "oa_id": settings.oa_id.encode(), "body": body,
             "timestamp": str(event.get("timestamp", "")).encode(),
             "secret": secret.get_secret_value().encode() if secret else b""}  # fmt: skip
    expected = hashlib.sha256(b"".join(terms[term] for term in settings.webhook_signature.split("+"))).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise WebhookRejected("X-ZEvent-Signature does not match: forged, tampered, or another formula or secret")


def _millis(value: Any, key: str) -> datetime:
    """A Zalo time (epoch milliseconds, as a string) as an aware datetime."""
    try:
        return datetime.fromtimestamp(int(str(value)) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise WebhookRejected(f"{key} is not epoch milliseconds: {value!r}") from exc
