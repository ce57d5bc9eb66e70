"""The alert catalogue: shipped files, validation, versioned storage and four-eyes approval."""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from dispatcher import alerts
from dispatcher.domain import METHODS
from dispatcher.errors import InputRejected, StateError, UsageError
from dispatcher.models import alerts as alerts_table
from dispatcher.models import audit_log
from dispatcher.regions import SCHEME_2025, Level, RegionIndex

MESSAGES = Path(__file__).parent.parent / "messages"
CATALOGUE = alerts.Catalogue(methods=METHODS, max_parts=4)

# A valid alert; each validation case changes one thing.
VALID: dict[str, Any] = {
    "id": "thu-nghiem",
    "method": "romance",
    "title": "Lừa đảo tình cảm",
    "audiences": ["public", "elderly"],
    "source": "Công văn thử nghiệm số 1/CAT-PA05",
    "body": "Cảnh giác người lạ làm quen qua mạng rồi nhờ chuyển tiền. Báo công an {ten_xa}.",
}


def alert_toml(fields: dict[str, Any]) -> str:
    """A catalogue file for `fields`: JSON scalars and lists are valid TOML; tables go last, nested ones inline."""
    value = lambda v: json.dumps(v, ensure_ascii=False)  # noqa: E731
    inline = lambda v: "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"  # noqa: E731
    scalars = [f"{k} = {value(v)}" for k, v in fields.items() if not isinstance(v, dict)]
    tables = [
        line
        for name, table in fields.items()
        if isinstance(table, dict)
        for line in [
            f"[{name}]",
            *(f"{k} = {inline(v) if isinstance(v, dict) else value(v)}" for k, v in table.items()),
        ]
    ]
    return "\n".join(scalars + tables) + "\n"


def write_alert(directory: Path, name: str = "thu-nghiem", **changes: Any) -> Path:
    """Write VALID with `changes` (None deletes a key) to `directory/name.toml`."""
    fields = {**VALID, "id": name, **changes}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(alert_toml({k: v for k, v in fields.items() if v is not None}), encoding="utf-8")
    return path


def sync_dir(engine: Engine, directory: Path, now: datetime, actor: str = "police") -> alerts.SyncResult:
    """`alerts sync` of `directory` in one transaction."""
    loaded = alerts.load_catalogue_dir(directory, CATALOGUE)
    with engine.begin() as conn:
        return alerts.sync(conn, loaded, actor, now)


def rows(engine: Engine, slug: str = "thu-nghiem") -> list[dict[str, Any]]:
    """Every stored version of `slug`, oldest first."""
    with engine.connect() as conn:
        query = select(alerts_table).where(alerts_table.c.slug == slug).order_by(alerts_table.c.version)
        return [dict(row) for row in conn.execute(query).mappings()]


def audit_entries(engine: Engine, slug: str = "thu-nghiem") -> list[tuple[str, str]]:
    """(action, actor) of the audit log entries about alert `slug`, oldest first."""
    with engine.connect() as conn:
        query = select(audit_log.c.action, audit_log.c.actor).where(audit_log.c.subject == f"alert:{slug}")
        return [tuple(row) for row in conn.execute(query.order_by(audit_log.c.id))]


def act(engine: Engine, action: str, actor: str, now: datetime, slug: str = "thu-nghiem") -> Any:
    """Run alerts.submit / approve / retire in one transaction."""
    with engine.begin() as conn:
        return getattr(alerts, action)(conn, slug, actor, now)


# -- the shipped catalogue ----------------------------------------------------------------


def test_every_shipped_alert_passes_validation() -> None:
    """Every file in messages/ is valid, each has a source, and together they cover at least 12 methods."""
    files = sorted(MESSAGES.glob("*.toml"))
    loaded = alerts.load_catalogue_dir(MESSAGES, CATALOGUE)
    assert len(loaded) == len(files) >= 12
    assert len({spec.method for _path, spec, _renderings in loaded}) >= 12
    assert all(spec.source.strip() for _path, spec, _renderings in loaded)


