"""What webhooks report, written in small transactions: a request is answered once its report is committed.

Every report that arrives while one transaction commits goes into the next one (group commit):
on SQLite one commit per callback would cap the rate at what the disk syncs, and many threads
writing at once only wait on each other's lock. A report is never acknowledged before it is
stored, so a crash loses nothing the provider will not send again.

Several web processes (`canhbao web --workers N`) each have a writer. On SQLite their
transactions take the write lock in turn (BEGIN IMMEDIATE waits out the busy timeout). On
PostgreSQL two batches may lock the same messages in opposite orders (a duplicate report on each
process); the one PostgreSQL aborts to break the deadlock is written again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from dispatcher import health, queue
from dispatcher.config import GatewayLimits
from dispatcher.gateways.base import DeliveryReport
from dispatcher.subscribers import set_opt_out

log = structlog.get_logger(__name__)

ATTEMPTS = 3  # a batch PostgreSQL aborted to break a deadlock (or a serialization failure) is tried this often
RETRIED_STATES = {"40P01", "40001"}  # deadlock_detected, serialization_failure

# (report, number opted out, gateway, why the gateway must stop, the request's future)
Item = tuple[DeliveryReport | None, str | None, str, str | None, asyncio.Future[None]]


class ReportWriter:
    """Applies delivery reports, refusals (opt-outs a provider told us of) and gateways the provider refused,
    many per transaction; `limits` gives a gateway's circuit settings by name."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        limits: Callable[[str], GatewayLimits | None] = lambda _: None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.limits = limits
        self._waiting: list[Item] = []
        self._flushing: asyncio.Task[None] | None = None

    async def apply(
        self, report: DeliveryReport | None, refusal: str | None, gateway: str, disabled: str | None = None
    ) -> None:
        """Store `report`, opt `refusal` (a number) out and open the circuit of `gateway` if `disabled` says why,
        returning once committed; raises if it could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((report, refusal, gateway, disabled, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await asyncio.to_thread(self._write, batch)
                except Exception as exc:  # the whole transaction is rolled back: every request of it says so
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
        finally:
            self._flushing = None

    def _write(self, batch: list[Item]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._write_once(batch)
            except DBAPIError as exc:
                if attempt == ATTEMPTS or getattr(exc.orig, "sqlstate", None) not in RETRIED_STATES:
                    raise
                log.warning("webhook.write_retried", attempt=attempt, error=str(exc.orig).splitlines()[0])

    def _write_once(self, batch: list[Item]) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
            queue.apply_reports(conn, [report for report, *_ in batch if report is not None])
            for _, refusal, gateway, disabled, _ in batch:
                if refusal:
                    set_opt_out(conn, refusal, True, now, actor=f"gateway:{gateway}")
                if disabled:
                    health.disable(conn, gateway, disabled, now, self.limits(gateway) or GatewayLimits())


def _settle(batch: list[Item], error: Exception | None) -> None:
    for *_, future in batch:
        if future.done():  # its request went away (the client hung up): nothing to tell
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
