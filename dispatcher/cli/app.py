"""`canhbao`: the command line, and the composition root that wires settings into the parts.

Messages a user reads are Vietnamese. With `--json` a command prints exactly one JSON document
on stdout, an error too. Exit statuses and error codes: see dispatcher/errors.py.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dispatcher import logs
from dispatcher.audit import acting_through
from dispatcher.cli import (
    alerts,
    blasts,
    db,
    failures,
    gateways,
    regions,
    reports,
    schedules,
    subscribers,
    text,
    users,
    web,
)
from dispatcher.cli import audit as audit_cli
from dispatcher.cli.common import Context, emit, err
from dispatcher.cli.usage import OPTIONS_METAVAR, SUBCOMMAND_METAVAR, Group, adopt, vietnamese_help
from dispatcher.config import load_settings

app = typer.Typer(
    cls=Group, help="Cảnh Báo: gửi cảnh báo lừa đảo qua SMS và Zalo.", no_args_is_help=True, add_completion=False
)
LONG_RUNNING = {"worker", "serve", "scheduler", "web"}


@app.callback(options_metavar=OPTIONS_METAVAR, subcommand_metavar=SUBCOMMAND_METAVAR)
def _root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Tệp cấu hình (mặc định ./config.toml).")] = None,
    acting_user: Annotated[
        str | None, typer.Option("--as", envvar="CANHBAO_USER", help="Người thực hiện (ghi vào nhật ký).")
    ] = None,
) -> None:
    """Cảnh Báo: gửi cảnh báo lừa đảo qua SMS và Zalo."""
    settings = load_settings(config)
    # Long-running processes log at the configured level; one-shot commands only say what went wrong.
    long_running = ctx.invoked_subcommand in LONG_RUNNING
    logs.configure(settings.logging.format, settings.logging.level if long_running else "warning")
    os_user = getpass.getuser()
    ctx.obj = Context(settings=settings, actor=acting_user or os_user, long_running=long_running)
    ctx.call_on_close(ctx.obj.close)
    if not long_running:  # a server's requests, scheduler and worker say where their own actions come from
        ctx.with_resource(acting_through("cli", f"--as, os-user:{os_user}" if acting_user else f"os-user:{os_user}"))


def run(args: list[str] | None = None) -> int:
    """Run the command line on `args` and return the exit status (see dispatcher/errors.py)."""
    args = list(sys.argv[1:] if args is None else args)
    as_json = "--json" in (args[: args.index("--")] if "--" in args else args)
    try:
        status = typer.main.get_command(app).main(args, prog_name="canhbao", standalone_mode=False)
    except Exception as exc:  # noqa: BLE001  (what is not a user's mistake is raised again below)
        failure = failures.describe(exc)
        if failure is None:
            raise
        return _fail(failure, as_json)
    if status == failures.interrupted().exit_code:  # Typer turns Ctrl-C into this status
        return _fail(failures.interrupted(), as_json)
    return status if isinstance(status, int) else 0


def _fail(failure: failures.Failure, as_json: bool) -> int:
    """Tell the user what went wrong: in Vietnamese on stderr, and as the one JSON document with --json."""
    if as_json:
        emit(failure.to_json())
    err.print(f"[red]Lỗi:[/red] {escape(failure.message)}", soft_wrap=True)
    if failure.hint and not as_json:
        err.print(escape(failure.hint), soft_wrap=True)
    return failure.exit_code


def main() -> None:
    """Entry point of the `canhbao` console script."""
    sys.exit(run())


for group in (db, regions, subscribers, alerts, text, blasts, schedules, gateways, web, users, reports):
    group.register(app)
audit_cli.register(app)
adopt(app)  # every command, wherever it was registered: `--as` after it, Vietnamese usage errors and help
vietnamese_help()
