"""The console's reports page: the domain's report of a picked period, its charts, its downloads, who may see them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select

from dispatcher import db, prepared, reports, rollups
from dispatcher.config import DatabaseSettings, load_settings
from dispatcher.formats import number
from dispatcher.models import delivery_facts, reach_rows, rollup_blasts, rollup_pending, rollup_seen
from dispatcher.regions import RegionIndex
from tests.clock import Clock
from tests.conftest import migrate
from tests.test_reach import fill
from tests.web_helpers import anonymous, make_app, signed_in

AT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # after every blast of the dataset
ROLLED = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # the scheduler's last rollup: 08:30 local
READERS = ("operator", "admin", "approver", "liaison")
FORMATS = {"html": "text/html", "pdf": "application/pdf", "csv": "text/csv", "json": "application/json",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}  # fmt: skip


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, regions: RegionIndex) -> Path:
    """The reports tests' dataset, built once for the module: five blasts to 300 people of Đà Nẵng, June–August 2026."""
    return dataset_file(tmp_path_factory.mktemp("reports"), regions)


def dataset_file(folder: Path, regions: RegionIndex, rolled_up: bool = True) -> Path:
    """A SQLite file in `folder` holding the dataset of tests/test_reach.py (fill), closed and checkpointed;
    rolled up at ROLLED as the scheduler would have, unless not `rolled_up`."""
    path = folder / "canhbao.db"
    migrate(f"sqlite:///{path}")
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    fill(engine, regions, AT, folder)
    if rolled_up:
        rollups.run(engine, "Asia/Ho_Chi_Minh", ROLLED)
    engine.dispose()
    return path


@pytest.fixture(scope="module")
def unrolled(tmp_path_factory: pytest.TempPathFactory, regions: RegionIndex) -> Path:
    """The dataset before any rollup: what a view would write if it rolled up."""
    return dataset_file(tmp_path_factory.mktemp("unrolled"), regions, rolled_up=False)


def _copy(source: Path, folder: Path) -> Iterator[Engine]:
    shutil.copyfile(source, folder / "canhbao.db")
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{folder / 'canhbao.db'}"))
    yield engine
    engine.dispose()


@pytest.fixture
def dataset(filled: Path, tmp_path: Path) -> Iterator[Engine]:
    """A copy of the rolled-up dataset for one test (each test may change it)."""
    yield from _copy(filled, tmp_path)


@pytest.fixture
def fresh(unrolled: Path, tmp_path: Path) -> Iterator[Engine]:
    """A copy of the dataset never rolled up, for one test."""
    yield from _copy(unrolled, tmp_path)


@pytest.fixture
def app(dataset: Engine, regions: RegionIndex) -> FastAPI:
    """The console over the dataset, its clock after every blast."""
    console = make_app(load_settings(None, {}), dataset, Clock(AT))
    console.state.regions = regions
    return console


def _rollup_state(engine: Engine) -> dict[str, object]:
    """What a rollup writes: its tables' sizes and the time of the last run."""
    with engine.connect() as conn:
        sizes = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                 for t in (rollup_blasts, rollup_seen, delivery_facts, rollup_pending, reach_rows)}  # fmt: skip
        return {**sizes, "as_of": rollups.as_of(conn)}


def _domain(engine: Engine, regions: RegionIndex, period: str, province: str | None = None) -> reports.Report:
    with engine.connect() as conn:
        return reports.build(conn, load_settings(None, {}), regions, reports.parse_period(period),
                             reports.scope(regions, province), AT)  # fmt: skip


@pytest.mark.parametrize("role", READERS)
def test_readers_see_the_figures_and_charts_of_the_period(app: FastAPI, dataset: Engine, role: str) -> None:
    """Operators, admins, approvers and liaisons get the period's sections, tables and three inline SVG charts."""
    page = signed_in(app, dataset, f"u-{role}", role).get("/reports", params={"kind": "h2", "year": "2026"})
    assert page.status_code == 200
    assert "6 tháng cuối năm 2026" in page.text and "01/07/2026–31/12/2026" in page.text
    for heading in ("I. Kết quả chung", "II. Độ bao phủ theo nhóm đối tượng", "VII. Xu hướng theo tuần",
                    "Theo nhà mạng", "Các đợt gửi", "Mẫu cảnh báo tới nhiều người nhất"):  # fmt: skip
        assert heading in page.text
    assert page.text.count("<svg") == 3 and "<script" not in page.text.split("</header>", 1)[1]


