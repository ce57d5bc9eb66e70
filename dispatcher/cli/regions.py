"""`canhbao regions`: what a place name, old or new, is today."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dispatcher.cli.common import Context, JsonOption, emit, out
from dispatcher.formats import number

regions_app = typer.Typer(help="Địa giới hành chính (34 tỉnh, 3.321 xã từ 1/7/2025).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    app.add_typer(regions_app, name="regions")


@regions_app.command("show")
def regions_show(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Tên hoặc mã: 'Quảng Nam', 'Phường 1, Quận 3, TP.HCM', '48', 'mã huyện cũ 503'.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Cho biết một tên địa danh (mới hoặc cũ) nay ứng với tỉnh, xã nào."""
    c: Context = ctx.obj
    resolution = c.regions.resolve(name)
    if as_json:
        emit(resolution.to_json())
        return
    matched = resolution.matched
    # Not wrapped: the code marker at the end is what the user may copy.
    out.print(f"[bold]{escape(name)}[/bold] → {escape(c.regions.describe(matched))}", soft_wrap=True)
    if resolution.whole_province:
        count = number(len(c.regions.communes_by_province[matched.code]))
        out.print(f"Toàn tỉnh/thành phố: {count} xã, phường, đặc khu.")
        return
    out.print("Nay thuộc: " + ", ".join(escape(c.regions.describe(p)) for p in resolution.today), soft_wrap=True)
    table = Table("Mã", "Xã/phường hiện nay", "Tỉnh/thành phố", "Ghi chú")
    for cover in resolution.communes:
        note = "[yellow]chỉ một phần[/yellow]" if cover.partial else ""
        table.add_row(str(cover.unit.code), cover.unit.name, c.regions.province(cover.unit.province_code).name, note)
    out.print(table)
    partial = number(sum(1 for cover in resolution.communes if cover.partial))
    total = number(len(resolution.communes))
    out.print(f"{total} xã/phường, trong đó {partial} chỉ một phần thuộc '{escape(matched.name)}'.")
