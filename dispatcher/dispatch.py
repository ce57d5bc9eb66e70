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
from sqlalchemy import Engine, and_, bindparam, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
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
    confirm,
    pending_reports,
)
from dispatcher.models import UtcDateTime, alerts, blasts, deliveries, delivery_attempts, rate_buckets
from dispatcher.policy import open_channels
from dispatcher.regions import RegionIndex

log = structlog.get_logger(__name__)
HOUSEKEEPING = timedelta(seconds=1)
Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

_CLAIMED = "id, blast_id, alert_slug, msisdn, carrier, province_code, commune_code, attempts"
# Blasts that may send now: running, on a channel outside its quiet hours, of the priority claimed.
_RUNNING = "blast_id IN (SELECT id FROM blasts WHERE state = 'running' AND channel IN :channels)"
CLAIM_SQLITE = text(
    "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, claimed_by = :worker, "
    "lease_until = :lease WHERE id IN (SELECT id FROM deliveries INDEXED BY ix_deliveries_queued "
    f"WHERE status = 'queued' AND priority = :priority AND next_attempt_at <= :now AND {_RUNNING} "
    f"ORDER BY priority, id LIMIT :limit) RETURNING {_CLAIMED}"
)
CLAIM_POSTGRESQL = text(
    "UPDATE deliveries d SET status = 'sending', attempts = d.attempts + 1, claimed_by = :worker, "
    "lease_until = :lease FROM (SELECT id FROM deliveries WHERE status = 'queued' AND priority = :priority "
    f"AND next_attempt_at <= :now AND {_RUNNING} ORDER BY priority, id LIMIT :limit FOR UPDATE SKIP LOCKED) c "
    "WHERE d.id = c.id RETURNING d.id, d.blast_id, d.alert_slug, d.msisdn, d.carrier, d.province_code, "
    "d.commune_code, d.attempts"
)
_ONLY_SENDING = "WHERE id = :i AND status = 'sending'"
# On PostgreSQL the two hot updates go as one statement over arrays (unnest): twice the rows a
# second of an executemany, which pays a round of planning and index upkeep per row.
SENT_SQL_PG = (
    "UPDATE deliveries AS d SET status = 'sent', gateway = v.g, provider_id = v.p, parts = v.n, sent_at = v.t, "
    "lease_until = NULL, error_code = NULL, error = NULL FROM unnest(CAST(:i AS integer[]), CAST(:g AS text[]), "
    "CAST(:p AS text[]), CAST(:n AS integer[]), CAST(:t AS timestamptz[])) AS v(i, g, p, n, t) "
    "WHERE d.id = v.i AND d.status = 'sending'"
)
REPORT_SQL_PG = (
    "UPDATE deliveries AS d SET status = v.s, error_code = COALESCE(v.c, d.error_code), finished_at = v.t "
    "FROM unnest(CAST(:p AS text[]), CAST(:s AS text[]), CAST(:c AS text[]), CAST(:t AS timestamptz[])) "
    "AS v(p, s, c, t) WHERE d.provider_id = v.p AND d.status = 'sent'"
)
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
# A message claimed but never handed to a gateway (the worker is stopping) goes back to the queue.
RELEASE_SQL = (
    "UPDATE deliveries SET status = 'queued', attempts = attempts - 1, lease_until = NULL, claimed_by = NULL "
    f"{_ONLY_SENDING}"
)
UNKNOWN_SQL = (
    "UPDATE deliveries SET status = 'unknown', error = 'lease expired while sending', lease_until = NULL "
    f"{_ONLY_SENDING}"
)
REAP_BATCH = 10_000
EXPIRED_SQL = f"UPDATE deliveries SET status = 'expired', finished_at = :t, lease_until = NULL {_ONLY_SENDING}"
REPORT_SQL = (
    "UPDATE deliveries SET status = :s, error_code = COALESCE(:c, error_code), finished_at = :t "
    "WHERE provider_id = :p AND status = 'sent'"
)
_CLAIM_PARAMS = [
    bindparam("now", type_=UtcDateTime()),
    bindparam("lease", type_=UtcDateTime()),
    bindparam("channels", expanding=True),
]
CHANNELS = ("sms", "zalo", "zalo_then_sms")
URGENT, NORMAL = 1, 0


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker now holds under its lease."""

    id: int
    blast_id: int
    alert_slug: str
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


class SharedRateLimiter(RateLimiter):
    """A RateLimiter whose schedule lives in the database, so every worker sharing a gateway shares it.

    Each chunk reserves its slot with one atomic UPDATE of the `rate_buckets` row (pushing
    `next_free` on by weight / rate) and then sleeps until its slot: the slots of all workers
    form one evenly spaced schedule, so the limit holds for their sum. Slots are wall-clock
    epoch seconds: workers on several machines need synchronised clocks (NTP).
    """

    def __init__(
        self, engine: Engine, name: str, rate: float, sleep: Sleep, wallclock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(rate, sleep, wallclock)
        self.engine = engine
        self.name = name
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        with engine.begin() as conn:
            conn.execute(dialect.insert(rate_buckets).values(name=name, next_free=0.0).on_conflict_do_nothing())
        later = "GREATEST" if engine.dialect.name == "postgresql" else "MAX"
        self._reserve = text(
            f"UPDATE rate_buckets SET next_free = {later}(next_free, :now) + :step WHERE name = :name "
            "RETURNING next_free - :step"
        )

    async def acquire(self, weight: float) -> None:
        """Reserve the next `weight` units of the shared schedule and wait for their slot.

        Slots are fixed, so a chunk that goes late would share a one-second window with the 20
        chunks due on time after it: a slot missed by more than the schedule's slack (0.5 %) is
        given up and a new one reserved. After a few tries the chunk goes anyway.
        """
        if not self.rate:
            return
        step = weight / self.rate * SPACING
        for _ in range(LATE_RETRIES):
            with self.engine.begin() as conn:
                slot = conn.execute(self._reserve, {"now": self.monotonic(), "step": step, "name": self.name})
                slot = slot.scalar_one()
            wait = slot - self.monotonic()
            if wait > 0:
                await self.sleep(wait)
            if self.monotonic() - slot <= SPACING - 1:
                return


SPACING = 1.005  # slots 0.5 % apart beyond the limit: the slack a chunk may be late by without exceeding it
LATE_RETRIES = 4


@dataclass
class BlastInfo:
    """What the loop needs of a blast, loaded once."""

    id: int
    channel: str
    not_after: datetime | None
    templates: dict[str, catalogue.MessageTemplate]
    limiter: RateLimiter | None
    priority: int = 0


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
    _urgent_running: bool = True  # until housekeeping has looked
    _lease_until: datetime | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0

    async def run(
        self, until_idle: bool = False, stop: asyncio.Event | None = None, on_tick: Callable[[], None] | None = None
    ) -> None:
        """Dispatch until `stop` is set, or, with `until_idle`, until nothing is left to do.

        Idle waits up to `report_wait_seconds` for delivery reports the gateways still expect.
        """
        stop = stop or self.stopping
        self.stopping = stop
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
                self._urgent_running = _urgent_running(conn)
            await self._reap(now)
        claimed = self._claim(now)
        results, expired, released = await self._dispatch(claimed) if claimed else ([], [], [])
        reports = [r for g in self.gateways.values() for r in g.reports(self.clock())]
        with self.engine.begin() as conn:
            self._record(conn, results, expired)
            executemany(conn, RELEASE_SQL, [{"i": row.id} for row in released])
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
        """Nothing due: no message that may go now, none in flight, no blast waiting to start now.

        Messages held by quiet hours are not due: `--until-idle` stops and they wait for the morning.
        """
        now = self.clock()
        d = deliveries.c
        b = blasts.c
        may_go = and_(d.status == DeliveryStatus.QUEUED.value, d.next_attempt_at <= now, self._sendable(now))
        due = or_(may_go, d.status == DeliveryStatus.SENDING.value)
        with self.engine.connect() as conn:
            waiting = conn.execute(
                select(d.id).join(blasts, b.id == d.blast_id).where(b.state == BlastState.RUNNING.value, due).limit(1)
            ).first()
            starting = conn.execute(
                select(b.id).where(b.state == BlastState.SCHEDULED.value, b.start_at <= now).limit(1)
            ).first()
        return waiting is None and starting is None

    def _sendable(self, now: datetime) -> Any:
        """SQL: the row's blast may send at `now` (its channel is outside quiet hours, or it is urgent and allowed)."""
        normal = blasts.c.channel.in_(self._channels(NORMAL, now))
        return or_(normal, and_(blasts.c.priority == URGENT, blasts.c.channel.in_(self._channels(URGENT, now))))

    def _channels(self, priority: int, now: datetime) -> tuple[str, ...]:
        """The blast channels a message of `priority` may go on at `now`."""
        if priority == URGENT and self.settings.policy.urgent_in_quiet_hours:
            return CHANNELS
        return open_channels(self.settings, CHANNELS, now)

    # -- claiming -------------------------------------------------------------------------

    def _claim(self, now: datetime) -> list[Claimed]:
        """One batch under a lease: urgent messages first, but never the whole batch while normal ones wait."""
        size = self.settings.dispatch.batch_size
        if not self._urgent_running:
            return self._claim_priority(NORMAL, size, now)
        share = max(1, int(size * self.settings.policy.urgent_share))
        urgent = self._claim_priority(URGENT, share, now)
        normal = self._claim_priority(NORMAL, size - len(urgent), now)
        if len(urgent) == share:  # urgent may have more: it takes what normal left of the batch
            urgent += self._claim_priority(URGENT, size - len(urgent) - len(normal), now)
        return urgent + normal

    def _lease_running_out(self) -> bool:
        """Whether the batch's lease is in its last quarter: what is not handed over by then goes back.

        Past its lease a row may be reaped and requeued by another worker; sending it then could
        send it twice, so a slow (rate-limited) batch stops short and releases the rest.
        """
        margin = timedelta(seconds=self.settings.dispatch.lease_seconds / 4)
        return self._lease_until is not None and self.clock() >= self._lease_until - margin

    def _lease_expired(self) -> bool:
        """Whether the batch's lease is over: nothing more of it may be handed over."""
        return self._lease_until is not None and self.clock() >= self._lease_until

    def _claim_priority(self, priority: int, limit: int, now: datetime) -> list[Claimed]:
        channels = self._channels(priority, now)
        if limit <= 0 or not channels:
            return []
        lease = now + timedelta(seconds=self.settings.dispatch.lease_seconds)
        self._lease_until = lease
        statement = CLAIM_POSTGRESQL if self.engine.dialect.name == "postgresql" else CLAIM_SQLITE
        params = {"worker": self.worker_id, "now": now, "lease": lease, "limit": limit, "priority": priority,
                  "channels": list(channels)}  # fmt: skip
        with self.engine.begin() as conn:
            rows = conn.execute(statement.bindparams(*_CLAIM_PARAMS), params).all()
        return [Claimed(*row) for row in rows]

    async def _reap(self, now: datetime) -> None:
        """Rows whose lease ran out while `sending`: settled by their gateway's own account, else `unknown`.

        A gateway that can confirm by our delivery id says whether it accepted the message (then
        it is `sent`) or never saw it (then it goes back to the queue); rows it cannot vouch for
        become `unknown`, never silently resent: they may have gone out.
        """
        d = deliveries.c
        # Only the in-flight index is walked (no join): this runs every second of a busy blast.
        expired = select(d.id, d.carrier, d.blast_id).where(
            d.status == DeliveryStatus.SENDING.value, d.lease_until < now
        )
        with self.engine.connect() as conn:
            rows = conn.execute(expired.limit(REAP_BATCH)).all()
        if not rows:
            return
        by_gateway: dict[str, list[int]] = defaultdict(list)
        for delivery_id, carrier, blast_id in rows:
            by_gateway[self._route(carrier, self._blast(blast_id).channel)].append(delivery_id)
        answers = {name: await confirm(self.gateways[name], ids) for name, ids in by_gateway.items()}
        with self.engine.begin() as conn:
            self._settle_reaped(conn, answers, [row.id for row in rows], now)

    def _settle_reaped(
        self, conn: Any, answers: dict[str, dict[int, SendResult | None]], ids: list[int], now: datetime
    ) -> None:
        t = driver_time(conn.dialect.name, now)
        sent = [{"i": i, "g": name, "p": r.provider_id, "n": r.parts, "t": t}
                for name, found in answers.items() for i, r in found.items() if r is not None]  # fmt: skip
        never = [{"i": i} for found in answers.values() for i, r in found.items() if r is None]
        _update_many(conn, SENT_SQL, sent, SENT_SQL_PG)
        executemany(conn, RELEASE_SQL, never)
        settled = {row["i"] for row in sent + never}
        unknown = [{"i": i} for i in ids if i not in settled]
        executemany(conn, UNKNOWN_SQL, unknown)
        if unknown:
            log.warning("dispatch.leases_expired", deliveries=len(unknown))
        if settled:
            log.info("dispatch.leases_confirmed", sent=len(sent), requeued=len(never))

    # -- sending --------------------------------------------------------------------------

    async def _dispatch(self, claimed: list[Claimed]) -> tuple[list[Any], list[Claimed], list[Claimed]]:
        """Send what was claimed; returns the results, the rows past their not_after and those never handed over."""
        now = self.clock()
        by_gateway: dict[str, list[tuple[Claimed, OutgoingMessage]]] = defaultdict(list)
        expired: list[Claimed] = []
        for row in claimed:
            info = self._blast(row.blast_id)
            if info.not_after is not None and info.not_after <= now:
                expired.append(row)
                continue
            template = info.templates[row.alert_slug]
            text_, measured = template.render(self.regions, row.province_code, row.commune_code)
            channel = "sms" if info.channel == "sms" else "zalo"
            message = OutgoingMessage(
                row.id, row.msisdn, text_, measured.encoding, measured.parts, row.carrier, channel
            )
            by_gateway[self._route(row.carrier, info.channel)].append((row, message))
        outcomes = await asyncio.gather(*(self._send(name, batch) for name, batch in by_gateway.items()))
        results = [result for sent, _ in outcomes for result in sent]
        return results, expired, [row for _, held in outcomes for row in held]

    async def _send(
        self, name: str, batch: list[tuple[Claimed, OutgoingMessage]]
    ) -> tuple[list[tuple[Claimed, OutgoingMessage, str, SendResult | GatewayError]], list[Claimed]]:
        """Hand `batch` to gateway `name` chunk by chunk at its rate; a stop or quiet hours leave the rest unsent."""
        gateway = self.gateways[name]
        messages, per_message = self._limiters_for(name)
        results = []
        paces = [info.limiter.chunk() for info in map(self._blast, {row.blast_id for row, _ in batch}) if info.limiter]
        step = min(messages.chunk(), per_message.chunk(), *paces)
        for start in range(0, len(batch), step):
            if self.stopping.is_set() or self._lease_running_out():
                return results, [row for row, _ in batch[start:]]
            chunk = batch[start : start + step]
            await self._pace(chunk)
            await messages.acquire(len(chunk))
            await per_message.acquire(sum(m.parts for _, m in chunk))
            if self._quiet(chunk) or self._lease_expired():  # the waits ran into the night, or past the lease
                return results, [row for row, _ in batch[start:]]
            outcomes = await gateway.send_batch([m for _, m in chunk])
            results += [(row, m, name, outcome) for (row, m), outcome in zip(chunk, outcomes, strict=True)]
        return results, []

    def _quiet(self, chunk: list[tuple[Claimed, OutgoingMessage]]) -> bool:
        """Whether quiet hours began, while its batch went out, for a blast of `chunk`."""
        now = self.clock()
        infos = map(self._blast, {row.blast_id for row, _ in chunk})
        return any(info.channel not in self._channels(info.priority, now) for info in infos)

    async def _pace(self, chunk: list[tuple[Claimed, OutgoingMessage]]) -> None:
        """Hold a chunk to its blast's own --rate, when the blast set one."""
        info = self._blast(chunk[0][0].blast_id)
        if info.limiter is not None:
            await info.limiter.acquire(len(chunk))

    def _route(self, carrier: str, channel: str) -> str:
        """The first gateway of a message's route (remembered: it is asked for every message)."""
        key = f"{carrier}:{channel}"
        if key not in self._routes:
            self._routes[key] = self.settings.route_for(carrier, channel)[0]
        return self._routes[key]

    def _limiters_for(self, name: str) -> tuple[RateLimiter, RateLimiter]:
        """A gateway's message and part limits, shared through the database with every other worker."""
        if name not in self._limiters:
            limits: GatewayLimits = getattr(self.settings.gateways, name, GatewayLimits())
            self._limiters[name] = (
                self._limiter(f"gateway:{name}", limits.rate),
                self._limiter(f"parts:{name}", limits.parts_rate),
            )
        return self._limiters[name]

    def _limiter(self, name: str, rate: float) -> RateLimiter:
        if not rate:
            return RateLimiter(0, self.sleep)
        return SharedRateLimiter(self.engine, name, rate, self.sleep)

    def _blast(self, blast_id: int) -> BlastInfo:
        """The blast's channel, expiry, templates (one per alert of a rotation) and own rate limit."""
        if blast_id not in self._blasts:
            with self.engine.connect() as conn:
                blast = blast_ops.get(conn, blast_id)
                slug_ids = blast["series"] or [[None, blast["alert_id"]]]
                ids = [alert_id for _, alert_id in slug_ids]
                rows = conn.execute(select(alerts).where(alerts.c.id.in_(ids))).mappings().all()
            templates = {row["slug"]: catalogue.MessageTemplate.of(dict(row), blast["encoding"]) for row in rows}
            limiter = self._limiter(f"blast:{blast_id}", blast["rate"]) if blast["rate"] else None
            self._blasts[blast_id] = BlastInfo(
                blast_id, blast["channel"], blast_ops.utc(blast["not_after"]), templates, limiter, blast["priority"]
            )
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
        _update_many(conn, SENT_SQL, sent, SENT_SQL_PG)
        for rows, sql in ((retry, RETRY_SQL), (failed, FAILED_SQL)):
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