def test_builtin_variables_hold_the_longest_region_names(regions: RegionIndex) -> None:
    """{ten_tinh} and {ten_xa} are counted with the longest province and commune names of scheme 2025."""
    for variable, level in (("ten_tinh", Level.PROVINCE), ("ten_xa", Level.COMMUNE)):
        names = [u.name for u in regions.units.values() if u.scheme == SCHEME_2025 and u.level is level]
        value = alerts.BUILTIN_VARIABLES[variable]
        assert value in names
        assert len(value) == max(len(name) for name in names), variable


# -- validation ---------------------------------------------------------------------------


def test_a_minimal_alert_file_is_accepted(tmp_path: Path) -> None:
    """The valid alert the refusal cases start from loads with two parts at most."""
    write_alert(tmp_path)
    [(_path, spec, renderings)] = alerts.load_catalogue_dir(tmp_path, alerts.Catalogue(METHODS, max_parts=2))
    assert spec.id == "thu-nghiem"
    assert renderings.unicode.info.parts == 2
    assert str(renderings.ascii.info.encoding) == "GSM-7"


LONG_BODY = "Cảnh giác các cuộc gọi giả danh công an, viện kiểm sát, tòa án yêu cầu chuyển tiền. " * 3


@pytest.mark.parametrize(
    "changes, key, problem",
    [
        pytest.param({"body": VALID["body"] + " {ten_huyen}"}, "body", "{ten_huyen}", id="unknown-placeholder"),
        pytest.param(
            {"body": VALID["body"] + " {don_vi}", "variables": {"don_vi": ""}},
            "variables.don_vi",
            "'don_vi' thiếu giá trị mặc định",
            id="empty-default",
        ),
        pytest.param(
            {"body_ascii": "Canh giac: đung chuyen tien. Bao cong an {ten_xa}."},
            "body_ascii",
            "GSM-7: 'đ'",
            id="ascii-d",
        ),
        pytest.param(
            {"body_ascii": "Canh giac \U0001f6a8 {ten_xa}."}, "body_ascii", "GSM-7: '\U0001f6a8'", id="ascii-emoji"
        ),
        pytest.param(
            {"body_ascii": "Canh giac. Bao cong an {ten_tinh}."},
            "body_ascii",
            "đúng các biến của body",
            id="ascii-vars",
        ),
        pytest.param({"body": LONG_BODY}, "body", "quá giới hạn 2 phần", id="too-many-parts"),
        pytest.param({"method": "romanse"}, "method", "không rõ 'romanse' (gần giống: 'romance')", id="unknown-method"),
        pytest.param({"audiences": ["public", "aliens"]}, "audiences", "aliens", id="unknown-audience"),
        pytest.param({"source": None}, "source", "thiếu nguồn chính thức", id="missing-source"),
        pytest.param({"id": "ten-khac"}, "id", "'ten-khac' phải trùng tên tệp", id="id-not-file-name"),
        pytest.param(
            {"titel": "Lỗi chính tả"}, "titel", "không có trong mẫu cảnh báo (gần giống: 'title')", id="unknown-key"
        ),
        pytest.param({"priority": "high"}, "priority", "'high' phải là normal (thường) hoặc urgent", id="bad-priority"),
        pytest.param({"valid_days": "90"}, "valid_days", "từ 1 đến 3650, nhận được '90'", id="valid-days-text"),
        pytest.param({"valid_days": 0}, "valid_days", "từ 1 đến 3650, nhận được 0", id="valid-days-zero"),
        pytest.param({"title": 3}, "title", "cần một chuỗi trong ngoặc kép, nhận được 3", id="title-not-text"),
        pytest.param({"audiences": "public"}, "audiences", "cần một danh sách chuỗi", id="audiences-not-list"),
        pytest.param({"variables": {"don_vi": 1}}, "variables.don_vi", "cần là chuỗi, nhận được 1", id="variable-type"),
    ],
)
def test_validation_refuses_a_bad_alert_naming_file_key_and_problem(
    tmp_path: Path, changes: dict[str, Any], key: str, problem: str
) -> None:
    """A bad alert file is rejected with one line naming the file, the key and what is wrong with it."""
    path = write_alert(tmp_path, **changes)
    with pytest.raises(InputRejected) as caught:
        alerts.load_catalogue_dir(tmp_path, alerts.Catalogue(METHODS, max_parts=2))
    [line] = str(caught.value).splitlines()
    assert line.startswith(f"{path}: '{key}': ")
    assert problem in line


