"""The dispatch loop: claim due deliveries under a lease, render, route, rate-limit, send, record.

Exactly once: a row is marked `sending` (with a lease) before any gateway sees it, and only a
gateway's answer moves it on. A worker that dies mid-send leaves rows whose lease expires; they
become `unknown`, never silently resent: an operator decides (`blast resend-unknown`). Delivery
states only move forward; a late or out-of-order report never overwrites a final state.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, and_, bindparam, or_, select, text, update
from sqlalchemy.exc import OperationalError

from dispatcher import alerts as catalogue
from dispatcher import blasts as blast_ops
from dispatcher.config import GatewayLimits, Settings
from dispatcher.db import driver_time, executemany
from dispatcher.domain import BlastState, DeliveryStatus
from dispatcher.gateways.base import (
    DeliveryReport,
    Gateway,
    GatewayError,
    OutgoingMessage,
    SendResult,
    ThrottledError,
    pending_reports,
)
from dispatcher.models import UtcDateTime, alerts, blasts, deliveries, delivery_attempts
from dispatcher.regions import RegionIndex

log = structlog.get_logger(__name__)
HOUSEKEEPING = timedelta(seconds=1)
Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

_CLAIMED = "id, blast_id, msisdn, carrier, province_code, commune_code, attempts"
_RUNNING = "blast_id IN (SELECT id FROM blasts WHERE state = 'running')"
CLAIM_SQLITE = text(
    "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, claimed_by = :worker, "
    "lease_until = :lease WHERE id IN (SELECT id FROM deliveries INDEXED BY ix_deliveries_queued "
    f"WHERE status = 'queued' AND next_attempt_at <= :now AND {_RUNNING} ORDER BY id LIMIT :limit) "
    f"RETURNING {_CLAIMED}"
)
CLAIM_POSTGRESQL = text(
    "UPDATE deliveries d SET status = 'sending', attempts = d.attempts + 1, claimed_by = :worker, "
    "lease_until = :lease FROM (SELECT id FROM deliveries WHERE status = 'queued' AND next_attempt_at <= :now "
    f"AND {_RUNNING} ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED) c WHERE d.id = c.id "
    f"RETURNING d.id, d.blast_id, d.msisdn, d.carrier, d.province_code, d.commune_code, d.attempts"
)
_ONLY_SENDING = "WHERE id = :i AND status = 'sending'"
SENT_SQL = (
    "UPDATE deliveries SET status = 'sent', gateway = :g, provider_id = :p, parts = :n, sent_at = :t, "
    f"lease_until = NULL, error_code = NULL, error = NULL {_ONLY_SENDING}"
)
RETRY_SQL = (
    "UPDATE deliveries SET status = 'queued', gateway = :g, error_code = :c, error = :e, next_attempt_at = :at, "
    f"lease_until = NULL, claimed_by = NULL {_ONLY_SENDING}"
)
FAILED_SQL = (
    "UPDATE deliveries SET status = 'failed', gateway = :g, error_code = :c, error = :e, finished_at = :t, "
    f"lease_until = NULL {_ONLY_SENDING}"
)
EXPIRED_SQL = f"UPDATE deliveries SET status = 'expired', finished_at = :t, lease_until = NULL {_ONLY_SENDING}"
REPORT_SQL = (
    "UPDATE deliveries SET status = :s, error_code = COALESCE(:c, error_code), finished_at = :t "
    "WHERE provider_id = :p AND status = 'sent'"
)
_TIMES = [bindparam("now", type_=UtcDateTime()), bindparam("lease", type_=UtcDateTime())]


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker now holds under its lease."""

    id: int
    blast_id: int
    msisdn: str
    carrier: str
    province_code: int
    commune_code: int | None
    attempts: int


Result = tuple[Claimed, OutgoingMessage, str, SendResult | GatewayError]


