"""Twilio's Messaging API, through the official SDK's async client, and Twilio's webhooks.

One message is one `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form fields as in
Twilio's published API description), at most `concurrency` at once over one shared aiohttp
session. Twilio tells us what became of a message in signed status callbacks to
`{public_url}/hooks/twilio/status`; this module verifies and reads them (and the inbound
messages people send our number), the web face only routes them here. Twilio's error codes,
at send time or in a callback, mean one thing each: `ERRORS` below.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import structlog
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import HMAC_SHA1, HMAC_SHA256, RequestValidator, get_signature_algorithm

from dispatcher.config import TwilioSettings
from dispatcher.errors import ConfigError
from dispatcher.gateways.base import (
    DeliveryReport,
    GatewayDisabledError,
    GatewayError,
    InboundMessage,
    NotSentError,
    OptedOutError,
    Outcome,
    OutgoingMessage,
    PermanentError,
    ReportStatus,
    SendResult,
    TemporaryError,
    ThrottledError,
    UnknownOutcomeError,
)

if TYPE_CHECKING:
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

log = structlog.get_logger(__name__)

STATUS_PATH = "/hooks/twilio/status"
INBOUND_PATH = "/hooks/twilio/inbound"
VALIDITY_RANGE = (1, 36_000)  # seconds Twilio accepts as ValidityPeriod
HOLD_WITHOUT_RETRY_AFTER = 1.0  # seconds sends hold after a 429 that names no Retry-After
HOLD_IN_BATCH = 5.0  # a hold up to this long is waited out by the batch; a longer one sends its messages back

# Twilio's error codes, from an API answer or a status callback's ErrorCode: what each means for us.
ERRORS: dict[int, type[GatewayError]] = {
    21211: PermanentError,  # invalid 'To' number
    21614: PermanentError,  # 'To' is not a mobile number
    21635: PermanentError,  # 'To' is a landline
    30005: PermanentError,  # unknown destination handset
    30006: PermanentError,  # landline or unreachable carrier
    21610: OptedOutError,  # the person replied STOP to our sender: Twilio refuses to send them more
    21408: GatewayDisabledError,  # the account may not send to this region (Geo Permissions: enable Vietnam)
    30007: GatewayDisabledError,  # the carrier filters our messages
    20003: GatewayDisabledError,  # the account SID or auth token is wrong
    30001: TemporaryError,  # Twilio's queue overflowed
    30003: TemporaryError,  # the handset is unreachable (off, out of coverage)
    30008: TemporaryError,  # unknown error
}
# What an operator reads of the codes that stop the gateway (in `gateways list` and the attempts passed over).
DISABLED_REASONS = {
    21408: "the account may not send to this region: enable Vietnam in Twilio's Geo Permissions",
    30007: "the carrier filters our messages as spam: the sender or content must be registered",
    20003: "Twilio refused the account SID or auth token",
}
# What Twilio says of a message in a callback, as the report it is (absent: not final yet, nothing to record).
FINAL_STATUSES = {"delivered": ReportStatus.DELIVERED, "read": ReportStatus.DELIVERED,
                  "undelivered": ReportStatus.FAILED, "failed": ReportStatus.FAILED,
                  "canceled": ReportStatus.FAILED}  # fmt: skip
KNOWN_STATUSES = frozenset({*FINAL_STATUSES, "queued", "sending", "sent", "accepted", "scheduled",
                            "receiving", "received", "partially_delivered"})  # fmt: skip


class ForgedRequest(Exception):
    """A webhook request whose X-Twilio-Signature does not prove it came from Twilio."""


class MalformedRequest(ValueError):
    """A signed webhook request that does not say what Twilio's webhooks say."""


class TooManyRequests(Exception):
    """Twilio answered 429: with its Retry-After (seconds, None if it named none), which TwilioRestException drops."""

    def __init__(self, retry_after: float | None, body: str) -> None:
        super().__init__(f"HTTP 429, Retry-After {retry_after}")
        self.retry_after = retry_after
        self.body = body


