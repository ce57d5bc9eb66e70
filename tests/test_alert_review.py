"""An alert's review: rejection with a reason (four-eyes), editing a draft into a new version, history and diff."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dispatcher import alerts
from dispatcher.config import SmsSettings
from dispatcher.errors import NotAllowed, StateError, UsageError
from tests.test_alerts import CATALOGUE, VALID, act, audit_entries, rows, sync_dir, write_alert

SPEC = alerts.AlertSpec(**{k: v for k, v in VALID.items() if k != "audiences"}, audiences=tuple(VALID["audiences"]))


def submitted(engine: Engine, directory: Path, now: datetime) -> None:
    """The valid alert synced by 'police' and submitted."""
    write_alert(directory)
    sync_dir(engine, directory, now, actor="police")
    act(engine, "submit", "police", now)


def reject(engine: Engine, actor: str, reason: str, now: datetime) -> dict:
    with engine.begin() as conn:
        return alerts.reject(conn, "thu-nghiem", actor, reason, now)


def test_an_approver_sends_a_submitted_alert_back_with_the_reason(
    engine: Engine, tmp_path: Path, now: datetime
) -> None:
    """A rejection keeps who, when and why on the version, and the audit log says so."""
    submitted(engine, tmp_path, now)
    row = reject(engine, "lanh-dao", "  Thiếu số công văn  ", now)
    assert (row["status"], row["approver"]) == ("rejected", None)
    with engine.connect() as conn:
        assert alerts.rejections(conn, "thu-nghiem") == {
            1: {"version": 1, "rejected_by": "lanh-dao", "rejected_at": now, "reason": "Thiếu số công văn"}
        }
    assert audit_entries(engine)[-1] == ("alert.reject", "lanh-dao")


@pytest.mark.parametrize("actor", ["police", "POLICE"])
def test_the_author_cannot_reject_their_own_alert(
    sqlite_engine: Engine, tmp_path: Path, now: datetime, actor: str
) -> None:
    """Four eyes hold for a rejection as for an approval."""
    submitted(sqlite_engine, tmp_path, now)
    with pytest.raises(NotAllowed, match="bốn mắt"):
        reject(sqlite_engine, actor, "Thiếu số công văn", now)
    assert rows(sqlite_engine)[0]["status"] == "submitted"


@pytest.mark.parametrize("reason", ["", "   ", "sai", "x" * 1001])
def test_a_rejection_needs_a_reason(sqlite_engine: Engine, tmp_path: Path, now: datetime, reason: str) -> None:
    """No reason, a word too short or a text too long is refused and the alert stays submitted."""
    submitted(sqlite_engine, tmp_path, now)
    with pytest.raises(UsageError, match="Cần nêu lý do trả lại"):
        reject(sqlite_engine, "lanh-dao", reason, now)
    assert rows(sqlite_engine)[0]["status"] == "submitted"


def test_only_a_submitted_alert_can_be_rejected(sqlite_engine: Engine, tmp_path: Path, now: datetime) -> None:
    """A draft never offered for approval is not the approver's to send back."""
    write_alert(tmp_path)
    sync_dir(sqlite_engine, tmp_path, now)
    with pytest.raises(StateError, match="cần 'chờ duyệt'"):
        reject(sqlite_engine, "lanh-dao", "Thiếu số công văn", now)


def test_a_rejected_alert_is_edited_into_a_new_draft_and_its_file_follows(
    sqlite_engine: Engine, tmp_path: Path, now: datetime
) -> None:
    """The edit is version 2 by its editor; the file is rewritten, so a sync then finds nothing changed."""
    submitted(sqlite_engine, tmp_path, now)
    reject(sqlite_engine, "lanh-dao", "Thiếu số công văn", now)
    edited = replace(SPEC, source="Công văn số 12/CAT-PA05 ngày 01/12/2026")
    with sqlite_engine.begin() as conn:
        row = alerts.revise(conn, edited, CATALOGUE, tmp_path, "pa05-hai", "web", now)
    assert (row["version"], row["status"], row["author"], row["origin"]) == (2, "draft", "pa05-hai", "web")
    assert "12/CAT-PA05" in (tmp_path / "thu-nghiem.toml").read_text(encoding="utf-8")
    assert sync_dir(sqlite_engine, tmp_path, now).unchanged == ["thu-nghiem"]


