"""`/metrics`: Prometheus' text format for an operator's token; figures from the database and where things happen."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from dispatcher import blasts
from dispatcher.config import Settings, load_settings
from dispatcher.dispatch import Worker
from dispatcher.gateways.fake import FakeGateway
from dispatcher.segments import SegmentSpec, resolve
from tests.clock import Clock
from tests.web_helpers import anonymous, api_client, make_app
from tests.world import catalogue, people

ALERT = "gia-danh-cong-an-goi-video"


@pytest.fixture
def settings() -> Settings:
    environ = {"CANHBAO_ROUTES": '{"default": ["fake"]}', "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0"}
    return load_settings(None, environ)


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture
def app(engine: Engine, settings: Settings, clock: Clock, regions, now: datetime, tmp_path: Path) -> FastAPI:
    """The app on 40 people of Đà Nẵng and an approved alert (SQLite and PostgreSQL: the figures are SQL)."""
    people(engine, regions, now, tmp_path, 40, seed=3)
    catalogue(engine, now, [ALERT])
    return make_app(settings, engine, clock)


def _scrape(app: FastAPI) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as read by Prometheus' own parser: (name, labels) → value."""
    answer = api_client(app, app.state.engine, "prometheus", "operator").get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}  # fmt: skip


def _sum(found: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


def _started(app: FastAPI, regions, clock: Clock, rate: float | None = None) -> int:
    settings, segment = app.state.settings, resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with app.state.engine.begin() as conn:
        asked = blasts.BlastRequest(ALERT, segment, rate=rate)
        blast_id, _ = blasts.create(conn, asked, "hoa", settings, regions, clock())
        blasts.approve(conn, blast_id, "chief", clock())
        blasts.start_due(conn, settings, clock())
    return blast_id


def test_metrics_need_an_operator_or_admin_token(app: FastAPI) -> None:
    """Anonymous is a 401 problem, a police token a 403; every name starts with canhbao_."""
    assert anonymous(app).get("/metrics").status_code == 401
    assert api_client(app, app.state.engine, "lan", "police").get("/metrics").status_code == 403
    assert all(name.startswith("canhbao_") for name, _ in _scrape(app))


def test_messages_queue_and_circuits_come_from_the_database(app: FastAPI, regions, clock: Clock) -> None:
    """A started blast's 40 queued messages show by state and carrier, as the queue's depth; the gateway is closed."""
    _started(app, regions, clock)
    found = _scrape(app)
    assert _sum(found, "canhbao_messages", state="queued") == 40
    assert _sum(found, "canhbao_messages", carrier="viettel") > 0
    assert found[("canhbao_queue_depth", ())] == 40
    assert found[("canhbao_circuit_state", (("gateway", "fake"), ("state", "closed")))] == 1
    assert found[("canhbao_circuit_state", (("gateway", "fake"), ("state", "open")))] == 0


def test_sends_are_timed_and_rate_limit_waits_counted_where_they_happen(app: FastAPI, regions, clock: Clock) -> None:
    """A worker's run observes the send latency per gateway and counts the waits of a blast's own rate."""
    before = _scrape(app)
    blast_id = _started(app, regions, clock, rate=10)

    async def passing(seconds: float) -> None:
        clock.advance(seconds)

    worker = Worker(app.state.engine, {"fake": FakeGateway()}, app.state.settings, regions, clock, "w1", sleep=passing)
    asyncio.run(worker.run(until_idle=True))
    after = _scrape(app)
    batches = "canhbao_send_latency_seconds_count"
    assert _sum(after, batches, gateway="fake") > _sum(before, batches, gateway="fake")
    waits = "canhbao_rate_limit_waits_total"
    assert _sum(after, waits, limit=f"blast:{blast_id}") > 0
    assert _sum(after, "canhbao_rate_limit_wait_seconds_total", limit=f"blast:{blast_id}") > 0
    assert _sum(after, "canhbao_messages", state="sent") == 40


def test_a_webhook_whose_signature_fails_is_counted(app: FastAPI) -> None:
    """A Zalo call that no configured secret signs is refused with 403 and counted."""
    name = "canhbao_webhook_verifications_failed_total"
    before = _sum(_scrape(app), name, provider="zalo")
    assert anonymous(app).post("/hooks/zalo", content=b"{}").status_code == 403
    assert _sum(_scrape(app), name, provider="zalo") == before + 1


def test_a_separate_worker_serves_its_own_figures_to_prometheus(sqlite_engine: Engine, regions, tmp_path: Path) -> None:
    """`canhbao worker --metrics-port` answers a real scrape over loopback with its send latency while it sends."""
    now = datetime.now(UTC)
    people(sqlite_engine, regions, now, tmp_path, 40, seed=3)
    catalogue(sqlite_engine, now, [ALERT])
    settings = load_settings(None, {})
    with sqlite_engine.begin() as conn:
        segment = resolve(SegmentSpec(provinces=("Đà Nẵng",), audiences=("all",)), regions)
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(ALERT, segment, rate=20), "hoa", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
        blasts.start_due(conn, settings, now)
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    env = {**os.environ, "CANHBAO_CONFIG": str(tmp_path / "none.toml"),
           "CANHBAO_DATABASE__URL": sqlite_engine.url.render_as_string(hide_password=False),
           "CANHBAO_ROUTES": '{"default": ["simulator"]}', "CANHBAO_GATEWAYS__SIMULATOR__REPORTS": "false",
           "CANHBAO_POLICY__QUIET_HOURS": '{"sms": ""}'}  # fmt: skip
    port = _free_port()
    worker = subprocess.Popen([sys.executable, "-m", "dispatcher", "worker", "--metrics-port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        found = _scraped_until_sent(port)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}/metrics" in stderr
    assert _sum(found, "canhbao_send_latency_seconds_count", gateway="simulator") > 0
    assert not any(name == "canhbao_messages" for name, _ in found)  # the database's figures stay with the web face


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _scraped_until_sent(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape the worker like Prometheus, every 0.2 s, until it has timed a send (or 30 s passed)."""
    deadline, found = time.monotonic() + 30, {}
    while time.monotonic() < deadline and not _sum(found, "canhbao_send_latency_seconds_count"):
        time.sleep(0.2)
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except httpx.TransportError:
            continue  # not listening yet
        found = {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for family in text_string_to_metric_families(answer.text) for s in family.samples}  # fmt: skip
    return found
