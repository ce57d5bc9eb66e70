"""The audit log: append-only in the code and in the database, with its origin, before/after and reason, read back."""

from __future__ import annotations

import getpass
import io
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

from dispatcher import audit, privacy, users
from dispatcher.audit import AuditFilter, acting_through
from dispatcher.errors import UsageError
from dispatcher.inbound import receive
from dispatcher.models import audit_log
from dispatcher.subscribers import SubscriberImporter, set_opt_out
from tests.conftest import Cli

PACKAGE = Path(__file__).parent.parent / "dispatcher"
# Any way the code could change or remove an entry: SQLAlchemy's update()/delete() or SQL text.
CHANGES = re.compile(
    r"(update|delete)\(\s*audit_log\b|audit_log\.(update|delete)\(|(UPDATE|DELETE\s+FROM|TRUNCATE)\s+audit_log\b",
    re.IGNORECASE,
)


def _entries(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings()]


def _write(engine: Engine, now: datetime, *entries: tuple[str, str, str]) -> None:
    with engine.begin() as conn:
        for minutes, (actor, action, subject) in enumerate(entries):
            audit.audit(conn, now + timedelta(minutes=minutes), actor, action, subject, {})


def test_no_code_path_updates_or_deletes_an_entry() -> None:
    """Nothing in the package changes or removes an audit entry: the log only grows."""
    offending = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if CHANGES.search(line)
    ]
    assert offending == []
    assert {name for name in vars(audit) if not name.startswith("_") and callable(getattr(audit, name))} >= {"audit"}


def test_the_database_refuses_to_change_or_remove_an_entry(engine: Engine, now: datetime) -> None:
    """UPDATE and DELETE on the audit table fail in the database itself (SQLite and PostgreSQL triggers)."""
    _write(engine, now, ("lan", "user.add", "user:minh"))
    statements = ["UPDATE audit_log SET actor = 'someone-else'", "DELETE FROM audit_log"]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert [(e["actor"], e["action"]) for e in _entries(engine)] == [("lan", "user.add")]


def test_an_entry_records_the_face_it_came_through(sqlite_engine: Engine, now: datetime) -> None:
    """Inside `acting_through` an entry keeps the source, how the person proved who they are and the address."""
    with acting_through("api", "token:7", "10.1.2.3"), sqlite_engine.begin() as conn:
        audit.audit(conn, now, "lan", "blast.pause", "blast:1", {})
    with sqlite_engine.begin() as conn:  # no face: the scheduler, the worker, an inbound text
        receive(conn, "+84905123456", "HUY", "smpp", now)
    first, second = _entries(sqlite_engine)
    assert (first["source"], first["via"], first["address"]) == ("api", "token:7", "10.1.2.3")
    assert (second["actor"], second["source"], second["via"]) == ("inbound", None, None)
    assert audit.origin() == audit.SYSTEM


def test_a_change_keeps_before_and_after_and_a_reveal_its_reason(sqlite_engine: Engine, now: datetime) -> None:
    """Changing roles records the roles before and after; a reveal records the reason in its own column."""
    with sqlite_engine.begin() as conn:
        users.add(conn, now, "admin", "minh", "mật khẩu dài đủ 10", frozenset({"police"}))
        users.set_roles(conn, now, "admin", "minh", frozenset({"police", "approver"}))
        receive(conn, "+84905123456", "Tôi bị lừa, gọi lại giúp", "smpp", now)
        privacy.reveal_inbox(conn, now, "van-hanh", 1, "gọi lại cho người dân")
    entries = {e["action"]: e for e in _entries(sqlite_engine)}
    assert entries["user.roles"]["before"] == {"roles": ["police"]}
    assert entries["user.roles"]["after"] == {"roles": ["approver", "police"]}
    assert entries["number.reveal"]["reason"] == "gọi lại cho người dân"
    assert "+84905123456" not in str(entries["number.reveal"])


def test_an_import_and_an_opt_out_are_audited(sqlite_engine: Engine, regions, now: datetime, tmp_path: Path) -> None:
    """An import names its file and counts; a subscriber's opt-out keeps opted in before and opted out after."""
    source = tmp_path / "danh-sach.csv"
    source.write_text("msisdn,province\n0905123401,48\n0905123402,48\n", encoding="utf-8")
    SubscriberImporter(sqlite_engine, regions, tmp_path / "rejects").import_file(source, now, actor="lien-lac")
    with sqlite_engine.begin() as conn:
        set_opt_out(conn, "+84905123401", True, now, "tong-dai")
    imported, opted_out = _entries(sqlite_engine)
    assert (imported["actor"], imported["subject"]) == ("lien-lac", "file:danh-sach.csv")
    assert imported["detail"]["added"] == 2
    assert (opted_out["before"], opted_out["after"]) == ({"opted_out": False}, {"opted_out": True})


