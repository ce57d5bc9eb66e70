"""The new-blast form in the console: names shown as they resolve, the live preview, refusals and creation."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select

from dispatcher import alerts, blasts
from dispatcher.config import Settings, load_settings
from dispatcher.domain import METHODS
from dispatcher.models import audit_log
from dispatcher.models import blasts as blasts_table
from dispatcher.regions import RegionIndex
from dispatcher.segments import SegmentSpec, resolve
from dispatcher.subscribers import SubscriberImporter
from tests.clock import Clock
from tests.web_helpers import anonymous, make_app, signed_in

MESSAGES = Path(__file__).parent.parent / "messages"
ALERT = "lenh-bat-gia-gui-qua-zalo"
DRAFT = "phat-nguoi-gia-mao"
DUY_XUYEN = "Quảng Nam (cũ), huyện Duy Xuyên"
# msisdn, province, commune, legacy district, audiences, channels, opt-out
PEOPLE = [
    ["0985000001", "48", "Xã Nam Phước", "", "public", "sms", ""],
    ["0912000002", "48", "Xã Thu Bồn", "", "student", "sms", ""],
    ["0905000003", "48", "Xã Duy Xuyên", "", "public", "sms, zalo", "x"],
    ["0986000004", "48", "Xã Duy Nghĩa", "", "student", "sms", ""],
    ["0988000007", "48", "Phường Hải Châu", "", "student", "sms", ""],
    ["0984000010", "Hà Nội", "", "", "public", "sms", ""],
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """One price for every carrier and the usual quiet hours, whatever ./config.toml says."""
    path = tmp_path / "settings.toml"
    path.write_text('[sms.price_per_part]\ndefault = 650\n[policy.quiet_hours]\nsms = "22:00-07:00"\n', "utf-8")
    return load_settings(path, {})


@pytest.fixture
def people(sqlite_engine: Engine, regions: RegionIndex, tmp_path: Path, now: datetime) -> Engine:
    """The catalogue with ALERT approved (DRAFT not), and PEOPLE imported."""
    loaded = alerts.load_catalogue_dir(MESSAGES, alerts.Catalogue(METHODS, 4))
    with sqlite_engine.begin() as conn:
        alerts.sync(conn, loaded, "police", now - timedelta(days=2))
        alerts.submit(conn, ALERT, "police", now)
        alerts.approve(conn, ALERT, "chief", now)
    path = tmp_path / "people.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["msisdn", "province", "commune", "legacy_district", "audiences", "channels",
                                   "opt_out"], *PEOPLE])  # fmt: skip
    SubscriberImporter(sqlite_engine, regions, tmp_path / "rejects").import_file(path, now - timedelta(days=30))
    return sqlite_engine


@pytest.fixture
def app(people: Engine, settings: Settings, now: datetime, regions: RegionIndex) -> FastAPI:
    built = make_app(settings, people, Clock(now))
    built.state.regions = regions  # loaded once for the session
    return built


def _form(**fields: str | list[str]) -> dict[str, str | list[str]]:
    return {"alert": ALERT, "legacy_districts": DUY_XUYEN, **fields}  # channel and encoding left to their defaults


def _blast_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(blasts_table)).scalar_one()


def test_the_form_offers_approved_alerts_only(app: FastAPI, people: Engine) -> None:
    """The alert picker lists approved alerts and leaves drafts out."""
    page = signed_in(app, people, "lien-lac", "liaison").get("/blasts/new")
    assert page.status_code == 200
    assert f'value="{ALERT}"' in page.text and f'value="{DRAFT}"' not in page.text


def test_only_a_liaison_may_open_preview_or_create(app: FastAPI, people: Engine) -> None:
    """Operators and approvers are refused the form, the preview and the creation."""
    for role in ("operator", "approver"):
        other = signed_in(app, people, f"nguoi-{role}", role)
        assert other.get("/blasts/new").status_code == 403
        assert other.post("/blasts/preview", data=_form()).status_code == 403
        assert other.post("/blasts", data=_form()).status_code == 403
    assert _blast_count(people) == 0


def test_a_legacy_name_shows_what_it_is_today(app: FastAPI, people: Engine) -> None:
    """A former district is shown with today's communes it became."""
    panel = signed_in(app, people, "lien-lac", "liaison").post("/blasts/preview", data=_form())
    assert panel.status_code == 200
    assert "Huyện Duy Xuyên" in panel.text and "nay 4 xã/phường của Thành phố Đà Nẵng" in panel.text
    assert "Xã Nam Phước" in panel.text


def test_the_preview_is_the_domain_preview(app: FastAPI, people: Engine, settings, regions, now) -> None:
    """Recipients, exclusions by reason, carriers and cost are the figures of `blast create --dry-run`."""
    panel = signed_in(app, people, "lien-lac", "liaison").post("/blasts/preview", data=_form()).text
    request = blasts.BlastRequest(ALERT, resolve(SegmentSpec(legacy_districts=(DUY_XUYEN,)), regions))
    with people.connect() as conn:
        expected = blasts.preview(conn, request, settings, regions, now)
    assert expected["recipients"] == 3 and expected["excluded"]["opted_out"] == 1
    assert "Người nhận: 3</strong> / 4" in panel
    assert 'từ chối nhận</td><td class="num">1' in panel
    assert "Viettel" in panel and f"{expected['cost']:,}".replace(",", ".") in panel
    assert "đã tính giờ yên lặng 22:00–07:00" in panel


