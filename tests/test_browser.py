"""The console in Chromium: it signs in, renders Vietnamese, fits an office screen and a phone, breaks no CSP rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from dispatcher.config import load_settings
from dispatcher.regions import RegionIndex
from tests import world
from tests.browser import PHONE, Browser, Chromium, live_server, overflows
from tests.web_helpers import PASSWORD, ensure_user, make_app

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.skipif(not __import__("os").path.exists("/usr/bin/chromium"), reason="needs Chromium")


@pytest.fixture
def app(sqlite_engine: Engine) -> FastAPI:
    # The default settings: Secure cookies, which browsers accept from http://127.0.0.1 (a secure context).
    return make_app(load_settings(None, {}), sqlite_engine, lambda: datetime.now(UTC))


def sign_in(page, base: str, username: str, password: str = PASSWORD, then: str = "/") -> None:
    page.goto(f"{base}/login?next={then}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_an_admin_signs_in_manages_users_and_signs_out(browser: Browser, app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "quan-tri", "admin")
    with live_server(app) as base:
        page = browser.page()
        page.goto(f"{base}/users")
        assert page.url.startswith(f"{base}/login?next=")
        browser.shoot(page, "login")
        sign_in(page, base, "quan-tri", then="/users")
        page.wait_for_url(f"{base}/users")
        page.fill("input[name=username] >> nth=-1", "lan")
        page.fill("input[name=display_name]", "Nguyễn Thị Lan")
        page.fill("input[name=password]", PASSWORD)
        page.check("form[action='/users'] input[value=police]")
        page.click("form[action='/users'] button[type=submit]")
        page.wait_for_load_state()
        assert "Nguyễn Thị Lan" in page.inner_text("table")
        assert not overflows(page)
        browser.shoot(page, "users")
        page.click("header button:has-text('Đăng xuất')")
        page.wait_for_url(f"{base}/login")
    assert not browser.violations(), browser.violations()


def test_pages_fit_a_phone(browser: Browser, app: FastAPI, sqlite_engine: Engine) -> None:
    ensure_user(sqlite_engine, "quan-tri", "admin")
    with live_server(app) as base:
        page = browser.page(PHONE)
        sign_in(page, base, "quan-tri", then="/account")
        page.wait_for_url(f"{base}/account")
        assert "Tài khoản của tôi" in page.inner_text("h1")
        assert not overflows(page)
        browser.shoot(page, "account-phone")
    assert not browser.violations(), browser.violations()


def shows(page, text: str) -> None:
    """Wait until the preview panel says `text` (htmx swaps it in after the form's last change)."""
    page.wait_for_function("text => document.querySelector('#preview').innerText.includes(text)", arg=text)


def test_a_liaison_previews_and_creates_a_blast(
    browser: Browser, app: FastAPI, sqlite_engine: Engine, regions: RegionIndex, tmp_path: Path
) -> None:
    """The preview follows the form as it is typed, an ambiguous name offers its candidates, creation waits approval."""
    now = datetime.now(UTC)
    world.catalogue(sqlite_engine, now, approved=["lenh-bat-gia-gui-qua-zalo"])
    world.people(sqlite_engine, regions, now, tmp_path, 3_000, seed=7)
    ensure_user(sqlite_engine, "lien-lac", "liaison")
    app.state.regions = regions
    with live_server(app) as base:
        page = browser.page()
        sign_in(page, base, "lien-lac", then="/blasts/new")
        page.wait_for_url(f"{base}/blasts/new")
        page.select_option("select[name=alert]", "lenh-bat-gia-gui-qua-zalo")
        page.fill("textarea[name=communes]", "Xã Tân Tiến")
        page.wait_for_selector("#preview button.pick")
        browser.shoot(page, "blast-new-ambiguous")
        page.click("#preview button.pick:has-text('Tuyên Quang')")
        shows(page, "Xã Tân Tiến (Tỉnh Tuyên Quang)")
        assert page.input_value("textarea[name=communes]") == "Tuyên Quang, Xã Tân Tiến [mã xã 1051]"
        page.fill("textarea[name=communes]", "")
        page.fill("textarea[name=legacy_districts]", "Quảng Nam (cũ), huyện Duy Xuyên")
        shows(page, "nay 4 xã/phường của Thành phố Đà Nẵng")
        shows(page, "Người nhận:")
        assert not overflows(page)
        browser.shoot(page, "blast-new")
        page.click("button[type=submit]:has-text('Tạo đợt gửi')")
        page.wait_for_url(f"{base}/blasts/1")
        assert "chờ duyệt" in page.inner_text("h1")
        phone = browser.page(PHONE)
        sign_in(phone, base, "lien-lac", then="/blasts/new")
        phone.wait_for_url(f"{base}/blasts/new")
        phone.select_option("select[name=alert]", "lenh-bat-gia-gui-qua-zalo")
        phone.fill("textarea[name=provinces]", "Đà Nẵng")
        phone.wait_for_selector("#preview p.big")
        assert not overflows(phone)
        browser.shoot(phone, "blast-new-phone")
    assert not browser.violations(), browser.violations()


def _upload(browser: Browser, base: str) -> Any:
    """A liaison signed in on the subscribers page who has just sent the sample CSV to import."""
    page = browser.page()
    sign_in(page, base, "lien-lac", then="/subscribers")
    page.wait_for_url(f"{base}/subscribers")
    page.set_input_files("input[name=file]", str(DATA / "thue-bao-da-nang.csv"))
    page.click("form[action='/subscribers/import'] button[type=submit]")
    return page


def test_a_long_import_is_followed_on_its_page_until_the_result(
    browser: Browser, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """An import not done at once takes the browser to its page, which htmx updates until the result shows."""
    settings = load_settings(None, {"CANHBAO_SUBSCRIBERS__REJECTS_DIR": str(tmp_path / "rejects"),
                                    "CANHBAO_WEB__IMPORT_WAIT_SECONDS": "0"})  # fmt: skip
    app = make_app(settings, sqlite_engine, lambda: datetime.now(UTC))
    ensure_user(sqlite_engine, "lien-lac", "liaison")
    with live_server(app) as base:
        page = _upload(browser, base)
        page.wait_for_url(f"{base}/subscribers/imports/*")
        page.wait_for_selector(".upload-result a[href^='/subscribers/rejects/']", timeout=60_000)
        assert "Kết quả nhập" in page.inner_text(".upload-result")
        assert not overflows(page)
        browser.shoot(page, "subscribers-import-job")
    assert not browser.violations(), browser.violations()


def test_a_liaison_imports_subscribers_and_opts_one_out(
    browser: Browser, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """A CSV chosen in the browser is imported and summed up; a number is opted out; both screens fit."""
    settings = load_settings(None, {"CANHBAO_SUBSCRIBERS__REJECTS_DIR": str(tmp_path / "rejects")})
    app = make_app(settings, sqlite_engine, lambda: datetime.now(UTC))
    ensure_user(sqlite_engine, "lien-lac", "liaison")
    with live_server(app) as base:
        page = _upload(browser, base)
        page.wait_for_selector(".upload-result")
        assert "Kết quả nhập" in page.inner_text(".upload-result")
        assert list((tmp_path / "rejects").glob("thue-bao-da-nang-*.rejects.csv"))
        assert not overflows(page)
        browser.shoot(page, "subscribers")
        phone = browser.page(PHONE)
        sign_in(phone, base, "lien-lac", then="/subscribers")
        phone.wait_for_url(f"{base}/subscribers")
        phone.fill("input[name=msisdn]", "0905 123 401")
        phone.click("button[value=out]")
        phone.wait_for_selector("p.notice")
        assert "+8490****401" in phone.inner_text("p.notice")
        assert not overflows(phone)
        browser.shoot(phone, "subscribers-phone")


def _records(engine: Engine) -> None:
    """Audit entries from every face and texts in the inbox, for the audit and inbox pages to show."""
    from dispatcher import audit
    from dispatcher.inbound import receive

    now = datetime.now(UTC)
    ensure_user(engine, "lan", "police")
    with engine.begin() as conn:
        with audit.acting_through("cli", "--as, os-user:root"):
            audit.audit(conn, now, "lien-lac", "blast.pause", "blast:12", {"from": "running"},
                        before={"state": "running"}, after={"state": "paused"})  # fmt: skip
        with audit.acting_through("api", "token:3", "10.20.30.40"):
            audit.audit(conn, now, "duyet", "alert.approve", "alert:gia-danh-cong-an", {"version": 2},
                        before={"status": "submitted"}, after={"status": "approved"})  # fmt: skip
        receive(conn, "+84905123456", "Có người giả danh công an gọi số 0912 345 678 đòi chuyển tiền", "viettel", now)
        receive(conn, "+84977000111", "Cho hỏi tổng đài phản ánh lừa đảo là số nào ạ?", "twilio", now)


def test_an_operator_reads_the_audit_log_and_the_inbox(browser: Browser, app: FastAPI, sqlite_engine: Engine) -> None:
    """The audit page shows each face and before → after; the inbox masks numbers and reveals one with a reason."""
    ensure_user(sqlite_engine, "van-hanh", "operator", "admin")
    _records(sqlite_engine)
    with live_server(app) as base:
        page = browser.page()
        sign_in(page, base, "van-hanh", then="/audit")
        page.wait_for_url(f"{base}/audit")
        table = page.inner_text("table")
        assert "dòng lệnh" in table and "API" in table and "tạm dừng đợt gửi" in table
        assert not overflows(page)
        browser.shoot(page, "audit")
        page.goto(f"{base}/inbox")
        assert "+8490****456" in page.inner_text("table") and "0912 345 678" not in page.content()
        assert not overflows(page)
        browser.shoot(page, "inbox")
        page.click("tr:has-text('giả danh') summary")
        page.fill("tr:has-text('giả danh') input[name=reason]", "gọi lại cho người báo tin")
        page.click("tr:has-text('giả danh') form button")
        page.wait_for_url(f"{base}/inbox/*/reveal")
        assert "+84905123456" in page.inner_text("main")
        page.goto(f"{base}/audit?action=number.reveal")
        assert "gọi lại cho người báo tin" in page.inner_text("table")
        browser.shoot(page, "audit-reveal")
    assert not browser.violations(), browser.violations()


def test_the_audit_and_inbox_pages_fit_a_phone(browser: Browser, app: FastAPI, sqlite_engine: Engine) -> None:
    """On a phone the two pages keep their tables in a scrolling frame: nothing else runs off the screen."""
    ensure_user(sqlite_engine, "van-hanh", "operator", "admin")
    _records(sqlite_engine)
    with live_server(app) as base:
        page = browser.page(PHONE)
        sign_in(page, base, "van-hanh", then="/audit")
        page.wait_for_url(f"{base}/audit")
        assert not overflows(page)
        browser.shoot(page, "audit-phone")
        page.goto(f"{base}/inbox")
        assert not overflows(page)
        browser.shoot(page, "inbox-phone")


@pytest.fixture
def alerts_app(sqlite_engine: Engine, tmp_path) -> FastAPI:
    """The console with its catalogue files written under tmp_path, the shipped alerts approved, one campaign synced."""
    from dispatcher import scheduler as scheduling
    from dispatcher.schedules import parse_file
    from tests.world import catalogue

    now = datetime.now(UTC)
    catalogue(sqlite_engine, now, ["viec-nhe-luong-cao", "khong-cung-cap-ma-otp"])
    path = tmp_path / "cao-bang-hang-tuan.toml"
    campaign = ('title = "Cảnh báo lừa đảo hằng tuần — toàn tỉnh Cao Bằng"\nwhen = "thứ hai hằng tuần 09:00"\n'
                '[segment]\nprovinces = ["Cao Bằng"]\n[content]\nalert = "viec-nhe-luong-cao"\n')  # fmt: skip
    path.write_text(campaign, "utf-8")
    with sqlite_engine.begin() as conn:
        scheduling.sync(conn, [parse_file(path, "Asia/Ho_Chi_Minh")], "lien-lac", now)
    settings = load_settings(None, {"CANHBAO_CATALOGUE__MESSAGES_DIR": str(tmp_path / "messages")})
    return make_app(settings, sqlite_engine, lambda: datetime.now(UTC))


def test_an_officer_writes_an_alert_with_a_live_preview_and_an_approver_sends_it_back(
    browser: Browser, alerts_app: FastAPI, sqlite_engine: Engine
) -> None:
    """The form's preview follows the typing; the rejection's reason shows on the alert and in its history."""
    ensure_user(sqlite_engine, "pa05", "police")
    ensure_user(sqlite_engine, "lanh-dao", "approver")
    with live_server(alerts_app) as base:
        page = browser.page()
        sign_in(page, base, "pa05", then="/alerts/new")
        page.wait_for_url(f"{base}/alerts/new")
        page.fill("input[name=id]", "san-tien-ao-gia")
        page.select_option("select[name=method]", "fake_investment")
        page.fill("input[name=title]", "Sàn tiền ảo giả mạo")
        page.fill("input[name=source]", "Công văn số 123/CAT-PA05 ngày 01/12/2026")
        page.fill("textarea[name=body]", "Công an {ten_tinh} cảnh báo: không nạp tiền vào sàn tiền ảo hứa lãi cao.")
        page.wait_for_selector("#preview >> text=Hợp lệ: có thể lưu.")
        assert "Cong an Thanh pho Ho Chi Minh canh bao" in page.inner_text("#preview")
        assert not overflows(page)
        browser.shoot(page, "alert-new")
        page.click("#alert-form button[type=submit]")
        page.wait_for_url(f"{base}/alerts/san-tien-ao-gia")
        page.click("button:has-text('Gửi duyệt')")
        page.wait_for_load_state()
        approver = browser.page()
        sign_in(approver, base, "lanh-dao", then="/alerts/san-tien-ao-gia")
        approver.wait_for_url(f"{base}/alerts/san-tien-ao-gia")
        approver.click("summary:has-text('Trả lại')")
        approver.fill("textarea[name=reason]", "Thiếu ngày ban hành của công văn")
        approver.click("details.reject button[type=submit]")
        approver.wait_for_load_state()
        assert "Thiếu ngày ban hành của công văn" in approver.inner_text(".rejection")
        assert not overflows(approver)
        browser.shoot(approver, "alert-rejected")
        page.goto(f"{base}/alerts/san-tien-ao-gia/edit")
        page.fill("input[name=source]", "Công văn số 123/CAT-PA05 ngày 02/12/2026")
        page.click("#alert-form button[type=submit]")
        page.wait_for_url(f"{base}/alerts/san-tien-ao-gia")
        page.goto(f"{base}/alerts/san-tien-ao-gia/history")
        assert "ngày 02/12/2026" in page.inner_text("ins")
        assert not overflows(page)
        browser.shoot(page, "alert-history")
        page.goto(f"{base}/alerts")
        assert "Sàn tiền ảo giả mạo" in page.inner_text("table")
        browser.shoot(page, "alerts")
        approver.goto(f"{base}/schedules")
        assert "Cao Bằng" in approver.inner_text("table")
        assert not overflows(approver)
        browser.shoot(approver, "schedules")
    assert not browser.violations(), browser.violations()


def test_the_alert_pages_fit_a_phone(browser: Browser, alerts_app: FastAPI, sqlite_engine: Engine) -> None:
    """The form with its preview, an alert, the list and the schedules stay within 390 pixels."""
    ensure_user(sqlite_engine, "pa05", "police", "approver", "liaison")
    with live_server(alerts_app) as base:
        page = browser.page(PHONE)
        sign_in(page, base, "pa05", then="/alerts/new")
        page.wait_for_url(f"{base}/alerts/new")
        page.fill(
            "textarea[name=body]", "Cảnh giác cuộc gọi giả danh công an yêu cầu chuyển tiền vào tài khoản tạm giữ."
        )
        page.wait_for_selector("#preview >> text=UCS-2")
        for path, name in (("/alerts/new", None), ("/alerts/viec-nhe-luong-cao", "alert-phone"),
                           ("/alerts", "alerts-phone"), ("/schedules", "schedules-phone")):  # fmt: skip
            if name:
                page.goto(f"{base}{path}")
            assert not overflows(page), (path, overflows(page))
            browser.shoot(page, name or "alert-new-phone")
    assert not browser.violations(), browser.violations()


def test_the_main_story_from_a_new_alert_to_the_delivery_log_in_csv(
    browser: Browser, sqlite_engine: Engine, regions: RegionIndex, tmp_path: Path
) -> None:
    """Police write an alert, an approver approves it, the liaison sends it to a former district, a second person
    approves the blast, the simulator carries it, and the operator filters the log and takes it as CSV."""
    now = datetime.now(UTC)
    world.people(sqlite_engine, regions, now, tmp_path, 3_000, seed=11)
    settings = load_settings(None, {"CANHBAO_CATALOGUE__MESSAGES_DIR": str(tmp_path / "messages")})
    app = make_app(settings, sqlite_engine, lambda: datetime.now(UTC))
    app.state.regions = regions
    for name, role in (("pa05", "police"), ("lanh-dao", "approver"), ("lien-lac", "liaison"), ("pho-phong", "approver"),
                       ("van-hanh", "operator")):  # fmt: skip
        ensure_user(sqlite_engine, name, role)
    with live_server(app) as base:
        police = browser.page()
        sign_in(police, base, "pa05", then="/alerts/new")
        police.wait_for_url(f"{base}/alerts/new")
        police.fill("input[name=id]", "san-tien-ao-gia")
        police.select_option("select[name=method]", "fake_investment")
        police.fill("input[name=title]", "Sàn tiền ảo giả mạo")
        police.fill("input[name=source]", "Công văn số 123/CAT-PA05 ngày 01/12/2026")
        police.fill("textarea[name=body]", "Công an Đà Nẵng cảnh báo: không nạp tiền vào sàn tiền ảo hứa lãi cao.")
        police.check("input[name=audiences][value=public]")
        police.wait_for_selector("#preview >> text=Hợp lệ: có thể lưu.")
        police.click("#alert-form button[type=submit]")
        police.wait_for_url(f"{base}/alerts/san-tien-ao-gia")
        police.click("button:has-text('Gửi duyệt')")
        police.wait_for_load_state()

        approver = browser.page()
        sign_in(approver, base, "lanh-dao", then="/alerts/san-tien-ao-gia")
        approver.wait_for_url(f"{base}/alerts/san-tien-ao-gia")
        approver.click("form[action$='/approve'] button")
        approver.wait_for_load_state()
        assert "đã duyệt" in approver.inner_text("main").lower()
        browser.shoot(approver, "story-1-alert-approved")

        liaison = browser.page()
        sign_in(liaison, base, "lien-lac", then="/blasts/new")
        liaison.wait_for_url(f"{base}/blasts/new")
        liaison.select_option("select[name=alert]", "san-tien-ao-gia")
        liaison.fill("textarea[name=legacy_districts]", "Quảng Nam (cũ), huyện Duy Xuyên")
        shows(liaison, "Người nhận:")
        browser.shoot(liaison, "story-2-blast-preview")
        liaison.click("button[type=submit]:has-text('Tạo đợt gửi')")
        liaison.wait_for_url(f"{base}/blasts/1")

        second = browser.page()
        sign_in(second, base, "pho-phong", then="/blasts/1")
        second.wait_for_url(f"{base}/blasts/1")
        second.click("form[action='/blasts/1/approve'] button")
        second.wait_for_load_state()
        _worker_until_idle(sqlite_engine, tmp_path)
        second.goto(f"{base}/blasts/1")
        assert "hoàn tất" in second.inner_text("h1")
        browser.shoot(second, "story-3-blast-done")

        operator = browser.page()
        sign_in(operator, base, "van-hanh", then="/deliveries?blast=1")
        operator.wait_for_url(f"{base}/deliveries?blast=1")
        operator.select_option("select[name=status]", "delivered")
        operator.click("form.filters button[type=submit]:has-text('Tìm')")
        operator.wait_for_url("**status=delivered**")
        rows = operator.locator("table tbody tr")
        assert rows.count() > 0 and all("đã nhận" in text and "****" in text for text in rows.all_inner_texts())
        assert not overflows(operator)
        browser.shoot(operator, "story-4-delivery-log")
        with operator.expect_download() as download:
            operator.click("button:has-text('Xuất CSV')")
        exported = download.value.path().read_text("utf-8-sig").splitlines()
    assert exported[0].startswith("mã tin,đợt gửi,số điện thoại") and len(exported) > 1
    assert all("****" in line.split(",")[2] for line in exported[1:])
    assert not browser.violations(), browser.violations()


def _worker_until_idle(engine: Engine, tmp_path: Path) -> None:
    """`canhbao worker --until-idle` on the console's database, through the carrier simulator, quiet hours off."""
    import subprocess
    import sys

    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    env = {**__import__("os").environ, "CANHBAO_CONFIG": str(tmp_path / "none.toml"),
           "CANHBAO_DATABASE__URL": engine.url.render_as_string(hide_password=False),
           "CANHBAO_ROUTES": '{"default": ["simulator"]}', "CANHBAO_POLICY__QUIET_HOURS": '{"sms": "", "zalo": ""}',
           "CANHBAO_GATEWAYS__SIMULATOR__REPORT_DELAY_MS": "[0, 20]", "CANHBAO_LOGGING__LEVEL": "warning"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "dispatcher", "worker", "--until-idle"], env=env, timeout=300,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_console_error_stays_with_the_test_whose_page_made_it(chromium: Chromium) -> None:
    """A page that keeps logging errors fails its own test's check only, and closes when that test ends."""
    failing = chromium.session()
    page = failing.page()
    with page.expect_event("console"):
        page.evaluate("setInterval(() => console.error('still polling'), 5)")
    assert failing.violations()
    failing.close()
    assert page.is_closed()
    after = chromium.session()
    after.page().goto("about:blank")
    assert after.violations() == []
    after.close()
