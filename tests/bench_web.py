"""`python -m tests.bench web`: the console under load while a blast sends (issue #16's figures).

SQLite with ten past blasts of a million people each in the log (10,000,000 deliveries in final
states, spread as a real province's are), `canhbao web` in a process of its own, and 20 browsers
signed in with a session each: they read the delivery log (no filter, a blast, a state, a
carrier, a province, a commune, a gateway, one number; the first page or one up to five pages
deep, by key) and the dashboard, while `canhbao worker --until-idle` sends a 1,000,000-recipient
blast through the zero-latency simulator; then again, on another blast, with each person
reading a page 1-3 s before the next, as people do. The worker's rate is measured alone first,
on a blast of the same size, so its drop under browsing is measured on the same database. Targets:
log pages p95 < 200 ms, dashboard p95 < 300 ms, worker rate down by < 20 %; a blast preview of
1,000,000 recipients < 2 s (the domain's preview, which the console's new-blast form calls).

Making the log takes minutes: with `CANHBAO_BENCH_KEEP=DIR` the database as it stands once the
log is made is kept in DIR (a copy), and a later run starts from that copy instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import String, case, cast, select, text, update

from dispatcher import alerts, blasts, db, users
from dispatcher.config import Settings, load_settings
from dispatcher.models import blasts as blasts_table
from dispatcher.models import deliveries
from dispatcher.regions import RegionIndex
from dispatcher.segments import SegmentSpec, resolve
from tests import bench

CLIENTS = 20
PAST_BLASTS = 10
# Final states of a past blast, per thousand messages: most delivered, a few of every other kind.
STATES = (("delivered", 930), ("failed", 20), ("undeliverable", 30), ("expired", 10), ("unknown", 8), ("cancelled", 2))
THIRD_ALERT = "lay-lai-tien-bi-lua"
FOURTH_ALERT = "viec-nhe-luong-cao"
THINK = (1.0, 3.0)  # seconds a person reads a page before the next, in the second round
UNCAPPED = {"CANHBAO_DISPATCH__CAP_PER_DAY": "100"}
PASSWORD = "mật khẩu đo tải 2026"


def bench_web(regions: RegionIndex, people: int = 1_000_000) -> None:
    """Delivery-log and dashboard latency under 20 browsers, and the worker's rate beside them."""
    print(f"web (SQLite, {PAST_BLASTS * people:,} deliveries in the log, {CLIENTS} signed-in browsers, "
          f"a {people:,}-recipient blast sending)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="canhbao-bench-") as tmp:
        url, settings = _logged(Path(tmp), regions, people)
        _preview(url, settings, regions)
        alone, cpu, wal = _send(url, settings, regions, bench.SECOND_ALERT)
        print(f"  worker alone: {alone:,.0f} msg/s, {cpu:.0f} µs of CPU a message, write-ahead log up to {wal:.0f} MB")
        web = _web(url, Path(tmp))
        with web as base:
            for alert, think in ((THIRD_ALERT, None), (FOURTH_ALERT, THINK)):
                _approve(url, settings, alert)
                timings: dict[str, list[float]] = {}
                cpu = _cpu_seconds(web.process.pid)
                sent = _while_browsing(base, url, think, timings, partial(_send, url, settings, regions, alert))
                cpu = _cpu_seconds(web.process.pid) - cpu
                how = f"think {think[0]:g}-{think[1]:g} s between pages" if think else "no think time"
                print(f"  worker while they browse ({how}): {sent[0]:,.0f} msg/s "
                      f"({(1 - sent[0] / alone) * 100:+.0f} % slower), {sent[1]:.0f} µs of CPU a message, "
                      f"write-ahead log up to {sent[2]:.0f} MB")  # fmt: skip
                requests = sum(len(seconds) for seconds in timings.values())
                print(f"    web process: {cpu:.1f} s of CPU for {requests:,} requests "
                      f"({cpu / max(requests, 1) * 1000:.1f} ms a request)")  # fmt: skip
                for kind, seconds in sorted(timings.items()):
                    print(f"    {kind:<22} {len(seconds):>6,} requests: {_quantiles(seconds)}")
    print("  targets: log pages p95 < 200 ms; dashboard p95 < 300 ms; worker < 20 % slower; preview 1M < 2 s")


def _logged(tmp: Path, regions: RegionIndex, people: int) -> tuple[str, Settings]:
    """(url, settings) of a database in `tmp` with the people and the log of past blasts: made, or copied from KEEP."""
    keep = os.environ.get("CANHBAO_BENCH_KEEP")
    kept = Path(keep) / f"web-{people}.db" if keep else None
    database = tmp / f"blasts-{people}.db"
    url = f"sqlite:///{database}"
    # Ten blasts in two days: a person's cap (3 a day) would hold everyone back from the two measured.
    settings = load_settings(None, {"CANHBAO_DATABASE__URL": url, **UNCAPPED})
    if kept is not None and kept.exists():
        shutil.copyfile(kept, database)
        print(f"  log of {PAST_BLASTS * people:,} deliveries copied from {kept}")
        return url, settings
    bench._world(tmp, regions, people, url)
    started = time.perf_counter()
    _history(url, settings, regions)
    print(f"  log of {PAST_BLASTS * people:,} deliveries made in {time.perf_counter() - started:.0f} s")
    if kept is not None:
        with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the copy is then the whole database
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(database, kept)
    return url, settings


def _while_browsing(base: str, url: str, think: tuple[float, float] | None, timings: dict, send) -> Any:
    """`send()`'s rate while CLIENTS browsers read the console (pausing `think` seconds between pages)."""
    stop = threading.Event()
    browsing = threading.Thread(target=lambda: asyncio.run(_browse(base, url, stop, timings, think)))
    browsing.start()
    try:
        return send()
    finally:
        stop.set()
        browsing.join()


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _approve(url: str, settings: Settings, slug: str) -> None:
    """Alert `slug` submitted and approved, unless it already is."""
    engine = db.make_engine(settings.database)
    with engine.begin() as conn:
        if alerts.latest(conn, slug)["status"] != "approved":
            alerts.submit(conn, slug, "police", datetime.now(UTC))
            alerts.approve(conn, slug, "chief", datetime.now(UTC))
    engine.dispose()


def _history(url: str, settings: Settings, regions: RegionIndex) -> None:
    """Ten blasts to the million, finished two days ago: the first through the domain, nine as copies of its rows."""
    blast_id, _, recipients = bench._scheduled_blast(url, settings, regions)
    engine = db.make_engine(settings.database)
    shares = [(state, sum(n for _, n in STATES[: i + 1])) for i, (state, _) in enumerate(STATES)]
    spread = case(*(((deliveries.c.id * 7919) % 1000 < upto, state) for state, upto in shares))
    then = datetime.now(UTC) - timedelta(days=2)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM delivery_queue"))
        conn.execute(update(deliveries).values(
            status=spread, attempts=1, provider_id="p" + cast(deliveries.c.id, String),
            gateway=case((deliveries.c.carrier == "viettel", "viettel"), else_="simulator"),
            next_attempt_at=then, sent_at=then, finished_at=then,
        ))  # fmt: skip
        times = dict.fromkeys(("start_at", "created_at", "approved_at", "started_at", "finished_at"), then)
        conn.execute(update(blasts_table).where(blasts_table.c.id == blast_id).values(state="completed", **times))
        columns = ", ".join(c.name for c in deliveries.c if c.name not in ("id", "blast_id"))
        for _ in range(2, PAST_BLASTS + 1):
            conn.execute(text(
                "INSERT INTO blasts (alert_id, segment, channel, encoding, start_at, not_after, rate, priority, state,"
                " preview, recipients, created_by, approved_by, created_at, approved_at, started_at, finished_at)"
                " SELECT alert_id, segment, channel, encoding, start_at, not_after, rate, priority, state, preview,"
                " recipients, created_by, approved_by, created_at, approved_at, started_at, finished_at"
                " FROM blasts WHERE id = :b"), {"b": blast_id})  # fmt: skip
            new = conn.execute(text("SELECT max(id) FROM blasts")).scalar_one()
            first = conn.execute(text("SELECT max(id) FROM deliveries")).scalar_one() + 1
            conn.execute(text(
                f"INSERT INTO deliveries (blast_id, {columns}) SELECT :new, {columns} FROM deliveries"
                " WHERE blast_id = :b ORDER BY id"), {"new": new, "b": blast_id})  # fmt: skip
            conn.execute(text("UPDATE blasts SET first_delivery_id = :f, last_delivery_id = :f + :n - 1 WHERE id = :b"),
                         {"f": first, "n": recipients, "b": new})  # fmt: skip
    engine.dispose()


def _preview(url: str, settings: Settings, regions: RegionIndex) -> None:
    """Seconds the domain's preview of a blast to the whole province (a million people) takes."""
    engine = db.make_engine(settings.database)
    request = blasts.BlastRequest(THIRD_ALERT, resolve(SegmentSpec(provinces=("48",)), regions))
    _approve(url, settings, THIRD_ALERT)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        with engine.connect() as conn:
            shown = blasts.preview(conn, request, settings, regions, datetime.now(UTC))
        times.append(time.perf_counter() - started)
    engine.dispose()
    print(f"  preview of {shown['recipients']:,} recipients: {min(times):.2f} s (best of 3), {max(times):.2f} s worst")


def _send(url: str, settings: Settings, regions: RegionIndex, alert: str) -> tuple[float, float, float]:
    """A second `canhbao worker --until-idle` sending a new blast of `alert` to the million: (messages a second,
    µs of the worker's CPU a message, MB the write-ahead log reached meanwhile)."""
    blast_id, _, recipients = bench._scheduled_blast(url, settings, regions, alert)
    wal = Path(url.removeprefix("sqlite:///") + "-wal")
    largest, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            largest[0] = max(largest[0], wal.stat().st_size if wal.exists() else 0)

    watcher = threading.Thread(target=watch)
    watcher.start()
    env = bench._worker_env(url, False, **UNCAPPED)
    worker = subprocess.Popen([sys.executable, "-m", "dispatcher", "worker", "--until-idle"], env=env,
                              stdout=subprocess.DEVNULL)  # fmt: skip
    _, _, usage = os.wait4(worker.pid, 0)
    stop.set()
    watcher.join()
    rate = recipients / max(bench._send_span(url, blast_id), 0.001)  # a small trial sends in one batch
    return rate, (usage.ru_utime + usage.ru_stime) / recipients * 1e6, largest[0] / 2**20


class _web:
    """`canhbao web` on a free loopback port, in a process of its own, with a user to sign in as."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp

    def __enter__(self) -> str:
        engine = db.make_engine(bench._settings(self.url).database)
        with engine.begin() as conn:
            users.add(conn, datetime.now(UTC), "bench", "van-hanh", PASSWORD, frozenset({"operator"}))
        engine.dispose()
        (self.tmp / "none.toml").write_text("", encoding="utf-8")
        env = {**os.environ, **bench.NO_QUIET_HOURS, "CANHBAO_CONFIG": str(self.tmp / "none.toml"),
               "CANHBAO_DATABASE__URL": self.url, "CANHBAO_WEB__SECURE_COOKIES": "false",
               "CANHBAO_LOGGING__LEVEL": "warning", "CANHBAO_ROUTES": '{"default": ["simulator"]}'}  # fmt: skip
        self.process = subprocess.Popen([sys.executable, "-m", "dispatcher", "web", "--port", "0"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        said = (re.search(r"http://127\.0\.0\.1:(\d+)", self.process.stderr.readline()) for _ in range(50))
        return f"http://127.0.0.1:{next(found for found in said if found).group(1)}"

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.communicate(timeout=30)


async def _browse(base: str, url: str, stop: threading.Event, timings: dict[str, list[float]],
                  think: tuple[float, float] | None = None) -> None:  # fmt: skip
    """CLIENTS browsers, each signed in, reading log pages and the dashboard until `stop`."""
    import httpx

    engine = db.make_engine(bench._settings(url).database)
    with engine.connect() as conn:
        numbers = conn.execute(select(deliveries.c.msisdn).where(deliveries.c.id % 100_003 == 1)).scalars().all()
        blast_ids = conn.execute(text("SELECT id FROM blasts")).scalars().all()
    engine.dispose()
    limits = httpx.Limits(max_connections=1)
    async with asyncio.TaskGroup() as group:
        for seed in range(CLIENTS):
            client = httpx.AsyncClient(base_url=base, limits=limits, timeout=60)
            group.create_task(_browser(client, random.Random(seed), numbers, blast_ids, stop, timings, think))


async def _browser(client, rng: random.Random, numbers: list[str], blast_ids: list[int], stop: threading.Event,
                   timings: dict[str, list[float]], think: tuple[float, float] | None) -> None:  # fmt: skip
    """One person: signs in, then reads a page, follows up to five pages of it, looks at the dashboard.

    With `think`, they read each page for a while (uniformly within it) before asking the next.
    """

    async def timed(request, kind: str):
        answer = await _timed(request, kind, timings)
        if think:
            await asyncio.sleep(rng.uniform(*think))
        return answer

    async with client:
        login = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
        await client.post("/login", data={"username": "van-hanh", "password": PASSWORD, "csrf_token": token})
        filters = [{}, {"status": "failed"}, {"status": "unknown"}, {"carrier": "MobiFone"}, {"province": "Đà Nẵng"},
                   {"commune": "Phường Hải Châu"}, {"gateway": "viettel"}]  # fmt: skip
        while not stop.is_set():
            if rng.random() < 0.2:
                await timed(client.get("/"), "dashboard")
                await timed(client.get("/dashboard/live"), "dashboard (refresh)")
                continue
            if rng.random() < 0.1:
                page = await client.get("/deliveries")
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
                form = {"msisdn": rng.choice(numbers), "csrf_token": csrf}
                await timed(client.post("/deliveries/search", data=form), "log: one number")
                continue
            chosen = rng.choice(filters + [{"blast": rng.choice(blast_ids)}])
            kind = "log: " + (next(iter(chosen)) if chosen else "everything")
            params = dict(chosen)
            for _ in range(rng.randint(1, 5)):
                answer = await timed(client.get("/deliveries", params=params), kind)
                found = re.search(r"before=(\d+)", answer.text)
                if not found or stop.is_set():
                    break
                params = {**chosen, "before": found.group(1)}


async def _timed(request, kind: str, timings: dict[str, list[float]]):
    started = time.perf_counter()
    answer = await request
    timings.setdefault(kind if answer.status_code == 200 else f"{kind} ({answer.status_code})", []).append(
        time.perf_counter() - started
    )
    return answer


def _quantiles(seconds: list[float]) -> str:
    cuts = statistics.quantiles(seconds, n=100) if len(seconds) > 1 else seconds * 99
    return f"p50 {cuts[49] * 1000:6.0f} ms, p95 {cuts[94] * 1000:6.0f} ms, p99 {cuts[98] * 1000:6.0f} ms"