def test_an_ambiguous_name_lists_its_candidates(app: FastAPI, people: Engine) -> None:
    """A commune name several places bear comes back with one button per candidate, and no preview."""
    panel = signed_in(app, people, "lien-lac", "liaison").post(
        "/blasts/preview", data=_form(legacy_districts="", communes="Xã Tân Tiến")
    )
    assert "Tên này có nhiều nơi; chọn một:" in panel.text
    assert panel.text.count('class="secondary pick"') > 2 and "Người nhận" not in panel.text


def test_an_unknown_name_is_said_in_vietnamese(app: FastAPI, people: Engine) -> None:
    """A place that does not exist is named back, and nothing is counted."""
    panel = signed_in(app, people, "lien-lac", "liaison").post("/blasts/preview", data=_form(provinces="Atlantis"))
    assert "Không tìm thấy địa danh &#39;Atlantis&#39;" in panel.text and "Người nhận" not in panel.text


def test_a_start_in_the_past_is_refused_on_the_form(app: FastAPI, people: Engine) -> None:
    """A start already past is the domain's refusal, shown on the form, and no blast is stored."""
    liaison = signed_in(app, people, "lien-lac", "liaison")
    past = _form(start_at="2026-11-20T09:00")
    assert "đã qua" in liaison.post("/blasts/preview", data=past).text
    answer = liaison.post("/blasts", data=past)
    assert answer.status_code == 400 and "đã qua" in answer.text and DUY_XUYEN in answer.text
    assert "Giờ bắt đầu 09:00 20/11/2026 đã qua" in answer.text and "--start-at" not in answer.text
    assert _blast_count(people) == 0


def test_a_hopeless_window_is_refused(app: FastAPI, people: Engine) -> None:
    """A not-after inside the night, when nothing may go out, is refused before anything is stored."""
    night = _form(start_at="2026-11-23T23:00", not_after="2026-11-24T05:00")
    answer = signed_in(app, people, "lien-lac", "liaison").post("/blasts", data=night)
    assert answer.status_code == 400 and "Không tin nào gửi kịp" in answer.text
    assert "giờ &#39;không gửi sau&#39;" in answer.text and "--not-after" not in answer.text
    assert _blast_count(people) == 0


def test_an_empty_segment_is_not_created(app: FastAPI, people: Engine) -> None:
    """A segment with nobody left after the exclusions is refused."""
    answer = signed_in(app, people, "lien-lac", "liaison").post(
        "/blasts", data=_form(legacy_districts="", provinces="Cao Bằng")
    )
    assert answer.status_code == 400 and "không có người nhận nào" in answer.text
    assert _blast_count(people) == 0


def test_unreadable_moments_rates_and_no_alert_are_named(app: FastAPI, people: Engine) -> None:
    """A start or a rate that cannot be read says which field and how to write it; a missing alert is asked for."""
    liaison = signed_in(app, people, "lien-lac", "liaison")
    assert "Bắt đầu lúc: không hiểu thời điểm" in liaison.post("/blasts/preview", data=_form(start_at="mai")).text
    assert "Tốc độ phải là một số" in liaison.post("/blasts/preview", data=_form(rate="nhanh")).text
    assert "Hãy chọn một mẫu cảnh báo" in liaison.post("/blasts/preview", data=_form(alert="")).text


def test_a_blast_is_created_for_approval_by_someone_else(app: FastAPI, people: Engine) -> None:
    """Creation waits for approval; its creator cannot approve it, another approver can."""
    liaison = signed_in(app, people, "lien-lac", "liaison", "approver")
    answer = liaison.post("/blasts", data=_form(carriers=["viettel", "vinaphone"], rate="20"))
    assert answer.status_code == 303
    page = answer.headers["location"]
    assert "chờ duyệt" in liaison.get(page).text
    assert liaison.post(f"{page}/approve").status_code == 403
    chief = signed_in(app, people, "truong-phong", "approver")
    assert chief.post(f"{page}/approve").status_code == 303
    with people.connect() as conn:
        blast = conn.execute(select(blasts_table)).mappings().one()
        actions = conn.execute(select(audit_log.c.actor, audit_log.c.action)).all()
    assert blast["state"] == "scheduled" and blast["rate"] == 20 and blast["created_by"] == "lien-lac"
    assert blast["segment"]["carriers"] == ["viettel", "vinaphone"]
    assert ("lien-lac", "blast.create") in actions and ("truong-phong", "blast.approve") in actions


def test_creation_needs_the_forms_csrf_token(app: FastAPI, people: Engine) -> None:
    """A create posted without the session's CSRF token is refused and stores nothing."""
    liaison = signed_in(app, people, "lien-lac", "liaison")
    del liaison.headers["X-CSRF-Token"]
    assert liaison.post("/blasts", data=_form()).status_code == 403
    assert liaison.post("/blasts", data={**_form(), "csrf_token": liaison.csrf}).status_code == 303
    assert anonymous(app).post("/blasts", data=_form()).status_code == 401
    assert _blast_count(people) == 1


def test_the_blasts_list_links_to_the_form_for_a_liaison(app: FastAPI, people: Engine) -> None:
    """A liaison sees the way to a new blast; an operator does not."""
    assert 'href="/blasts/new"' in signed_in(app, people, "lien-lac", "liaison").get("/blasts").text
    assert 'href="/blasts/new"' not in signed_in(app, people, "van-hanh", "operator").get("/blasts").text


def test_the_form_speaks_english_on_request(app: FastAPI, people: Engine) -> None:
    """With the English switch, the form and its preview panel are in English."""
    liaison = signed_in(app, people, "lien-lac", "liaison")
    liaison.cookies.set("lang", "en")
    assert "New blast" in liaison.get("/blasts/new").text
    panel = liaison.post("/blasts/preview", data=_form()).text
    assert "Recipients" in panel and "Estimated cost" in panel
