"""The Gateway protocol: what the dispatch loop hands a gateway and what it gets back.

A gateway only pushes: batching, rate limits, retries and recording results belong to the
dispatch loop. `send_batch` returns one outcome per message, in order: a SendResult, or the
GatewayError that says whether to retry. Foreign exceptions are translated at the gateway edge.

A gateway may also confirm by its own account what it accepted, for the rows a dead worker left
`sending`: `async def confirm(self, delivery_ids: Sequence[int]) -> dict[int, SendResult | None]`
answers, for each of our delivery ids (the client reference every message carries), the
SendResult it gave when it accepted that message, or None when it is sure it never accepted it;
an id it cannot answer for is left out. A GatewayError means it could answer for none. The
capability is optional: call it through `confirm()` below, which answers {} for a gateway without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

import structlog

from dispatcher.smstext import Encoding

log = structlog.get_logger(__name__)


class OutgoingMessage(NamedTuple):
    """One message to send: our delivery id travels with it as the client reference.

    A named tuple, not a frozen dataclass: one is made per message, and that is 4× cheaper.
    """

    delivery_id: int
    msisdn: str
    text: str
    encoding: Encoding
    parts: int
    carrier: str
    channel: str = "sms"
    template: dict[str, Any] | None = None
    not_after: datetime | None = None  # the blast's: a gateway that can tell its provider lets the message die then


class SendResult(NamedTuple):
    """The gateway accepted the message."""

    provider_id: str
    parts: int
    part_ids: tuple[str, ...] = ()
    """Each part's own id, when the parts went as messages of their own with a receipt each (SMPP UDH, SAR)."""


class ReportStatus(StrEnum):
    """What a delivery report says happened to a sent message."""

    DELIVERED = "delivered"
    """The handset received it."""
    FAILED = "failed"
    """The network gave up on it (temporary cause)."""
    UNDELIVERABLE = "undeliverable"
    """It can never arrive: unknown subscriber, barred number…"""


@dataclass(frozen=True)
class DeliveryReport:
    """A late report about a message a gateway accepted, matched by (gateway, provider id).

    `gateway` is the name of the gateway that gave the id (two carriers' SMSCs may give the same
    one); `raw` is the report as the provider wrote it (the receipt's text, the callback's form),
    kept for disputes with a carrier.
    """

    provider_id: str
    status: ReportStatus
    at: datetime
    error_code: str | None = None
    gateway: str = ""
    raw: str | None = None
    part: bool = False
    """A receipt for one part of a message (or one the gateway cannot place): the message settles with its parts."""
    aliases: tuple[str, ...] = ()
    """Other spellings of `provider_id` the provider may have used for it (hex ⇄ decimal)."""
    delivery_id: int | None = None
    """Our delivery's id when the provider echoes it (Zalo's tracking_id): it places a report whose id we lack."""


@dataclass(frozen=True)
class InboundMessage:
    """A message a person sent us (an SMS to our brandname or number): an opt-out, or words for an operator.

    A gateway that receives them offers `def inbound(self, now: datetime) -> list[InboundMessage]`
    (optional, like `confirm`): the ones that arrived by `now` and were not returned before.
    """

    msisdn: str
    text: str
    at: datetime
    gateway: str
    provider_id: str | None = None
    raw: str | None = None


@dataclass
class GatewayError(Exception):
    """A send that did not go through; `retryable` carries the retry decision."""

    message: str
    code: str = ""
    retryable: bool = field(default=False, init=False)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


@dataclass
class TemporaryError(GatewayError):
    """Try again later: timeouts, 5xx, a link down."""

    retryable: bool = field(default=True, init=False)


@dataclass
class ThrottledError(GatewayError):
    """The provider asked us to slow down; retry after `retry_after` seconds if given. `hold`: seconds the
    provider wants nothing from the whole account (Twilio's 429), which every worker of the gateway then waits."""

    retry_after: float | None = None
    retryable: bool = field(default=True, init=False)
    hold: float | None = None


@dataclass
class PermanentError(GatewayError):
    """Never retry: invalid number, rejected content, unknown subscriber."""


@dataclass
class GatewayDisabledError(PermanentError):
    """the provider refused the gateway itself (credentials, template, permissions):
    stop using it and tell the operator"""


@dataclass
class ChannelUnavailableError(PermanentError):
    """This person cannot get it on this channel: not on Zalo, an app too old, Zalo's quota used up
    or outside its hours. Never retried here; a `zalo_then_sms` blast sends it by SMS instead."""


@dataclass
class NotSentError(TemporaryError):
    """The gateway took nothing: no link to the provider (a bind refused, a link down). The message
    goes back to the queue without spending an attempt: it stays queued, it does not fail. `retry_after` 0
    says the link is coming back (it dropped): due again at once, not after the backoff."""

    retry_after: float | None = None


@dataclass
class UnknownOutcomeError(GatewayError):
    """Handed over, and no answer came (the link dropped first): the provider may have it. The
    message becomes `unknown` and is never resent on its own; an operator decides."""


@dataclass
class OptedOutError(PermanentError):
    """The person refused our messages at the provider (Twilio 21610): never retried, and recorded as an opt-out."""


@dataclass
class ChannelClosedError(ChannelUnavailableError):
    """The channel is closed for a while (Zalo's night window, its daily quota): a `zalo_then_sms`
    blast sends the message by SMS instead; a blast with no other channel retries it after `retry_after`."""

    retry_after: float | None = None
    retryable: bool = field(default=True, init=False)


Outcome = SendResult | GatewayError


@runtime_checkable
class Gateway(Protocol):
    """One way out to the carriers."""

    name: str

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Send `messages`; one outcome per message, in order. Never raises for one message's failure."""
        ...

    def reports(self, now: datetime) -> list[DeliveryReport]:
        """Delivery reports that arrived by `now` and were not returned before."""
        ...

    async def close(self) -> None:
        """Flush and release what the gateway holds."""
        ...


def inbound(gateway: Gateway, now: datetime) -> list[InboundMessage]:
    """What people sent `gateway` by `now` ([] for a gateway that receives nothing)."""
    receive = getattr(gateway, "inbound", None)
    return receive(now) if callable(receive) else []


async def check(gateway: Gateway) -> str:
    """What is fine with `gateway`, in Vietnamese, checked without sending a message; GatewayError says what is not.

    The capability `async def check(self) -> str` is optional: a gateway without it says so.
    """
    probe = getattr(gateway, "check", None)
    if not callable(probe):
        return "Cổng này không có cách kiểm tra mà không gửi tin."
    return await probe()


def pending_reports(gateway: Gateway) -> int:
    """Reports a gateway still expects (0 for gateways that never report, like the hand-off file)."""
    count = getattr(gateway, "pending_reports", None)
    return count() if callable(count) else 0


async def confirm(gateway: Gateway, delivery_ids: Sequence[int]) -> dict[int, SendResult | None]:
    """What `gateway` knows it accepted of `delivery_ids` ({} for a gateway that cannot confirm)."""
    answer = getattr(gateway, "confirm", None)
    if not callable(answer) or not delivery_ids:
        return {}
    try:
        return await answer(delivery_ids)
    except GatewayError as error:
        # Confirming is a best effort: rows it cannot vouch for stay unknown, for an operator to decide.
        log.warning("gateway.confirm_failed", gateway=gateway.name, error=str(error))
        return {}
