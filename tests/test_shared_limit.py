"""A gateway's rate limit shared through the database: workers together keep to it, however late they run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatcher import blasts
from dispatcher.dispatch import IN_FLIGHT_LIMIT, RateLimiter
from dispatcher.models import deliveries, rate_chunks
from tests.test_dispatch import _blast, _populate, _settings
from tests.world import busiest_second

RATE = 100


def _worker_env(url: str, record: Path) -> dict[str, str]:
    # Reports arrive at once, stamped with the simulator's own time of acceptance: that stamp
    # (finished_at) times every message, where sent_at is only when its batch was recorded.
    return {**os.environ, "CANHBAO_DATABASE__URL": url, "CANHBAO_ROUTES": '{"default": ["simulator"]}',
            "CANHBAO_GATEWAYS__SIMULATOR__RATE": str(RATE), "CANHBAO_GATEWAYS__SIMULATOR__RECORD_PATH": str(record),
            "CANHBAO_GATEWAYS__SIMULATOR__REPORT_DELAY_MS": "[0, 0]", "CANHBAO_DISPATCH__BATCH_SIZE": "100",
            "CANHBAO_POLICY__QUIET_HOURS": '{"sms": "", "zalo": ""}', "CANHBAO_LOGGING__LEVEL": "warning"}  # fmt: skip


@pytest.mark.postgres
def test_two_workers_sharing_a_gateway_keep_its_rate_together(pg_engine, regions, now, tmp_path) -> None:
    """Two worker processes on one gateway at 100/s: no second above the limit, both send, each message once."""
    _populate(pg_engine, regions, now, tmp_path, 1600)
    settings, started = _settings(), datetime.now(now.tzinfo)
    blast_id = _blast(pg_engine, regions, settings, started)
    with pg_engine.begin() as conn:
        blasts.start_due(conn, settings, started)  # before the workers: starting it is not what is measured
    url = pg_engine.url.render_as_string(hide_password=False)
    records = [tmp_path / "record-a.jsonl", tmp_path / "record-b.jsonl"]
    command = [sys.executable, "-m", "dispatcher", "worker", "--until-idle"]
    workers = [subprocess.Popen(command, env=_worker_env(url, record), stderr=subprocess.PIPE, text=True)
               for record in records]  # fmt: skip
    for worker in workers:
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 0, stderr

    with pg_engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.status, deliveries.c.finished_at).where(
            deliveries.c.blast_id == blast_id)).all()  # fmt: skip
    shares = [[json.loads(line)["id"] for line in record.read_text().splitlines()] for record in records]
    accepted = shares[0] + shares[1]
    assert len(accepted) == len(set(accepted)) == len(rows) > 1400
    assert {row.id for row in rows} == set(accepted) and {row.status for row in rows} == {"delivered"}
    assert min(map(len, shares)) > len(rows) / 4, f"one worker did the work: {list(map(len, shares))}"
    # Not a timing assertion: a message is counted from its admission until a second after its
    # send returned, and the simulator stamps it in between. A slower machine sends later, not
    # more in a second, so it holds however the two processes are scheduled.
    assert busiest_second([row.finished_at.timestamp() for row in rows]) <= RATE


class FakeTime:
    """Epoch seconds the limiter's sleeps move on; events fire when the time they wait for is passed."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.events: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        target = self.now + seconds
        for at, event in sorted((e for e in self.events if e[0] <= target), key=lambda e: e[0]):
            self.events.remove((at, event))
            self.now = max(self.now, at)
            event()
        self.now = target


def test_a_chunk_counts_while_in_flight_and_for_a_second_after_its_send_returned(engine) -> None:
    """Another worker's chunk of the whole rate, in flight until 1.5 s: the next goes at 2.5 s, not at its slot."""
    clock = FakeTime()
    start = clock.now
    first, second = (RateLimiter(engine, "gateway:simulator", RATE, clock.sleep, clock) for _ in range(2))
    ticket = asyncio.run(first.acquire(RATE))
    clock.events.append((start + 1.5, lambda: first.done(ticket)))
    asyncio.run(second.acquire(1))
    assert clock.now == pytest.approx(start + 2.5, abs=0.01)  # its slot was start + 1.005


def test_a_chunk_never_handed_over_frees_its_room_at_once(engine) -> None:
    """Quiet hours began or the lease ran out after admission: nothing went, so nothing is counted."""
    clock = FakeTime()
    limiter = RateLimiter(engine, "gateway:simulator", RATE, clock.sleep, clock)
    limiter.done(asyncio.run(limiter.acquire(RATE)), went=False)
    with engine.connect() as conn:
        assert conn.execute(select(rate_chunks)).all() == []


def test_the_chunk_of_a_worker_that_died_in_flight_stops_counting(engine) -> None:
    """A worker killed mid-send never reports back: its chunk stops holding room after IN_FLIGHT_LIMIT."""
    clock = FakeTime()
    limiter = RateLimiter(engine, "gateway:simulator", RATE, clock.sleep, clock)
    with engine.begin() as conn:
        conn.execute(rate_chunks.insert().values(bucket="gateway:simulator", weight=RATE,
                                                 started_at=clock.now - IN_FLIGHT_LIMIT - 1))  # fmt: skip
    start = clock.now
    asyncio.run(limiter.acquire(RATE))
    assert clock.now == start
    with engine.connect() as conn:
        assert conn.execute(select(rate_chunks.c.started_at)).scalars().all() == [start]


async def _late_sender(limiter: RateLimiter, chunks: int, rng: random.Random, stamps: list[float]) -> None:
    """Sends `chunks` chunks, each held back by the OS for up to 40 ms after admission, and once more after it."""
    for _ in range(chunks):
        ticket = await limiter.acquire(limiter.chunk())
        await asyncio.sleep(rng.uniform(0, 0.04))
        stamps += [time.time()] * limiter.chunk()  # the carrier counts it here
        await asyncio.sleep(rng.uniform(0, 0.01))
        limiter.done(ticket)


def test_two_workers_held_back_at_random_never_put_more_than_the_rate_in_a_second(engine) -> None:
    """Real time, two limiters on one bucket, random delays between admission and carrier: no second above it."""
    stamps: list[float] = []

    async def both() -> None:
        workers = [RateLimiter(engine, "gateway:simulator", RATE, asyncio.sleep) for _ in range(2)]
        await asyncio.gather(*(_late_sender(w, 20, random.Random(seed), stamps) for seed, w in enumerate(workers)))

    asyncio.run(both())
    assert len(stamps) == 2 * 20 * RATE // 20
    assert busiest_second(stamps) <= RATE
