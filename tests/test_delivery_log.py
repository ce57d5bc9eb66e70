"""The delivery log (`canhbao log`, its exports) and the worker's progress and summary."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlalchemy import Engine, create_engine, select, update

from dispatcher import blasts, labels
from dispatcher.config import Settings, load_settings
from dispatcher.delivery_log import BlastsProgress, LogFilter, Place, page, place, read
from dispatcher.dispatch import Worker
from dispatcher.domain import DeliveryStatus
from dispatcher.errors import UsageError
from dispatcher.formats import number
from dispatcher.gateways.base import TemporaryError
from dispatcher.gateways.fake import FakeGateway
from dispatcher.models import blasts as blasts_table
from dispatcher.models import deliveries
from dispatcher.phones import Carrier
from dispatcher.segments import SegmentSpec, resolve
from tests.clock import Clock
from tests.world import catalogue, people

ALERT = "gia-danh-cong-an-goi-video"


async def _no_sleep(_seconds: float) -> None:
    """Time is the test's clock: nothing waits for real."""


def _settings() -> Settings:
    return load_settings(
        None, {"CANHBAO_ROUTES": '{"default": ["fake"]}', "CANHBAO_DISPATCH__REPORT_WAIT_SECONDS": "0"}
    )


def _approved_blast(engine: Engine, regions, settings: Settings, now: datetime) -> int:
    segment = resolve(SegmentSpec(provinces=("Đà Nẵng",)), regions)
    with engine.begin() as conn:
        blast_id, _ = blasts.create(conn, blasts.BlastRequest(ALERT, segment), "liaison", settings, regions, now)
        blasts.approve(conn, blast_id, "chief", now)
    return blast_id


@pytest.fixture
def sent(engine: Engine, regions, now: datetime, tmp_path: Path) -> tuple[Engine, int]:
    """40 people of Đà Nẵng sent one blast through a fake gateway; the first five failed for good."""
    people(engine, regions, now, tmp_path, 40, seed=3)
    catalogue(engine, now, [ALERT])
    settings = _settings()
    blast_id = _approved_blast(engine, regions, settings, now)
    worker = Worker(engine, {"fake": FakeGateway()}, settings, regions, Clock(now), "w1", sleep=_no_sleep)
    asyncio.run(worker.run(until_idle=True))
    with engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.id <= 5).values(status="failed", error_code="E42"))
    return engine, blast_id


# -- reading the log ----------------------------------------------------------------------


def test_the_log_reads_the_rows_asked_for_with_numbers_masked(sent) -> None:
    """Filters narrow the log, rows come oldest first, and no number is in full."""
    engine, blast_id = sent
    with engine.connect() as conn:
        failed = list(read(conn, LogFilter(blast_id=blast_id, status=DeliveryStatus.FAILED)))
        first = list(read(conn, LogFilter(blast_id=blast_id, limit=3)))
        on_viettel = list(read(conn, LogFilter(carrier=Carrier.VIETTEL)))
    assert [row["id"] for row in failed] == [1, 2, 3, 4, 5]
    assert [row["id"] for row in first] == [1, 2, 3]
    assert on_viettel and {row["carrier"] for row in on_viettel} == {"viettel"}
    assert all("****" in row["msisdn"] and len(row["msisdn"]) == 12 for row in failed + on_viettel)


def _pages(conn, log: LogFilter, size: int, **bounds: int) -> list[list[int]]:
    """The ids of every page of `log`, following each page's key to the next."""
    pages, before = [], None
    while True:
        rows, before = page(conn, LogFilter(**{**log.__dict__, "before_id": before}), size, **bounds)
        pages.append([row["id"] for row in rows])
        if before is None:
            return pages


def test_pages_go_newest_first_by_key_and_show_every_row_once(sent) -> None:
    """Following the keys walks the whole log, the whole blast and the whole state, newest first, each row once."""
    engine, blast_id = sent
    with engine.connect() as conn:
        for log in (LogFilter(), LogFilter(blast_id=blast_id), LogFilter(status=DeliveryStatus.FAILED)):
            expected = [row["id"] for row in read(conn, log)][::-1]
            pages = _pages(conn, log, 7)
            assert [i for ids in pages for i in ids] == expected and all(len(ids) <= 7 for ids in pages)


