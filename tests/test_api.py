"""The HTTP API under /api/v1 driven through httpx: the CLI's operations, problem documents, the schema."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from dispatcher import blasts
from dispatcher import scheduler as scheduling
from dispatcher import schedules as campaigns
from dispatcher.config import Settings, load_settings
from dispatcher.models import subscribers as subscribers_table
from dispatcher.web.imports import jobs_of
from tests.clock import Clock
from tests.web_helpers import anonymous, api_client, make_app, signed_in
from tests.world import catalogue, people

ALERT = "gia-danh-cong-an-goi-video"
DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent
PROBLEM = "application/problem+json"
NEW_ALERT = {
    "id": "vay-tien-qua-app", "method": "loans_recover_money", "title": "Vay tiền qua ứng dụng lạ",
    "body": "CẢNH BÁO: Không vay tiền qua ứng dụng không rõ nguồn gốc. Gọi 113 khi bị đe doạ.",
    "source": "Công văn 12/CAT-PA05", "priority": "urgent",
}  # fmt: skip


def _settings(tmp_path: Path, **environ: str) -> Settings:
    return load_settings(None, {
        "CANHBAO_ROUTES": '{"default": ["fake"]}', "CANHBAO_CATALOGUE__MESSAGES_DIR": str(tmp_path / "messages"),
        "CANHBAO_SUBSCRIBERS__REJECTS_DIR": str(tmp_path / "rejects"), **environ,
    })  # fmt: skip


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture
def app(sqlite_engine: Engine, clock: Clock, tmp_path: Path, regions) -> FastAPI:
    made = make_app(_settings(tmp_path), sqlite_engine, clock)
    made.state.regions = regions  # the session's index: loading one costs a second
    return made


@pytest.fixture
def world(app: FastAPI, sqlite_engine: Engine, regions, now: datetime, tmp_path: Path) -> FastAPI:
    """40 people of Đà Nẵng and one approved alert."""
    people(sqlite_engine, regions, now, tmp_path, 40, seed=3)
    catalogue(sqlite_engine, now, [ALERT])
    return app


def _client(app: FastAPI, name: str, *roles: str) -> TestClient:
    return api_client(app, app.state.engine, name, *roles)


def _problem(answer, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    document = answer.json()
    assert document["type"] == f"urn:canhbao:problem:{code}" and document["code"] == code
    assert document["status"] == status and document["instance"] == answer.request.url.path
    return document


def _blast(app: FastAPI, creator: TestClient, **segment) -> int:
    asked = {"alert": ALERT, "provinces": ["Đà Nẵng"], **segment}
    answer = creator.post("/api/v1/blasts", json=asked)
    assert answer.status_code == 201, answer.text
    return answer.json()["blast_id"]


def _started(app: FastAPI, liaison: TestClient, clock: Clock) -> int:
    """A blast approved by a second person and started: its messages are queued."""
    blast_id = _blast(app, liaison)
    assert _client(app, "chief", "approver").post(f"/api/v1/blasts/{blast_id}/approve").status_code == 200
    with app.state.engine.begin() as conn:
        blasts.start_due(conn, app.state.settings, clock())
    return blast_id


# -- who may ------------------------------------------------------------------------------


def test_an_anonymous_call_gets_401_and_a_forbidden_one_403_as_problems(app: FastAPI) -> None:
    """No token is a 401 problem asking for a bearer token; a role the route does not allow is a 403 problem."""
    refused = _problem(anonymous(app).get("/api/v1/blasts"), 401, "unauthenticated")
    assert refused["title"] == "Cần đăng nhập." and refused["detail"] == "Cần đăng nhập."
    police = _client(app, "lan", "police")
    assert _problem(police.get("/api/v1/blasts"), 403, "forbidden")["title"] == "Bạn không có quyền làm việc này."


def test_problems_follow_accept_language(app: FastAPI) -> None:
    """Vietnamese by default, English when the caller asks for it first."""
    police = _client(app, "lan", "police")
    english = police.get("/api/v1/blasts", headers={"Accept-Language": "en-GB,vi;q=0.5"})
    assert _problem(english, 403, "forbidden")["title"] == "You are not allowed to do this."
    missing = police.get("/api/v1/alerts/khong-co", headers={"Accept-Language": "fr, en"})
    assert _problem(missing, 404, "not_found")["title"] == "Not found."


def test_a_bearer_token_needs_no_csrf_token(world: FastAPI) -> None:
    """A program posts with its token alone; the same post from a signed-in browser needs the CSRF header."""
    asked = {"alert": ALERT, "provinces": ["Đà Nẵng"]}
    assert _client(world, "hoa", "liaison").post("/api/v1/blasts/preview", json=asked).status_code == 200
    browser = signed_in(world, world.state.engine, "hoa", "liaison")
    del browser.headers["X-CSRF-Token"]
    assert _problem(browser.post("/api/v1/blasts/preview", json=asked), 403, "csrf")


def test_an_unknown_api_address_is_a_problem(app: FastAPI) -> None:
    """Not only refusals: a path the API does not have answers a 404 problem document too."""
    document = _problem(_client(app, "lan", "police").get("/api/v1/khong-co"), 404, "not_found")
    assert document["detail"] == "Không có địa chỉ này trong API."


# -- alerts -------------------------------------------------------------------------------


def test_police_add_an_alert_that_is_stored_as_a_draft_and_written_to_the_catalogue(
    app: FastAPI, tmp_path: Path
) -> None:
    """POST /alerts stores a draft by the caller, writes messages/<id>.toml and answers both renderings."""
    police = _client(app, "lan", "police")
    answer = police.post("/api/v1/alerts", json=NEW_ALERT)
    assert answer.status_code == 201, answer.text
    alert = answer.json()
    assert alert["status"] == "draft" and alert["author"] == "lan" and alert["version"] == 1
    assert alert["renderings"]["ascii"]["text"].startswith("CANH BAO")
    assert alert["renderings"]["unicode"]["parts"] >= alert["renderings"]["ascii"]["parts"]
    assert (tmp_path / "messages" / "vay-tien-qua-app.toml").is_file()
    listed = police.get("/api/v1/alerts", params={"status": "draft"}).json()
    assert [a["id"] for a in listed] == ["vay-tien-qua-app"]
    assert police.get("/api/v1/alerts/vay-tien-qua-app").json()["title"] == NEW_ALERT["title"]


def test_adding_an_alert_twice_is_a_state_conflict(app: FastAPI) -> None:
    """The second POST of the same id is a 409 problem saying the alert exists."""
    police = _client(app, "lan", "police")
    assert police.post("/api/v1/alerts", json=NEW_ALERT).status_code == 201
    assert "Đã có" in _problem(police.post("/api/v1/alerts", json=NEW_ALERT), 409, "state")["detail"]


def test_the_domain_refuses_a_bad_alert_with_its_own_words(app: FastAPI) -> None:
    """An unknown method is checked by the catalogue, not by the API: a 422 problem naming the method."""
    police = _client(app, "lan", "police")
    document = _problem(police.post("/api/v1/alerts", json={**NEW_ALERT, "method": "khong-co"}), 422, "rejected")
    assert "khong-co" in document["detail"]


def test_an_invalid_body_is_a_422_problem_listing_each_field(app: FastAPI) -> None:
    """Field errors say where and what, in Vietnamese by default and in English when asked."""
    police = _client(app, "lan", "police")
    body = {**NEW_ALERT, "valid_days": 0, "extra": 1}
    del body["title"]
    document = _problem(police.post("/api/v1/alerts", json=body), 422, "validation")
    found = {error["location"]: error["message"] for error in document["errors"]}
    assert found["body.title"] == "thiếu trường này"
    assert found["body.valid_days"] == "phải lớn hơn hoặc bằng 1"
    assert found["body.extra"] == "trường không có trong API"
    assert document["detail"] == "Có 3 trường không hợp lệ."
    english = police.post("/api/v1/alerts", json=body, headers={"Accept-Language": "en"}).json()
    assert english["title"] == "The data sent is not valid." and english["detail"] == "3 fields are not valid."
    assert {e["message"] for e in english["errors"]} >= {"Field required"}


def test_an_alert_is_submitted_then_approved_by_someone_else_only(app: FastAPI) -> None:
    """Four-eyes from the domain: the author holding the approver role is refused with 403, another approver is not."""
    author = _client(app, "lan", "police", "approver")
    assert author.post("/api/v1/alerts", json=NEW_ALERT).status_code == 201
    submitted = author.post("/api/v1/alerts/vay-tien-qua-app/submit")
    assert submitted.json() == {"id": "vay-tien-qua-app", "version": 1, "status": "submitted", "actor": "lan"}
    document = _problem(author.post("/api/v1/alerts/vay-tien-qua-app/approve"), 403, "forbidden")
    assert "nguyên tắc bốn mắt" in document["detail"]
    approved = _client(app, "minh", "approver").post("/api/v1/alerts/vay-tien-qua-app/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert _problem(author.post("/api/v1/alerts/vay-tien-qua-app/submit"), 409, "state")


# -- blasts -------------------------------------------------------------------------------


def test_a_preview_counts_recipients_and_stores_nothing(world: FastAPI) -> None:
    """POST /blasts/preview answers the CLI's dry-run document; no blast is made."""
    liaison = _client(world, "hoa", "liaison")
    shown = liaison.post("/api/v1/blasts/preview", json={"alert": ALERT, "provinces": ["Đà Nẵng"]}).json()
    assert shown["recipients"] == 40 and sum(shown["by_carrier"].values()) == 40
    assert shown["total_parts"] == 40 * shown["parts_per_message"]
    assert liaison.get("/api/v1/blasts").json() == []


