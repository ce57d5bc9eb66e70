"""The alerts and schedules pages through httpx: every action, four-eyes, role refusals, CSRF and bad input."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from dispatcher import alerts
from dispatcher import scheduler as scheduling
from dispatcher.config import load_settings
from dispatcher.models import alerts as alerts_table
from dispatcher.schedules import parse_file
from tests.clock import Clock
from tests.web_helpers import make_app, signed_in
from tests.world import catalogue

FORM = {
    "id": "san-tien-ao-gia",
    "method": "fake_investment",
    "title": "Sàn tiền ảo giả mạo",
    "body": "Công an {ten_tinh} cảnh báo: không nạp tiền vào sàn tiền ảo hứa lãi cao qua mạng xã hội.",
    "body_ascii": "",
    "source": "Công văn số 123/CAT-PA05 ngày 01/12/2026",
    "audiences": ["public", "student"],
    "priority": "normal",
    "valid_days": "180",
    "variables": "",
}


@pytest.fixture
def messages(tmp_path: Path) -> Path:
    return tmp_path / "messages"


@pytest.fixture
def app(sqlite_engine: Engine, now: datetime, messages: Path) -> FastAPI:
    settings = load_settings(None, {"CANHBAO_CATALOGUE__MESSAGES_DIR": str(messages)})
    return make_app(settings, sqlite_engine, Clock(now))


@pytest.fixture
def police(app: FastAPI, sqlite_engine: Engine) -> TestClient:
    return signed_in(app, sqlite_engine, "pa05", "police")


@pytest.fixture
def approver(app: FastAPI, sqlite_engine: Engine) -> TestClient:
    return signed_in(app, sqlite_engine, "lanh-dao", "approver")


def stored(engine: Engine, slug: str = "san-tien-ao-gia") -> list[dict]:
    with engine.connect() as conn:
        query = select(alerts_table).where(alerts_table.c.slug == slug).order_by(alerts_table.c.version)
        return [dict(row) for row in conn.execute(query).mappings()]


def submitted(police: TestClient) -> None:
    """The form's alert created and submitted by the officer."""
    assert police.post("/alerts", data=FORM).status_code == 303
    assert police.post("/alerts/san-tien-ao-gia/submit").status_code == 303


def test_an_officer_creates_an_alert_from_the_form(police: TestClient, sqlite_engine: Engine, messages: Path) -> None:
    """The form stores a draft by the officer, writes its catalogue file and shows both renderings with their cost."""
    answer = police.post("/alerts", data=FORM)
    assert answer.status_code == 303 and answer.headers["location"] == "/alerts/san-tien-ao-gia"
    [row] = stored(sqlite_engine)
    assert (row["status"], row["author"], row["origin"], row["audiences"]) == (
        "draft",
        "pa05",
        "web",
        FORM["audiences"],
    )
    assert 'source = "Công văn số 123/CAT-PA05' in (messages / "san-tien-ao-gia.toml").read_text(encoding="utf-8")
    page = police.get("/alerts/san-tien-ao-gia").text
    assert "UCS-2" in page and "GSM-7" in page and "Cong an Thanh pho Ho Chi Minh canh bao" in page
    assert "Chi phí theo nhà mạng" in page and "Gửi duyệt" in page


def test_the_form_refuses_bad_input_in_vietnamese_and_stores_nothing(police: TestClient, sqlite_engine: Engine) -> None:
    """An unknown placeholder, a missing source and days that are not a number are each named with their field."""
    assert "Cần sửa trước khi lưu" not in police.get("/alerts/new").text  # not before anything is typed
    bad = {**FORM, "body": "Báo ngay {ten_huyen}.", "source": "", "valid_days": "²"}
    answer = police.post("/alerts", data=bad)
    assert answer.status_code == 400
    assert "biến không khai báo {ten_huyen}" in answer.text
    assert re.search(r"Nguồn chính thức</strong>: thiếu nguồn chính thức", answer.text)
    assert "Số ngày hiệu lực</strong>: cần số ngày" in answer.text
    assert 'value="san-tien-ao-gia"' in answer.text  # what was typed stays in the form
    assert stored(sqlite_engine) == []


