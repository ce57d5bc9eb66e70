"""`canhbao schedules …` and `canhbao serve` from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from dispatcher import blasts
from dispatcher.config import load_settings
from dispatcher.models import deliveries
from dispatcher.segments import SegmentSpec, resolve
from tests.world import catalogue, people

GOOD = """title = "Hằng tuần"
when = "every Monday 09:00"
[segment]
provinces = ["Đà Nẵng"]
[content]
alert = "viec-nhe-luong-cao"
"""


def _schedules(cli, files: dict[str, str]) -> Path:
    folder = cli.root / "schedules"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    with cli.config.open("a", encoding="utf-8") as fh:
        fh.write(f'[scheduler]\nschedules_dir = "{folder}"\n')
    return folder


def test_sync_names_the_file_and_line_of_every_problem(cli) -> None:
    """A bad cron in one file and an unknown alert in another: exit 1, both named with file and line, nothing stored."""
    _schedules(cli, {"a.toml": GOOD.replace("every Monday 09:00", "every blue moon"),
                     "b.toml": GOOD.replace("viec-nhe-luong-cao", "khong-co-mau-nay")})  # fmt: skip
    assert cli("alerts", "sync")[0] == 0
    code, _, err = cli("schedules", "sync")
    assert code == 1
    assert "a.toml:2:" in err and "every blue moon" in err
    assert "b.toml:6:" in err and "khong-co-mau-nay" in err
    assert cli.json("schedules", "list")[1] == []


def test_a_synced_campaign_fires_only_once_a_second_person_approved_it(cli) -> None:
    """sync → pending approval; the syncer cannot approve; another person can; list shows five next runs."""
    _schedules(cli, {"hang-tuan.toml": GOOD})
    cli("alerts", "sync")
    assert cli.json("schedules", "sync", user="lien-lac")[1]["added"] == ["hang-tuan"]
    code, _, err = cli("schedules", "approve", "hang-tuan", user="lien-lac")
    assert code == 2 and "bốn mắt" in err
    assert cli("schedules", "approve", "hang-tuan", user="lanh-dao")[0] == 0
    code, shown = cli.json("schedules", "list")
    assert shown[0]["state"] == "active" and len(shown[0]["next_runs"]) == 5
    assert all(datetime.fromisoformat(t).astimezone().weekday() in (0, 1) for t in shown[0]["next_runs"])


def test_serve_sends_a_timed_blast_and_stops_cleanly_on_sigterm(engine: Engine, regions, tmp_path) -> None:
    """`canhbao serve` starts a timed blast at its time and sends it; SIGTERM mid-blast leaves nothing sending."""
    now = datetime.now().astimezone()
    people(engine, regions, now, tmp_path, 300, seed=3)
    catalogue(engine, now, ["viec-nhe-luong-cao"])
    settings = load_settings(None, {})
    with engine.begin() as conn:
        segment = resolve(SegmentSpec(provinces=("Đà Nẵng",), audiences=("all",)), regions)  # not only its students
        request = blasts.BlastRequest("viec-nhe-luong-cao", segment, start_at=now + timedelta(seconds=2), rate=100)
        blast_id, _ = blasts.create(conn, request, "liaison", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    env = {**os.environ, "CANHBAO_CONFIG": str(tmp_path / "none.toml"), "CANHBAO_LOGGING__FORMAT": "json",
           "CANHBAO_DATABASE__URL": engine.url.render_as_string(hide_password=False),
           "CANHBAO_ROUTES": '{"default": ["simulator"]}', "CANHBAO_GATEWAYS__SIMULATOR__REPORTS": "false",
           "CANHBAO_POLICY__QUIET_HOURS": '{"sms": ""}', "CANHBAO_SCHEDULER__RECONCILE_SECONDS": "0.3"}  # fmt: skip
    serve = subprocess.Popen([sys.executable, "-m", "dispatcher", "serve", "--port", "0"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 180  # a loaded machine takes long to start; a quiet one is done in seconds
    while time.monotonic() < deadline and _statuses(engine, blast_id).count("sent") < 100 and serve.poll() is None:
        time.sleep(0.1)
    if _statuses(engine, blast_id).count("sent") < 100:
        serve.kill()
        pytest.fail(f"serve sent fewer than 100 messages in 180 s: {serve.communicate()[1]}")
    serve.send_signal(signal.SIGTERM)  # mid-blast: 300 messages at 100/s
    _, stderr = serve.communicate(timeout=30)
    assert serve.returncode == 0, stderr
    statuses = _statuses(engine, blast_id)
    assert "sending" not in statuses and statuses.count("sent") >= 100
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "blast.started" and e.get("blast_id") == blast_id for e in events)


def _statuses(engine: Engine, blast_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(deliveries.c.status).where(deliveries.c.blast_id == blast_id)).scalars())


def test_the_schedule_list_names_audiences_carriers_and_channel_in_vietnamese(cli, monkeypatch) -> None:
    """A campaign for students on VinaPhone over Zalo reads so in `schedules list`, not as 'nhóm:student'."""
    campaign = GOOD.replace('when = "every Monday 09:00"\n', 'when = "every Monday 09:00"\nchannel = "zalo"\n')
    campaign = campaign.replace(
        'provinces = ["Đà Nẵng"]\n',
        'provinces = ["Đà Nẵng"]\naudiences = ["student", "người lao động"]\ncarriers = ["vina"]\n',
    )
    _schedules(cli, {"sinh-vien.toml": campaign})
    cli("alerts", "sync")
    assert cli("schedules", "sync")[0] == 0
    monkeypatch.setenv("COLUMNS", "250")  # the whole segment on one line
    code, out, _err = cli("schedules", "list")
    segment = cli.json("schedules", "list")[1][0]["segment"]
    assert segment == ["Đà Nẵng", "đối tượng: học sinh, sinh viên; công nhân, người lao động", "nhà mạng: VinaPhone",
                       "kênh: Zalo"]  # fmt: skip
    assert code == 0 and "; ".join(segment) in out and "nhóm:" not in out


def test_the_scheduler_status_lines_read_in_vietnamese() -> None:
    """What a person at the terminal reads: who leads, a timed blast started, each campaign run at local time."""
    import dispatcher.cli.app  # noqa: F401  (the command modules load through it)
    from dispatcher.cli.schedules import status_line

    zone, run = "Asia/Ho_Chi_Minh", {"schedule": "hang-tuan", "run_at": "2026-12-07T02:00:00+00:00"}
    assert status_line("leading", {"holder": "may-1:42"}, zone).startswith("Bộ lập lịch may-1:42 đang dẫn")
    assert status_line("standby", {"holder": "may-2:7"}, zone).startswith("Bộ lập lịch may-2:7 đang chờ")
    assert status_line("blast_started", {"blast_id": 3}, zone) == "Đã bắt đầu đợt gửi hẹn giờ 3."
    started = status_line("campaign_run", {**run, "outcome": "started", "blast_id": 7}, zone)
    assert started == "Chiến dịch 'hang-tuan' lượt 09:00 07/12/2026: đã bắt đầu đợt gửi 7."
    missed = status_line("campaign_run", {**run, "outcome": "missed", "blast_id": None}, zone)
    assert missed == "Chiến dịch 'hang-tuan' lượt 09:00 07/12/2026: lỡ lượt, không gửi."