def test_a_rare_filter_gives_a_short_page_that_says_where_the_next_goes_on(sent) -> None:
    """A page reads at most `scan` ids: the five failures among forty come after an empty page that points below it."""
    engine, _ = sent
    with engine.connect() as conn:
        assert _pages(conn, LogFilter(status=DeliveryStatus.FAILED), 50, window=10, scan=20) == [[], [5, 4, 3, 2, 1]]
        first, before = page(conn, LogFilter(status=DeliveryStatus.FAILED), 50, window=10, scan=20)
    assert (first, before) == ([], 21)


def test_a_blast_keeps_the_range_of_its_delivery_ids(sent) -> None:
    """A started blast records its first and last delivery id, the bounds its log is read within."""
    engine, blast_id = sent
    with engine.connect() as conn:
        b = blasts_table.c
        kept = conn.execute(select(b.first_delivery_id, b.last_delivery_id).where(b.id == blast_id)).one()
        ids = conn.execute(select(deliveries.c.id).where(deliveries.c.blast_id == blast_id)).scalars().all()
    assert tuple(kept) == (min(ids), max(ids)) and len(ids) == max(ids) - min(ids) + 1 == 40


def test_a_blast_without_a_known_range_is_read_from_the_whole_log(sent) -> None:
    """A blast whose range of ids was not recorded (started by another path) still shows all its messages."""
    engine, blast_id = sent
    with engine.begin() as conn:
        b = blasts_table.c
        conn.execute(update(blasts_table).where(b.id == blast_id).values(first_delivery_id=None, last_delivery_id=None))
        rows, before = page(conn, LogFilter(blast_id=blast_id))
        missing, _ = page(conn, LogFilter(blast_id=blast_id + 1))
    assert (len(rows), before, missing) == (40, None, [])


def test_the_log_finds_one_number_and_one_gateway(sent) -> None:
    """A number's page holds its messages alone (found through its subscriber); a gateway's, what it carried."""
    engine, _ = sent
    with engine.connect() as conn:
        number, wanted = conn.execute(select(deliveries.c.msisdn, deliveries.c.id).where(deliveries.c.id == 7)).one()
        found, before = page(conn, LogFilter(msisdn=number))
        through_fake, _ = page(conn, LogFilter(gateway="fake"))
        through_other, _ = page(conn, LogFilter(gateway="twilio"))
    assert ([row["id"] for row in found], before) == ([wanted], None) and "****" in found[0]["msisdn"]
    assert len(through_fake) == 40 and through_other == []


@pytest.mark.parametrize(
    ("typed", "status"),
    [("đã gửi", "sent"), ("Da Gui", "sent"), ("lỗi", "failed"), ("loi", "failed"), ("chưa rõ", "unknown"),
     ("không tới được", "undeliverable"), ("đã hủy", "cancelled"), ("delivered", "delivered")],
)  # fmt: skip
def test_a_state_is_read_back_as_shown_or_as_its_code(typed: str, status: str) -> None:
    """`log --status` takes the Vietnamese name a table shows (accents optional) as well as the code."""
    assert labels.parse_delivery_state(typed) == status


def test_a_limit_below_one_is_refused() -> None:
    """A zero or negative row limit is a usage error about the limit (the CLI names --limit), not an empty log."""
    for limit in (0, -5):
        with pytest.raises(UsageError, match=r"Số dòng tối đa phải từ 1") as caught:
            LogFilter(limit=limit)
        assert caught.value.field == "limit"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--export", "pdf"), "Định dạng xuất 'pdf' không có (nhận: csv, xlsx)"),
        (("--export", "xlsx"), "--export xlsx cần --output"),
        (("--limit", "-1"), "--limit: Số dòng tối đa phải từ 1 trở lên"),
        (("--carrier", "Vinafone9"), "Nhà mạng không rõ 'Vinafone9'"),
        (("--status", "gửi rồi"), "Trạng thái tin 'gửi rồi' không có"),
        (("--output", "x.csv"), "--output đi cùng --export"),
    ],
)
def test_the_cli_refuses_a_bad_log_option_with_exit_2(cli, args: tuple[str, ...], message: str) -> None:
    """A log option that cannot work exits 2 with a Vietnamese reason on stderr and nothing on stdout."""
    code, out, err = cli("log", *args)
    assert (code, out) == (2, "")
    assert message in err


