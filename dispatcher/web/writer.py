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
import threading
from collections.abc import Callable
from datetime import datetime
from queue import SimpleQueue

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
        self._writing = False
        """Whether a batch is with the writing thread (what arrives meanwhile waits for the next one)."""
        self._batches: SimpleQueue[tuple[asyncio.AbstractEventLoop, list[Item]]] = SimpleQueue()
        self._thread: threading.Thread | None = None

    async def apply(
        self, report: DeliveryReport | None, refusal: str | None, gateway: str, disabled: str | None = None
    ) -> None:
        """Store `report`, opt `refusal` (a number) out and open the circuit of `gateway` if `disabled` says why,
        returning once committed; raises if it could not be."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((report, refusal, gateway, disabled, future))
        if not self._writing:
            self._writing = True
            loop.call_soon(self._hand_over, loop)  # soon, not now: the requests read in this round join the batch
        await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give what waits to the writing thread as one batch (on the loop)."""
        if not self._waiting:
            self._writing = False
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="report-writer", daemon=True)
            self._thread.start()
        batch, self._waiting = self._waiting, []
        self._batches.put((loop, batch))

    def _run(self) -> None:
        """The writing thread: one transaction per batch, its requests told on their loop.

        A thread of its own, fed by a queue, rather than `asyncio.to_thread`: the loop never waits on
        an executor's locks (each such wait gave the GIL to the writing thread for a switch interval).
        """
        while True:
            loop, batch = self._batches.get()
            error: Exception | None = None
            try:
                self._write(batch)
            except Exception as exc:  # the whole transaction is rolled back: every request of it says so
                error = exc
            try:
                loop.call_soon_threadsafe(self._written, loop, batch, error)
            except RuntimeError:  # that loop has ended (its server stopped): nobody is waiting any more
                self._writing = False

    def _written(self, loop: asyncio.AbstractEventLoop, batch: list[Item], error: Exception | None) -> None:
        _settle(batch, error)
        self._hand_over(loop)

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