def test_an_alert_cannot_take_an_id_the_console_uses(police: TestClient, sqlite_engine: Engine) -> None:
    """The id `new` (the form's address) is refused with the reason, so every stored alert can be opened."""
    answer = police.post("/alerts", data={**FORM, "id": "new"})
    assert answer.status_code == 400 and "là từ dành riêng của bảng điều khiển" in answer.text
    assert stored(sqlite_engine, "new") == []


def test_the_live_preview_measures_both_renderings_and_prices_them(police: TestClient) -> None:
    """As the officer types: encoding, characters, parts and cost for each carrier, and what is still wrong."""
    answer = police.post("/alerts/preview", data={**FORM, "body": "Cảnh báo " * 30})
    assert answer.status_code == 200 and "<html" not in answer.text
    assert re.search(r"Bảng mã: <strong>UCS-2</strong>.*Ký tự: <strong>269</strong>.*Phần tin: <strong>5</strong>",
                     answer.text, re.S)  # fmt: skip
    assert "quá giới hạn 4 phần" in answer.text and "Viettel" in answer.text
    assert "Hợp lệ: có thể lưu." in police.post("/alerts/preview", data=FORM).text


def test_a_second_person_approves_a_submitted_alert(police: TestClient, approver: TestClient, sqlite_engine) -> None:
    """Submit by the officer, approve by the approver: the version is approved with its approver."""
    submitted(police)
    assert "Trả lại" in approver.get("/alerts/san-tien-ao-gia").text
    assert approver.post("/alerts/san-tien-ao-gia/approve").status_code == 303
    [row] = stored(sqlite_engine)
    assert (row["status"], row["approver"]) == ("approved", "lanh-dao")


def test_the_author_cannot_approve_or_reject_their_own_alert(app: FastAPI, sqlite_engine: Engine) -> None:
    """Four-eyes in the browser: a person holding both roles is refused on their own alert, and it stays submitted."""
    both = signed_in(app, sqlite_engine, "hai-vai", "police", "approver")
    assert both.post("/alerts", data=FORM).status_code == 303
    both.post("/alerts/san-tien-ao-gia/submit")
    for action, data in (("approve", {}), ("reject", {"reason": "Không rõ nguồn"})):
        answer = both.post(f"/alerts/san-tien-ao-gia/{action}", data=data)
        assert answer.status_code == 403 and "nguyên tắc bốn mắt" in answer.text
    assert stored(sqlite_engine)[0]["status"] == "submitted"


def test_an_approver_sends_an_alert_back_with_a_reason(police: TestClient, approver: TestClient, sqlite_engine) -> None:
    """The reason is required; once given, the alert is rejected and its page shows who and why."""
    submitted(police)
    empty = approver.post("/alerts/san-tien-ao-gia/reject", data={"reason": " "})
    assert empty.status_code == 400 and "Cần nêu lý do trả lại" in empty.text
    assert stored(sqlite_engine)[0]["status"] == "submitted"
    assert approver.post("/alerts/san-tien-ao-gia/reject", data={"reason": "Thiếu số công văn"}).status_code == 303
    page = police.get("/alerts/san-tien-ao-gia").text
    assert "Bị trả lại" in page and "Thiếu số công văn" in page and "lanh-dao" in page
    assert stored(sqlite_engine)[0]["status"] == "rejected"


