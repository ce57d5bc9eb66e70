"""`canhbao audit`: who changed what, when and from where, filtered, on screen, as JSON or as CSV."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dispatcher import audit as audit_log
from dispatcher.cli.blasts import parse_time
from dispatcher.cli.common import Context, JsonOption, emit, out
from dispatcher.cli.tables import Column, print_fitted
from dispatcher.errors import UsageError
from dispatcher.formats import moment, number

COLUMNS = (Column("Mã", whole=True, justify="right"), Column("Lúc", whole=True), Column("Người", whole=True),
           Column("Từ đâu", drop=2), Column("Thao tác", whole=True), Column("Đối tượng", least=12),
           Column("Lý do", drop=3, least=12), Column("Trước → sau", drop=1, least=16))  # fmt: skip


def register(app: typer.Typer) -> None:
    """Attach the command to the application."""
    app.command("audit")(audit_list)


def audit_list(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option("--actor", help="Chỉ người này.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Chỉ thao tác này (blast.approve) hay nhóm thao tác (blast, user, alert…).")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="Chỉ đối tượng này, ví dụ 'blast:12', 'user:lan'.")] = None,
    source: Annotated[str | None, typer.Option(help="Chỉ nguồn này: cli, web, api hoặc system.")] = None,
    since: Annotated[str | None, typer.Option(help="Từ thời điểm, ví dụ '01/12/2026 09:00'.")] = None,
    until: Annotated[str | None, typer.Option(help="Đến trước thời điểm này.")] = None,
    limit: Annotated[int | None, typer.Option(help="Số dòng tối đa (mặc định: 50, khi xuất: tất cả).")] = None,
    export: Annotated[str | None, typer.Option(help="csv: xuất mọi dòng khớp bộ lọc.")] = None,
    output: Annotated[Path | None, typer.Option(help="Tệp ghi kết quả xuất (không có: ra stdout).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Nhật ký thao tác: ai đã thay đổi gì, lúc nào, từ đâu (dòng lệnh, bảng điều khiển, API), trước và sau, lý do."""
    c: Context = ctx.obj
    if export is not None and export.strip().lower() != "csv":
        raise UsageError(f"Định dạng xuất {export.strip()!r} không có (nhận: csv).")
    zone = c.settings.app.timezone
    shown = limit if limit is not None or export else 50  # a screen shows the newest 50; an export, everything
    found = audit_log.AuditFilter(
        actor=actor, action=action, subject=subject, source=source, limit=shown,
        since=parse_time(since, zone, "--since"), until=parse_time(until, zone, "--until"),
    )  # fmt: skip
    with c.engine.connect() as conn:
        if export is not None:
            _export(c, conn, found, output, as_json)
            return
        rows = list(audit_log.read(conn, found))
    if as_json:
        emit([audit_log.as_json(row) for row in rows])
    elif not rows:
        out.print("Không có thao tác nào khớp.")
    else:
        cells = [[str(r["id"]), moment(r["at"], zone), r["actor"], _origin(r), _action(r["action"]), r["subject"],
                  r["reason"] or "", audit_log.change(r)] for r in rows]  # fmt: skip
        print_fitted(out, COLUMNS, [[escape(cell) for cell in row] for row in cells], "xem đủ với --json")


def _export(c: Context, conn: Any, found: audit_log.AuditFilter, output: Path | None, as_json: bool) -> None:
    """Stream the entries as CSV into `output`, or to stdout."""
    zone = c.settings.app.timezone
    if output is None:
        audit_log.write_csv(audit_log.read(conn, found), sys.stdout, zone)
        return
    with output.open("w", encoding="utf-8", newline="") as file:
        written = audit_log.write_csv(audit_log.read(conn, found), file, zone)
    if as_json:
        emit({"file": str(output), "format": "csv", "rows": written})
    else:
        out.print(f"Đã xuất {number(written)} dòng nhật ký thao tác ra {output}.", markup=False)


def _action(code: str) -> str:
    """The action's Vietnamese name over its code (the code is what --action takes)."""
    label = audit_log.action_label(code)
    return code if label == code else f"{label}\n{code}"


def _origin(row: dict[str, Any]) -> str:
    """'bảng điều khiển (session, 10.0.0.5)': the source and how the person proved who they were."""
    how = ", ".join(part for part in (row["via"], row["address"]) if part)
    return audit_log.source_label(row["source"]) + (f" ({how})" if how else "")