def test_an_alert_under_review_cannot_be_edited(sqlite_engine: Engine, tmp_path: Path, now: datetime) -> None:
    """A submitted version is the approver's to decide: no new version slips in beside it."""
    submitted(sqlite_engine, tmp_path, now)
    with sqlite_engine.begin() as conn, pytest.raises(StateError, match="Chỉ sửa được bản nháp"):
        alerts.revise(conn, replace(SPEC, title="Khác"), CATALOGUE, tmp_path, "police", "web", now)


def test_an_edit_that_changes_nothing_is_refused(sqlite_engine: Engine, tmp_path: Path, now: datetime) -> None:
    """Saving the same content says so instead of making an empty version."""
    write_alert(tmp_path)
    sync_dir(sqlite_engine, tmp_path, now)
    with sqlite_engine.begin() as conn, pytest.raises(StateError, match="giống hệt bản 1"):
        alerts.revise(conn, SPEC, CATALOGUE, tmp_path, "police", "web", now)


def test_a_new_alert_is_stored_and_written_once(sqlite_engine: Engine, tmp_path: Path, now: datetime) -> None:
    """create stores a draft by its author and writes the file; the same id again is refused."""
    with sqlite_engine.begin() as conn:
        row, renderings, path = alerts.create(conn, SPEC, CATALOGUE, tmp_path, "pa05", "web", now)
    assert (row["status"], row["author"], path.name) == ("draft", "pa05", "thu-nghiem.toml")
    assert renderings.ascii.info.encoding == "GSM-7"
    with sqlite_engine.begin() as conn, pytest.raises(StateError, match="Đã có tệp"):
        alerts.create(conn, SPEC, CATALOGUE, tmp_path, "pa05", "web", now)


def test_the_diff_between_versions_names_the_lines_that_changed(
    sqlite_engine: Engine, tmp_path: Path, now: datetime
) -> None:
    """Version 1 → 2: the old title removed, the new one added, the rest kept."""
    write_alert(tmp_path)
    sync_dir(sqlite_engine, tmp_path, now)
    write_alert(tmp_path, title="Lừa đảo tình cảm qua mạng")
    sync_dir(sqlite_engine, tmp_path, now)
    with sqlite_engine.connect() as conn:
        newer, older = alerts.history(conn, "thu-nghiem")
    changed = [(line.kind, line.text) for line in alerts.diff(older, newer) if line.kind != "same"]
    assert changed == [("removed", 'title = "Lừa đảo tình cảm"'), ("added", 'title = "Lừa đảo tình cảm qua mạng"')]


def test_a_catalogue_file_keeps_the_zalo_template() -> None:
    """to_toml writes [zalo], so an edit made in the console does not drop it from the file."""
    spec = replace(SPEC, zalo={"template_id": "301245", "params": {"noi_dung": "title", "tinh": "ten_tinh"}})
    assert alerts.parse_spec(alerts.to_toml(spec), "x").zalo == spec.zalo


def test_costs_list_each_carrier_of_the_price_table_with_other_carriers_last() -> None:
    """Both renderings are priced per part, the 'default' row at the end."""
    sms = SmsSettings(price_per_part={"default": 650, "viettel": 500})
    found = alerts.costs(alerts.render(SPEC), sms)
    assert [(c.carrier, c.per_part, c.unicode, c.ascii) for c in found] == [
        ("viettel", 500, 1000, 500),
        ("default", 650, 1300, 650),
    ]


