"""The subscribers page: counts by province and carrier, file imports with their reject report, opt-out and opt-in."""

from __future__ import annotations

import shutil
import threading
from datetime import datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from dispatcher import subscribers
from dispatcher.config import Settings, load_settings
from dispatcher.errors import CanhBaoError
from dispatcher.models import audit_log
from dispatcher.models import subscribers as subscribers_table
from dispatcher.regions import RegionIndex
from dispatcher.web import imports
from tests.clock import Clock
from tests.web_helpers import make_app, signed_in

DATA = Path(__file__).parent / "data"
CSV_TEXT = (
    "Số điện thoại,Tỉnh/Thành phố,Xã/Phường\n"
    "0905 123 401,Đà Nẵng,Phường Hải Châu\n"
    "0912 345 678,Cao Bằng,\n"
    "12345,Đà Nẵng,Phường Hải Châu\n"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The reject reports go into this test's own folder."""
    path = tmp_path / "settings.toml"
    path.write_text(f'[subscribers]\nrejects_dir = "{tmp_path / "rejects"}"\n', "utf-8")
    return load_settings(path, {})


@pytest.fixture
def app(sqlite_engine: Engine, settings: Settings, now: datetime, regions: RegionIndex) -> FastAPI:
    built = make_app(settings, sqlite_engine, Clock(now))
    built.state.regions = regions  # loaded once for the session
    return built


def _upload(client, name: str, content: bytes):  # type: ignore[no-untyped-def]
    return client.post("/subscribers/import", files={"file": (name, content, "application/octet-stream")})


def _numbers(engine: Engine) -> dict[str, datetime | None]:
    with engine.connect() as conn:
        return dict(conn.execute(select(subscribers_table.c.msisdn, subscribers_table.c.opted_out_at)).all())


def _audit(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(audit_log.c.actor, audit_log.c.action, audit_log.c.subject))]


def test_a_csv_upload_is_imported_and_its_rejects_can_be_downloaded(app: FastAPI, sqlite_engine: Engine) -> None:
    """The summary of the domain import is shown, the refused row is in a CSV report, the import is audited."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    page = _upload(liaison, "thuê bao tháng 11.csv", CSV_TEXT.encode("utf-8"))
    assert page.status_code == 200
    assert "thêm 2</strong>" in page.text and "từ chối 1" in page.text
    assert set(_numbers(sqlite_engine)) == {"+84905123401", "+84912345678"}
    assert ("lien-lac", "subscribers.import", "file:thuê bao tháng 11.csv") in _audit(sqlite_engine)
    link = page.text.split('href="/subscribers/rejects/', 1)[1].split('"', 1)[0]
    report = liaison.get(f"/subscribers/rejects/{link}")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    assert "12345" in report.content.decode("utf-8-sig") and "lý do" in report.content.decode("utf-8-sig")


def test_an_xlsx_upload_is_imported(app: FastAPI, sqlite_engine: Engine) -> None:
    """A workbook goes through the same import as a CSV."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    page = _upload(liaison, "danh-sach.xlsx", (DATA / "subscribers-cao-bang-da-nang.xlsx").read_bytes())
    assert page.status_code == 200 and "Kết quả nhập" in page.text
    assert _numbers(sqlite_engine)


def test_a_file_that_is_not_a_subscriber_list_is_refused(app: FastAPI, sqlite_engine: Engine) -> None:
    """A file of another kind, one without a number column, or no file at all: a Vietnamese message, nothing stored."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    pdf = _upload(liaison, "cong-van.pdf", b"%PDF-1.4")
    assert pdf.status_code == 400 and "chỉ nhận CSV hoặc XLSX" in pdf.text
    headless = _upload(liaison, "sai-cot.csv", "Họ tên,Tỉnh\nLan,Đà Nẵng\n".encode())
    assert headless.status_code == 400 and "số điện thoại" in headless.text.lower()
    assert liaison.post("/subscribers/import", data={}).status_code in (400, 422)
    assert not _numbers(sqlite_engine)


def test_only_a_liaison_imports_or_opts_out(app: FastAPI, sqlite_engine: Engine) -> None:
    """An operator reads the counts but may neither import nor change a refusal; a police officer sees nothing."""
    operator = signed_in(app, sqlite_engine, "van-hanh", "operator")
    assert operator.get("/subscribers").status_code == 200
    assert _upload(operator, "a.csv", CSV_TEXT.encode()).status_code == 403
    assert operator.post("/subscribers/opt-out", data={"msisdn": "0905123401"}).status_code == 403
    assert signed_in(app, sqlite_engine, "cong-an", "police").get("/subscribers").status_code == 403
    assert not _numbers(sqlite_engine)


def test_an_upload_needs_the_csrf_token(app: FastAPI, sqlite_engine: Engine) -> None:
    """A multipart post without the session's token is refused before the file is read."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    del liaison.headers["X-CSRF-Token"]
    assert _upload(liaison, "a.csv", CSV_TEXT.encode()).status_code == 403
    answer = liaison.post("/subscribers/import", data={"csrf_token": liaison.csrf},
                          files={"file": ("a.csv", CSV_TEXT.encode(), "text/csv")})  # fmt: skip
    assert answer.status_code == 200 and len(_numbers(sqlite_engine)) == 2


