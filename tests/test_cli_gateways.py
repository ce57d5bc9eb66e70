"""What operators see: `gateways list` (circuit, rate, last error), `gateways check`, `inbox` and
`log --delivery` (each attempt's gateway, provider id and raw error)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from dispatcher import blasts, db
from dispatcher.config import DatabaseSettings, load_settings
from dispatcher.dispatch import Worker
from dispatcher.gateways.base import TemporaryError
from dispatcher.gateways.fake import FakeGateway
from dispatcher.inbound import receive
from dispatcher.models import deliveries
from dispatcher.segments import SegmentSpec, resolve
from tests.clock import Clock
from tests.conftest import Cli
from tests.world import catalogue, people

ALERT = "gia-danh-cong-an-goi-video"
SECTIONS = """
[gateways.primary]
kind = "simulator"
rate = 50
circuit_cooldown_seconds = 600
[gateways.backup]
kind = "simulator"
[routes]
default = ["primary", "backup"]
"""


@pytest.fixture
def operated(cli: Cli, regions, now: datetime, tmp_path: Path) -> tuple[Cli, Engine, datetime]:
    """Two gateways on one route; a blast ran while the primary's link was down, so the backup carried it."""
    with cli.config.open("a", encoding="utf-8") as config:
        config.write(SECTIONS)
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'canhbao.db'}"))
    people(engine, regions, now, tmp_path, 60, seed=2)
    catalogue(engine, now, [ALERT])
    settings = load_settings(cli.config)
    with engine.begin() as conn:
        segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(ALERT, segment), "liaison", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
    primary = FakeGateway("primary")
    primary.fail_when(lambda m: True, TemporaryError("link down: no route to host", "ESME_RSYSERR"))
    gateways = {"primary": primary, "backup": FakeGateway("backup")}
    clock = Clock(now)

    async def sleep(seconds: float) -> None:  # time passes only while the worker waits (the primary's rate)
        clock.advance(seconds)

    worker = Worker(engine, gateways, settings, regions, clock, "w1", sleep=sleep)
    asyncio.run(worker.run(until_idle=True))
    clock.advance(120)  # past the retries' backoff, within the primary's cool-down
    asyncio.run(worker.run(until_idle=True))
    return cli, engine, now


def test_gateways_list_shows_the_open_circuit_its_routes_rate_and_last_error(operated) -> None:
    """The table says, in Vietnamese and within 80 columns, that the primary is out, until when and why."""
    cli, _, _ = operated
    code, out, _ = cli("gateways", "list")
    assert code == 0 and max(map(len, out.splitlines())) <= 80
    primary = next(line for line in out.splitlines() if "primary" in line)
    assert "tạm ngừng" in primary and "│ 50 " in primary and "default" in primary and "tin/giây" in out
    assert "ESME_RSYSERR" in out


def test_gateways_list_json_gives_each_gateway_its_kind_routes_and_circuit(operated) -> None:
    """--json: one document per gateway, with the circuit's state, its end and the last error."""
    cli, _, _ = operated
    code, document = cli.json("gateways", "list")
    by_name = {g["name"]: g for g in document}
    assert code == 0 and by_name["primary"]["state"] == "open" and by_name["primary"]["trips"] == 1
    assert by_name["primary"]["last_error"] == "ESME_RSYSERR: link down: no route to host"
    assert by_name["backup"] == {**by_name["backup"], "kind": "simulator", "state": "closed", "routes": ["default"]}


def test_log_delivery_shows_each_attempts_gateway_provider_id_and_raw_error(operated) -> None:
    """One delivery's attempts: the primary's error as it gave it, the circuit that passed it over, the backup's id."""
    cli, engine, _ = operated
    with engine.connect() as conn:
        delivery_id = conn.execute(select(deliveries.c.id).where(deliveries.c.status == "sent").limit(1)).scalar_one()
    code, document = cli.json("log", "--delivery", str(delivery_id))
    steps = [(a["gateway"], a["outcome"], a["provider_id"], a["error"]) for a in document["attempts"]]
    assert code == 0 and steps == [
        ("primary", "temporary", None, "ESME_RSYSERR: link down: no route to host"),
        ("primary", "circuit_open", None, "circuit open: ESME_RSYSERR: link down: no route to host"),
        ("backup", "sent", f"fake-{delivery_id}", None),
    ]
    code, out, _ = cli("log", "--delivery", str(delivery_id))
    assert code == 0 and "bỏ qua:" in out and "ngừng" in out and f"fake-{delivery_id}" in out
    assert max(map(len, out.splitlines())) <= 80


def test_log_of_a_delivery_that_does_not_exist_exits_2(cli: Cli) -> None:
    """An unknown delivery id is not_found."""
    code, document = cli.json("log", "--delivery", "999")
    assert code == 2 and document["error"]["code"] == "not_found"


def test_gateways_check_says_what_is_fine_without_sending(cli: Cli) -> None:
    """The hand-off file and the simulator check out; nothing is written to the outbox."""
    code, document = cli.json("gateways", "check")
    assert code == 0 and {g["name"]: g["ok"] for g in document} == {"file": True, "simulator": True}
    assert not (cli.root / "var" / "outbox.jsonl").exists()


def test_gateways_check_says_what_is_wrong_and_exits_1(cli: Cli, tmp_path: Path) -> None:
    """An outbox path that is a folder: the file gateway fails its check, in Vietnamese, and the status is 1."""
    with cli.config.open("a", encoding="utf-8") as config:
        config.write(f'[gateways.file]\npath = "{tmp_path}"\n')
    code, out, _ = cli("gateways", "check", "file")
    assert code == 1 and "lỗi" in out and "là một thư mục" in out


def test_gateways_check_of_an_unknown_gateway_exits_2(cli: Cli) -> None:
    """A name no section gives is not_found."""
    code, document = cli.json("gateways", "check", "viettel")
    assert code == 2 and document["error"]["code"] == "not_found"


def test_inbox_lists_the_texts_kept_with_masked_numbers(cli: Cli, tmp_path: Path) -> None:
    """Texts that were no opt-out, newest first; the sender and numbers written in the text are masked."""
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'canhbao.db'}"))
    with engine.begin() as conn:
        receive(conn, "84905123456", "Gọi lại cho tôi: 0912 345 678", "viettel", datetime(2026, 11, 23, 2, tzinfo=UTC))
    code, out, _ = cli("inbox")
    assert code == 0 and "+8490****456" in out and "0912 345 678" not in out and "viettel" in out
    code, document = cli.json("inbox")
    assert [m["msisdn"] for m in document] == ["+8490****456"] and "raw" not in document[0]
