"""Circuit breakers: a gateway that keeps failing is taken out of its routes for a cool-down.

Closed, a gateway is used and its sends are counted in a window; when the errors of the gateway
itself (a link down, a bind refused, a timeout: not a bad number) reach `circuit_errors` and
`circuit_error_share` of its sends, or the provider refuses the gateway (GatewayDisabledError),
it opens for `circuit_cooldown_seconds`. Then one worker takes the probe (half-open: one small
batch); a probe without such errors closes it, one with them opens it again. The state is a row
of `gateway_health`, so every worker skips the same gateways and `gateways list` shows them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import select

from dispatcher.config import GatewayLimits, Settings
from dispatcher.models import gateway_health

log = structlog.get_logger(__name__)


class CircuitState(StrEnum):
    """Whether the dispatch loop may use a gateway."""

    CLOSED = "closed"
    """In use."""
    OPEN = "open"
    """Out until its cool-down ends."""
    HALF_OPEN = "half_open"
    """One worker is probing it with a small batch."""


@dataclass(frozen=True)
class Health:
    """One gateway's row: its circuit and what went wrong last."""

    name: str
    state: CircuitState = CircuitState.CLOSED
    opened_at: datetime | None = None
    until: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    window_started_at: datetime | None = None
    attempts: int = 0
    errors: int = 0
    trips: int = 0

    def usable(self, now: datetime) -> bool:
        """Closed, or its cool-down (or a dead prober's lease) is over, so that it may be probed."""
        return self.state is CircuitState.CLOSED or (self.until is not None and self.until <= now)


@dataclass(frozen=True)
class Tally:
    """What one gateway's sends of a tick came to."""

    attempts: int = 0
    errors: int = 0
    last_error: str | None = None
    disabled: bool = False


def load(conn: Any) -> dict[str, Health]:
    """Every gateway's health row, by name (a gateway without one is closed)."""
    rows = conn.execute(select(gateway_health)).mappings().all()
    return {row["name"]: _health(row) for row in rows}


def _health(row: Any) -> Health:
    return Health(**{**row, "state": CircuitState(row["state"])})


def take_probe(conn: Any, name: str, now: datetime, lease: datetime) -> bool:
    """Become the one worker probing `name` (its cool-down is over): True if this worker won it."""
    c = gateway_health.c
    taken = conn.execute(
        gateway_health.update()
        .where(c.name == name, c.state != CircuitState.CLOSED.value, c.until <= now)
        .values(state=CircuitState.HALF_OPEN.value, until=lease)
    )
    return bool(taken.rowcount)


def record(conn: Any, name: str, tally: Tally, now: datetime, limits: GatewayLimits, probing: bool) -> Health:
    """Count a tick's sends through `name` and move its circuit: closed → open, or a probe's verdict."""
    health = _locked(conn, name, now)
    if tally.errors:
        health = replace(health, last_error=tally.last_error, last_error_at=now)
    if probing:
        health = _closed(health, now) if not tally.errors else _opened(health, now, limits)
    elif health.state is CircuitState.CLOSED:
        health = _counted(health, tally, now, limits)
    conn.execute(gateway_health.update().where(gateway_health.c.name == name).values(**_values(health)))
    return health


def disable(conn: Any, name: str, why: str, now: datetime, limits: GatewayLimits) -> Health:
    """Open `name` at once: the provider refused the gateway itself in a report (its send had been accepted).

    As a GatewayDisabledError at send time does, but from a delivery report: a circuit already open
    keeps its cool-down (a refused blast reports the refusal once per message), a probing one opens again.
    """
    health = replace(_locked(conn, name, now), last_error=why[:300], last_error_at=now)
    if health.state is not CircuitState.OPEN or health.until is None or health.until <= now:
        health = _opened(health, now, limits)
    conn.execute(gateway_health.update().where(gateway_health.c.name == name).values(**_values(health)))
    return health


def _locked(conn: Any, name: str, now: datetime) -> Health:
    """The row of `name`, created if missing, locked until the transaction ends (SQLite: it already is)."""
    query = select(gateway_health).where(gateway_health.c.name == name).with_for_update()
    row = conn.execute(query).mappings().first()
    if row is not None:
        return _health(row)
    health = Health(name, window_started_at=now)
    conn.execute(gateway_health.insert().values(name=name, **_values(health)))
    return health


def _counted(health: Health, tally: Tally, now: datetime, limits: GatewayLimits) -> Health:
    """A closed circuit's window with `tally` added; opened when the errors are too many."""
    started = health.window_started_at
    if started is None or now - started >= timedelta(seconds=limits.circuit_window_seconds):
        health = replace(health, window_started_at=now, attempts=0, errors=0)
    health = replace(health, attempts=health.attempts + tally.attempts, errors=health.errors + tally.errors)
    if tally.disabled or _too_many(health, limits):
        return _opened(health, now, limits)
    return health


def _too_many(health: Health, limits: GatewayLimits) -> bool:
    """Whether the window's errors reach both the count and the share that open the circuit."""
    if not limits.circuit_errors or health.errors < limits.circuit_errors:
        return False
    return health.errors >= limits.circuit_error_share * max(health.attempts, 1)


def _opened(health: Health, now: datetime, limits: GatewayLimits) -> Health:
    until = now + timedelta(seconds=limits.circuit_cooldown_seconds)
    log.warning("gateway.circuit_opened", gateway=health.name, until=until.isoformat(), error=health.last_error)
    return replace(health, state=CircuitState.OPEN, opened_at=now, until=until, trips=health.trips + 1)


def _closed(health: Health, now: datetime) -> Health:
    log.info("gateway.circuit_closed", gateway=health.name)
    return replace(health, state=CircuitState.CLOSED, until=None, window_started_at=now, attempts=0, errors=0)


def _values(health: Health) -> dict[str, Any]:
    """The row's columns of `health`, but its name."""
    values = {**asdict(health), "state": health.state.value}
    values.pop("name")
    return values


def gateway_names(settings: Settings) -> list[str]:
    """Every configured gateway, and the built-in ones a route names."""
    named = [name for route in settings.routes.values() for name in route]
    return list(dict.fromkeys([*settings.gateways.names(), *named]))