# -- exports ------------------------------------------------------------------------------


def send_one_blast(cli, outbox: Path, count: int) -> tuple[int, str, str]:
    """Through the CLI: the catalogue, `count` people of Đà Nẵng and blast 1 to all of them by the file gateway at
    `outbox`, approved by a second person; then the worker's (status, stdout, stderr) of `worker --until-idle`."""
    cli.config.write_text(cli.config.read_text(encoding="utf-8") + f'[gateways.file]\npath = "{outbox}"\n', "utf-8")
    steps = [
        ("police", "alerts", "sync"), ("police", "alerts", "submit", ALERT), ("chief", "alerts", "approve", ALERT),
        ("tester", "subscribers", "generate", "--province", "48", "--count", str(count)),
        ("liaison", "blast", "create", "--alert", ALERT, "--province", "Đà Nẵng", "--audience", "all"),
        ("chief", "blast", "approve", "1"),
    ]  # fmt: skip
    for user, *args in steps:
        assert cli(*args, user=user)[0] == 0, args
    return cli("worker", "--until-idle")


@pytest.fixture
def sent_cli(cli, tmp_path: Path):
    """The CLI's database after one blast of 300 messages went through the file gateway."""
    code, _out, err = send_one_blast(cli, tmp_path / "outbox.jsonl", 300)
    assert code == 0, err
    return cli


def test_a_csv_export_is_made_for_excel(sent_cli) -> None:
    """CSV on stdout: a BOM, Vietnamese headers and labels, local times, every row, numbers masked."""
    code, out, _err = sent_cli("log", "--blast", "1", "--export", "csv")
    assert code == 0 and out.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(out.removeprefix("\ufeff"))))
    assert len(rows) > 50  # the screen's limit does not apply to an export
    assert list(rows[0])[:4] == ["mã tin", "đợt gửi", "số điện thoại", "nhà mạng"]
    assert {row["trạng thái"] for row in rows} == {"đã gửi"}
    assert {row["nhà mạng"] for row in rows} <= {labels.carrier(c) for c in Carrier}
    assert all("****" in row["số điện thoại"] for row in rows)
    _code, document = sent_cli.json("log", "--blast", "1", "--limit", "1")
    sent_at = datetime.fromisoformat(document[0]["sent_at"])  # --json keeps ISO 8601 with its offset
    local = sent_at.astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).replace(tzinfo=None, microsecond=0)
    assert rows[0]["gửi lúc"] == str(local)


def test_an_xlsx_export_is_a_sheet_of_dates_and_labels(sent_cli, tmp_path: Path) -> None:
    """--export xlsx --output writes a sheet with Vietnamese headers, real dates and every row; --json says so."""
    path = tmp_path / "nhat-ky.xlsx"
    code, document = sent_cli.json("log", "--export", "xlsx", "--output", str(path))
    sheet = load_workbook(path, read_only=True)["Nhật ký gửi"]
    rows = list(sheet.iter_rows(values_only=True))
    assert code == 0 and document == {"file": str(path), "format": "xlsx", "rows": len(rows) - 1}
    assert rows[0][:3] == ("mã tin", "đợt gửi", "số điện thoại") and len(rows) > 50
    assert isinstance(rows[1][14], datetime) and rows[1][7] == "đã gửi"
    assert not list(tmp_path.glob(".*.part"))


