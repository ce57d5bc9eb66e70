"""Holds a provider asks for: after Twilio's 429, no worker sends through that gateway until the wait ends.

A gateway says so on its error (`ThrottledError.hold`, seconds). The dispatch loop records the end
here, in the `rate_buckets` row `hold:<gateway>` (epoch seconds, only ever moved later), and reads
it before the chunks it hands the gateway (again after a quarter of a second): every worker of the
gateway then waits, as every worker keeps to the one rate schedule of its `gateway:<name>` row.
Workers on several machines need synchronised clocks (NTP), as for the rate limit.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dispatcher.models import rate_buckets


def bucket(gateway: str) -> str:
    """The `rate_buckets` row holding `gateway`'s hold."""
    return f"hold:{gateway}"


def extend(conn: Connection, gateway: str, until: float) -> None:
    """Hold `gateway` until epoch second `until`, unless a later hold stands."""
    b = rate_buckets.c
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(rate_buckets).values(name=bucket(gateway), next_free=until).on_conflict_do_nothing())
    conn.execute(update(rate_buckets).where(b.name == bucket(gateway), b.next_free < until).values(next_free=until))


def until(conn: Connection, gateway: str) -> float:
    """The epoch second `gateway`'s last hold ends (0: never held)."""
    found = conn.execute(select(rate_buckets.c.next_free).where(rate_buckets.c.name == bucket(gateway))).scalar()
    return found or 0.0