def test_a_region_the_domain_does_not_know_is_a_problem_in_its_words(world: FastAPI) -> None:
    """Region names are resolved by the domain: an unknown one is its `not_found`, a 404 problem that names it."""
    liaison = _client(world, "hoa", "liaison")
    answer = liaison.post("/api/v1/blasts/preview", json={"alert": ALERT, "provinces": ["Xứ Sở Thần Tiên"]})
    assert "Xứ Sở Thần Tiên" in _problem(answer, 404, "not_found")["detail"]


def test_a_blast_is_created_and_approved_by_a_second_person_only(world: FastAPI) -> None:
    """The creator holding the approver role gets 403 (four-eyes); another approver schedules it; twice is 409."""
    creator = _client(world, "hoa", "liaison", "approver")
    blast_id = _blast(world, creator)
    assert _problem(creator.post(f"/api/v1/blasts/{blast_id}/approve"), 403, "forbidden")
    chief = _client(world, "chief", "approver")
    approved = chief.post(f"/api/v1/blasts/{blast_id}/approve").json()
    assert approved == {"blast_id": blast_id, "state": "scheduled", "actor": "chief"}
    assert _problem(chief.post(f"/api/v1/blasts/{blast_id}/approve"), 409, "state")
    assert _problem(chief.post("/api/v1/blasts/999/approve"), 404, "not_found")


