"""The dispatch loop: claim due deliveries under a lease, render, route, rate-limit, send, record.

Exactly once: a row is marked `sending` (under a claim with a lease, see dispatcher.queue)
before any gateway sees it, and only a gateway's answer moves it on. A worker that dies
mid-send leaves claims whose lease expires; their rows are settled by the gateway's own account
or become `unknown`, never silently resent: an operator decides (`blast resend-unknown`).
Delivery states only move forward; a late or out-of-order report never overwrites a final state.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import structlog
from sqlalchemy import Engine, and_, bindparam, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from dispatcher import alerts as catalogue
from dispatcher import blasts as blast_ops
from dispatcher import health, holds, metrics, queue
from dispatcher.config import GatewayLimits, Settings
from dispatcher.db import driver_time, executemany, reading
from dispatcher.domain import BlastState
from dispatcher.gateways.base import (
    ChannelUnavailableError,
    DeliveryReport,
    Gateway,
    GatewayDisabledError,
    GatewayError,
    InboundMessage,
    NotSentError,
    OptedOutError,
    Outcome,
    OutgoingMessage,
    SendResult,
    TemporaryError,
    ThrottledError,
    UnknownOutcomeError,
    confirm,
    inbound,
    pending_reports,
)
from dispatcher.inbound import receive
from dispatcher.models import (
    UtcDateTime,
    alerts,
    blasts,
    claims,
    delivery_attempts,
    delivery_queue,
    rate_buckets,
    rate_chunks,
    receipt_waits,
)
from dispatcher.policy import open_channels
from dispatcher.regions import RegionIndex
from dispatcher.subscribers import set_opt_out

log = structlog.get_logger(__name__)
HOUSEKEEPING = timedelta(seconds=1)
HOLD_WAITED = 5.0  # a gateway's hold up to this long is waited out by the batch; a longer one sends its rows back
HOLD_POLL = 0.25  # seconds a worker goes on its last reading of a gateway's hold before reading it again
Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

_ONLY_SENDING = "WHERE id = :i AND status = 'sending'"
RETRY_SQL = (
    "UPDATE deliveries SET status = 'queued', gateway = :g, error_code = :c, error = :e, next_attempt_at = :at, "
    f"lease_until = NULL, claimed_by = NULL {_ONLY_SENDING}"
)
FAILED_SQL = (
    "UPDATE deliveries SET status = 'failed', gateway = :g, error_code = :c, error = :e, finished_at = :t, "
    f"lease_until = NULL {_ONLY_SENDING}"
)
# A message claimed but never handed to a gateway (the worker is stopping) goes back to the queue, due now.
RELEASE_SQL = (
    "UPDATE deliveries SET status = 'queued', attempts = attempts - 1, next_attempt_at = :t, lease_until = NULL, "
    f"claimed_by = NULL {_ONLY_SENDING}"
)
# A gateway that could take nothing (no bind) leaves the message queued: no attempt is spent on it.
NOT_SENT_SQL = RETRY_SQL.replace("status = 'queued',", "status = 'queued', attempts = attempts - 1,")
# Handed over and never answered (the link dropped): the provider may have it, so it is never resent on its own.
UNANSWERED_SQL = (
    "UPDATE deliveries SET status = 'unknown', gateway = :g, error_code = :c, error = :e, lease_until = NULL "
    f"{_ONLY_SENDING}"
)
UNKNOWN_SQL = (
    "UPDATE deliveries SET status = 'unknown', error = 'lease expired while sending', lease_until = NULL "
    f"{_ONLY_SENDING}"
)
# A zalo_then_sms message Zalo cannot deliver goes again at once, by SMS (the carrier's route).
FALLBACK_SQL = (
    "UPDATE deliveries SET status = 'queued', channel = 'sms', gateway = :g, error_code = :c, error = :e, "
    f"next_attempt_at = :t, lease_until = NULL, claimed_by = NULL {_ONLY_SENDING}"
)
EXPIRED_SQL = f"UPDATE deliveries SET status = 'expired', finished_at = :t, lease_until = NULL {_ONLY_SENDING}"
CHANNELS = ("sms", "zalo", "zalo_then_sms")
URGENT, NORMAL = 1, 0


class Claimed(NamedTuple):
    """A delivery this worker now holds under its lease (a named tuple: one is made per message)."""

    id: int
    blast_id: int
    alert_id: int
    channel: str | None  # None: the blast's first channel
    msisdn: str
    carrier: str
    province_code: int
    commune_code: int | None
    attempts: int
    due_at: Any  # next_attempt_at as the driver gives it: with the id, the row's place in the queue


Result = tuple[Claimed, OutgoingMessage, str, SendResult | GatewayError]


class RateLimiter:
    """At most `rate` units in any one-second window, summed over every worker sharing `name`.

    Two things in the database make it shared. The `rate_buckets` row is a schedule of evenly
    spaced slots (0.5 % apart beyond the rate): a chunk reserves the next slot with one atomic
    UPDATE and sleeps until it. At its slot the chunk is admitted only if the chunks of the last
    second (`rate_chunks`, each counted from its admission until a second after its send
    returned, and the whole time it is in flight) leave room for it. The carrier may count a
    message at any moment between admission and return, so no second it counts in can hold more
    than the rate, however late the OS runs a worker: lateness only spends the schedule's slack.
    Times are epoch seconds: workers on several machines need synchronised clocks (NTP).
    A rate of 0 is no limit and touches no database.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        rate: float,
        sleep: Sleep,
        wallclock: Callable[[], float] = time.time,
        give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.name = name
        self.rate = rate
        self.sleep = sleep
        self.wallclock = wallclock
        self.give_up = give_up
        if not rate:
            return
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        with engine.begin() as conn:
            conn.execute(dialect.insert(rate_buckets).values(name=name, next_free=0.0).on_conflict_do_nothing())
        later = "GREATEST" if engine.dialect.name == "postgresql" else "MAX"
        self._reserve = text(
            f"UPDATE rate_buckets SET next_free = {later}(next_free, :now) + :step WHERE name = :name "
            "RETURNING next_free - :step"
        )

    def chunk(self) -> int:
        """How many units to release at once: twenty chunks a second."""
        return max(1, int(self.rate // 20)) if self.rate else 1_000_000

    async def acquire(self, weight: float) -> int | None:
        """Wait until `weight` units may go; the ticket to hand to `done` once they went.

        None holds nothing: there is no limit, or the wait ended because `give_up()` said so
        (the worker stops or its lease is over), and the caller, asking the same, sends nothing.
        """
        if not self.rate:
            return None
        with self.engine.begin() as conn:
            step = weight / self.rate * SPACING
            slot = conn.execute(self._reserve, {"now": self.wallclock(), "step": step, "name": self.name})
            slot = slot.scalar_one()
        while True:
            wait = slot - self.wallclock()
            if wait > 0:
                metrics.waited(self.name, wait)
                await self.sleep(wait)
            if self.give_up():
                return None
            ticket, slot = self._admit(weight)
            if ticket is not None:
                return ticket

    def _admit(self, weight: float) -> tuple[int | None, float]:
        """Admit `weight` units now if the last second leaves room: (its ticket, 0), else (None, when to ask again)."""
        c = rate_chunks.c
        with self.engine.begin() as conn:
            # The bucket's row serialises admissions (SQLite: BEGIN IMMEDIATE already has).
            conn.execute(select(rate_buckets.c.name).where(rate_buckets.c.name == self.name).with_for_update())
            now = self.wallclock()
            gone = or_(c.ended_at <= now - 1, and_(c.ended_at.is_(None), c.started_at < now - IN_FLIGHT_LIMIT))
            conn.execute(rate_chunks.delete().where(c.bucket == self.name, gone))
            counted = conn.execute(select(c.weight, c.ended_at).where(c.bucket == self.name)).all()
            excess = sum(w for w, _ in counted) + weight - self.rate
            if excess <= 0 or not counted:  # a chunk above the whole rate goes alone
                values = {"bucket": self.name, "weight": weight, "started_at": now}
                return conn.execute(rate_chunks.insert().values(values).returning(c.id)).scalar_one(), 0.0
        for w, ended in sorted((row for row in counted if row.ended_at is not None), key=lambda row: row.ended_at):
            excess -= w
            if excess <= 0:
                return None, ended + 1
        return None, now + IN_FLIGHT_POLL  # room comes when a chunk in flight returns

    def done(self, ticket: int | None, went: bool = True) -> None:
        """The chunk of `ticket` was handed over (it counts for one more second) or, not `went`, never was."""
        if ticket is None:
            return
        c = rate_chunks.c
        with self.engine.begin() as conn:
            if went:
                conn.execute(rate_chunks.update().where(c.id == ticket).values(ended_at=self.wallclock()))
            else:
                conn.execute(rate_chunks.delete().where(c.id == ticket))


SPACING = 1.005  # slots 0.5 % apart beyond the limit: the slack that makes up for a chunk gone late
IN_FLIGHT_POLL = 0.005  # seconds between asks while only a chunk still in flight stands in the way
IN_FLIGHT_LIMIT = 60.0  # seconds after which a chunk never reported back (its worker died) stops counting


@dataclass
class Routing:
    """One batch's view of the circuits: the gateway each message takes, and why others were passed over.

    A message takes the first gateway of its route whose circuit is closed, or that this worker
    won the probe of (its first `circuit_probe_messages` only). A gateway passed over leaves an
    attempt row `circuit_open` naming its last error; a message whose every gateway is out waits
    (`waiting`) until the first of them may be probed: it does not fail.
    """

    engine: Engine
    health: dict[str, health.Health]
    now: datetime
    lease: datetime
    limits: Callable[[str], GatewayLimits]
    probes: dict[str, int] = field(default_factory=dict)  # gateways this worker probes: messages left
    out: set[str] = field(default_factory=set)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[tuple[Claimed, datetime]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)  # sends per gateway in this batch
    # The gateways' own errors (their attempts are in `attempts`): counted for every message, so a
    # success only adds one to a number (a new Tally per message was ~3 % of the worker CPU at 100,000).
    tallies: dict[str, health.Tally] = field(default_factory=dict)

    def pick(self, row: Claimed, route: list[str], wait: bool = True) -> str | None:
        """The gateway `row` goes through, or None: every one is out, and it waits (in `waiting`) if `wait`."""
        for i, name in enumerate(route):
            if self._admits(name):
                self.skipped += [self._skip(row, passed) for passed in route[:i]]
                return name
        if wait:
            self.waiting.append((row, self._retry_at(route)))
        return None

    def health_of(self, name: str) -> health.Health:
        """The circuit of `name` as this batch read it (closed when it has no row)."""
        found = self.health.get(name)
        if found is None:  # asked for every message: one closed circuit made per batch, not one per message
            found = self.health[name] = health.Health(name)
        return found

    def count(self, name: str, outcome: SendResult | GatewayError) -> None:
        """Add one send's outcome to the tally of `name`: errors of the gateway itself count against it."""
        self.attempts[name] = self.attempts.get(name, 0) + 1
        if not isinstance(outcome, TemporaryError | GatewayDisabledError):
            return  # taken, or refused for the message's own sake: nothing against the gateway
        tally = self.tallies.get(name) or health.Tally()
        disabled = tally.disabled or isinstance(outcome, GatewayDisabledError)
        self.tallies[name] = health.Tally(0, tally.errors + 1, str(outcome)[:300], disabled)

    def tally(self, name: str) -> health.Tally:
        """What the sends of `name` came to in this batch."""
        return replace(self.tallies.get(name) or health.Tally(), attempts=self.attempts.get(name, 0))

    def _admits(self, name: str) -> bool:
        if name in self.probes:
            self.probes[name] -= 1
            return self.probes[name] >= 0
        state = self.health_of(name)
        if name in self.out or state.state is health.CircuitState.CLOSED:
            return name not in self.out
        if state.usable(self.now) and self._take_probe(name):
            self.probes[name] = self.limits(name).circuit_probe_messages - 1
            return True
        self.out.add(name)
        return False

    def _take_probe(self, name: str) -> bool:
        with self.engine.begin() as conn:
            won = health.take_probe(conn, name, self.now, self.lease)
        if won:
            log.info("gateway.circuit_probing", gateway=name)
        return won

    def _skip(self, row: Claimed, name: str) -> dict[str, Any]:
        """The attempt row saying the message did not go through `name`, and why."""
        why = f"circuit open: {self.health_of(name).last_error or '-'}"[:300]
        return {"delivery_id": row.id, "attempt": row.attempts, "gateway": name, "at": self.now, "error": why,
                "outcome": "circuit_open", "provider_id": None, "parts": None, "error_code": None}  # fmt: skip

    def _retry_at(self, route: list[str]) -> datetime:
        """When a message whose every gateway is out is due again: the first cool-down's end (a probe: soon)."""
        soon = self.now + timedelta(seconds=1)
        ends = [self.health_of(name).until or soon for name in route]
        return max(self.now, min(until if self.health_of(name).state is health.CircuitState.OPEN else soon
                                 for name, until in zip(route, ends, strict=True)))  # fmt: skip


@dataclass
class BlastInfo:
    """What the loop needs of a blast, loaded once."""

    id: int
    channel: str
    not_after: datetime | None
    templates: dict[int, catalogue.MessageTemplate]  # by alert id
    limiter: RateLimiter | None
    priority: int = 0


@dataclass
class Batch:
    """One claimed batch once handed over: what recording it needs."""

    results: list[Result]
    expired: list[Claimed]
    released: list[Claimed]
    claim_ids: list[int]
    routing: Routing | None  # None: nothing was claimed
    claimed: int  # rows claimed; fewer than a whole batch: the end of what is due

    def clean(self) -> bool:
        """Every message taken, and no circuit in play: its record may wait for the next batch (see `Worker.run`)."""
        r = self.routing
        if r is None or self.expired or self.released or r.skipped or r.waiting or r.probes or r.tallies:
            return False
        return all(isinstance(outcome, SendResult) for *_, outcome in self.results)


@dataclass
class Unrecorded:
    """Batches handed over and not yet recorded, with the reports and texts the gateways gave meanwhile."""

    batches: list[Batch] = field(default_factory=list)
    reports: list[DeliveryReport] = field(default_factory=list)
    texts: list[tuple[str, InboundMessage]] = field(default_factory=list)


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
    _routes: dict[str, list[str]] = field(default_factory=dict)
    _holds: dict[str, tuple[float, float]] = field(default_factory=dict)  # per gateway: (read at, hold ends)
    _unrecorded: Unrecorded = field(default_factory=Unrecorded)  # sent, recorded while the next batch goes
    _last_housekeeping: datetime | None = None
    _last_claimed: int = 0
    _urgent_running: bool = True  # until housekeeping has looked
    _lease_until: datetime | None = None
    _after: dict[int, queue.Key] = field(default_factory=dict)  # per priority: the last queue key claimed
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0

    async def run(
        self, until_idle: bool = False, stop: asyncio.Event | None = None, on_tick: Callable[[], None] | None = None
    ) -> None:
        """Dispatch until `stop` is set, or, with `until_idle`, until nothing is left to do.

        Batches go out back to back: a batch every message of which was taken is recorded on a
        thread of its own while the next one is claimed and sent (sqlite3 and psycopg leave the
        GIL inside their statements), one record at most in flight. Whatever ends the loop waits
        for it. Idle waits up to `report_wait_seconds` for delivery reports the gateways still expect.
        """
        stop = stop or self.stopping
        self.stopping = stop
        quiet_since: float | None = None
        try:
            while not stop.is_set():
                if on_tick:
                    on_tick()
                try:
                    busy = await self._step(pipelined=True)
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
        finally:
            self._flush()

    def _flush(self) -> None:
        """Record what went out and is not recorded yet; if the database will not take it, the reaper settles it."""
        batches = len(self._unrecorded.batches)
        if not batches:
            return
        try:
            self._write(self._take())
        except OperationalError as exc:
            log.warning("dispatch.unrecorded", error=str(exc.orig), batches=batches)

    def _reports_expected(self) -> bool:
        return any(pending_reports(gateway) for gateway in self.gateways.values())

    async def tick(self) -> bool:
        """Start due blasts, reap dead leases, send one batch, record it with the reports; True if it sent."""
        return await self._step(pipelined=False)

    async def _step(self, pipelined: bool) -> bool:
        """One batch claimed and sent while the one before is recorded; recorded itself unless `pipelined`
        and clean (then it is the next step's, or `_flush`'s). True if it sent."""
        now = self.clock()
        if self._housekeeping_due(now):  # no record is in flight here: each step waits for its own
            with self.engine.begin() as conn:
                blast_ops.start_due(conn, self.settings, now)
                self._urgent_running = _urgent_running(conn)
                waited = self.settings.dispatch.receipt_timeout_seconds
                queue.enqueue_ids(conn, queue.fall_back_unconfirmed(conn, now, waited))
            await self._reap(now)
        # On a thread: SQLite's work for it leaves the loop free to take the last batch's answers and receipts.
        claimed, claim_ids = await asyncio.to_thread(self._claim, now)
        pending, recording = None, None
        if claimed and self._unrecorded.batches:
            pending = self._take()
            recording = asyncio.ensure_future(asyncio.to_thread(self._write, pending))
        try:
            batch = await self._dispatch(claimed, claim_ids)
        finally:
            failed = await self._recorded(recording, pending) if recording is not None else None
        self._unrecorded.batches.append(batch)
        if failed is not None:  # kept, with this batch, for the next step to record
            raise failed
        if not (pipelined and batch.clean()):
            self._write(self._take())
        self._last_claimed = len(claimed)
        return bool(claimed)

    async def _recorded(self, recording: asyncio.Future[None], pending: Unrecorded | None) -> Exception | None:
        """Wait for the record in flight; when it failed, what it held is kept to be recorded again."""
        try:
            await recording
        except Exception as exc:
            assert pending is not None
            pending.batches += self._unrecorded.batches
            self._unrecorded = pending
            return exc
        return None

    def _take(self) -> Unrecorded:
        """What waits to be recorded, with the reports and texts the gateways hold (asked on the loop's thread)."""
        pending, self._unrecorded = self._unrecorded, Unrecorded()
        pending.reports += [r if r.gateway else replace(r, gateway=name)  # ids are the gateway's: a report names it
                            for name, g in self.gateways.items() for r in g.reports(self.clock())]  # fmt: skip
        pending.texts += [(g.name, m) for g in self.gateways.values() for m in inbound(g, self.clock())]
        return pending

    def _write(self, pending: Unrecorded) -> None:
        """Record `pending` in one transaction (its batches, the reports, people's texts), then the circuits."""
        sent = 0
        with self.engine.begin() as conn:
            for batch in pending.batches:
                sent += self._record(conn, batch.results, batch.expired, batch.routing)
                self._release(conn, batch.released, batch.routing)
                queue.drop(conn, batch.claim_ids)
            queue.apply_reports(conn, pending.reports)
            for name, m in pending.texts:  # what people sent us: opt-outs and texts for the inbox
                receive(conn, m.msisdn, m.text, m.gateway or name, m.at, m.raw, m.provider_id)
            if any(batch.claimed < self.settings.dispatch.batch_size for batch in pending.batches):
                self._complete(conn, self.clock())
        self.sent += sent
        for batch in pending.batches:
            self._record_health(batch.routing)

    def _release(self, conn: Any, released: list[Claimed], routing: Routing | None) -> None:
        """Back to the queue, the attempt uncounted: rows never handed over (due now) and rows whose
        every gateway is out (due when the first of them may be tried again)."""
        now = self.clock()
        waiting = routing.waiting if routing else []
        params = [{"i": row.id, "t": driver_time(conn.dialect.name, due)}
                  for row, due in [(row, now) for row in released] + waiting]  # fmt: skip
        executemany(conn, RELEASE_SQL, params)
        queue.enqueue_ids(conn, [p["i"] for p in params])

    def _housekeeping_due(self, now: datetime) -> bool:
        """Starting blasts and reaping leases: every tick when quiet, once a second when busy."""
        if self._last_housekeeping is None or not self._last_claimed or now - self._last_housekeeping >= HOUSEKEEPING:
            self._last_housekeeping = now
            # Claims go on past the last queue row taken (see queue.claim); once a second they start
            # from the beginning: rows of a blast resumed meanwhile may lie behind, and the walk
            # marks the entries of claimed rows dead, so that the next walks skip them cheaply.
            self._after.clear()
            return True
        return False

    def idle(self) -> bool:
        """Nothing due: no message that may go now, none in flight, none waiting for Zalo's receipt
        (it may yet go by SMS), no blast waiting to start now.

        Messages held by quiet hours are not due: `--until-idle` stops and they wait for the morning.
        """
        now = self.clock()
        q, b = delivery_queue.c, blasts.c
        running = b.state == BlastState.RUNNING.value
        may_go = select(q.delivery_id).join(blasts, b.id == q.blast_id).where(running, q.due_at <= now,
                                                                              self._sendable(now))  # fmt: skip
        in_flight = select(claims.c.id).join(blasts, b.id == claims.c.blast_id).where(running)
        unconfirmed = select(receipt_waits.c.delivery_id).join(blasts, b.id == receipt_waits.c.blast_id).where(running)
        starting = select(b.id).where(b.state == BlastState.SCHEDULED.value, b.start_at <= now)
        with self.engine.connect() as conn:
            return all(conn.execute(query.limit(1)).first() is None
                       for query in (may_go, in_flight, unconfirmed, starting))  # fmt: skip

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

    def _claim(self, now: datetime) -> tuple[list[Claimed], list[int]]:
        """One batch under a lease: urgent messages first, but never the whole batch while normal ones wait.

        Returns the rows and the ids of the claims that hold them.
        """
        size = self.settings.dispatch.batch_size
        claim_ids: list[int] = []
        if not self._urgent_running:
            return self._claim_priority(NORMAL, size, now, claim_ids), claim_ids
        share = max(1, int(size * self.settings.policy.urgent_share))
        urgent = self._claim_priority(URGENT, share, now, claim_ids)
        normal = self._claim_priority(NORMAL, size - len(urgent), now, claim_ids)
        if len(urgent) == share:  # urgent may have more: it takes what normal left of the batch
            urgent += self._claim_priority(URGENT, size - len(urgent) - len(normal), now, claim_ids)
        return urgent + normal, claim_ids

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

    def _claim_priority(self, priority: int, limit: int, now: datetime, claim_ids: list[int]) -> list[Claimed]:
        channels = self._channels(priority, now)
        if limit <= 0 or not channels:
            return []
        lease = now + timedelta(seconds=self.settings.dispatch.lease_seconds)
        self._lease_until = lease
        with self.engine.begin() as conn:
            rows, opened = queue.claim(conn, self.worker_id, now, lease, priority, channels, limit,
                                       self._after.get(priority))  # fmt: skip
        claim_ids += opened
        claimed = list(map(Claimed._make, rows))
        if len(claimed) < limit:  # the end of what is due, or of what lies past the key: from the start next time
            self._after.pop(priority, None)
        else:
            self._after[priority] = max((row.due_at, row.id) for row in claimed)
        return claimed

    async def _reap(self, now: datetime) -> None:
        """Rows whose lease ran out while `sending`: settled by their gateway's own account, else `unknown`.

        A gateway that can confirm by our delivery id says whether it accepted the message (then
        it is `sent`) or never saw it (then it goes back to the queue); rows it cannot vouch for
        become `unknown`, never silently resent: they may have gone out.
        """
        # Only the claims table is read (a few rows per worker): this runs every second of a busy blast.
        lease = now + timedelta(seconds=self.settings.dispatch.lease_seconds)
        with self.engine.begin() as conn:
            taken = queue.take_expired(conn, self.worker_id, now, lease)
        if not taken:
            return
        with self.engine.connect() as conn:
            rows = queue.in_flight(conn, [i for _, ids in taken for i in ids])
        # Failover may have sent it through any gateway of its route: each of them is asked.
        asked = {i: self._route(carrier, _channel(channel, self._blast(blast_id).channel))
                 for i, carrier, blast_id, channel in rows}  # fmt: skip
        by_gateway: dict[str, list[int]] = defaultdict(list)
        for delivery_id, names in asked.items():
            for name in names:
                by_gateway[name].append(delivery_id)
        answers = {name: await confirm(self.gateways[name], ids) for name, ids in by_gateway.items()}
        with self.engine.begin() as conn:
            self._settle_reaped(conn, _merged(answers, asked), [row.id for row in rows], now)
            queue.drop(conn, [claim_id for claim_id, _ in taken])

    def _settle_reaped(
        self, conn: Any, answers: dict[str, dict[int, SendResult | None]], ids: list[int], now: datetime
    ) -> None:
        sent = 0
        for name, found in answers.items():
            sent += queue.record_sent(
                conn, name, now, [(i, r.provider_id, r.parts) for i, r in found.items() if r is not None]
            )
        never = [i for found in answers.values() for i, r in found.items() if r is None]
        executemany(conn, RELEASE_SQL, [{"i": i, "t": driver_time(conn.dialect.name, now)} for i in never])
        queue.enqueue_ids(conn, never)
        settled = {i for found in answers.values() for i in found}
        unknown = [{"i": i} for i in ids if i not in settled]
        executemany(conn, UNKNOWN_SQL, unknown)
        if unknown:
            log.warning("dispatch.leases_expired", deliveries=len(unknown))
            queue.apply_named(conn, [row["i"] for row in unknown])  # receipts that came while they were sending
        if settled:
            log.info("dispatch.leases_confirmed", sent=sent, requeued=len(never))

    # -- sending --------------------------------------------------------------------------

    async def _dispatch(self, claimed: list[Claimed], claim_ids: list[int]) -> Batch:
        """Send what was claimed: the results, the rows past their not_after and those never handed over."""
        if not claimed:
            return Batch([], [], [], claim_ids, None, 0)
        now = self.clock()
        routing = self._load_routing(now)
        by_gateway: dict[str, list[tuple[Claimed, OutgoingMessage]]] = defaultdict(list)
        expired: list[Claimed] = []
        unsent: list[Result] = []
        for row in claimed:
            info = self._blast(row.blast_id)
            if info.not_after is not None and info.not_after <= now:
                expired.append(row)
                continue
            template = info.templates[row.alert_id]
            text_, measured = template.render(self.regions, row.province_code, row.commune_code)
            channel = _channel(row.channel, info.channel)
            zalo = template.zalo(self.regions, row.province_code, row.commune_code) if channel == "zalo" else None
            message = OutgoingMessage(
                row.id, row.msisdn, text_, measured.encoding, measured.parts, row.carrier, channel, zalo,
                not_after=info.not_after,
            )  # fmt: skip
            route = self._route(row.carrier, channel)
            by_sms = channel == "zalo" and info.channel == "zalo_then_sms"  # Zalo all out: it goes by SMS, not waits
            name = routing.pick(row, route, wait=not by_sms)
            if name is not None:
                by_gateway[name].append((row, message))
            elif by_sms:
                unsent.append((row, message, route[0], ChannelUnavailableError("every Zalo gateway is out", "circuit")))
        outcomes = await asyncio.gather(*(self._send(name, batch, routing) for name, batch in by_gateway.items()))
        results = unsent + [result for sent, _ in outcomes for result in sent]
        for _, _, name, outcome in results:  # the circuits' tally, before the batch may be recorded on another thread
            routing.count(name, outcome)
        return Batch(results, expired, [row for _, held in outcomes for row in held], claim_ids, routing, len(claimed))

    async def _send(
        self, name: str, batch: list[tuple[Claimed, OutgoingMessage]], routing: Routing
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
            if left := await self._wait_hold(name):  # the rest waits in the queue, its attempt uncounted
                self._hold_back([row for row, _ in batch[start:]], left, routing)
                return results, []
            chunk = batch[start : start + step]
            own = self._blast(chunk[0][0].blast_id).limiter  # the blast's own --rate, when it set one
            weights = [(own, len(chunk)), (messages, len(chunk)), (per_message, sum(m.parts for _, m in chunk))]
            held = [(limiter, await limiter.acquire(weight)) for limiter, weight in weights if limiter is not None]
            if self._stops_short() or self._quiet(chunk):  # the waits ran into a stop, the night, or past the lease
                for limiter, ticket in held:
                    limiter.done(ticket, went=False)
                return results, [row for row, _ in batch[start:]]
            started = time.perf_counter()
            try:
                outcomes = await gateway.send_batch([m for _, m in chunk])
            except GatewayError as error:  # the whole chunk failed (a bind that cannot be made): each message did
                outcomes = [error] * len(chunk)
            finally:
                metrics.SEND_LATENCY.labels(name).observe(time.perf_counter() - started)
                for limiter, ticket in held:
                    limiter.done(ticket)
            results += [(row, m, name, outcome) for (row, m), outcome in zip(chunk, outcomes, strict=True)]
            self._share_hold(name, outcomes)
        return results, []

    async def _wait_hold(self, name: str) -> float:
        """Wait out a short hold of gateway `name`, whichever worker recorded it; a long one: the seconds left."""
        now = self.clock().timestamp()
        read_at, until = self._holds.get(name, (-HOLD_POLL, 0.0))
        if now - read_at >= HOLD_POLL:  # a read costs ~0.2 ms of CPU: not one per chunk of a fast gateway
            with reading(self.engine) as conn:  # no write lock to read it (SQLite)
                until = holds.until(conn, name)
            self._holds[name] = (now, until)
        left = until - now
        if left > HOLD_WAITED:
            return left
        if left > 0:
            await self.sleep(left)
        return 0.0

    def _hold_back(self, rows: list[Claimed], seconds: float, routing: Routing) -> None:
        """Send `rows` back to the queue, due when their gateway's hold ends (as when every gateway is out)."""
        due = self.clock() + timedelta(seconds=seconds)
        routing.waiting += [(row, due) for row in rows]

    def _share_hold(self, name: str, outcomes: Sequence[Outcome]) -> None:
        """A hold the provider asked of the whole gateway, recorded for every worker of it."""
        asked = [o.hold for o in outcomes if isinstance(o, ThrottledError) and o.hold]
        if asked:
            now = self.clock().timestamp()
            with self.engine.begin() as conn:
                holds.extend(conn, name, now + max(asked))
            self._holds[name] = (now, max(self._holds.get(name, (now, 0.0))[1], now + max(asked)))
            log.warning("dispatch.gateway_held", gateway=name, seconds=max(asked))

    def _quiet(self, chunk: list[tuple[Claimed, OutgoingMessage]]) -> bool:
        """Whether quiet hours began, while its batch went out, for a blast of `chunk`."""
        now = self.clock()
        infos = map(self._blast, {row.blast_id for row, _ in chunk})
        return any(info.channel not in self._channels(info.priority, now) for info in infos)

    def _route(self, carrier: str, channel: str) -> list[str]:
        """The gateways of a message's route, in order (remembered: it is asked for every message)."""
        key = f"{carrier}:{channel}"
        if key not in self._routes:
            self._routes[key] = self.settings.route_for(carrier, channel)
        return self._routes[key]

    def _limits(self, name: str) -> GatewayLimits:
        return self.settings.gateways.get(name) or GatewayLimits()

    def _load_routing(self, now: datetime) -> Routing:
        with reading(self.engine) as conn:  # no write lock: the batch before may be recording
            found = health.load(conn)
        lease = now + timedelta(seconds=self.settings.dispatch.lease_seconds)
        return Routing(self.engine, found, now, lease, self._limits)

    def _record_health(self, routing: Routing | None) -> None:
        """Count the batch's sends in each gateway's circuit, in a short transaction of its own.

        A gateway without errors in its window is not written: a healthy blast costs nothing here,
        and the share of errors is counted from the window's first error.
        """
        tallies = [(name, routing.tally(name)) for name in (routing.attempts if routing else ())
                   if name in routing.tallies or name in routing.probes or routing.health_of(name).errors]  # fmt: skip
        if not tallies or routing is None:
            return
        with self.engine.begin() as conn:
            for name, tally in tallies:
                health.record(conn, name, tally, self.clock(), self._limits(name), name in routing.probes)

    def _limiters_for(self, name: str) -> tuple[RateLimiter, RateLimiter]:
        """A gateway's message and part limits, shared through the database with every other worker."""
        if name not in self._limiters:
            limits = self._limits(name)
            self._limiters[name] = (
                self._limiter(f"gateway:{name}", limits.rate),
                self._limiter(f"parts:{name}", limits.parts_rate),
            )
        return self._limiters[name]

    def _limiter(self, name: str, rate: float) -> RateLimiter:
        return RateLimiter(self.engine, name, rate, self.sleep, lambda: self.clock().timestamp(), self._stops_short)

    def _stops_short(self) -> bool:
        """Whether nothing more of the batch may be handed over: the worker is stopping or its lease is over."""
        return self.stopping.is_set() or self._lease_expired()

    def _blast(self, blast_id: int) -> BlastInfo:
        """The blast's channel, expiry, templates (one per alert of a rotation) and own rate limit."""
        if blast_id not in self._blasts:
            with reading(self.engine) as conn:
                blast = blast_ops.get(conn, blast_id)
                slug_ids = blast["series"] or [[None, blast["alert_id"]]]
                ids = [alert_id for _, alert_id in slug_ids]
                rows = conn.execute(select(alerts).where(alerts.c.id.in_(ids))).mappings().all()
            templates = {row["id"]: catalogue.MessageTemplate.of(dict(row), blast["encoding"]) for row in rows}
            limiter = self._limiter(_blast_bucket(blast_id), blast["rate"]) if blast["rate"] else None
            self._blasts[blast_id] = BlastInfo(
                blast_id, blast["channel"], blast_ops.utc(blast["not_after"]), templates, limiter, blast["priority"]
            )
        return self._blasts[blast_id]

    # -- recording ------------------------------------------------------------------------

    def _record(
        self,
        conn: Any,
        results: Sequence[tuple[Claimed, OutgoingMessage, str, Any]],
        expired: list[Claimed],
        routing: Routing | None = None,
    ) -> int:
        """Every outcome of a batch; a success lives on its delivery row, other attempts get a row of their own.

        Returns how many the gateways took.
        """
        now = self.clock()
        t = driver_time(conn.dialect.name, now)
        sent: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
        parts: dict[str, list[tuple[int, tuple[str, ...]]]] = defaultdict(list)
        retry, failed, fallback, attempts, unsent, unanswered = [], [], [], [], [], []
        for row, message, gateway, outcome in results:
            if isinstance(outcome, SendResult):
                sent[gateway].append((row.id, outcome.provider_id, outcome.parts))
                if outcome.part_ids:
                    parts[gateway].append((row.id, outcome.part_ids))
                continue
            falls_back = self._falls_back(row, message, outcome)
            kind = "fallback" if falls_back else _kind(outcome)
            attempts.append({"delivery_id": row.id, "attempt": row.attempts, "gateway": gateway, "at": now,
                             "outcome": kind, "provider_id": None, "parts": message.parts,
                             "error_code": outcome.code, "error": str(outcome)[:300]})  # fmt: skip
            error = {"i": row.id, "g": gateway, "c": outcome.code, "e": str(outcome)[:300], "t": t}
            if falls_back:
                fallback.append(error)
            elif isinstance(outcome, GatewayDisabledError):  # not the message's fault: it goes another way, or waits
                retry.append({**error, "at": t})
            elif isinstance(outcome, UnknownOutcomeError):
                unanswered.append(error)
            elif isinstance(outcome, NotSentError):
                wait = self._backoff(1, outcome) if outcome.retry_after is None else outcome.retry_after
                later = now + timedelta(seconds=wait)
                unsent.append({**error, "at": driver_time(conn.dialect.name, later)})
            elif outcome.retryable and row.attempts < self.settings.dispatch.max_attempts:
                later = now + timedelta(seconds=self._backoff(row.attempts, outcome))
                retry.append({**error, "at": driver_time(conn.dialect.name, later)})
            else:
                failed.append(error)
        blank = {"provider_id": None, "parts": None, "error_code": None, "error": None}
        attempts += [
            {**blank, "delivery_id": r.id, "attempt": r.attempts, "gateway": "-", "at": now, "outcome": "expired"}
            for r in expired
        ]
        for gateway, accepted in sent.items():
            queue.record_parts(conn, gateway, parts[gateway])  # first: a receipt already in is a part's
            queue.record_sent(conn, gateway, now, accepted)
        self._await_receipts(conn, results, now)
        for rows, sql in ((retry, RETRY_SQL), (failed, FAILED_SQL), (fallback, FALLBACK_SQL), (unsent, NOT_SENT_SQL),
                          (unanswered, UNANSWERED_SQL)):  # fmt: skip
            executemany(conn, sql, rows)
        queue.enqueue_ids(conn, [row["i"] for row in retry + fallback + unsent])
        if unanswered:  # a receipt may have come while they were sending: it says what became of them
            queue.apply_named(conn, [row["i"] for row in unanswered])
        executemany(conn, EXPIRED_SQL, [{"i": r.id, "t": t} for r in expired])
        attempts += routing.skipped if routing is not None else []
        if attempts:
            conn.execute(delivery_attempts.insert(), attempts)
        self._record_refusals(conn, results, now)
        return sum(map(len, sent.values()))

    def _record_refusals(self, conn: Any, results: Sequence[Result], now: datetime) -> None:
        """People a gateway says refused our messages at the provider are opted out here too (Decree 91/2020)."""
        for row, _, gateway, outcome in results:
            if isinstance(outcome, OptedOutError):
                set_opt_out(conn, row.msisdn, True, now, actor=f"gateway:{gateway}")

    def _await_receipts(self, conn: Any, results: Sequence[Result], now: datetime) -> None:
        """Zalo messages of `zalo_then_sms` blasts Zalo accepted go by SMS unless its receipt comes in time."""
        waited = self.settings.dispatch.receipt_timeout_seconds
        if not waited:
            return
        confirmable = [(row.id, row.blast_id) for row, message, _, outcome in results
                       if isinstance(outcome, SendResult) and message.channel == "zalo"
                       and self._blast(row.blast_id).channel == "zalo_then_sms"]  # fmt: skip
        queue.await_receipts(conn, confirmable, now + timedelta(seconds=waited))

    def _falls_back(self, row: Claimed, message: OutgoingMessage, error: GatewayError) -> bool:
        """Whether a Zalo refusal sends the message by SMS instead: only in a `zalo_then_sms` blast, once."""
        return (
            isinstance(error, ChannelUnavailableError)
            and message.channel == "zalo"
            and self._blast(row.blast_id).channel == "zalo_then_sms"
        )

    def _backoff(self, attempts: int, error: GatewayError) -> float:
        """Exponential backoff with jitter; a throttle's retry-after is respected."""
        dispatch = self.settings.dispatch
        delay = min(dispatch.backoff_max_seconds, dispatch.backoff_base_seconds * 2 ** max(0, attempts - 1))
        delay *= self.rng.uniform(0.5, 1.5)
        retry_after = getattr(error, "retry_after", None)  # throttled, or a channel closed until morning
        if retry_after:
            delay = max(delay, retry_after)
        return delay

    # -- reports and completion -----------------------------------------------------------

    def _complete(self, conn: Any, now: datetime) -> None:
        done = (
            conn.execute(
                text(
                    "UPDATE blasts SET state = 'completed', finished_at = :t WHERE state = 'running' AND NOT EXISTS "
                    "(SELECT 1 FROM delivery_queue q WHERE q.blast_id = blasts.id) AND NOT EXISTS "
                    "(SELECT 1 FROM claims c WHERE c.blast_id = blasts.id) AND NOT EXISTS "
                    "(SELECT 1 FROM receipt_waits w WHERE w.blast_id = blasts.id) RETURNING id"
                ).bindparams(bindparam("t", type_=UtcDateTime())),
                {"t": now},
            )
            .scalars()
            .all()
        )
        for blast_id in done:
            log.info("blast.completed", blast_id=blast_id)
            self._blasts.pop(blast_id, None)
        if done:  # a finished blast's own rate limit has nothing more to hold
            names = list(map(_blast_bucket, done))
            conn.execute(rate_chunks.delete().where(rate_chunks.c.bucket.in_(names)))
            conn.execute(rate_buckets.delete().where(rate_buckets.c.name.in_(names)))


def _merged(
    answers: dict[str, dict[int, SendResult | None]], asked: dict[int, list[str]]
) -> dict[str, dict[int, SendResult | None]]:
    """The gateways' accounts of reaped rows, one per row: accepted by the gateway that says so;
    never accepted (None) only when every gateway of its route says so; else left out (unknown)."""
    merged: dict[str, dict[int, SendResult | None]] = defaultdict(dict)
    for delivery_id, names in asked.items():
        found = {name: answers[name][delivery_id] for name in names if delivery_id in answers.get(name, {})}
        accepted = [(name, result) for name, result in found.items() if result is not None]
        if accepted:
            merged[accepted[0][0]][delivery_id] = accepted[0][1]
        elif len(found) == len(names):
            merged[names[0]][delivery_id] = None
    return merged


def _blast_bucket(blast_id: int) -> str:
    """The rate_buckets (and rate_chunks) name of a blast's own --rate."""
    return f"blast:{blast_id}"


def _channel(own: str | None, policy: str) -> str:
    """The channel a message goes on: its own (SMS after Zalo failed), else its blast's first."""
    return own or ("sms" if policy == "sms" else "zalo")


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
    if isinstance(error, GatewayDisabledError):
        return "disabled"
    if isinstance(error, UnknownOutcomeError):
        return "unknown"
    if isinstance(error, NotSentError):
        return "not_sent"
    return "temporary" if error.retryable else "permanent"
