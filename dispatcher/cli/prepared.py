"""`canhbao report list | prepare | get`: the statutory reports prepared ahead of their deadlines, and kept."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape

from dispatcher import prepared
from dispatcher.cli.common import Context, JsonOption, emit, err, out
from dispatcher.cli.tables import Column, print_fitted
from dispatcher.errors import UsageError
from dispatcher.formats import moment


def register(report_app: typer.Typer) -> None:
    """Attach the commands to `canhbao report`."""
    report_app.command("list")(report_list)
    report_app.command("prepare")(report_prepare)
    report_app.command("get")(report_get)


def report_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Các báo cáo định kỳ (6 tháng, năm) đã chuẩn bị: mỗi lần chuẩn bị là một phiên bản, giữ nguyên như lúc lập."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        found = prepared.listing(conn)
    if as_json:
        emit([_document(p) for p in found])
        return
    if not found:
        out.print("Chưa có báo cáo nào được chuẩn bị (lịch tự động, hoặc 'canhbao report prepare --which h1').")
        return
    zone = c.settings.app.timezone
    columns = (Column("Số", whole=True, justify="right"), Column("Báo cáo", least=14), Column("Kỳ", whole=True),
               Column("Chuẩn bị lúc", whole=True), Column("Bởi", least=6, drop=2), Column("Hạn nộp", whole=True),
               Column("Dung lượng", least=12, drop=1))  # fmt: skip
    rows = [[str(p.id), _title(p), f"{p.first:%d/%m}–{p.last:%d/%m/%Y}", moment(p.prepared_at, zone),
             _by(p.prepared_by), f"{p.deadline:%d/%m/%Y}", _sizes(p.sizes)] for p in found]  # fmt: skip
    print_fitted(out, columns, rows, "dùng --json")


def _title(p: prepared.Prepared) -> str:
    place = "" if not p.province else f", {p.place}"
    return f"{p.kind.label} {p.year}{place} (bản {p.version})"


def _by(actor: str) -> str:
    return "lịch tự động" if actor == prepared.SCHEDULER else actor


def _sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{fmt}\u00a0{_kilobytes(size)}" for fmt, size in sizes.items())


def _kilobytes(size: int) -> str:
    return f"{size}\u00a0B" if size < 1024 else f"{round(size / 1024):,}\u00a0KB".replace(",", ".")


def _document(p: prepared.Prepared) -> dict[str, object]:
    return {"id": p.id, "kind": p.kind.value, "year": p.year, "version": p.version, "province": p.province or None,
            "place": p.place, "first": p.first.isoformat(), "last": p.last.isoformat(),
            "deadline": p.deadline.isoformat(), "prepared_at": p.prepared_at.isoformat(),
            "prepared_by": p.prepared_by, "sizes": p.sizes}  # fmt: skip


def report_prepare(
    ctx: typer.Context,
    which: Annotated[str, typer.Option("--which", help="h1 (báo cáo 6 tháng) hoặc year (báo cáo năm).")],
    year: Annotated[int | None, typer.Option("--year", help="Năm báo cáo (mặc định năm nay).")] = None,
    province: Annotated[str | None, typer.Option("--province", help="Tỉnh/thành phố (mặc định toàn địa bàn).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Chuẩn bị ngay một báo cáo định kỳ (số liệu từ 1/1 đến hết hôm qua) và lưu thành phiên bản mới."""
    c: Context = ctx.obj
    kind = prepared.kind_of(which)
    kept = prepared.prepare(c.engine, c.settings, c.regions, kind, year or _this_year(c), c.now, c.actor, province)
    if as_json:
        emit(_document(kept))
        return
    out.print(f"Đã chuẩn bị {escape(_title(kept))}, số {kept.id}: số liệu từ {kept.first:%d/%m/%Y} đến hết "
              f"{kept.last:%d/%m/%Y}, hạn nộp trước {kept.deadline:%d/%m/%Y} ({_sizes(kept.sizes)}).")  # fmt: skip


def _this_year(c: Context) -> int:
    return c.now.astimezone(ZoneInfo(c.settings.app.timezone)).year


def report_get(
    ctx: typer.Context,
    report_id: Annotated[str, typer.Argument(metavar="SỐ", help="Số của báo cáo (xem 'canhbao report list').")],
    fmt: Annotated[str, typer.Option("--format", help="pdf, html, xlsx, json hoặc csv.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Tệp ghi (html, json, csv: mặc định stdout).")
    ] = None,
) -> None:
    """Lấy một báo cáo đã chuẩn bị, đúng từng byte như lúc lập."""
    c: Context = ctx.obj
    if fmt in ("pdf", "xlsx") and output is None:
        raise UsageError(f"Định dạng {fmt} cần --output TỆP (không in tệp nhị phân ra màn hình).")
    with c.engine.connect() as conn:
        content = prepared.get(conn, _report_id(report_id), fmt)
    if output is None:
        sys.stdout.write(content.decode("utf-8"))  # html, json and csv are UTF-8 text
        return
    _write(output, content)
    err.print(f"Đã ghi báo cáo số {report_id} ({fmt}) vào {escape(str(output))}.", soft_wrap=True)


def _report_id(raw: str) -> int:
    if not raw.strip().isdigit():
        raise UsageError(f"Số báo cáo '{raw}' không hợp lệ: cần một số nguyên (xem 'canhbao report list').")
    return int(raw)


def _write(path: Path, content: bytes) -> None:
    """Whole or not at all: written beside its place, then moved there."""
    if path.is_dir():
        raise UsageError(f"{path} là một thư mục: hãy cho tên tệp.")
    partial = path.with_name(f".{path.name}.part")
    try:
        partial.write_bytes(content)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