def test_a_blast_pauses_resumes_and_cancels(world: FastAPI, clock: Clock) -> None:
    """The liaison's actions move the blast as the CLI's do; a cancelled blast cannot be resumed."""
    liaison = _client(world, "hoa", "liaison")
    blast_id = _started(world, liaison, clock)
    assert liaison.post(f"/api/v1/blasts/{blast_id}/pause").json()["state"] == "paused"
    assert liaison.post(f"/api/v1/blasts/{blast_id}/resume").json()["state"] == "running"
    assert liaison.post(f"/api/v1/blasts/{blast_id}/resend-unknown").json() == {"blast_id": blast_id, "requeued": 0}
    assert liaison.post(f"/api/v1/blasts/{blast_id}/cancel").json()["state"] == "cancelled"
    assert _problem(liaison.post(f"/api/v1/blasts/{blast_id}/resume"), 409, "state")


def test_a_blast_shows_its_counts_by_state_and_carrier(world: FastAPI, clock: Clock) -> None:
    """GET /blasts/{id} carries the counts the console shows, and the list names the alert and segment."""
    liaison = _client(world, "hoa", "liaison")
    blast_id = _started(world, liaison, clock)
    operator = _client(world, "van", "operator")
    shown = operator.get(f"/api/v1/blasts/{blast_id}").json()
    assert shown["state"] == "running" and shown["counts"]["queued"] == 40
    assert sum(n for by_state in shown["by_carrier"].values() for n in by_state.values()) == 40
    listed = operator.get("/api/v1/blasts").json()
    assert listed[0]["id"] == blast_id and listed[0]["alert"] == ALERT and listed[0]["segment"]


# -- deliveries ---------------------------------------------------------------------------