def test_validation_refuses_a_file_that_is_not_toml(tmp_path: Path) -> None:
    """A file that is not TOML is rejected, naming the file, the line and the column in Vietnamese."""
    path = tmp_path / "thu-nghiem.toml"
    path.write_text('id = "thu-nghiem"\nbody = \n', encoding="utf-8")
    with pytest.raises(InputRejected, match="TOML") as caught:
        alerts.load_catalogue_dir(tmp_path, CATALOGUE)
    assert (
        str(caught.value)
        == f"{path}: không đúng cú pháp TOML, dòng 2, cột 8: giá trị không hợp lệ (chuỗi cần dấu ngoặc kép)"
    )


def test_validation_reports_every_problem_of_a_file_at_once(tmp_path: Path) -> None:
    """Eight problems of one file, of its keys and of its content alike, are reported together, one a line."""
    path = write_alert(
        tmp_path, titel="x", source=None, method="alien_abduction", audiences=["aliens"], priority="high",
        valid_days=0, body=LONG_BODY + "{ten_huyen}", body_ascii="Canh giac đ {ten_huyen}",
    )  # fmt: skip
    with pytest.raises(InputRejected) as caught:
        alerts.load_catalogue_dir(tmp_path, alerts.Catalogue(METHODS, max_parts=2))
    lines = str(caught.value).splitlines()
    keys = {line.removeprefix(f"{path}: ").split(":")[0] for line in lines}
    assert keys == {"'titel'", "'source'", "'method'", "'audiences'", "'priority'", "'valid_days'", "'body'",
                    "'body_ascii'"}  # fmt: skip
    assert any("{ten_huyen}" in line for line in lines) and any("quá giới hạn" in line for line in lines)
    assert any("GSM-7: 'đ'" in line for line in lines)


ZALO = {"template_id": "301245", "params": {"ten_tinh": "ten_tinh", "noi_dung": "title"}}


@pytest.mark.parametrize(
    "zalo, key, problem",
    [
        pytest.param({**ZALO, "params": {"ten": "ten_huyen"}}, "zalo.params.ten", "'ten_huyen'", id="unknown-source"),
        pytest.param({**ZALO, "params": {"ten": ""}}, "zalo.params.ten", "không lấy giá trị từ đâu", id="empty-source"),
        pytest.param({**ZALO, "params": {"ten": 3}}, "zalo.params.ten", "không lấy giá trị từ đâu", id="source-type"),
        pytest.param(
            {**ZALO, "params": {"noi-dung": "title"}}, "zalo.params.noi-dung", "chữ không dấu", id="bad-param-name"
        ),
        pytest.param({**ZALO, "params": {}}, "zalo.params", "cần bảng tham số", id="no-params"),
        pytest.param({"params": ZALO["params"]}, "zalo.template_id", "cần mã mẫu Zalo", id="no-template-id"),
        pytest.param({**ZALO, "template": "1"}, "zalo.template", "không có trong [zalo]", id="unknown-key"),
    ],
)
def test_zalo_params_are_checked_against_the_alert(
    tmp_path: Path, zalo: dict[str, Any], key: str, problem: str
) -> None:
    """[zalo] needs a template id and params that each take a declared variable or a field of the alert."""
    path = write_alert(tmp_path, zalo=zalo)
    with pytest.raises(InputRejected) as caught:
        alerts.load_catalogue_dir(tmp_path, CATALOGUE)
    [line] = str(caught.value).splitlines()
    assert line.startswith(f"{path}: '{key}': ")
    assert problem in line


def test_zalo_params_may_take_declared_variables_and_alert_fields(tmp_path: Path) -> None:
    """A param taking a declared variable, a built-in one or the title is accepted and stored as written."""
    params = {"don_vi": "don_vi", "ten_tinh": "ten_tinh", "noi_dung": "title"}
    write_alert(tmp_path, variables={"don_vi": "Công an tỉnh"}, zalo={"template_id": "301290", "params": params})
    [(_path, spec, _renderings)] = alerts.load_catalogue_dir(tmp_path, CATALOGUE)
    assert spec.zalo == {"template_id": "301290", "params": params}