def test_a_rejected_alert_is_edited_into_a_new_version_with_a_diff(
    police: TestClient, approver: TestClient, sqlite_engine: Engine
) -> None:
    """The edit form saves version 2 as a draft; the history shows what changed, marked without inline styles."""
    submitted(police)
    approver.post("/alerts/san-tien-ao-gia/reject", data={"reason": "Thiếu ngày ban hành"})
    assert 'name="id" value="san-tien-ao-gia"' in police.get("/alerts/san-tien-ao-gia/edit").text
    edited = {**FORM, "source": "Công văn số 123/CAT-PA05 ngày 02/12/2026"}
    assert police.post("/alerts/san-tien-ao-gia/edit", data=edited).status_code == 303
    assert [(row["version"], row["status"]) for row in stored(sqlite_engine)] == [(1, "rejected"), (2, "draft")]
    history = police.get("/alerts/san-tien-ao-gia/history").text
    assert '<del class="line">− source = &#34;Công văn số 123/CAT-PA05 ngày 01/12/2026&#34;</del>' in history
    assert '<ins class="line">+ source = &#34;Công văn số 123/CAT-PA05 ngày 02/12/2026&#34;</ins>' in history
    assert " style=" not in history and "Thiếu ngày ban hành" in history


def test_an_alert_under_review_cannot_be_edited(police: TestClient, sqlite_engine: Engine) -> None:
    """Editing a submitted alert is refused on the form, and no version is added."""
    submitted(police)
    answer = police.post("/alerts/san-tien-ao-gia/edit", data={**FORM, "title": "Khác"})
    assert answer.status_code == 409 and "Chỉ sửa được bản nháp" in answer.text
    assert len(stored(sqlite_engine)) == 1


def test_the_list_filters_by_status_method_audience_and_words(
    app: FastAPI, police: TestClient, sqlite_engine: Engine, now: datetime
) -> None:
    """The shipped catalogue approved plus one draft: each filter keeps what it says, accents optional in search."""
    catalogue(sqlite_engine, now)
    police.post("/alerts", data=FORM)
    shown = lambda **query: re.findall(r'<a href="/alerts/([a-z0-9-]+)">', police.get("/alerts", params=query).text)  # noqa: E731
    assert shown(status="draft") == ["san-tien-ao-gia"]
    assert "san-tien-ao-gia" in shown(method="fake_investment") and "khong-cung-cap-ma-otp" not in shown(
        method="fake_investment"
    )
    assert "san-tien-ao-gia" in shown(audience="student") and "san-tien-ao-gia" not in shown(audience="elderly")
    assert shown(q="SAN TIEN AO") == ["san-tien-ao-gia"]
    assert "Không có mẫu nào khớp." in police.get("/alerts", params={"q": "không có chữ này"}).text


def test_roles_are_refused_where_the_action_is_not_theirs(app: FastAPI, police: TestClient, sqlite_engine) -> None:
    """A liaison may read but not write alerts; an officer may not approve; nothing changes."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    assert liaison.get("/alerts").status_code == 200
    assert liaison.post("/alerts", data=FORM).status_code == 403
    assert liaison.get("/alerts/new").status_code == 403
    submitted(police)
    assert police.post("/alerts/san-tien-ao-gia/approve").status_code == 403
    assert police.post("/alerts/san-tien-ao-gia/reject", data={"reason": "Tự trả lại"}).status_code == 403
    assert stored(sqlite_engine)[0]["status"] == "submitted"


def test_a_form_without_the_csrf_token_is_refused(police: TestClient, sqlite_engine: Engine) -> None:
    """A post without the session's token (a forged form from another site) stores nothing."""
    police.headers.pop("X-CSRF-Token")
    assert police.post("/alerts", data=FORM).status_code == 403
    assert police.post("/alerts", data={**FORM, "csrf_token": "gia-mao"}).status_code == 403
    assert police.post("/alerts", data={**FORM, "csrf_token": police.csrf}).status_code == 303
    assert len(stored(sqlite_engine)) == 1


def test_an_unknown_alert_is_a_404_page(police: TestClient) -> None:
    """Pages and actions on an alert that does not exist say so."""
    for answer in (police.get("/alerts/khong-co"), police.get("/alerts/khong-co/history"),
                   police.get("/alerts/khong-co/edit"), police.post("/alerts/khong-co/submit")):  # fmt: skip
        assert answer.status_code == 404 and "Không có mẫu cảnh báo &#39;khong-co&#39;" in answer.text


