"""The gateways: one module and one class each, found through a literal registry keyed by kind.

A gateway is a named section `[gateways.<name>]` whose `kind` (by default its name) picks the
class; the instance carries the section's name, so one deployment can hold several gateways of
one kind (an SMPP bind per carrier). The fake takes no section. Nothing outside this package
knows a carrier's quirks.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from dispatcher.config import BUILT_IN_GATEWAYS, GATEWAY_KINDS, GatewaysSettings
from dispatcher.errors import ConfigError
from dispatcher.gateways.base import Gateway
from dispatcher.gateways.fake import FakeGateway
from dispatcher.gateways.file import FileGateway
from dispatcher.gateways.simulator import SimulatorGateway
from dispatcher.gateways.smpp import SmppGateway
from dispatcher.gateways.twilio import TwilioGateway
from dispatcher.gateways.zalo import ZaloGateway

GATEWAYS: dict[str, type[Gateway]] = {
    "file": FileGateway, "simulator": SimulatorGateway, "smpp": SmppGateway, "twilio": TwilioGateway,
    "zalo": ZaloGateway, "fake": FakeGateway,
}  # fmt: skip


def build(name: str, settings: GatewaysSettings, engine: Engine | None = None) -> Gateway:
    """The gateway called `name`, of its section's kind, built from that section.

    A kind that keeps state in the database (`needs_database`: Zalo's token pair) gets `engine`.
    """
    section = settings.get(name)
    if section is None and name in BUILT_IN_GATEWAYS:
        gateway = GATEWAYS[name]()
    elif section is None:
        raise ConfigError(
            f"Cổng gửi không rõ {name!r}: cần một mục [gateways.{name}] (có: {', '.join(settings.names())})."
        )
    elif section.kind not in GATEWAYS:
        kinds = ", ".join(k for k in GATEWAY_KINDS if k in GATEWAYS)
        raise ConfigError(f"Cổng '{name}': loại '{section.kind}' chưa được hỗ trợ ở bản này (có: {kinds}).")
    else:
        kind: Any = GATEWAYS[section.kind]
        gateway = kind(section, engine=engine) if getattr(kind, "needs_database", False) else kind(section)
    gateway.name = name
    return gateway