def test_validation_reports_the_problems_of_every_file(tmp_path: Path) -> None:
    """Problems in several files are reported together, each with its file."""
    first = write_alert(tmp_path, "mot", method="alien_abduction")
    write_alert(tmp_path, "hai")
    third = write_alert(tmp_path, "ba", audiences=["aliens"])
    with pytest.raises(InputRejected) as caught:
        alerts.load_catalogue_dir(tmp_path, CATALOGUE)
    assert f"{first}: " in str(caught.value)
    assert f"{third}: " in str(caught.value)
    assert "hai.toml" not in str(caught.value)


# -- storage and lifecycle (SQLite and PostgreSQL) ----------------------------------------


def test_sync_stores_each_file_as_a_version_1_draft(engine: Engine, tmp_path: Path, now: datetime) -> None:
    """A first sync stores every file as version 1, a draft authored by whoever synced."""
    write_alert(tmp_path, "mot")
    write_alert(tmp_path, "hai")
    result = sync_dir(engine, tmp_path, now)
    assert result.to_json() == {"added": ["hai", "mot"], "new_versions": [], "unchanged": []}
    for slug in ("mot", "hai"):
        [row] = rows(engine, slug)
        assert (row["version"], row["status"], row["author"]) == (1, "draft", "police")
        assert row["origin"] == f"file:{slug}.toml"
        assert row["source"] == VALID["source"]
        assert row["audiences"] == ["public", "elderly"]


def test_syncing_again_changes_nothing(engine: Engine, tmp_path: Path, now: datetime) -> None:
    """A second sync of the same files stores nothing and reports every alert unchanged."""
    write_alert(tmp_path)
    sync_dir(engine, tmp_path, now)
    result = sync_dir(engine, tmp_path, now, actor="someone-else")
    assert result.to_json() == {"added": [], "new_versions": [], "unchanged": ["thu-nghiem"]}
    assert [row["version"] for row in rows(engine)] == [1]
    assert [action for action, _actor in audit_entries(engine)] == ["alert.store"]


def test_changed_text_makes_a_new_version_and_keeps_the_old(engine: Engine, tmp_path: Path, now: datetime) -> None:
    """Editing a file's text stores version 2 as a draft; version 1 stays as it was."""
    write_alert(tmp_path)
    sync_dir(engine, tmp_path, now)
    write_alert(tmp_path, body="Không chuyển tiền cho người mới quen qua mạng. Báo công an {ten_xa}.")
    result = sync_dir(engine, tmp_path, now)
    assert result.new_versions == ["thu-nghiem"]
    first, second = rows(engine)
    assert (first["version"], first["status"], first["body"]) == (1, "draft", VALID["body"])
    assert (second["version"], second["status"]) == (2, "draft")
    assert second["body"].startswith("Không chuyển tiền")


def test_a_second_person_approves_a_submitted_alert(engine: Engine, tmp_path: Path, now: datetime) -> None:
    """The author submits and someone else approves: the alert becomes approved, with its approver."""
    write_alert(tmp_path)
    sync_dir(engine, tmp_path, now, actor="police")
    assert act(engine, "submit", "police", now)["status"] == "submitted"
    approved = act(engine, "approve", "liaison", now)
    assert (approved["status"], approved["author"], approved["approver"]) == ("approved", "police", "liaison")
    assert approved["approved_at"] is not None


@pytest.mark.parametrize("approver", ["police", "POLICE"])
def test_an_author_cannot_approve_their_own_alert(engine: Engine, tmp_path: Path, now: datetime, approver: str) -> None:
    """Four eyes: the author approving their own alert is refused and nothing changes."""
    write_alert(tmp_path)
    sync_dir(engine, tmp_path, now, actor="police")
    act(engine, "submit", "police", now)
    with pytest.raises(UsageError, match="bốn mắt"):
        act(engine, "approve", approver, now)
    [row] = rows(engine)
    assert (row["status"], row["approver"], row["approved_at"]) == ("submitted", None, None)
    assert [action for action, _actor in audit_entries(engine)] == ["alert.store", "alert.submit"]