def test_the_pages_switch_to_english(police: TestClient) -> None:
    """The language switch turns the form's labels into English."""
    police.cookies.set("lang", "en", domain="canhbao.test")
    page = police.get("/alerts/new").text
    assert "New alert" in page and "Official source" in page and "Save draft" in page


# -- schedules ----------------------------------------------------------------------------

WEEKLY = """
title = "Hằng tuần — Đà Nẵng"
when = "every Monday 09:00"
[segment]
provinces = ["Đà Nẵng"]
[content]
alert = "viec-nhe-luong-cao"
"""


def synced_campaign(engine: Engine, tmp_path: Path, now: datetime, actor: str = "lien-lac") -> None:
    path = tmp_path / "da-nang.toml"
    path.write_text(WEEKLY, encoding="utf-8")
    with engine.begin() as conn:
        scheduling.sync(conn, [parse_file(path, "Asia/Ho_Chi_Minh")], actor, now)


def test_the_schedules_page_lists_the_next_runs_in_local_time(app, approver, sqlite_engine, tmp_path, now) -> None:
    """A campaign shows its state, its segment and its next five Monday 09:00 runs."""
    synced_campaign(sqlite_engine, tmp_path, now)
    page = approver.get("/schedules").text
    assert "da-nang" in page and "chờ duyệt" in page and "Đà Nẵng" in page
    [runs] = re.findall(r'<td class="runs">(.*?)</td>', page)[:1]
    assert runs.count("09:00") == 5 and runs.count("<br>") == 4


def test_the_schedules_page_says_who_synced_and_the_weekday_of_each_run(
    app, approver, sqlite_engine, tmp_path, now
) -> None:
    """Each next run carries its weekday in Vietnamese (Thứ Hai for a Monday campaign) and the row names who synced."""
    synced_campaign(sqlite_engine, tmp_path, now, actor="lien-lac")
    page = approver.get("/schedules").text
    [runs] = re.findall(r'<td class="runs">(.*?)</td>', page)[:1]
    assert runs.count("Thứ Hai 09:00") == 5
    [synced] = re.findall(r'<td class="synced wide">(.*?)</td>', page)
    assert "lien-lac" in synced
    approver.cookies.set("lang", "en", domain="canhbao.test")
    assert "Monday 09:00" in approver.get("/schedules").text


def test_a_campaign_is_approved_by_another_person_only(app, approver, sqlite_engine, tmp_path, now) -> None:
    """The one who synced it is refused (four-eyes); another approver's click activates it."""
    synced_campaign(sqlite_engine, tmp_path, now, actor="lanh-dao")
    own = approver.post("/schedules/da-nang/approve")
    assert own.status_code == 403 and "nguyên tắc bốn mắt" in own.text
    other = signed_in(app, sqlite_engine, "pho-giam-doc", "approver")
    assert other.post("/schedules/da-nang/approve").status_code == 303
    assert "đang chạy" in other.get("/schedules").text
    assert other.post("/schedules/khong-co/approve").status_code == 404


def test_only_an_approver_approves_a_campaign(app, sqlite_engine, tmp_path, now) -> None:
    """A liaison sees the campaigns but cannot approve one."""
    synced_campaign(sqlite_engine, tmp_path, now, actor="nguoi-khac")
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    assert liaison.get("/schedules").status_code == 200
    assert liaison.post("/schedules/da-nang/approve").status_code == 403
    with sqlite_engine.connect() as conn:
        assert scheduling.listing(conn, now)[0]["state"] == "pending_approval"


def test_alerts_domain_and_page_agree_on_the_cost(police: TestClient, app: FastAPI) -> None:
    """The page's cost per carrier is the domain's `costs` (the same call as `alerts show`)."""
    police.post("/alerts", data=FORM)
    spec = alerts.AlertSpec(**{k: v for k, v in FORM.items() if k in ("id", "method", "title", "body", "source")})
    first = alerts.costs(alerts.render(spec), app.state.settings.sms)[0]
    assert f"{first.unicode:,.0f}".replace(",", ".") in police.get("/alerts/san-tien-ao-gia").text