def test_the_delivery_log_is_paged_by_key_with_numbers_masked(world: FastAPI, clock: Clock) -> None:
    """Pages follow `next_before` newest first, cover every message once, and hold no full number."""
    blast_id = _started(world, _client(world, "hoa", "liaison"), clock)
    operator = _client(world, "van", "operator")
    seen, before = [], None
    while True:
        asked = {"blast": blast_id, "limit": 15} | ({"before": before} if before else {})
        answer = operator.get("/api/v1/deliveries", params=asked)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seen += page["items"]
        before = page["next_before"]
        if before is None:
            break
    ids = [row["id"] for row in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 40
    assert all("****" in row["msisdn"] for row in seen)


def test_the_delivery_log_filters_and_refuses_bad_filters(world: FastAPI, clock: Clock) -> None:
    """A carrier or gateway narrows the log; an unknown carrier or state is a 422 problem in Vietnamese."""
    _started(world, _client(world, "hoa", "liaison"), clock)
    operator = _client(world, "van", "operator")
    viettel = operator.get("/api/v1/deliveries", params={"carrier": "Viettel"}).json()["items"]
    assert viettel and {row["carrier"] for row in viettel} == {"viettel"}
    assert operator.get("/api/v1/deliveries", params={"gateway": "fake"}).json()["items"] == []  # none sent yet
    assert "Vinafone9" in _problem(operator.get("/api/v1/deliveries", params={"carrier": "Vinafone9"}), 422,
                                   "usage")["detail"]  # fmt: skip
    assert _problem(operator.get("/api/v1/deliveries", params={"status": "gửi rồi"}), 422, "usage")


def test_one_number_is_searched_by_post_and_answered_masked(world: FastAPI, clock: Clock) -> None:
    """The number travels in the body; the answer is that number's messages, masked."""
    _started(world, _client(world, "hoa", "liaison"), clock)
    operator = _client(world, "van", "operator")
    with world.state.engine.connect() as conn:
        number = conn.exec_driver_sql("SELECT msisdn FROM deliveries ORDER BY id LIMIT 1").scalar_one()
    answer = operator.post("/api/v1/deliveries/search", json={"msisdn": number})
    rows = answer.json()["items"]
    assert len(rows) == 1 and rows[0]["msisdn"] == number[:5] + "****" + number[-3:]
    assert number not in answer.text and number not in str(answer.request.url)
    assert _problem(operator.post("/api/v1/deliveries/search", json={"msisdn": "12345"}), 422, "usage")


# -- subscribers --------------------------------------------------------------------------


def test_an_uploaded_file_is_imported_with_its_refused_rows_masked(app: FastAPI, sqlite_engine: Engine) -> None:
    """The same import as the CLI: its summary, the refused rows with their reasons, and an audit entry."""
    liaison = _client(app, "hoa", "liaison")
    content = (DATA / "thue-bao-da-nang.csv").read_bytes()
    answer = liaison.post("/api/v1/subscribers/import", files={"file": ("thue-bao.csv", content, "text/csv")})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["rows"], result["added"], result["rejected"], result["duplicates"]) == (19, 7, 11, 1)
    by_row = {r["row"]: r for r in result["rejects"]}
    assert len(by_row) == 12 and "máy bàn" in by_row[9]["reason"]
    assert by_row[2]["msisdn"] == "+8490****401" and "+84905123401" not in answer.text
    audit = _client(app, "van", "operator").get("/api/v1/audit", params={"action": "subscribers.import"}).json()
    assert audit["items"][0]["subject"] == "file:thue-bao.csv" and audit["items"][0]["actor"] == "hoa"


def test_a_file_over_the_size_limit_is_a_413_problem(sqlite_engine: Engine, clock: Clock, tmp_path: Path) -> None:
    """Past [web] import_max_mb the API answers 413 in the asked language, and nothing is imported."""
    app = make_app(_settings(tmp_path, CANHBAO_WEB__IMPORT_MAX_MB="0.01"), sqlite_engine, clock)  # 10 KB
    liaison = _client(app, "hoa", "liaison")
    content = (DATA / "thue-bao-da-nang.csv").read_bytes() * 400  # well past the limit and the form's room
    answer = liaison.post("/api/v1/subscribers/import", files={"file": ("lon.csv", content, "text/csv")})
    assert _problem(answer, 413, "too_large")["detail"] == (
        "Tệp quá lớn: tối đa 10 KB ([web] import_max_mb); không có gì được lưu."
    )
    english = liaison.post("/api/v1/subscribers/import", files={"file": ("lon.csv", content[:20_000], "text/csv")},
                           headers={"Accept-Language": "en"})  # fmt: skip
    assert _problem(english, 413, "too_large")["detail"].startswith("The file is too large: at most 10 KB")
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(subscribers_table)).scalar_one() == 0