def test_a_draft_that_was_not_submitted_cannot_be_approved(engine: Engine, tmp_path: Path, now: datetime) -> None:
    """Approving a draft that was never submitted is refused and it stays a draft."""
    write_alert(tmp_path)
    sync_dir(engine, tmp_path, now, actor="police")
    with pytest.raises(StateError, match="đang ở trạng thái 'nháp', cần 'chờ duyệt'"):
        act(engine, "approve", "liaison", now)
    assert [row["status"] for row in rows(engine)] == ["draft"]


def test_approving_a_new_version_retires_the_approved_one(engine: Engine, tmp_path: Path, now: datetime) -> None:
    """v1 stays approved while v2 is a draft; approving v2 retires v1."""
    write_alert(tmp_path)
    sync_dir(engine, tmp_path, now)
    act(engine, "submit", "police", now)
    act(engine, "approve", "liaison", now)
    write_alert(tmp_path, title="Lừa đảo tình cảm qua mạng")
    sync_dir(engine, tmp_path, now)
    assert [row["status"] for row in rows(engine)] == ["approved", "draft"]
    act(engine, "submit", "police", now)
    act(engine, "approve", "liaison", now)
    first, second = rows(engine)
    assert (first["status"], second["status"]) == ("retired", "approved")
    assert first["retired_at"] is not None


def test_retire_retires_every_live_version(engine: Engine, tmp_path: Path, now: datetime) -> None:
    """Retiring an alert retires its approved version and its pending draft alike."""
    write_alert(tmp_path)
    sync_dir(engine, tmp_path, now)
    act(engine, "submit", "police", now)
    act(engine, "approve", "liaison", now)
    write_alert(tmp_path, title="Lừa đảo tình cảm qua mạng")
    sync_dir(engine, tmp_path, now)
    assert act(engine, "retire", "liaison", now) == [1, 2]
    assert [row["status"] for row in rows(engine)] == ["retired", "retired"]


def test_every_transition_writes_an_audit_entry(engine: Engine, tmp_path: Path, now: datetime) -> None:
    """Store, submit, approve and retire each append one audit entry naming who did it."""
    write_alert(tmp_path)
    sync_dir(engine, tmp_path, now, actor="police")
    act(engine, "submit", "police", now)
    act(engine, "approve", "liaison", now)
    act(engine, "retire", "admin", now)
    assert audit_entries(engine) == [
        ("alert.store", "police"),
        ("alert.submit", "police"),
        ("alert.approve", "liaison"),
        ("alert.retire", "admin"),
    ]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 4


# -- the command line ---------------------------------------------------------------------


def test_cli_sync_adds_every_catalogue_file(cli) -> None:
    """`canhbao alerts sync --json` on a fresh database lists every file as added."""
    code, document = cli.json("alerts", "sync")
    assert code == 0
    files = sorted(path.stem for path in cli.messages.glob("*.toml"))
    assert document == {"added": files, "new_versions": [], "unchanged": []}


def test_cli_show_gives_both_renderings_and_the_cost(cli) -> None:
    """`alerts show ID --json` measures the UCS-2 and GSM-7 renderings and gives the price per part."""
    cli("alerts", "sync")
    code, document = cli.json("alerts", "show", "khong-cung-cap-ma-otp")
    assert code == 0
    unicode, ascii_ = document["renderings"]["unicode"], document["renderings"]["ascii"]
    assert {"encoding", "characters", "parts"} <= set(unicode) & set(ascii_)
    assert (unicode["encoding"], ascii_["encoding"]) == ("UCS-2", "GSM-7")
    assert unicode["parts"] >= ascii_["parts"] >= 1
    assert unicode["characters"] == len(unicode["text"])
    assert document["cost_per_part"]["default"] > 0


def test_cli_approve_by_another_user_approves(cli) -> None:
    """Submitted by its author and approved by someone else, an alert is approved."""
    cli("alerts", "sync", user="police")
    assert cli("alerts", "submit", "khong-cung-cap-ma-otp", user="police")[0] == 0
    code, document = cli.json("alerts", "approve", "khong-cung-cap-ma-otp", user="liaison")
    assert code == 0
    assert (document["status"], document["actor"]) == ("approved", "liaison")