def test_police_may_not_see_the_page_or_download(app: FastAPI, dataset: Engine) -> None:
    """An officer of police gets 403 for the page and for every download, and no menu link to it."""
    police = signed_in(app, dataset, "cong-an", "police")
    assert police.get("/reports").status_code == 403
    assert police.get("/reports/download", params={"format": "csv"}).status_code == 403
    assert 'href="/reports"' not in police.get("/account").text
    assert anonymous(app).get("/reports", headers={"Accept": "text/html"}).status_code == 303


def test_the_page_shows_the_domain_figures_unchanged(app: FastAPI, dataset: Engine, regions: RegionIndex) -> None:
    """People reached and messages sent on the page are the domain's report of the same period."""
    page = signed_in(app, dataset, "van-hanh", "operator").get("/reports", params={"kind": "year",
                                                                                          "year": "2026"})  # fmt: skip
    expected = _domain(dataset, regions, "2026")
    summary = dict(expected.tables()[0][2])
    cells = re.findall(r"<td>([^<]*)</td><td class=\"num\">([^<]*)</td>", page.text)
    shown = dict(cells)
    assert shown["Số người đã nhận (không trùng)"] == number(summary["Số người đã nhận (không trùng)"])
    assert shown["Tổng số tin"] == number(expected.totals.messages) and expected.totals.messages > 0


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_downloads_with_a_vietnamese_file_name(app: FastAPI, dataset: Engine, fmt: str) -> None:
    """Each format comes as an attachment named after the period with its diacritics, and a không-dấu fallback."""
    operator = signed_in(app, dataset, "van-hanh", "operator")
    answer = operator.get("/reports/download", params={"kind": "quarter", "year": "2026", "quarter": "3",
                                                       "format": fmt})  # fmt: skip
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(FORMATS[fmt])
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="Bao cao quy 3 nam 2026.')
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == f"Báo cáo quý 3 năm 2026.{fmt}"
    magic = {"pdf": b"%PDF", "xlsx": b"PK", "csv": "\ufeff".encode(), "html": b"<!doctype html>", "json": b"{"}
    assert answer.content.startswith(magic[fmt])


def test_the_json_download_is_the_report_the_cli_gives(app: FastAPI, dataset: Engine, regions: RegionIndex,
                                                      ) -> None:  # fmt: skip
    """The JSON download holds the domain's figures for the period and the former province asked for."""
    from dispatcher.report_formats import to_json

    operator = signed_in(app, dataset, "van-hanh", "operator")
    answer = operator.get("/reports/download", params={"kind": "range", "since": "2026-07-01", "until": "2026-07-31",
                                                       "province": "Quảng Nam (cũ)", "format": "json"})  # fmt: skip
    document = json.loads(answer.content)
    expected = to_json(_domain(dataset, regions, "2026-07-01..2026-07-31", "Quảng Nam (cũ)"))
    assert {**document, "generated_at": None} == json.loads(json.dumps({**expected, "generated_at": None}))
    assert "Quảng Nam (cũ)" in unquote(answer.headers["content-disposition"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kind": "range", "since": "2026-08-01", "until": "2026-07-01"}, "ngày cuối trước ngày đầu"),
        ({"kind": "range", "since": "01/07/2026", "until": ""}, "ngày phải viết YYYY-MM-DD"),
        ({"kind": "month", "year": "2026", "month": "13"}, "tháng 13 không có"),
        ({"kind": "year", "year": "hai nghìn"}, "không hiểu được"),
        ({"kind": "week", "year": "2026"}, "Loại kỳ báo cáo &#39;week&#39; không có"),
        ({"kind": "h1", "year": "2026", "province": "Tỉnh Không Có"}, "Không tìm thấy địa danh"),
    ],
)
def test_a_bad_period_or_place_is_refused_with_the_domain_message(app: FastAPI, dataset: Engine, params: dict,
                                                                  message: str) -> None:  # fmt: skip
    """The form comes back with the Vietnamese message and 400; no rollup ran, no file is made."""
    operator = signed_in(app, dataset, "van-hanh", "operator")
    before = _rollup_state(dataset)
    page = operator.get("/reports", params=params)
    assert page.status_code == 400 and message in page.text and 'class="error"' in page.text
    assert 'name="kind"' in page.text and "<svg" not in page.text
    assert operator.get("/reports/download", params={**params, "format": "pdf"}).status_code == 400
    assert _rollup_state(dataset) == before


