"""`canhbao subscribers`: import, generate, opt-out/opt-in and stats."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dispatcher import formats, labels, population
from dispatcher.cli.common import Context, JsonOption, emit, err, out, parse_msisdn
from dispatcher.cli.tables import Column, print_fitted
from dispatcher.errors import InputRejected
from dispatcher.phones import mask
from dispatcher.regions import Level
from dispatcher.subscribers import (
    ENCODINGS,
    ImportSummary,
    OptOut,
    RejectsFile,
    RowParser,
    SubscriberImporter,
    find_subscriber,
    held_refusal,
    importer_for,
    set_opt_out,
    stats,
)

subscribers_app = typer.Typer(help="Thuê bao nhận cảnh báo.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    app.add_typer(subscribers_app, name="subscribers")


def _importer(c: Context) -> SubscriberImporter:
    return importer_for(c.engine, c.regions, c.settings.subscribers)


def _progress(as_json: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, disable=as_json or not err.is_terminal, transient=True,
    )  # fmt: skip


def _report_import(summary: ImportSummary, seconds: float, as_json: bool) -> None:
    """The summary; exit 1 when rows were refused (duplicates alone are not a refusal)."""
    if as_json:
        emit(summary.to_json())
    else:
        _print_import(summary, seconds)
    if summary.rejected:
        raise typer.Exit(InputRejected.exit_code)


def _print_import(summary: ImportSummary, seconds: float) -> None:
    n = formats.number
    rate = f" ({n(summary.rows / seconds)} dòng/giây)" if summary.rows >= 10_000 and seconds > 0 else ""
    out.print(
        f"Đã đọc {n(summary.rows)} dòng trong {formats.duration(seconds)}{rate}: "
        f"[green]thêm {n(summary.added)}[/green], cập nhật {n(summary.updated)}, không đổi {n(summary.unchanged)}, "
        f"trùng {n(summary.duplicates)}, [red]từ chối {n(summary.rejected)}[/red].",
        soft_wrap=True,
    )
    if summary.encoding:
        out.print(f"Bảng mã của tệp: {ENCODINGS[summary.encoding]}.")
    if summary.refusals_applied:
        out.print(f"{n(summary.refusals_applied)} số đã từ chối nhận từ trước: nhập ở trạng thái từ chối.")
    if summary.rejects_file:
        out.print(f"Các dòng bị từ chối hoặc trùng số, và lý do: {escape(str(summary.rejects_file))}", soft_wrap=True)
    if summary.ignored_columns:
        out.print(f"Bỏ qua các cột không dùng: {escape(', '.join(summary.ignored_columns))}")


@subscribers_app.command("import")
def subscribers_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Tệp CSV (UTF-8, UTF-16 hoặc Windows-1258) hoặc XLSX.")],
    as_json: JsonOption = False,
) -> None:
    """Nhập thuê bao từ tệp: thêm số mới, cập nhật số đã có, báo các dòng bị từ chối."""
    c: Context = ctx.obj
    c.may_create = True  # the first import of a fresh installation starts its database
    importer = _importer(c)
    started = time.perf_counter()
    with _progress(as_json) as progress:
        task = progress.add_task(f"Nhập {file.name}", total=None)
        summary = importer.import_file(file, c.now, lambda n: progress.update(task, completed=n), actor=c.actor)
    _report_import(summary, time.perf_counter() - started, as_json)


@subscribers_app.command("generate")
def subscribers_generate(
    ctx: typer.Context,
    province: Annotated[str, typer.Option(help="Tỉnh/thành phố (mã hoặc tên).")],
    count: Annotated[int, typer.Option(min=1, help="Số thuê bao.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Hạt giống ngẫu nhiên: cùng hạt giống, cùng dân số.")] = 1,
    output: Annotated[Path | None, typer.Option(help="Ghi ra tệp CSV thay vì nhập vào cơ sở dữ liệu.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Tạo dân số thuê bao giả lập (đầu số, nhà mạng, xã, nhóm đối tượng như thật)."""
    c: Context = ctx.obj
    unit = c.regions.one(province, frozenset({Level.PROVINCE}))
    code = unit.code if unit.scheme == "2025" else c.regions.current_provinces(unit)[0]
    rows = population.generate(c.regions, code, count, seed)
    started = time.perf_counter()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(population.HEADER)
            writer.writerows(rows)
        if as_json:
            emit({"file": str(output), "rows": count})
        else:
            out.print(f"Đã ghi {formats.number(count)} thuê bao giả lập vào {output}.")
        return
    c.may_create = True  # as an import does
    importer = _importer(c)
    positions = {name: i for i, name in enumerate(population.HEADER)}
    rejects = RejectsFile(c.settings.subscribers.rejects_dir / f"generate-{c.now:%Y%m%d-%H%M%S}.rejects.csv")
    with _progress(as_json) as progress:
        task = progress.add_task("Tạo thuê bao", total=count)
        summary = importer.load(
            rows, RowParser(c.regions, positions), c.now, f"generate:seed={seed}", rejects,
            on_progress=lambda n: progress.update(task, completed=n),
        )  # fmt: skip
    _report_import(summary, time.perf_counter() - started, as_json)