def test_cli_rejects_with_a_reason_and_show_prints_it(cli) -> None:
    """`alerts reject ID --reason …` by another person; the author's own attempt exits 2."""
    cli("alerts", "sync", user="police")
    cli("alerts", "submit", "khong-cung-cap-ma-otp", user="police")
    code, _out, err = cli("alerts", "reject", "khong-cung-cap-ma-otp", "--reason", "Thiếu nguồn", user="police")
    assert code == 2 and "bốn mắt" in err
    code, document = cli.json("alerts", "reject", "khong-cung-cap-ma-otp", "--reason", "Thiếu nguồn", user="lanh-dao")
    assert code == 0 and (document["status"], document["reason"]) == ("rejected", "Thiếu nguồn")
    code, out, _err = cli("alerts", "show", "khong-cung-cap-ma-otp")
    assert code == 0 and "Bị lanh-dao trả lại: Thiếu nguồn" in out


def test_a_form_s_title_and_validity_are_checked_like_a_file_s() -> None:
    """A title wider than its column and a validity out of 1–3650 days are named, whatever face sent them."""
    spec = replace(SPEC, title="T" * 201, valid_days=0)
    found = {problem.key: problem.text for problem in alerts.problems_of(spec, CATALOGUE)}
    assert found == {
        "title": "dài 201 ký tự, tối đa 200",
        "valid_days": "cần số ngày (số nguyên) từ 1 đến 3650, nhận được 0",
    }


def test_missing_texts_and_method_are_said_plainly() -> None:
    """An empty title, body, source or method is 'thiếu', not an unknown value."""
    spec = replace(SPEC, title="", source="", method="")
    found = [str(p) for p in alerts.missing(spec) + alerts.problems_of(spec, CATALOGUE) if p.key != "body"]
    assert found == ["'title': thiếu", "'source': thiếu nguồn chính thức (văn bản, cơ quan ban hành)",
                     "'method': chưa chọn phương thức lừa đảo (xem 'canhbao alerts methods')"]  # fmt: skip


def test_matching_filters_the_listing_with_accents_ignored() -> None:
    """Status, method, audience and words (any case, any accents) each narrow the rows."""
    rows = [{"slug": "a-b", "status": "draft", "method": "romance", "audiences": ["public"], "title": "Tình cảm",
             "body": "Cảnh giác"},
            {"slug": "c-d", "status": "approved", "method": "fake_investment", "audiences": ["student"],
             "title": "Sàn ảo", "body": "Đầu tư"}]  # fmt: skip
    slugs = lambda **kw: [row["slug"] for row in alerts.matching(rows, **kw)]  # noqa: E731
    assert slugs() == ["a-b", "c-d"]
    assert slugs(status="approved") == slugs(method="fake_investment") == slugs(audience="student") == ["c-d"]
    assert slugs(text="DAU TU") == ["c-d"] and slugs(text="tình") == ["a-b"]


def test_cli_history_lists_versions_with_what_changed(cli) -> None:
    """`alerts history ID --json`: newest first, the rejection's reason, the lines changed since the version before."""
    cli("alerts", "sync", user="police")
    cli("alerts", "submit", "khong-cung-cap-ma-otp", user="police")
    cli("alerts", "reject", "khong-cung-cap-ma-otp", "--reason", "Thiếu nguồn", user="lanh-dao")
    path = cli.root / "messages" / "khong-cung-cap-ma-otp.toml"
    path.write_text(path.read_text(encoding="utf-8").replace("title = ", 'title = "Mới" #', 1), encoding="utf-8")
    assert cli("alerts", "sync", user="police")[0] == 0
    code, versions = cli.json("alerts", "history", "khong-cung-cap-ma-otp")
    assert code == 0 and [v["version"] for v in versions] == [2, 1]
    assert versions[1]["rejection"] == "Thiếu nguồn" and versions[1]["changes"] is None
    assert [change["kind"] for change in versions[0]["changes"]] == ["removed", "added"]
    assert 'title = "Mới"' in versions[0]["changes"][1]["text"]
    assert "Bản 2" in cli("alerts", "history", "khong-cung-cap-ma-otp")[1]