def test_opt_out_and_in_by_posted_number(app: FastAPI, sqlite_engine: Engine) -> None:
    """The number travels in the body, is shown masked, and the domain records the change in the audit log."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    _upload(liaison, "a.csv", CSV_TEXT.encode())
    out = liaison.post("/subscribers/opt-out", data={"msisdn": "0905 123 401", "action": "out"})
    assert out.status_code == 200 and "+8490****401 đã từ chối" in out.text and "0905123401" not in out.text
    assert "0905" not in str(out.url) and _numbers(sqlite_engine)["+84905123401"] is not None
    back = liaison.post("/subscribers/opt-out", data={"msisdn": "0905123401", "action": "in"})
    assert "nhận lại cảnh báo" in back.text and _numbers(sqlite_engine)["+84905123401"] is None
    actions = [(action, target) for _actor, action, target in _audit(sqlite_engine)]
    assert ("subscriber.opt_out", "+8490****401") in actions and ("subscriber.opt_in", "+8490****401") in actions


def test_a_refusal_of_a_number_not_held_is_kept(app: FastAPI, sqlite_engine: Engine) -> None:
    """Opting out an unknown number holds the refusal; opting in a number never refused says so."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    held = liaison.post("/subscribers/opt-out", data={"msisdn": "0988000111", "action": "out"})
    assert "đã ghi vào danh sách từ chối" in held.text
    with sqlite_engine.connect() as conn:
        assert subscribers.held_refusals(conn) == 1
    unknown = liaison.post("/subscribers/opt-out", data={"msisdn": "0988000222", "action": "in"})
    assert unknown.status_code == 404 and "+8498****222" in unknown.text


def test_a_bad_number_is_said_in_vietnamese(app: FastAPI, sqlite_engine: Engine) -> None:
    """A number that is not a Vietnamese mobile number is refused with the reason."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    answer = liaison.post("/subscribers/opt-out", data={"msisdn": "12345", "action": "out"})
    assert answer.status_code == 400 and 'class="error"' in answer.text


def test_the_counts_are_those_of_subscribers_stats(app: FastAPI, sqlite_engine: Engine) -> None:
    """Provinces and carriers with their subscribers and opt-outs, as `canhbao subscribers stats` counts them."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    _upload(liaison, "a.csv", CSV_TEXT.encode())
    page = liaison.get("/subscribers").text
    assert "Thành phố Đà Nẵng" in page and "Tỉnh Cao Bằng" in page and "MobiFone" in page and "VinaPhone" in page
    with sqlite_engine.connect() as conn:
        assert subscribers.stats(conn)["total"] == 2


def test_only_reject_reports_can_be_downloaded(app: FastAPI, sqlite_engine: Engine, tmp_path: Path) -> None:
    """A name outside the rejects folder, or not a report, is not served."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    shutil.copy(DATA / "thue-bao-da-nang.csv", tmp_path / "secret.rejects.csv")
    (tmp_path / "rejects").mkdir(exist_ok=True)
    for name in ("..%2Fsecret.rejects.csv", "khong-co.rejects.csv", "settings.toml"):
        assert liaison.get(f"/subscribers/rejects/{name}").status_code == 404


def _app_with(sqlite_engine: Engine, tmp_path: Path, now: datetime, regions: RegionIndex, **web: str) -> FastAPI:
    """The app with `[web]` keys set (as environment variables, as a deployment may)."""
    path = tmp_path / "settings.toml"
    path.write_text(f'[subscribers]\nrejects_dir = "{tmp_path / "rejects"}"\n', "utf-8")
    environ = {f"CANHBAO_WEB__{key.upper()}": value for key, value in web.items()}
    built = make_app(load_settings(path, environ), sqlite_engine, Clock(now))
    built.state.regions = regions
    return built


def test_a_file_over_the_size_limit_is_refused_with_413(sqlite_engine, tmp_path, now, regions) -> None:
    """Past [web] import_max_mb the page answers 413 in Vietnamese and nothing is imported or audited."""
    app = _app_with(sqlite_engine, tmp_path, now, regions, import_max_mb="0.0001")  # 100 bytes
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    page = _upload(liaison, "lon.csv", CSV_TEXT.encode() * 3)
    assert page.status_code == 413
    assert "Tệp quá lớn: tối đa 0,1 KB ([web] import_max_mb); không có gì được lưu." in page.text
    assert not _numbers(sqlite_engine) and not [a for a in _audit(sqlite_engine) if a[1] == "subscribers.import"]


def test_a_long_import_goes_on_in_the_background_and_its_page_follows_it(sqlite_engine, tmp_path, now, regions) -> None:
    """Not done within import_wait_seconds: the upload leads to the job's page, which polls until the result."""
    app = _app_with(sqlite_engine, tmp_path, now, regions, import_wait_seconds="0")
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    answer = _upload(liaison, "thang-11.csv", CSV_TEXT.encode())
    assert answer.status_code == 303 and answer.headers["location"].startswith("/subscribers/imports/")
    job = answer.headers["location"]
    imports.jobs_of(app.state).find(job.rsplit("/", 1)[1], "lien-lac").future.result(timeout=60)
    box = liaison.get(f"{job}/progress")
    assert box.status_code == 200 and "<html" not in box.text and "hx-trigger" not in box.text
    assert "thêm 2</strong>" in box.text and "/subscribers/rejects/" in box.text
    assert "thêm 2</strong>" in liaison.get(job).text
    assert ("lien-lac", "subscribers.import", "file:thang-11.csv") in _audit(sqlite_engine)
    other = signed_in(app, sqlite_engine, "nguoi-khac", "liaison")
    assert other.get(job).status_code == 404 and other.get(f"{job}/progress").status_code == 404