@subscribers_app.command("opt-out")
def subscribers_opt_out(ctx: typer.Context, msisdn: str, as_json: JsonOption = False) -> None:
    """Ghi nhận thuê bao từ chối nhận cảnh báo (có hiệu lực với mọi đợt gửi chưa bắt đầu)."""
    _set_opt_out(ctx.obj, msisdn, True, as_json)


@subscribers_app.command("opt-in")
def subscribers_opt_in(ctx: typer.Context, msisdn: str, as_json: JsonOption = False) -> None:
    """Huỷ ghi nhận từ chối (khi thuê bao đồng ý nhận lại)."""
    _set_opt_out(ctx.obj, msisdn, False, as_json)


def _set_opt_out(c: Context, raw: str, opted_out: bool, as_json: bool) -> None:
    number = parse_msisdn(raw)
    with c.engine.begin() as conn:
        outcome = set_opt_out(conn, number, opted_out, c.now, c.actor)
        row = find_subscriber(conn, number)
        since = row["opted_out_at"] if row else held_refusal(conn, number)
    if outcome is OptOut.UNKNOWN:
        raise InputRejected(f"Không có thuê bao {mask(number)}, cũng không có lời từ chối nào của số này để huỷ.")
    if as_json:
        emit({"msisdn": mask(number), "opted_out": opted_out, "opted_out_at": since, "outcome": outcome.value})
    else:
        out.print(_OPT_OUT_SAID[outcome, opted_out].format(number=mask(number)), soft_wrap=True)


_OPT_OUT_SAID = {
    (OptOut.SUBSCRIBER, True): "Thuê bao {number} đã từ chối nhận cảnh báo.",
    (OptOut.SUBSCRIBER, False): "Thuê bao {number} nhận lại cảnh báo.",
    (OptOut.HELD, True): "Chưa có thuê bao {number}: đã ghi vào danh sách từ chối, mọi lần nhập sau sẽ tôn trọng.",
    (OptOut.LIFTED, False): "Chưa có thuê bao {number}: đã xoá khỏi danh sách từ chối, lần nhập sau nhận bình thường.",
}


@subscribers_app.command("stats")
def subscribers_stats(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Số thuê bao theo tỉnh và nhà mạng."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        found = stats(conn)
    if as_json:
        emit(found)
        return
    document, total, held = found["groups"], found["total"], found["held_refusals"]
    columns = (Column("Tỉnh/thành phố"), Column("Nhà mạng"), Column("Thuê bao", whole=True, justify="right"),
               Column("Từ chối", whole=True, justify="right"))  # fmt: skip
    rows = [[c.regions.province(r["province_code"]).name, labels.carrier(r["carrier"]),
             formats.number(r["subscribers"]), formats.number(r["opted_out"])] for r in document]  # fmt: skip
    print_fitted(out, columns, rows, "xem đủ: --json")
    out.print(f"Tổng: {formats.number(total)} thuê bao.")
    out.print(f"Lời từ chối của số chưa nhập (áp dụng khi nhập): {formats.number(held)}.")
