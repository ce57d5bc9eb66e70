"""The reports page and the statutory HTML report in Chromium: sections, tables, charts drawn and sized, Vietnamese."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI

from dispatcher import db
from dispatcher.config import DatabaseSettings, load_settings
from dispatcher.regions import RegionIndex
from tests.browser import PHONE, Browser, live_server, overflows
from tests.test_browser import sign_in
from tests.test_web_reports import dataset_file
from tests.web_helpers import ensure_user, make_app

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="needs Chromium")
SECTIONS = ("I. Kết quả chung", "II. Độ bao phủ theo nhóm đối tượng", "III. Kết quả theo địa bàn",
            "IV. Kết quả theo nhà mạng và kênh gửi", "V. Kết quả theo phương thức lừa đảo và mẫu cảnh báo",
            "VI. Các đợt gửi", "VII. Xu hướng theo tuần")  # fmt: skip
# Each chart's box on the page and how many bars or points it draws (pygal's .reactive marks).
CHARTS = """() => [...document.querySelectorAll('svg.pygal-chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    return {width: box.width, height: box.height, marks: svg.querySelectorAll('.reactive').length};
})"""


@pytest.fixture
def app(tmp_path: Path, regions: RegionIndex) -> Iterator[FastAPI]:
    """The console over the reports tests' dataset (five blasts in June–August 2026), on the wall clock."""
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{dataset_file(tmp_path, regions)}"))
    ensure_user(engine, "van-hanh", "operator")
    console = make_app(load_settings(None, {}), engine, lambda: datetime.now(UTC))
    console.state.regions = regions
    yield console
    engine.dispose()


def _drawn(page) -> None:  # type: ignore[no-untyped-def]
    """Three charts, each wide and tall enough to read, each with its bars or points."""
    charts = page.evaluate(CHARTS)
    assert len(charts) == 3, charts
    for chart in charts:
        assert chart["width"] > 300 and chart["height"] > 150 and chart["marks"] > 0, charts


def test_the_reports_page_picks_a_year_and_shows_its_figures(browser: Browser, app: FastAPI) -> None:
    """An operator picks the year 2026: sections, tables, three drawn charts, no overflow, no CSP refusal."""
    with live_server(app) as base:
        page = browser.page()
        sign_in(page, base, "van-hanh", then="/reports")
        page.wait_for_url(f"{base}/reports")
        assert not page.is_visible("input[name=since]")
        page.select_option("select[name=kind]", "range")
        assert page.is_visible("input[name=since]") and not page.is_visible("select[name=year]")
        page.select_option("select[name=kind]", "year")
        page.select_option("select[name=year]", "2026")
        page.click("form.period-picker button[type=submit]")
        page.wait_for_url("**/reports?kind=year&year=2026**")
        assert page.inner_text("h1") == "Báo cáo kết quả tuyên truyền"
        assert "Năm 2026 · 01/01/2026–31/12/2026" in page.inner_text(".report-head h2")
        assert [h.inner_text() for h in page.query_selector_all(".report-section h2")] == list(SECTIONS)
        assert len(page.query_selector_all("table.report-table")) == 14
        _drawn(page)
        assert not overflows(page)
        browser.shoot(page, "reports-office")
    assert not browser.violations(), browser.violations()


def test_the_reports_page_fits_a_phone(browser: Browser, app: FastAPI) -> None:
    """On a 390-pixel phone the page has no sideways overflow and the charts shrink to the screen."""
    with live_server(app) as base:
        page = browser.page(PHONE)
        sign_in(page, base, "van-hanh", then="/reports")
        page.wait_for_url(f"{base}/reports")
        page.goto(f"{base}/reports?kind=h2&year=2026")
        for chart in page.evaluate(CHARTS):
            assert 300 < chart["width"] <= 390
        assert not overflows(page)
        browser.shoot(page, "reports-phone")
    assert not browser.violations(), browser.violations()


def test_the_html_report_downloaded_renders_the_decree_30_form(browser: Browser, app: FastAPI, tmp_path: Path) -> None:
    """The downloaded form shows issuer, motto, title, the seven sections, its tables and three drawn charts."""
    with live_server(app) as base:
        page = browser.page()
        sign_in(page, base, "van-hanh", then="/reports")
        page.wait_for_url(f"{base}/reports")
        page.goto(f"{base}/reports?kind=year&year=2026")
        with page.expect_download() as arrived:
            page.click("a[href*='format=html']")
        download = arrived.value
        assert download.suggested_filename == "Báo cáo năm 2026.html"
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
    form = browser.page()
    form.goto(saved.as_uri())
    text = form.inner_text("body")
    for part in ("CÔNG AN TỈNH", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc", "Số: ……/BC-……",
                 "Kết quả tuyên truyền phòng, chống lừa đảo qua tin nhắn — năm 2026", "gửi trước ngày 10/11/2026",
                 "Nơi nhận:", "THỦ TRƯỞNG ĐƠN VỊ"):  # fmt: skip
        assert part in text
    assert form.inner_text("h1") == "BÁO CÁO"
    assert [h.inner_text() for h in form.query_selector_all("h2")] == list(SECTIONS)
    assert len(form.query_selector_all("table.data")) == 14
    _drawn(form)
    browser.shoot(form, "report-html")
    assert not browser.violations(), browser.violations()