class TwilioGateway:
    """Sends SMS through one Twilio account, from a Messaging Service or a number of its own."""

    def __init__(self, settings: TwilioSettings, clock: Callable[[], datetime] | None = None) -> None:
        self.name = "twilio"
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        _check(settings)
        self._client: Client | None = None
        self._http: AsyncTwilioHttpClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._held_until = 0.0  # the event loop's time until which no request starts: Twilio said 429

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Send `messages`, `concurrency` at a time; one outcome each, in order."""
        self._open()
        return list(await asyncio.gather(*(self._send(message) for message in messages)))

    async def check(self) -> str:
        """That the account SID and token are right and the account active: the account fetched, no message sent."""
        self._open()
        assert self._client is not None
        sid = self.settings.account_sid
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                account = await self._client.api.v2010.accounts(sid).fetch_async()
        except TwilioRestException as exc:
            raise _check_failed(exc) from exc
        except TooManyRequests as exc:
            wait = f" {exc.retry_after:.0f} giây" if exc.retry_after is not None else ""
            raise ThrottledError(f"Twilio yêu cầu chờ{wait} (HTTP 429): thử lại sau.", "429") from exc
        except Exception as exc:
            self._failed(exc)  # raises again what is neither Twilio's nor the network's
            raise NotSentError(f"Không kết nối được tới Twilio tại {self.settings.base_url}.", "connect") from exc
        if account.status != "active":
            raise GatewayDisabledError(f"Tài khoản Twilio {sid} đang ở trạng thái '{account.status}'.", "account")
        return f"Tài khoản Twilio {sid} hoạt động; gửi từ {self._sender()}."

    def _sender(self) -> str:
        s = self.settings
        return f"Messaging Service {s.messaging_service_sid}" if s.messaging_service_sid else f"số {s.from_number}"

    def reports(self, now: datetime) -> list[DeliveryReport]:
        """None here: Twilio's reports come to the web face as status callbacks."""
        return []

    async def close(self) -> None:
        """Close the shared HTTP session (it was opened inside the running loop, by the first send)."""
        if self._http is not None:
            await self._http.close()
        self._http = self._client = self._slots = None

    def _open(self) -> None:
        """The SDK client and its aiohttp session, made inside the loop that uses them.

        The SDK and aiohttp are imported here, not with the module: every `canhbao` command builds
        the gateway registry, and they would add half a second to each.
        """
        if self._client is not None:
            return
        from twilio.rest import Client

        s = self.settings
        token = s.auth_token.get_secret_value() if s.auth_token else ""
        self._http = _http_client(s.timeout_seconds)
        # environment={}: TWILIO_* variables must not redirect a gateway configured here.
        self._client = Client(s.account_sid, token, s.account_sid, http_client=self._http, environment={})
        self._client.api.base_url = s.base_url.rstrip("/")
        self._slots = asyncio.Semaphore(s.concurrency)

    async def _send(self, message: OutgoingMessage) -> Outcome:
        assert self._client is not None and self._slots is not None
        async with self._slots:
            if held := await self._hold():
                return held
            try:
                # The SDK's async client passes no timeout to aiohttp (whose default is 5 minutes).
                async with asyncio.timeout(self.settings.timeout_seconds):
                    created = await self._client.messages.create_async(**self._fields(message))
            except Exception as exc:  # Twilio's and the network's become ours; anything else is raised again
                return self._failed(exc)
        return SendResult(created.sid, message.parts)

    async def _hold(self) -> ThrottledError | None:
        """Wait out a short hold Twilio asked for (the rate backs off); a long one: the message goes back, unsent."""
        loop = asyncio.get_running_loop()
        wait = self._held_until - loop.time()
        if wait > HOLD_IN_BATCH:
            return ThrottledError("not sent: Twilio asked us to wait (HTTP 429)", "429-held", retry_after=wait)
        if wait > 0:
            await asyncio.sleep(wait)
        return None

    def _throttled(self, exc: TooManyRequests) -> ThrottledError:
        """A 429 as our error, its Retry-After kept; no request starts here until it has passed, nor in any other
        worker once the dispatch loop has shared the error's `hold` (dispatcher/holds.py)."""
        wait = exc.retry_after if exc.retry_after is not None else HOLD_WITHOUT_RETRY_AFTER
        self._held_until = max(self._held_until, asyncio.get_running_loop().time() + wait)
        log.warning("twilio.throttled", gateway=self.name, retry_after=exc.retry_after)
        try:
            body = json.loads(exc.body)
            code, message = str(body.get("code") or 429), str(body.get("message") or "Too Many Requests")
        except (ValueError, AttributeError):
            code, message = "429", "Too Many Requests"
        return ThrottledError(message, code, retry_after=exc.retry_after, hold=wait)

    def _failed(self, exc: Exception) -> GatewayError:
        """A send's exception as our error; one that is neither Twilio's nor the network's is a bug: raised again."""
        import aiohttp  # already loaded with the client (see _open)

        if isinstance(exc, TooManyRequests):
            return self._throttled(exc)
        if isinstance(exc, TwilioRestException):
            return self._refused(exc)
        if isinstance(exc, aiohttp.ClientConnectorError):  # no connection was made: Twilio has nothing
            return NotSentError(f"cannot reach Twilio: {exc}", "connect")
        if isinstance(exc, aiohttp.ClientError | TimeoutError):
            # The request may have reached Twilio, which has no idempotency key for messages:
            # sending it again could send it twice.
            return UnknownOutcomeError(f"no answer from Twilio: {exc.__class__.__name__}", "no-answer")
        raise exc

    def _fields(self, message: OutgoingMessage) -> dict[str, Any]:
        """The SDK's arguments for one message: the sender, the callback, how long it may wait at Twilio."""
        s = self.settings
        fields: dict[str, Any] = {"to": message.msisdn, "body": message.text}
        if s.messaging_service_sid:
            fields["messaging_service_sid"] = s.messaging_service_sid
        else:
            fields["from_"] = s.from_number
        if s.public_url:
            fields["status_callback"] = s.public_url.rstrip("/") + STATUS_PATH
        if message.not_after is not None:
            fields["validity_period"] = validity(message.not_after, self.clock())
        return fields

    def _refused(self, exc: TwilioRestException) -> GatewayError:
        """Twilio's answer as our error: its code decides, else its HTTP status."""
        error = classify(exc.code, exc.status, exc.msg or "")
        if isinstance(error, GatewayDisabledError):
            log.error("twilio.gateway_disabled", gateway=self.name, code=error.code, error=error.message)
        return error


