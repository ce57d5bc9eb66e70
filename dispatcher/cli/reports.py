"""`canhbao report`, `rollup` and `purge`: reach reports of a period, the rollups they read, retention."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dispatcher import report_formats, reports, retention, rollups
from dispatcher.cli import prepared as prepared_cli
from dispatcher.cli.common import Context, JsonOption, emit, err, out
from dispatcher.cli.tables import Column, print_fitted
from dispatcher.cli.usage import Command, Group
from dispatcher.errors import UsageError
from dispatcher.formats import number


class ReportGroup(Group):
    """`canhbao report` makes a period's report itself and holds list/prepare/get: it takes `--as` as a command does."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The group's own options, then `--as`, then `--help`."""
        params = super().get_params(ctx)
        actor = Command._actor_option(self, ctx)  # type: ignore[arg-type]  (it only reads the root's option)
        return params if actor is None else [*params[:-1], actor, params[-1]]


report_app = typer.Typer(help="Báo cáo kết quả của một kỳ; các báo cáo định kỳ đã chuẩn bị (list, prepare, get).")


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    report_app.callback(invoke_without_command=True)(report)
    prepared_cli.register(report_app)
    app.add_typer(report_app, name="report", cls=ReportGroup)
    app.command("rollup")(rollup)
    app.command("purge")(purge)


def report(
    ctx: typer.Context,
    period: Annotated[
        str | None, typer.Option("--period", help="Kỳ báo cáo: 2026-H1, 2026, 2026-Q3, 2026-11, TỪ..ĐẾN.")
    ] = None,
    province: Annotated[str | None, typer.Option("--province", help="Tỉnh/thành phố (cả tên cũ: 'Quảng Nam').")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json, csv, html, xlsx, pdf (không có: bảng).")] = "",
    output: Annotated[Path | None, typer.Option("--output", help="Tệp ghi (json, csv: mặc định stdout).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Báo cáo kết quả gửi cảnh báo của một kỳ: tin, người đã nhận, độ bao phủ, chi phí (theo giờ địa phương)."""
    if ctx.invoked_subcommand is not None:
        return  # `canhbao report list|prepare|get`: the subcommand does the work
    if period is None:
        raise UsageError("'canhbao report' cần '--period' (hoặc một lệnh: list, prepare, get).")
    c: Context = ctx.obj
    asked = _format(fmt or ("json" if as_json else ""), output)
    chosen = reports.parse_period(period)
    where = reports.scope(c.regions, province)
    rollups.run(c.engine, c.settings.app.timezone, c.now)  # the figures include what finished until now
    with c.engine.connect() as conn:
        found = reports.build(conn, c.settings, c.regions, chosen, where, c.now)
    if asked == "json" and output is None:
        emit(report_formats.to_json(found))
    elif asked == "csv" and output is None:
        report_formats.write_csv(found, sys.stdout)
    elif asked:
        _to_file(found, asked, output or Path(f"bao-cao-{chosen.name.replace('..', '-den-')}.{asked}"))
    else:
        _print(found)


def _format(fmt: str, output: Path | None) -> str:
    if fmt and fmt not in report_formats.FORMATS:
        raise UsageError(f"Định dạng '{fmt}' không có: dùng {', '.join(report_formats.FORMATS)}.")
    if output is not None and not fmt:
        raise UsageError("--output cần --format (json, csv, html, xlsx hoặc pdf).")
    return fmt


def _to_file(found: reports.Report, fmt: str, path: Path) -> None:
    if fmt == "json":
        import json

        path.write_text(json.dumps(report_formats.to_json(found), ensure_ascii=False, indent=2), encoding="utf-8")
    else:
        report_formats.write(found, fmt, path)
    err.print(f"Đã ghi báo cáo {escape(found.period.title)} vào {escape(str(path))}.", soft_wrap=True)


def _print(found: reports.Report) -> None:
    """The summary and the small tables on screen; the full report is in the file formats."""
    for title, header, rows in found.tables():
        if title in ("Theo xã/phường", "Các đợt gửi") or not rows:
            continue
        out.print(f"[bold]{escape(title)}[/bold]")
        columns = tuple(Column(h, whole=i > 0, justify="right" if i else "left") for i, h in enumerate(header))
        print_fitted(out, columns, [[_cell(cell) for cell in row] for row in rows], "dùng --format xlsx")


def _cell(cell: object) -> str:
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return number(cell, 1 if isinstance(cell, float) and not cell.is_integer() else 0)
    return "" if cell is None else str(cell)


def rollup(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Cộng các tin đã xong vào số liệu tổng hợp (chạy lại không cộng hai lần)."""
    c: Context = ctx.obj
    done = rollups.run(c.engine, c.settings.app.timezone, c.now)
    if as_json:
        emit({"blasts": done.blasts, "closed": done.closed, "deliveries": done.deliveries, "reached": done.reached})
        return
    out.print(f"Đã tổng hợp {number(done.deliveries)} tin của {number(done.blasts)} đợt gửi "
              f"({number(done.closed)} đợt đã xong hẳn).")  # fmt: skip


def purge(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Chỉ cho biết sẽ xoá gì, không xoá.")] = False,
    months: Annotated[
        int | None, typer.Option("--months", min=1, help="Giữ bao nhiêu tháng (mặc định theo cấu hình).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Xoá các tin (có số điện thoại) cũ hơn thời hạn lưu giữ; số liệu báo cáo vẫn giữ nguyên."""
    c: Context = ctx.obj
    keep = months or c.settings.reports.retention_months
    rollups.run(c.engine, c.settings.app.timezone, c.now)  # only what the rollups hold may go
    done = retention.purge(c.engine, c.now, keep, c.actor, dry_run, c.settings.reports.purge_slice_rows)
    if as_json:
        emit({"cutoff": done.cutoff.isoformat(), "deliveries": done.deliveries, "blasts": done.blasts,
              "inbox": done.inbox, "dry_run": done.dry_run, "slices": done.slices})  # fmt: skip
        return
    verb = "Sẽ xoá" if dry_run else "Đã xoá"
    out.print(f"{verb} {number(done.deliveries)} tin của {number(done.blasts)} đợt gửi và {number(done.inbox)} "
              f"tin nhắn đến, trước {done.cutoff:%d/%m/%Y} (giữ {keep} tháng).")  # fmt: skip