def test_cli_author_approving_own_alert_exits_2(cli) -> None:
    """The author approving their own alert exits 2 with a message, and nothing is approved."""
    cli("alerts", "sync", user="police")
    cli("alerts", "submit", "khong-cung-cap-ma-otp", user="police")
    code, _out, err = cli("alerts", "approve", "khong-cung-cap-ma-otp", user="police")
    assert code == 2
    assert "bốn mắt" in err
    assert cli.json("alerts", "list", "--status", "approved") == (0, [])


def test_cli_add_writes_a_catalogue_file_and_a_draft(cli) -> None:
    """`alerts add` writes messages/<id>.toml, which parses back to the stored draft."""
    args = ["--id", "goi-video-gia-cong-an", "--method", "impersonating_authorities", "--title", "Gọi video giả"]
    body = "Công an không làm việc qua cuộc gọi video, không yêu cầu chuyển tiền. Báo ngay công an {ten_xa}."
    code, _out, err = cli("alerts", "add", *args, "--body", body, "--source", "Công văn 12/PA05", user="police")
    assert code == 0, err
    path = cli.messages / "goi-video-gia-cong-an.toml"
    spec = alerts.parse_spec(path.read_text(encoding="utf-8"), str(path))
    assert (spec.id, spec.method, spec.body, spec.source) == (
        "goi-video-gia-cong-an",
        "impersonating_authorities",
        body,
        "Công văn 12/PA05",
    )
    assert tomllib.loads(path.read_text(encoding="utf-8"))["title"] == "Gọi video giả"
    _code, draft = cli.json("alerts", "show", "goi-video-gia-cong-an")
    assert (draft["status"], draft["version"], draft["author"]) == ("draft", 1, "police")
    _code, synced = cli.json("alerts", "sync")
    assert synced["unchanged"] == ["goi-video-gia-cong-an"]


def test_cli_add_refuses_an_unknown_placeholder(cli) -> None:
    """`alerts add` with an undeclared {variable} exits 1 and writes no file and no draft."""
    args = ["--id", "bien-la", "--method", "romance", "--title", "Thử", "--source", "Công văn 1/PA05"]
    code, _out, err = cli("alerts", "add", *args, "--body", "Cảnh giác lừa đảo ở {ten_huyen}.")
    assert code == 1
    assert "{ten_huyen}" in err
    assert not (cli.messages / "bien-la.toml").exists()
    assert cli.json("alerts", "list") == (0, [])


def test_cli_text_inspect_measures_both_renderings(cli) -> None:
    """`text inspect --json` gives the encoding, length and parts of the text and of its không-dấu form."""
    text = "Cảnh báo: không đưa mã OTP cho bất kỳ ai, kể cả người xưng là công an hay ngân hàng."
    code, document = cli.json("text", "inspect", text)
    assert code == 0
    assert {"encoding", "characters", "parts", "ascii", "ascii_parts"} <= set(document)
    assert (document["encoding"], document["characters"], document["parts"]) == ("UCS-2", len(text), 2)
    assert document["ascii"] == "Canh bao: khong dua ma OTP cho bat ky ai, ke ca nguoi xung la cong an hay ngan hang."
    assert document["ascii_parts"] == 1


def test_cli_sync_lists_the_problems_of_every_bad_file_and_stores_nothing(cli) -> None:
    """`alerts sync` with two bad files and good ones exits 1, names every problem of both, and stores no alert."""
    first = write_alert(cli.messages, "mot", method="alien_abduction", priority="high")
    second = write_alert(cli.messages, "hai", source=None, zalo={"template_id": "1", "params": {"x": "ten_huyen"}})
    code, out, err = cli("alerts", "sync")
    assert (code, out) == (1, "")
    for where in (f"{first}: 'method'", f"{first}: 'priority'", f"{second}: 'source'", f"{second}: 'zalo.params.x'"):
        assert where in err
    assert cli.json("alerts", "list") == (0, [])


def test_cli_lifecycle_refusals_name_the_states_in_vietnamese(cli) -> None:
    """Submitting a retired alert says its state and the one needed in Vietnamese, not as codes."""
    cli("alerts", "sync")
    cli("alerts", "retire", "khong-cung-cap-ma-otp")
    code, _out, err = cli("alerts", "submit", "khong-cung-cap-ma-otp")
    assert code == 2
    assert "đang ở trạng thái 'đã ngừng dùng', cần 'nháp'" in err