def test_an_unknown_format_is_refused(app: FastAPI, dataset: Engine) -> None:
    """A download in a format we do not write says which ones exist."""
    answer = signed_in(app, dataset, "van-hanh", "operator").get("/reports/download", params={"format": "docx"})
    assert answer.status_code == 400 and "Định dạng &#39;docx&#39; không có" in answer.text


def test_an_empty_period_says_so_and_keeps_its_tables(app: FastAPI, dataset: Engine) -> None:
    """A quarter with nothing sent shows zeros, the 'nothing sent' notice, the charts and the downloads."""
    page = signed_in(app, dataset, "van-hanh", "operator").get("/reports", params={"kind": "quarter",
                                                                                          "year": "2025"})  # fmt: skip
    assert page.status_code == 200 and "Kỳ này chưa có tin nào được gửi." in page.text
    assert "quý 1 năm 2025" in page.text.lower() and page.text.count("<svg") == 3
    assert "/reports/download?kind=quarter&amp;year=2025&amp;quarter=1&amp;month=1&amp;format=pdf" in page.text


def test_the_page_opens_on_this_years_first_half(app: FastAPI, dataset: Engine) -> None:
    """With nothing picked, the page shows the 6-month report of the current year (the clock's)."""
    page = signed_in(app, dataset, "lanh-dao", "approver").get("/reports")
    assert page.status_code == 200 and "6 tháng đầu năm 2026" in page.text
    assert '<option value="h1" selected>' in page.text and "<option selected>2026</option>" in page.text


def test_a_former_province_notes_the_communes_it_became(app: FastAPI, dataset: Engine) -> None:
    """'Quảng Nam (cũ)' reports the communes it became, and the page says so."""
    page = signed_in(app, dataset, "van-hanh", "operator").get(
        "/reports", params={"kind": "year", "year": "2026", "province": "Quảng Nam (cũ)"})  # fmt: skip
    assert page.status_code == 200 and "nay 78 xã/phường của Thành phố Đà Nẵng" in page.text
    assert '<option value="Tỉnh Quảng Nam (cũ)">' in page.text


def test_the_page_speaks_english_when_asked(app: FastAPI, dataset: Engine) -> None:
    """With the English switch the headings and table titles are English; the figures are the same."""
    operator = signed_in(app, dataset, "van-hanh", "operator")
    operator.cookies.set("lang", "en")
    page = operator.get("/reports", params={"kind": "year", "year": "2026"})
    for text in ("Outreach report", "I. Overall results", "Weekly trend", "By carrier", "Statutory form (PDF)"):
        assert text in page.text


def test_only_the_charts_own_styles_are_let_through(app: FastAPI, dataset: Engine) -> None:
    """The page's policy allows each chart's <style> by its hash, still no inline script and no 'unsafe-inline'."""
    import base64
    import hashlib
    import html

    page = signed_in(app, dataset, "van-hanh", "operator").get("/reports", params={"kind": "year",
                                                                                          "year": "2026"})  # fmt: skip
    policy = page.headers["content-security-policy"]
    styles = re.findall(r"<style[^>]*>(.*?)</style>", page.text, re.DOTALL)
    assert len(styles) == 3 and "unsafe-inline" not in policy and "script-src 'self';" in policy
    for style in styles:
        assert f"'sha256-{base64.b64encode(hashlib.sha256(html.unescape(style).encode()).digest()).decode()}'" in policy


