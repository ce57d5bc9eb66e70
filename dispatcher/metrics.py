"""What Prometheus scrapes (`/metrics`): figures kept in this process, and figures read from the database.

Workers and web servers are separate processes (`canhbao serve` is all three in one). What only
the database knows for every process at once (messages by state, gateway and carrier, the queue,
the circuits) is counted when Prometheus asks, by a few cheap queries: messages are those of the
blasts live or started today, read through the deliveries' blast index (as the dashboard), so a
scrape costs the same at a thousand rows or ten million. What happens inside one process (a
send's latency, a wait for a rate limit, a webhook whose signature failed) is counted where it
happens, with the instruments below; each process's `/metrics` shows its own (under `canhbao
web --workers N` a scrape reaches one of the N, and shows its count). Under `canhbao
serve` that is everything; a separate `canhbao worker` serves its instruments alone (`listen`,
`[metrics] worker_port`), one target per worker as Prometheus expects of processes on many
machines: the database's figures stay with the web face, so that no sum counts them twice.

The domain may record into these instruments; this module imports no face.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, or_, select

from dispatcher.config import Settings
from dispatcher.health import CircuitState, gateway_names
from dispatcher.health import load as load_health
from dispatcher.models import blasts, deliveries, delivery_queue

# The instruments of this process: their own registry, so that the web app built twice in one
# process (tests) or a library's default collectors never clash with ours.
PROCESS = CollectorRegistry(auto_describe=True)
SEND_LATENCY = Histogram(
    "canhbao_send_latency_seconds", "Time a gateway took to take one batch of messages, by gateway.",
    ["gateway"], registry=PROCESS, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
RATE_LIMIT_WAITS = Counter(
    "canhbao_rate_limit_waits", "Times a send waited for a rate limit, by limit (gateway:…, parts:…, blast:…).",
    ["limit"], registry=PROCESS,
)  # fmt: skip
RATE_LIMIT_WAITED = Counter(
    "canhbao_rate_limit_wait_seconds", "Seconds spent waiting for rate limits, by limit.", ["limit"], registry=PROCESS
)
WEBHOOK_VERIFICATIONS_FAILED = Counter(
    "canhbao_webhook_verifications_failed", "Provider callbacks refused because their signature did not verify.",
    ["provider"], registry=PROCESS,
)  # fmt: skip


def waited(limit: str, seconds: float) -> None:
    """Count one wait of `seconds` for the rate limit `limit`."""
    RATE_LIMIT_WAITS.labels(limit).inc()
    RATE_LIMIT_WAITED.labels(limit).inc(seconds)


class DatabaseFigures(Collector):
    """Messages by state, gateway and carrier, the queue's depth and every gateway's circuit, read at scrape time."""

    def __init__(
        self, engine: Engine, gateways: list[str], timezone: str, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.engine = engine
        self.gateways = gateways
        self.zone = ZoneInfo(timezone)
        self.clock = clock or (lambda: datetime.now(UTC))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The figures, from one read-only connection."""
        with self.engine.connect() as conn:
            yield self._messages(conn)
            depth = GaugeMetricFamily("canhbao_queue_depth", "Messages waiting to be claimed by a worker.")
            depth.add_metric([], conn.execute(select(func.count()).select_from(delivery_queue)).scalar_one())
            yield depth
            yield self._circuits(conn)

    def _messages(self, conn: Connection) -> GaugeMetricFamily:
        now = self.clock()
        midnight = datetime.combine(now.astimezone(self.zone).date(), time(), self.zone)
        today = select(blasts.c.id).where(or_(blasts.c.started_at >= midnight, blasts.c.finished_at.is_(None)))
        d = deliveries.c
        query = select(d.status, func.coalesce(d.gateway, ""), d.carrier, func.count()).where(d.blast_id.in_(today))
        family = GaugeMetricFamily(
            "canhbao_messages", "Messages of the blasts live or started today, by state, gateway and carrier.",
            labels=["state", "gateway", "carrier"],
        )  # fmt: skip
        for status, gateway, carrier, count in conn.execute(query.group_by(d.status, d.gateway, d.carrier)):
            family.add_metric([status, gateway, carrier], count)
        return family

    def _circuits(self, conn: Connection) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "canhbao_circuit_state", "1 for the state each gateway's circuit is in, 0 for the others.",
            labels=["gateway", "state"],
        )  # fmt: skip
        found = load_health(conn)
        for name in sorted(set(self.gateways) | found.keys()):
            current = found[name].state if name in found else CircuitState.CLOSED
            for state in CircuitState:
                family.add_metric([name, state.value], 1.0 if state is current else 0.0)
        return family


def exposition(engine: Engine, settings: Settings, clock: Callable[[], datetime] | None = None) -> bytes:
    """This process's instruments and the database's figures, in Prometheus' text format."""
    figures = CollectorRegistry(auto_describe=False)
    figures.register(DatabaseFigures(engine, gateway_names(settings), settings.app.timezone, clock))
    return generate_latest(PROCESS) + generate_latest(figures)


class Listener:
    """This process's instruments served over HTTP (`GET /metrics`) on a thread of their own, until `close`."""

    def __init__(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, host, registry=PROCESS)
        self.port: int = self._server.server_port
        """The port listened on (the one the system chose when 0 was asked)."""

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
