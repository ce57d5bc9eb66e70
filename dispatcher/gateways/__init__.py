"""The gateways: one module and one class each, found through a literal registry.

A gateway's settings live in the section of `GatewaysSettings` that bears its name; the fake
takes none. Nothing outside this package knows a carrier's quirks.
"""

from __future__ import annotations

from dispatcher.config import GatewaysSettings
from dispatcher.errors import ConfigError
from dispatcher.gateways.base import Gateway
from dispatcher.gateways.fake import FakeGateway
from dispatcher.gateways.file import FileGateway
from dispatcher.gateways.simulator import SimulatorGateway

GATEWAYS: dict[str, type[Gateway]] = {"file": FileGateway, "simulator": SimulatorGateway, "fake": FakeGateway}


def build(name: str, settings: GatewaysSettings) -> Gateway:
    """The gateway called `name`, built from its own settings section."""
    if name not in GATEWAYS:
        raise ConfigError(f"Cổng gửi không rõ {name!r} (có: {', '.join(GATEWAYS)}).")
    section = getattr(settings, name, None)
    return GATEWAYS[name]() if section is None else GATEWAYS[name](section)