def test_an_export_into_a_directory_is_refused_and_writes_nothing(sent_cli, tmp_path: Path) -> None:
    """An --output that is a directory is named as one; nothing is left behind."""
    before = set(tmp_path.iterdir())
    code, out, err = sent_cli("log", "--export", "csv", "--output", str(tmp_path))
    assert (code, out) == (2, "")
    assert "là một thư mục" in err
    assert set(tmp_path.iterdir()) == before


def _commune_of_each_delivery(cli) -> dict[int, int]:
    """{delivery id: today's commune code} read straight from the CLI's database."""
    engine = create_engine(f"sqlite:///{cli.root / 'canhbao.db'}")
    with engine.connect() as conn:
        found = dict(conn.execute(select(deliveries.c.id, deliveries.c.commune_code)).all())
    engine.dispose()
    return found


def test_a_former_province_shows_only_the_communes_it_became_and_says_so(sent_cli, regions) -> None:
    """`log --province "Quảng Nam"` lists the deliveries in today's Đà Nẵng communes once Quảng Nam's, with a note."""
    former = {cover.unit.code for cover in regions.resolve("Quảng Nam").communes}
    communes = _commune_of_each_delivery(sent_cli)
    expected = {i for i, commune in communes.items() if commune in former}
    assert 0 < len(expected) < len(communes)  # the generated people live on both sides of the old border
    code, out, err = sent_cli("log", "--province", "Quảng Nam", "--limit", "1000", "--json")
    assert code == 0 and {row["id"] for row in json.loads(out)} == expected
    assert "Quảng Nam (cũ)" in err and "Đà Nẵng" in err
    assert len(sent_cli.json("log", "--province", "Đà Nẵng", "--limit", "1000")[1]) == len(communes)


def test_the_log_narrows_to_one_commune(sent_cli, regions) -> None:
    """`log --commune CODE` lists exactly the deliveries to people of that commune, and no note."""
    communes = _commune_of_each_delivery(sent_cli)
    one = max(set(communes.values()), key=list(communes.values()).count)
    code, out, err = sent_cli("log", "--commune", str(one), "--limit", "1000", "--json")
    assert code == 0 and {row["id"] for row in json.loads(out)} == {i for i, c in communes.items() if c == one}
    assert err == ""


def test_an_old_province_code_that_is_a_province_of_today_is_read_by_name(regions) -> None:
    """'Kiên Giang' (old code 91) is the communes it became, not all of today's An Giang (code 91)."""
    kien_giang, an_giang = place(regions, "Kiên Giang"), place(regions, "An Giang")
    assert an_giang == Place(province_codes=frozenset({91}))
    assert kien_giang.province_codes is None and kien_giang.notes
    assert kien_giang.commune_codes == {cover.unit.code for cover in regions.resolve("Kiên Giang").communes}
    assert kien_giang.commune_codes < {unit.code for unit in regions.communes_by_province[91]}


# -- what fits an 80-column terminal ------------------------------------------------------


@pytest.mark.parametrize("args", [("log", "--limit", "10"), ("blast", "list"), ("alerts", "list")])
def test_tables_fit_80_columns_with_ids_and_numbers_whole(sent_cli, monkeypatch, args: tuple[str, ...]) -> None:
    """At 80 columns no line is wider, nothing is cut with '…', and each id and masked number shows whole."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _err = sent_cli(*args)
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    _code, document = sent_cli.json(*args)
    for row in document if isinstance(document, list) else [document]:
        for key in ("id", "slug", "blast_id", "msisdn"):
            if key in row:
                assert re.search(rf"│ *{re.escape(str(row[key]))} *│", out), (key, row[key])
        if "recipients" in row:
            assert number(row["recipients"]) in out


def test_the_schedule_list_fits_80_columns_without_the_demos_wide_terminal(sent_cli, monkeypatch) -> None:
    """`schedules list` at 80 columns shows each campaign's name and its next runs whole."""
    monkeypatch.setenv("COLUMNS", "80")
    assert sent_cli("schedules", "sync", user="liaison")[0] == 0
    code, out, _err = sent_cli("schedules", "list")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80 and "…" not in out
    for item in sent_cli.json("schedules", "list")[1]:
        assert re.search(rf"│ {item['name']} +│", out)
        assert re.search(r"T\d 09:00 \d\d/\d\d/20\d\d", out)