def _http_client(timeout: float) -> AsyncTwilioHttpClient:
    """The SDK's async HTTP client, but a 429 raises TooManyRequests with the answer's Retry-After.

    The SDK turns every error answer into a TwilioRestException without its headers; the wait
    Twilio asks for is only in the Retry-After header, so it is read here, where the answer is.
    """
    from twilio.http.async_http_client import AsyncTwilioHttpClient

    class HttpClient(AsyncTwilioHttpClient):
        """AsyncTwilioHttpClient whose 429 keeps its Retry-After."""

        async def request(self, *args: Any, **kwargs: Any) -> Any:
            """The SDK's request; a 429 raises TooManyRequests."""
            response = await super().request(*args, **kwargs)
            if response.status_code == 429:
                raise TooManyRequests(retry_after((response.headers or {}).get("Retry-After")), response.text)
            return response

    return HttpClient(timeout=timeout)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _check_failed(exc: TwilioRestException) -> GatewayError:
    """What `gateways check` tells the operator of Twilio's refusal, in Vietnamese."""
    if exc.code == 20003 or exc.status == 401:
        refused = "Twilio từ chối account_sid hoặc auth token (mã 20003): kiểm tra lại hai giá trị này."
        return GatewayDisabledError(refused, "20003")
    return classify(exc.code, exc.status, f"Twilio trả lời lỗi {exc.code or exc.status}: {exc.msg}")


def classify(code: int | None, status: int, message: str) -> GatewayError:
    """An error Twilio answered, as ours: by `ERRORS`, else 429 throttles, 5xx retries, any other 4xx is final."""
    text = str(code or status)
    if code in ERRORS:
        return ERRORS[code](message, text)
    if status == 429:
        return ThrottledError(message, text)
    if status >= 500:
        return TemporaryError(message, text)
    return PermanentError(message, text)


def validity(not_after: datetime, now: datetime) -> int:
    """ValidityPeriod: the seconds left until the blast's not_after, within Twilio's 1–36,000."""
    seconds = math.ceil((not_after - now).total_seconds())
    return max(VALIDITY_RANGE[0], min(VALIDITY_RANGE[1], seconds))


def _check(s: TwilioSettings) -> None:
    """Refuse a section that cannot send, before any message is claimed for it."""
    problems = []
    if not s.account_sid:
        problems.append("thiếu account_sid")
    if not s.auth_token:
        problems.append("thiếu biến môi trường CANHBAO_GATEWAYS__<TÊN>__AUTH_TOKEN")
    if not (s.messaging_service_sid or s.from_number):
        problems.append("cần messaging_service_sid hoặc from_number")
    if problems:
        raise ConfigError(f"Cổng Twilio: {'; '.join(problems)}.")


# -- webhooks ---------------------------------------------------------------------------------


def section_for(sections: Sequence[tuple[str, TwilioSettings]], form: Mapping[str, str]) -> tuple[str, TwilioSettings]:
    """The gateway a webhook is for, by the account that sent it (and our sender, when one account serves several)."""
    ours = [(name, s) for name, s in sections if s.account_sid and s.account_sid == form.get("AccountSid")]
    if not ours:
        raise ForgedRequest("no Twilio gateway has this AccountSid")
    senders = {form.get("MessagingServiceSid"), form.get("From"), form.get("To")}
    return next(((n, s) for n, s in ours if {s.messaging_service_sid, s.from_number} & senders), ours[0])