def _urgent_running(conn: Any) -> bool:
    """Whether a running blast is urgent: only then does the claim look for urgent messages."""
    b = blasts.c
    return (
        conn.execute(select(b.id).where(b.state == BlastState.RUNNING.value, b.priority == URGENT).limit(1)).first()
        is not None
    )


def _kind(error: GatewayError) -> str:
    """The attempt outcome an error stands for."""
    if isinstance(error, ThrottledError):
        return "throttled"
    return "temporary" if error.retryable else "permanent"


def apply_reports(conn: Any, reports: Sequence[DeliveryReport]) -> int:
    """Move `sent` deliveries on by provider id; a final state is never overwritten."""
    rows = [{"p": r.provider_id, "s": r.status.value, "c": r.error_code, "t": driver_time(conn.dialect.name, r.at)}
            for r in reports]  # fmt: skip
    return _update_many(conn, REPORT_SQL, rows, REPORT_SQL_PG)


def _update_many(conn: Any, sql: str, rows: list[dict[str, Any]], postgresql_sql: str) -> int:
    """`sql` once per row, or on PostgreSQL `postgresql_sql` once with one array per parameter."""
    if conn.dialect.name != "postgresql" or not rows:
        return executemany(conn, sql, rows)
    arrays = {key: [row[key] for row in rows] for key in rows[0]}
    return conn.execute(text(postgresql_sql).execution_options(preserve_rowcount=True), arrays).rowcount