STOPPED = "Tệp dừng giữa chừng."  # the error an import held by `_held_import` ends with
IMPORTED = subscribers.ImportSummary(5_000, 4_990, 0, 0, 10, None, duplicates=1)


def _held_import(
    app: FastAPI, outcome: subscribers.ImportSummary | str
) -> tuple[imports.ImportJob, Path, threading.Event]:
    """An import of "lon.csv" (2.5 MB) started on `app` by lien-lac, held once it has read 5,000 rows.

    Returns (the job, its upload folder, the event that lets it end with `outcome`: that summary, or an
    error saying it).
    """
    release, reading = threading.Event(), threading.Event()

    def slow(path: Path, on_progress) -> subscribers.ImportSummary:  # type: ignore[no-untyped-def]
        on_progress(5_000)
        reading.set()
        release.wait(30)
        if isinstance(outcome, str):
            raise CanhBaoError(outcome)
        return outcome

    folder = imports.upload_folder()
    (folder / "lon.csv").write_bytes(b"x")
    job = imports.jobs_of(app.state).start("lien-lac", folder / "lon.csv", 2_500_000, slow)
    assert reading.wait(30)
    return job, folder, release


def test_an_import_in_progress_shows_the_rows_read_and_polls(app: FastAPI, sqlite_engine: Engine, tmp_path) -> None:
    """While the import runs, its box says how many rows were read and asks again every second."""
    liaison = signed_in(app, sqlite_engine, "lien-lac", "liaison")
    job, folder, release = _held_import(app, STOPPED)
    page = liaison.get(f"/subscribers/imports/{job.id}").text
    assert f'hx-get="/subscribers/imports/{job.id}/progress"' in page and 'hx-trigger="every 1s"' in page
    assert "Đã đọc <strong>5.000</strong> dòng (2,5 MB)" in page
    release.set()
    job.future.result(timeout=30)
    ended = liaison.get(f"/subscribers/imports/{job.id}/progress").text
    assert "Tệp dừng giữa chừng." in ended and "hx-trigger" not in ended and not folder.exists()


def test_an_import_taken_by_one_web_process_is_followed_from_another(engine, tmp_path, now, regions) -> None:
    """A second process (its own app, same database) shows the job of the first running, then its result."""
    taking, other = (_app_with(engine, tmp_path, now, regions, import_wait_seconds="0") for _ in range(2))
    liaison = signed_in(other, engine, "lien-lac", "liaison")
    job, _, release = _held_import(taking, IMPORTED)
    running = liaison.get(f"/subscribers/imports/{job.id}")
    release.set()
    job.future.result(timeout=30)
    ended = liaison.get(f"/subscribers/imports/{job.id}/progress").text
    assert running.status_code == 200 and "Đang nhập" in running.text and "lon.csv" in running.text
    assert 'hx-trigger="every 1s"' in running.text and "thêm 4.990</strong>" in ended and "hx-trigger" not in ended
    stranger = signed_in(other, engine, "nguoi-khac", "liaison")
    assert stranger.get(f"/subscribers/imports/{job.id}").status_code == 404


@pytest.mark.postgres
def test_on_postgresql_another_process_sees_the_rows_read(pg_engine, tmp_path, now, regions) -> None:
    """On PostgreSQL the count of rows read is stored while the import runs, so any process shows it."""
    taking, other = (_app_with(pg_engine, tmp_path, now, regions) for _ in range(2))
    liaison = signed_in(other, pg_engine, "lien-lac", "liaison")
    job, _, release = _held_import(taking, STOPPED)
    box = liaison.get(f"/subscribers/imports/{job.id}/progress").text
    release.set()
    job.future.result(timeout=30)
    assert "Đã đọc <strong>5.000</strong> dòng (2,5 MB)" in box
    assert "Tệp dừng giữa chừng." in liaison.get(f"/subscribers/imports/{job.id}/progress").text