def test_tables_name_carriers_priorities_and_audiences_in_vietnamese(sent_cli) -> None:
    """Carriers as people write them, priorities, audiences and the price table's default row in Vietnamese."""
    _code, log, _err = sent_cli("log", "--limit", "50")
    _code, alerts, _err = sent_cli("alerts", "list")
    _code, shown, _err = sent_cli("alerts", "show", "viec-nhe-luong-cao")
    assert "Viettel" in log and "viettel" not in log
    assert "khẩn" in alerts and "thường" in alerts and "urgent" not in alerts
    assert "học sinh, sinh viên" in shown and "các mạng khác" in shown and "default" not in shown


# -- the worker ---------------------------------------------------------------------------


def test_progress_counts_the_running_blasts_deliveries_and_a_retry_as_waiting(engine, regions, now, tmp_path) -> None:
    """The bar's total is the blast's deliveries; a message waiting for its retry is not done until it goes."""
    people(engine, regions, now, tmp_path, 30, seed=4)
    catalogue(engine, now, [ALERT])
    settings, clock, fake = _settings(), Clock(now), FakeGateway()
    blast_id = _approved_blast(engine, regions, settings, now)
    fake.fail_next(3, TemporaryError("busy"))
    worker = Worker(engine, {"fake": fake}, settings, regions, clock, "w1", sleep=_no_sleep)
    progress = BlastsProgress(since=now)
    asyncio.run(worker.tick())  # starts the blast and sends one batch: three go back for a retry
    with engine.connect() as conn:
        recipients = blasts.get(conn, blast_id)["recipients"]
        assert progress.refresh(conn) == (recipients - 3, recipients)
    clock.advance(3600)
    asyncio.run(worker.run(until_idle=True))
    with engine.connect() as conn:
        assert progress.refresh(conn) == (recipients, recipients)
        assert progress.by_state(conn) == {"sent": recipients}


def test_the_worker_ends_with_a_vietnamese_summary_and_logs_only_on_stderr(cli, tmp_path: Path) -> None:
    """`worker --until-idle` prints one Vietnamese summary on stdout; its log lines (JSON here) go to stderr."""
    cli.config.write_text(cli.config.read_text(encoding="utf-8").replace('level = "warning"', 'level = "info"'))
    code, out, err = send_one_blast(cli, tmp_path / "outbox.jsonl", 1200)
    _code, status = cli.json("blast", "status", "1")
    sent = sum(status["counts"].values())
    assert code == 0 and len(out.splitlines()) == 1
    assert out.startswith("Xong sau ") and f"đã trao {sent:,} tin".replace(",", ".") in out
    assert f"Đợt 1: đã gửi {sent:,}".replace(",", ".") in out and "tin/giây" in out
    assert '"event": "blast.started"' in err and "{" not in out


def test_a_worker_run_twice_counts_only_what_it_saw(sent_cli) -> None:
    """A second `worker --until-idle` with nothing to send says so: nothing handed over, no blast."""
    code, out, _err = sent_cli("worker", "--until-idle")
    assert code == 0
    assert out.startswith("Xong sau ") and "đã trao 0 tin" in out and "Đợt" not in out


def test_a_resend_counts_its_messages_the_vietnamese_way(cli, tmp_path: Path) -> None:
    """`blast resend-unknown` on 1,000 or more unknown messages says '1.200 tin', not '1,200'."""
    assert send_one_blast(cli, tmp_path / "outbox.jsonl", 1200)[0] == 0
    engine = create_engine(f"sqlite:///{cli.root / 'canhbao.db'}")
    with engine.begin() as conn:  # as a worker killed mid-send leaves them
        unknown = conn.execute(update(deliveries).values(status=DeliveryStatus.UNKNOWN.value)).rowcount
    engine.dispose()
    code, out, _err = cli("blast", "resend-unknown", "1", user="operator")
    assert unknown >= 1000 and code == 0 and f"{number(unknown)} tin 'chưa rõ'" in out and "," not in out
