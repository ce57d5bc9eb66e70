"""`canhbao db`: the database's schema."""

from __future__ import annotations

import typer

from dispatcher import db
from dispatcher.cli.common import Context, JsonOption, emit, out

db_app = typer.Typer(help="Cơ sở dữ liệu.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Nâng cấp lược đồ cơ sở dữ liệu lên phiên bản mới nhất."""
    c: Context = ctx.obj
    engine = db.make_engine(c.settings.database)
    before, after = db.upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    if as_json:
        emit({"database": where, "from": before, "to": after})
    elif before == after:
        out.print(f"Cơ sở dữ liệu {where} đã ở phiên bản mới nhất ({after}).")
    else:
        out.print(f"Đã nâng cấp {where}: {before or 'trống'} → {after}.")