class RateLimiter:
    """At most `rate` units per second in any one-second window, in evenly spaced chunks.

    Spacing is measured from when each chunk actually went, so a late wake-up never turns
    into a catch-up burst.
    """

    def __init__(self, rate: float, sleep: Sleep, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.sleep = sleep
        self.monotonic = monotonic
        self.next_free = 0.0

    def chunk(self) -> int:
        """How many units to release at once: twenty chunks a second."""
        return max(1, int(self.rate // 20)) if self.rate else 1_000_000

    async def acquire(self, weight: float) -> None:
        """Wait until `weight` units may go."""
        if not self.rate:
            return
        wait = self.next_free - self.monotonic()
        if wait > 0:
            await self.sleep(wait)
        self.next_free = self.monotonic() + weight / self.rate * 1.0001


@dataclass
class BlastInfo:
    """What the loop needs of a blast, loaded once."""

    id: int
    not_after: datetime | None
    template: catalogue.MessageTemplate
    limiter: RateLimiter | None


@dataclass
class Worker:
    """One dispatch process: `run` loops until stopped (or idle), `tick` does one round."""

    engine: Engine
    gateways: dict[str, Gateway]
    settings: Settings
    regions: RegionIndex
    clock: Clock
    worker_id: str
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    _blasts: dict[int, BlastInfo] = field(default_factory=dict)
    _limiters: dict[str, tuple[RateLimiter, RateLimiter]] = field(default_factory=dict)
    _routes: dict[str, str] = field(default_factory=dict)
    _last_housekeeping: datetime | None = None
    _last_claimed: int = 0
    sent: int = 0

    async def run(
        self, until_idle: bool = False, stop: asyncio.Event | None = None, on_tick: Callable[[], None] | None = None
    ) -> None:
        """Dispatch until `stop` is set, or, with `until_idle`, until nothing is left to do.

        Idle waits up to `report_wait_seconds` for delivery reports the gateways still expect.
        """
        stop = stop or asyncio.Event()
        quiet_since: float | None = None
        while not stop.is_set():
            if on_tick:
                on_tick()
            try:
                busy = await self.tick()
            except OperationalError as exc:  # database locked or down: wait and go on
                log.warning("dispatch.database_unavailable", error=str(exc.orig))
                await self.sleep(1.0)
                continue
            if busy:
                quiet_since = None
                continue
            if until_idle and self.idle():
                quiet_since = quiet_since or time.monotonic()
                waited = time.monotonic() - quiet_since
                if not self._reports_expected() or waited >= self.settings.dispatch.report_wait_seconds:
                    return
            await self.sleep(self.settings.dispatch.poll_interval_ms / 1000)

    def _reports_expected(self) -> bool:
        return any(pending_reports(gateway) for gateway in self.gateways.values())

    async def tick(self) -> bool:
        """Start due blasts, reap dead leases, send one batch, record it with the reports; True if it sent."""
        now = self.clock()
        if self._housekeeping_due(now):
            with self.engine.begin() as conn:
                blast_ops.start_due(conn, self.settings, now)
                self._reap(conn, now)
        claimed = self._claim(now)
        results, expired = await self._dispatch(claimed) if claimed else ([], [])
        reports = [r for g in self.gateways.values() for r in g.reports(self.clock())]
        with self.engine.begin() as conn:
            self._record(conn, results, expired)
            apply_reports(conn, reports)
            if len(claimed) < self.settings.dispatch.batch_size:
                self._complete(conn, self.clock())
        self._last_claimed = len(claimed)
        return bool(claimed)

    def _housekeeping_due(self, now: datetime) -> bool:
        """Starting blasts and reaping leases: every tick when quiet, once a second when busy."""
        if self._last_housekeeping is None or not self._last_claimed or now - self._last_housekeeping >= HOUSEKEEPING:
            self._last_housekeeping = now
            return True
        return False

    def idle(self) -> bool:
        """Nothing due: no queued message due now, none in flight, no blast waiting to start now."""
        now = self.clock()
        d = deliveries.c
        due = or_(and_(d.status == DeliveryStatus.QUEUED.value, d.next_attempt_at <= now),
                  d.status == DeliveryStatus.SENDING.value)  # fmt: skip
        with self.engine.connect() as conn:
            waiting = conn.execute(
                select(d.id)
                .join(blasts, blasts.c.id == d.blast_id)
                .where(blasts.c.state == BlastState.RUNNING.value, due)
                .limit(1)
            ).first()
            scheduled = blasts.c.state == BlastState.SCHEDULED.value
            starting = conn.execute(select(blasts.c.id).where(scheduled, blasts.c.start_at <= now).limit(1)).first()
        return waiting is None and starting is None

    # -- claiming -------------------------------------------------------------------------

    def _claim(self, now: datetime) -> list[Claimed]:
        lease = now + timedelta(seconds=self.settings.dispatch.lease_seconds)
        statement = CLAIM_POSTGRESQL if self.engine.dialect.name == "postgresql" else CLAIM_SQLITE
        params = {"worker": self.worker_id, "now": now, "lease": lease, "limit": self.settings.dispatch.batch_size}
        with self.engine.begin() as conn:
            rows = conn.execute(statement.bindparams(*_TIMES), params).all()
        return [Claimed(*row) for row in rows]

    def _reap(self, conn: Any, now: datetime) -> None:
        """Rows whose lease ran out while `sending` become `unknown`: they may have gone out."""
        reaped = conn.execute(
            update(deliveries)
            .where(deliveries.c.status == DeliveryStatus.SENDING.value, deliveries.c.lease_until < now)
            .values(status=DeliveryStatus.UNKNOWN.value, error="lease expired while sending", lease_until=None)
        ).rowcount
        if reaped:
            log.warning("dispatch.leases_expired", deliveries=reaped)

    # -- sending --------------------------------------------------------------------------

    async def _dispatch(self, claimed: list[Claimed]) -> tuple[list[Any], list[Claimed]]:
        now = self.clock()
        by_gateway: dict[str, list[tuple[Claimed, OutgoingMessage]]] = defaultdict(list)
        expired: list[Claimed] = []
        for row in claimed:
            info = self._blast(row.blast_id)
            if info.not_after is not None and info.not_after <= now:
                expired.append(row)
                continue
            text_, measured = info.template.render(self.regions, row.province_code, row.commune_code)
            message = OutgoingMessage(row.id, row.msisdn, text_, measured.encoding, measured.parts, row.carrier)
            by_gateway[self._route(row.carrier)].append((row, message))
        outcomes = await asyncio.gather(*(self._send(name, batch) for name, batch in by_gateway.items()))
        return [result for batch in outcomes for result in batch], expired

    async def _send(
        self, name: str, batch: list[tuple[Claimed, OutgoingMessage]]
    ) -> list[tuple[Claimed, OutgoingMessage, str, SendResult | GatewayError]]:
        gateway = self.gateways[name]
        messages, per_message = self._limiters_for(name)
        results = []
        step = min(messages.chunk(), per_message.chunk())
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            await self._pace(chunk)
            await messages.acquire(len(chunk))
            await per_message.acquire(sum(m.parts for _, m in chunk))
            outcomes = await gateway.send_batch([m for _, m in chunk])
            results += [(row, m, name, outcome) for (row, m), outcome in zip(chunk, outcomes, strict=True)]
        return results

    async def _pace(self, chunk: list[tuple[Claimed, OutgoingMessage]]) -> None:
        """Hold a chunk to its blast's own --rate, when the blast set one."""
        info = self._blast(chunk[0][0].blast_id)
        if info.limiter is not None:
            await info.limiter.acquire(len(chunk))

    def _route(self, carrier: str) -> str:
        """The first gateway of a carrier's route (remembered: it is asked for every message)."""
        if carrier not in self._routes:
            self._routes[carrier] = self.settings.route_for(carrier)[0]
        return self._routes[carrier]

    def _limiters_for(self, name: str) -> tuple[RateLimiter, RateLimiter]:
        if name not in self._limiters:
            limits: GatewayLimits = getattr(self.settings.gateways, name, GatewayLimits())
            self._limiters[name] = (RateLimiter(limits.rate, self.sleep), RateLimiter(limits.parts_rate, self.sleep))
        return self._limiters[name]

    def _blast(self, blast_id: int) -> BlastInfo:
        if blast_id not in self._blasts:
            with self.engine.connect() as conn:
                blast = blast_ops.get(conn, blast_id)
                alert = conn.execute(select(alerts).where(alerts.c.id == blast["alert_id"])).mappings().one()
            template = catalogue.MessageTemplate.of(dict(alert), blast["encoding"])
            limiter = RateLimiter(blast["rate"], self.sleep) if blast["rate"] else None
            self._blasts[blast_id] = BlastInfo(blast_id, blast_ops.utc(blast["not_after"]), template, limiter)
        return self._blasts[blast_id]

    # -- recording ------------------------------------------------------------------------

    def _record(
        self, conn: Any, results: Sequence[tuple[Claimed, OutgoingMessage, str, Any]], expired: list[Claimed]
    ) -> None:
        """Every outcome of a batch; a success lives on its delivery row, other attempts get a row of their own."""
        now = self.clock()
        t = driver_time(conn.dialect.name, now)
        sent, retry, failed, attempts = [], [], [], []
        for row, message, gateway, outcome in results:
            if isinstance(outcome, SendResult):
                sent.append({"i": row.id, "g": gateway, "p": outcome.provider_id, "n": outcome.parts, "t": t})
                continue
            attempts.append({"delivery_id": row.id, "attempt": row.attempts, "gateway": gateway, "at": now,
                             "outcome": _kind(outcome), "provider_id": None, "parts": message.parts,
                             "error_code": outcome.code, "error": str(outcome)[:300]})  # fmt: skip
            error = {"i": row.id, "g": gateway, "c": outcome.code, "e": str(outcome)[:300], "t": t}
            if outcome.retryable and row.attempts < self.settings.dispatch.max_attempts:
                later = now + timedelta(seconds=self._backoff(row.attempts, outcome))
                retry.append({**error, "at": driver_time(conn.dialect.name, later)})
            else:
                failed.append(error)
        blank = {"provider_id": None, "parts": None, "error_code": None, "error": None}
        attempts += [
            {**blank, "delivery_id": r.id, "attempt": r.attempts, "gateway": "-", "at": now, "outcome": "expired"}
            for r in expired
        ]
        for rows, sql in ((sent, SENT_SQL), (retry, RETRY_SQL), (failed, FAILED_SQL)):
            executemany(conn, sql, rows)
        executemany(conn, EXPIRED_SQL, [{"i": r.id, "t": t} for r in expired])
        if attempts:
            conn.execute(delivery_attempts.insert(), attempts)
        self.sent += len(sent)

    def _backoff(self, attempts: int, error: GatewayError) -> float:
        """Exponential backoff with jitter; a throttle's retry-after is respected."""
        dispatch = self.settings.dispatch
        delay = min(dispatch.backoff_max_seconds, dispatch.backoff_base_seconds * 2 ** max(0, attempts - 1))
        delay *= self.rng.uniform(0.5, 1.5)
        if isinstance(error, ThrottledError) and error.retry_after:
            delay = max(delay, error.retry_after)
        return delay

    # -- reports and completion -----------------------------------------------------------

    def _complete(self, conn: Any, now: datetime) -> None:
        done = (
            conn.execute(
                text(
                    "UPDATE blasts SET state = 'completed', finished_at = :t WHERE state = 'running' AND NOT EXISTS "
                    "(SELECT 1 FROM deliveries d WHERE d.blast_id = blasts.id AND d.status IN ('queued', 'sending')) "
                    "RETURNING id"
                ).bindparams(bindparam("t", type_=UtcDateTime())),
                {"t": now},
            )
            .scalars()
            .all()
        )
        for blast_id in done:
            log.info("blast.completed", blast_id=blast_id)
            self._blasts.pop(blast_id, None)


def _kind(error: GatewayError) -> str:
    """The attempt outcome an error stands for."""
    if isinstance(error, ThrottledError):
        return "throttled"
    return "temporary" if error.retryable else "permanent"


def apply_reports(conn: Any, reports: Sequence[DeliveryReport]) -> int:
    """Move `sent` deliveries on by provider id; a final state is never overwritten."""
    rows = [{"p": r.provider_id, "s": r.status.value, "c": r.error_code, "t": driver_time(conn.dialect.name, r.at)}
            for r in reports]  # fmt: skip
    return executemany(conn, REPORT_SQL, rows)