def test_a_long_import_answers_202_and_is_followed_at_its_href(sqlite_engine: Engine, clock: Clock, tmp_path) -> None:
    """Not done within import_wait_seconds: 202 with a Location; asking it gives the rows read, then the result."""
    app = make_app(_settings(tmp_path, CANHBAO_WEB__IMPORT_WAIT_SECONDS="0"), sqlite_engine, clock)
    liaison = _client(app, "hoa", "liaison")
    content = (DATA / "thue-bao-da-nang.csv").read_bytes()
    answer = liaison.post("/api/v1/subscribers/import", files={"file": ("thue-bao.csv", content, "text/csv")})
    assert answer.status_code == 202 and answer.json()["state"] in ("running", "done")
    href = answer.headers["location"]
    assert href == answer.json()["href"] and href.startswith("/api/v1/subscribers/imports/")
    jobs_of(app.state).find(href.rsplit("/", 1)[1], "hoa").future.result(timeout=60)
    ended = liaison.get(href).json()
    assert (ended["state"], ended["file"], ended["rows_read"]) == ("done", "thue-bao.csv", 19)
    assert ended["result"]["added"] == 7 and "+84905123401" not in str(ended)
    _problem(_client(app, "lan", "liaison").get(href), 404, "not_found")


def test_a_file_that_is_not_a_table_is_refused_without_the_server_path(app: FastAPI) -> None:
    """A PDF is a 422 problem naming the file as sent, never the temporary folder it was written to."""
    liaison = _client(app, "hoa", "liaison")
    answer = liaison.post("/api/v1/subscribers/import", files={"file": ("bao-cao.pdf", b"%PDF-1.4", "application/pdf")})
    detail = _problem(answer, 422, "usage")["detail"]
    assert "bao-cao.pdf" in detail and "canhbao-import-" not in detail


# -- schedules and audit ------------------------------------------------------------------


def test_a_campaign_is_approved_by_someone_other_than_who_synced_it(app: FastAPI, clock: Clock) -> None:
    """The schedules of the repository, synced by one person: that person is refused (403), another approves."""
    specs = campaigns.load_dir(REPO / "schedules", "Asia/Ho_Chi_Minh")
    with app.state.engine.begin() as conn:
        scheduling.sync(conn, specs, "hoa", clock())
    listed = _client(app, "van", "operator").get("/api/v1/schedules", params={"next": 2}).json()
    name = listed[0]["name"]
    assert listed[0]["state"] == "pending_approval" and len(listed[0]["next_runs"]) == 2
    assert _problem(_client(app, "hoa", "approver").post(f"/api/v1/schedules/{name}/approve"), 403, "forbidden")
    approved = _client(app, "chief", "approver").post(f"/api/v1/schedules/{name}/approve")
    assert approved.json() == {"name": name, "state": "active", "actor": "chief"}
    assert _problem(_client(app, "chief", "approver").post("/api/v1/schedules/khong-co/approve"), 404, "not_found")


def test_the_audit_log_is_filtered_and_paged_by_key(world: FastAPI) -> None:
    """Entries newest first, narrowed by action group and actor, paged by `next_before`."""
    liaison = _client(world, "hoa", "liaison")
    for _ in range(3):
        _blast(world, liaison)
    admin = _client(world, "quan-tri", "admin")
    first = admin.get("/api/v1/audit", params={"action": "blast", "actor": "hoa", "limit": 2}).json()
    assert [e["action"] for e in first["items"]] == ["blast.create", "blast.create"]
    rest = admin.get("/api/v1/audit", params={"action": "blast", "before": first["next_before"]}).json()
    assert len(rest["items"]) == 1 and rest["next_before"] is None
    assert rest["items"][0]["id"] < first["items"][-1]["id"]
    through_api = admin.get("/api/v1/audit", params={"action": "blast", "source": "api"}).json()["items"]
    assert len(through_api) == 3 and all(e["via"].startswith("token:") for e in through_api)
    assert admin.get("/api/v1/audit", params={"action": "blast", "source": "cli"}).json()["items"] == []
    bad = admin.get("/api/v1/audit", params={"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"})
    assert "kết thúc" in _problem(bad, 422, "usage")["detail"]


# -- the schema ---------------------------------------------------------------------------


def test_the_openapi_schema_is_public_and_describes_the_api_alone(app: FastAPI) -> None:
    """/openapi.json needs no token, lists /api/v1 only, with bearer security, examples and problem answers."""
    schema = anonymous(app).get("/openapi.json").json()
    assert schema["paths"] and all(path.startswith("/api/v1/") for path in schema["paths"])
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    approve = schema["paths"]["/api/v1/blasts/{blast_id}/approve"]["post"]["responses"]
    assert approve["403"]["content"][PROBLEM]["schema"]["$ref"] == "#/components/schemas/Problem"
    assert schema["components"]["schemas"]["BlastRequest"]["examples"][0]["alert"]
    assert "/metrics" not in schema["paths"] and "/openapi.json" not in schema["paths"]