# -- the PDF as a person sees it: pdftoppm (poppler-utils) -------------------------------------


def _poppler() -> None:
    """Skip without poppler-utils, except under CI, where .ci/run installs it and its absence is a failure."""
    if shutil.which("pdftoppm") and shutil.which("pdftotext"):
        return
    if os.environ.get("CI"):
        pytest.fail("pdftoppm not found: .ci/run must install poppler-utils")
    pytest.skip("pdftoppm (poppler-utils) not installed")


def test_the_pdf_renders_as_a4_pages_with_the_form(app: FastAPI, dataset: Engine, tmp_path: Path) -> None:
    """pdftoppm draws A4 pages that are not blank; the text has the title with diacritics, headers, page numbers."""
    _poppler()
    from PIL import Image  # Pillow comes with WeasyPrint

    operator = signed_in(app, dataset, "van-hanh", "operator")
    pdf = tmp_path / "bao-cao.pdf"
    pdf.write_bytes(operator.get("/reports/download", params={"kind": "year", "year": "2026", "format": "pdf"}).content)
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(tmp_path / "trang")], check=True)
    pages = sorted(tmp_path.glob("trang-*.png"))
    assert len(pages) >= 2
    coloured = 0
    for png in pages:
        with Image.open(png) as image:
            assert abs(image.height / image.width - 297 / 210) < 0.01
            assert image.convert("L").getextrema()[0] < 100  # some ink on every page
            rgb = image.convert("RGB").tobytes()
            coloured += any(rgb[i + 2] - rgb[i] > 60 for i in range(0, len(rgb), 3))  # the charts' blue bars
    assert coloured >= 3
    kept = Path(__file__).parent.parent / "var" / "screenshots"
    kept.mkdir(parents=True, exist_ok=True)
    for png in pages:
        shutil.copy(png, kept / f"report-pdf-{png.name}")
    words = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "Kết quả tuyên truyền phòng, chống lừa đảo qua tin nhắn — năm 2026" in " ".join(words.split())
    for header in ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Nơi nhận:", "Chỉ tiêu", "Giá trị", "Nhà mạng", "Số người"):
        assert header in words
    for count in range(1, len(pages) + 1):  # the bottom margin of each page holds its number, alone
        footer = ["pdftotext", "-f", str(count), "-l", str(count), "-x", "0", "-y", "785", "-W", "595", "-H", "57"]
        assert subprocess.run([*footer, str(pdf), "-"], capture_output=True, text=True).stdout.split() == [str(count)]


def _kept(engine: Engine, files: dict[str, bytes]) -> int:
    """Store a prepared 6-month report of 2026 with `files` (as the scheduler's job does, without rendering)."""
    made = prepared.Draft(prepared.Kind.H1, 2026, "", "Toàn bộ địa bàn", reports.parse_period("2026-01-01..2026-05-31"),
                          datetime(2026, 6, 10).date(), AT, prepared.SCHEDULER, files)  # fmt: skip
    with engine.begin() as conn:
        return prepared.store(conn, made).id


def test_the_prepared_reports_are_listed_and_download_byte_for_byte(app: FastAPI, dataset: Engine) -> None:
    """A prepared report shows with its period, deadline and who prepared it; each file downloads as it was kept."""
    report_id = _kept(dataset, {"pdf": b"%PDF-1.7 kept", "json": b'{"kept": true}'})
    operator = signed_in(app, dataset, "van-hanh", "operator")
    page = operator.get("/reports").text
    assert "Báo cáo 6 tháng 2026" in page and "01/01/2026–31/05/2026" in page and "10/06/2026" in page
    assert "theo lịch" in page and f'href="/reports/prepared/{report_id}/pdf"' in page
    got = operator.get(f"/reports/prepared/{report_id}/pdf")
    assert got.status_code == 200 and got.content == b"%PDF-1.7 kept"
    assert "filename*=UTF-8''B%C3%A1o%20c%C3%A1o%206%20th%C3%A1ng%202026" in got.headers["content-disposition"]