def test_filters_narrow_the_log(sqlite_engine: Engine, now: datetime) -> None:
    """Actor, an action or its group, subject, source and a time range each narrow what is read."""
    _write(sqlite_engine, now, ("lan", "blast.pause", "blast:1"), ("minh", "blast.approve", "blast:2"),
           ("lan", "user.add", "user:hoa"))  # fmt: skip
    with acting_through("web", "session"), sqlite_engine.begin() as conn:
        audit.audit(conn, now + timedelta(hours=1), "hoa", "alert.submit", "alert:otp", {})

    def actions(**asked: object) -> list[str]:
        with sqlite_engine.connect() as conn:
            return [row["action"] for row in audit.read(conn, AuditFilter(**asked))]

    assert actions(actor="lan") == ["user.add", "blast.pause"]
    assert actions(action="blast") == ["blast.approve", "blast.pause"]
    assert actions(action="blast.pause") == ["blast.pause"]
    assert actions(subject="blast:2") == ["blast.approve"]
    assert actions(source="web") == ["alert.submit"]
    assert actions(source="system") == ["user.add", "blast.approve", "blast.pause"]
    assert actions(since=now + timedelta(minutes=1), until=now + timedelta(minutes=2)) == ["blast.approve"]


def test_pages_are_read_by_key_and_cover_the_log_once(sqlite_engine: Engine, now: datetime) -> None:
    """Walking the pages by the last id seen gives every entry once, newest first."""
    _write(sqlite_engine, now, *[("lan", "user.passwd", f"user:u{i}") for i in range(7)])
    seen, before = [], None
    with sqlite_engine.connect() as conn:
        while True:
            rows, before = audit.page(conn, AuditFilter(before_id=before), size=3)
            seen += [row["id"] for row in rows]
            if before is None:
                break
    assert seen == list(range(7, 0, -1))


def test_a_bad_filter_is_said_in_vietnamese() -> None:
    """An unknown source or an empty time range is refused with a Vietnamese message."""
    with pytest.raises(UsageError, match="Nguồn 'email' không có"):
        AuditFilter(source="email")
    moment = datetime(2026, 12, 1)
    with pytest.raises(UsageError, match="phải sau"):
        AuditFilter(since=moment, until=moment)


def test_the_csv_is_for_excel(sqlite_engine: Engine, now: datetime) -> None:
    """The CSV has a BOM, Vietnamese headers and sources, local times and JSON for before/after."""
    with sqlite_engine.begin() as conn:
        audit.audit(conn, now, "lan", "user.disable", "user:hoa", {}, before={"disabled": False},
                    after={"disabled": True})  # fmt: skip
    pipe = io.StringIO()
    with sqlite_engine.connect() as conn:
        assert audit.write_csv(audit.read(conn, AuditFilter()), pipe, "Asia/Ho_Chi_Minh") == 1
    header, row = pipe.getvalue().splitlines()
    assert header.startswith("\ufeffmã,lúc,người thực hiện,từ đâu")
    local = (now + timedelta(hours=7)).strftime("%Y-%m-%d %H:%M")
    assert local in row and '"{""disabled"": false}"' in row and ",hệ thống," in row


def test_the_cli_records_itself_and_lists_the_log(cli: Cli) -> None:
    """A command's entries say 'cli' and the OS user behind --as; `canhbao audit` lists and filters them."""
    assert cli("alerts", "sync", user="police")[0] == 0
    code, rows = cli.json("audit", "--actor", "police", "--action", "alert")
    assert code == 0 and rows and {row["action"] for row in rows} == {"alert.store"}
    assert {(row["source"], row["via"]) for row in rows} == {("cli", f"--as, os-user:{getpass.getuser()}")}
    code, out, _err = cli("audit", "--action", "blast")
    assert code == 0 and "Không có thao tác nào khớp." in out


def test_the_cli_exports_csv_and_refuses_other_formats(cli: Cli, tmp_path: Path) -> None:
    """`--export csv --output` writes every matching entry; another format is a usage error in Vietnamese."""
    cli("alerts", "sync", user="police")
    target = tmp_path / "audit.csv"
    code, document = cli.json("audit", "--export", "csv", "--output", str(target))
    assert code == 0 and document["rows"] == len(target.read_text(encoding="utf-8-sig").splitlines()) - 1
    code, _out, err = cli("audit", "--export", "xlsx")
    assert code != 0 and "Định dạng xuất 'xlsx' không có" in err