def verify(
    settings: TwilioSettings, path: str, query: str, form: Mapping[str, str], headers: Mapping[str, str]
) -> None:
    """Raise ForgedRequest unless X-Twilio-Signature signs this form at our public URL (what Twilio requested).

    Twilio signs with the auth token (HMAC-SHA1) unless a Webhook Rule matching our URL names a
    Setting with a SharedKey: then it signs with that key's secret and the Setting's algorithm
    (HMAC-SHA256 or SHA1) and says so in X-Twilio-Webhooks-Signature-Settings.
    """
    signature = headers.get("x-twilio-signature")
    if not signature or not settings.public_url:
        raise ForgedRequest("unsigned request" if not signature else "no public_url to check against")
    announced = headers.get("x-twilio-webhooks-signature-settings")
    algorithm = get_signature_algorithm(announced).upper()
    if algorithm not in (HMAC_SHA1, HMAC_SHA256):
        raise ForgedRequest(f"signed with {algorithm}, which we do not know")
    validator = RequestValidator(_signing_secret(settings, announced))
    url = settings.public_url.rstrip("/") + path + (f"?{query}" if query else "")
    # Twilio signs the URL as we gave it: checked first, alone. `validate` tries it with and
    # without a port, two signatures each time, on the path every delivery report takes.
    fields = _Form(form)
    expected = validator.compute_signature(url, fields, algorithm)
    if hmac.compare_digest(expected.encode(), signature.encode()):
        return
    if not validator.validate(url, fields, signature, algorithm):
        raise ForgedRequest("signature does not match")


class _Form(dict[str, str]):
    """A form of one value per field, read by RequestValidator through `getall`: it asks a plain dict for
    `getall` and `getlist` first, and the two exceptions cost twice the signature itself."""

    def getall(self, name: str) -> list[str]:
        """The field's values: its one value."""
        return [self[name]]


def _signing_secret(settings: TwilioSettings, announced: str | None) -> str:
    """The secret a request was signed with: the auth token, or the SharedKey its signature settings name."""
    if not announced:
        if settings.auth_token is None:
            raise ForgedRequest("no auth token to check against")
        return settings.auth_token.get_secret_value()
    if settings.webhook_shared_key is None:
        raise ForgedRequest("signed with a SharedKey, and no webhook_shared_key is configured")
    named = dict(part.strip().partition("=")[::2] for part in announced.split(",")).get("key", "")
    if settings.webhook_shared_key_id and named != settings.webhook_shared_key_id:
        raise ForgedRequest(f"signed with SharedKey {named!r}, not {settings.webhook_shared_key_id!r}")
    return settings.webhook_shared_key.get_secret_value()


def status_report(form: Mapping[str, str], gateway: str, now: datetime, raw: str = "") -> DeliveryReport | None:
    """The delivery report a status callback carries (None while the message is not final yet); `raw`: its body."""
    sid, status = form.get("MessageSid") or form.get("SmsSid"), form.get("MessageStatus") or form.get("SmsStatus")
    if not sid or status not in KNOWN_STATUSES:
        raise MalformedRequest(f"needs MessageSid and a known MessageStatus, got {status!r}")
    if status not in FINAL_STATUSES:
        return None
    code = form.get("ErrorCode") or None
    outcome = FINAL_STATUSES[status]
    meaning = _meaning(code)
    if outcome is ReportStatus.FAILED and issubclass(meaning, PermanentError) and meaning is not GatewayDisabledError:
        outcome = ReportStatus.UNDELIVERABLE  # it can never arrive (a gateway refused is not the number's fault)
    return DeliveryReport(sid, outcome, now, code, gateway, raw or urlencode(sorted(form.items())))


def opted_out(form: Mapping[str, str]) -> str | None:
    """The number of the person a status callback says refused our messages at Twilio (21610), if any."""
    return form.get("To") if form.get("ErrorCode") == "21610" else None


def disabled(form: Mapping[str, str]) -> str | None:
    """Why this gateway must stop (and an operator be told), when a status callback's ErrorCode says so; else None."""
    code = form.get("ErrorCode")
    if _meaning(code) is not GatewayDisabledError:
        return None
    sid = form.get("MessageSid") or form.get("SmsSid")
    return f"{code}: {DISABLED_REASONS.get(int(code or 0), 'the gateway was refused')} (status callback for {sid})"


def _meaning(code: str | None) -> type[GatewayError]:
    """What a callback's ErrorCode means (an unknown one: a failure that may pass)."""
    return ERRORS.get(int(code), TemporaryError) if code and code.isdigit() else TemporaryError


def inbound_message(form: Mapping[str, str], gateway: str, now: datetime, raw: str = "") -> InboundMessage:
    """What a person sent our number, from Twilio's incoming-message webhook; `raw`: its body."""
    if not form.get("From") or "Body" not in form:
        raise MalformedRequest("an incoming message needs From and Body")
    return InboundMessage(form["From"], form["Body"], now, gateway, form.get("MessageSid"),
                          raw or urlencode(sorted(form.items())))  # fmt: skip