def test_a_prepared_report_that_is_not_there_is_refused(app: FastAPI, dataset: Engine) -> None:
    """An unknown report gives 404 and a format it was not kept in 400, each with a Vietnamese message; police 403."""
    report_id = _kept(dataset, {"json": b"{}"})
    operator = signed_in(app, dataset, "van-hanh", "operator")
    missing = operator.get(f"/reports/prepared/{report_id + 1}/json")
    assert missing.status_code == 404 and "Không có báo cáo đã chuẩn bị" in missing.text
    assert operator.get(f"/reports/prepared/{report_id}/docx").status_code == 400
    assert signed_in(app, dataset, "cong-an", "police").get(f"/reports/prepared/{report_id}/json").status_code == 403


# -- figures as of the last rollup, and the button that brings them up to date -----------------


def test_a_view_reads_the_rollups_and_writes_nothing(app: FastAPI, fresh: Engine) -> None:
    """Over deliveries never rolled up, the page and a download leave every rollup table and time as they were."""
    app.state.engine = fresh
    operator = signed_in(app, fresh, "van-hanh", "operator")
    before = _rollup_state(fresh)
    page = operator.get("/reports", params={"kind": "year", "year": "2026"})
    assert page.status_code == 200 and "Số liệu chưa được tổng hợp lần nào." in page.text
    assert operator.get("/reports/download", params={"kind": "year", "year": "2026", "format": "json"}).json()[
        "totals"]["messages"] == 0  # fmt: skip
    assert _rollup_state(fresh) == before and before["as_of"] is None


def test_the_page_says_as_of_when_the_figures_were_rolled_up(app: FastAPI, dataset: Engine) -> None:
    """The scheduler's last rollup at 08:30 local: the page says 'Số liệu tính đến 08:30 23/11/2026'."""
    page = signed_in(app, dataset, "van-hanh", "operator").get("/reports", params={"kind": "year", "year": "2026"})
    assert "Số liệu tính đến 08:30 23/11/2026" in page.text


def test_an_operator_brings_the_figures_up_to_date_with_the_button(app: FastAPI, fresh: Engine,
                                                                   regions: RegionIndex) -> None:  # fmt: skip
    """The button (a form with the CSRF token) rolls up now and shows the same period again, as of now."""
    app.state.engine = fresh
    operator = signed_in(app, fresh, "van-hanh", "operator")
    page = operator.get("/reports", params={"kind": "quarter", "year": "2026", "quarter": "3"}).text
    action = re.search(r'<form method="post" action="([^"]+)" class="inline rollup-now">', page)
    assert action and 'name="csrf_token"' in page.split("rollup-now", 1)[1].split("</form>", 1)[0]
    del operator.headers["X-CSRF-Token"]  # the form's own token, as a browser posts it
    done = operator.post(unquote(action.group(1)).replace("&amp;", "&"), data={"csrf_token": operator.csrf},
                         follow_redirects=False)  # fmt: skip
    assert done.status_code == 303 and done.headers["location"].startswith("/reports?kind=quarter&year=2026&quarter=3")
    assert _rollup_state(fresh)["as_of"] == AT
    shown = operator.get(done.headers["location"]).text
    assert "Số liệu tính đến 09:00 23/11/2026" in shown
    assert number(_domain(fresh, regions, "2026-Q3").totals.messages) in shown


def test_the_button_needs_the_csrf_token_and_an_operator(app: FastAPI, fresh: Engine) -> None:
    """Without the form's token the post is refused; an approver reads the page without the button and may not post."""
    app.state.engine = fresh
    operator = signed_in(app, fresh, "van-hanh", "operator")
    del operator.headers["X-CSRF-Token"]
    refused = operator.post("/reports/rollup", data={"kind": "h1"}, follow_redirects=False)
    assert refused.status_code == 403
    approver = signed_in(app, fresh, "lanh-dao", "approver")
    assert "rollup-now" not in approver.get("/reports").text
    assert approver.post("/reports/rollup", follow_redirects=False).status_code == 403
    assert _rollup_state(fresh)["as_of"] is None
