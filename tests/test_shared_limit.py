"""A gateway's rate limit shared through the database: two worker processes together keep to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from dispatcher import blasts, db
from dispatcher.config import DatabaseSettings
from dispatcher.models import deliveries
from tests import pg
from tests.test_dispatch import _blast, _populate, _settings

RATE = 100
# The limiter hands out slots of rate/20 messages on one schedule, 0.5 % apart beyond the rate,
# and gives up a slot it reached too late: what it hands over keeps to the limit. The times
# measured are the simulator's acceptance times, a little after each hand-over and not always
# equally so: one chunk of tolerance covers that jitter, and would still catch a limit per worker
# (twice the rate).
CHUNK = RATE // 20


@pytest.fixture
def pg_engine(pg_server: str) -> Iterator[Engine]:
    """A migrated PostgreSQL database: the shared limit is for workers on a shared server."""
    engine = db.make_engine(DatabaseSettings(url=pg.create_database(pg_server)))
    db.upgrade(engine)
    yield engine
    engine.dispose()


def _worker_env(url: str, record: Path) -> dict[str, str]:
    # Reports arrive at once, stamped with the simulator's own time of acceptance: that stamp
    # (finished_at) times every message, where sent_at is only when its batch was recorded.
    return {**os.environ, "CANHBAO_DATABASE__URL": url, "CANHBAO_ROUTES": '{"default": ["simulator"]}',
            "CANHBAO_GATEWAYS__SIMULATOR__RATE": str(RATE), "CANHBAO_GATEWAYS__SIMULATOR__RECORD_PATH": str(record),
            "CANHBAO_GATEWAYS__SIMULATOR__REPORT_DELAY_MS": "[0, 0]", "CANHBAO_DISPATCH__BATCH_SIZE": "100",
            "CANHBAO_POLICY__QUIET_HOURS": '{"sms": "", "zalo": ""}', "CANHBAO_LOGGING__LEVEL": "warning"}  # fmt: skip


def _busiest_second(times: list[float]) -> int:
    """The most messages in any one-second window opening at a message."""
    times, busiest, start = sorted(times), 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest


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
    # Not a timing assertion: the bound comes from the shared schedule's spacing. A slower machine
    # sends later, not more in a second, so it holds however the two processes are scheduled.
    assert _busiest_second([row.finished_at.timestamp() for row in rows]) <= RATE + CHUNK
