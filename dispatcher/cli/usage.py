"""The command classes of `canhbao`: `--as` on every command, every missing option named, help in Vietnamese.

`adopt(app)` gives every command and group of a Typer application these classes. The words
Typer's rich help prints around ours (panel titles, "[required]", …) are its public
`typer.rich_utils` settings, set once by `vietnamese_help()`.
"""

from __future__ import annotations

import copy
from difflib import get_close_matches
from typing import Any

import typer
from typer import rich_utils
from typer._click import exceptions as click_errors  # Typer vendors click: its exceptions live here
from typer.core import TyperCommand, TyperGroup

from dispatcher.errors import UsageError

ACTOR = "acting_user"  # the root callback's parameter for --as / CANHBAO_USER
HELP_TEXT = "Xem hướng dẫn này rồi thoát."
USAGE_PREFIX = "Cách dùng: "
OPTIONS_METAVAR = "[TUỲ_CHỌN]"
SUBCOMMAND_METAVAR = "LỆNH [ĐỐI_SỐ]..."


class MissingParameters(UsageError):
    """Several required options or arguments were left out; all of them are named at once."""

    def __init__(self, command_path: str, names: list[str]) -> None:
        super().__init__(f"'{command_path}' cần {_listing(names)}.")
        self.names = names
        self.hint = f"Xem '{command_path} --help'."


class NoSuchCommand(UsageError):
    """A command name nobody defined, with the close ones."""

    def __init__(self, command_path: str, name: str, close: list[str]) -> None:
        hint = f" Có phải ý bạn là {_listing(close, 'hay')}?" if close else ""
        super().__init__(f"'{command_path}' không có lệnh '{name}'.{hint}")
        self.hint = f"Xem '{command_path} --help'."


def _listing(names: list[str], conjunction: str = "và") -> str:
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {conjunction} {quoted[-1]}"


class _Vietnamese:
    """What commands and groups share: the Vietnamese usage line and help option."""

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        """The usage line, introduced in Vietnamese."""
        pieces = self.collect_usage_pieces(ctx)  # type: ignore[attr-defined]
        formatter.write_usage(ctx.command_path, " ".join(pieces), prefix=USAGE_PREFIX)

    def get_help_option(self, ctx: Any) -> Any:
        """`--help`, described in Vietnamese."""
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.help = HELP_TEXT
        return option


class Command(_Vietnamese, TyperCommand):
    """A command that also takes `--as USER` after its name and names every missing option at once."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The command's own parameters, then `--as`, then `--help`."""
        params = super().get_params(ctx)
        actor = self._actor_option(ctx)
        return params if actor is None else [*params[:-1], actor, params[-1]]

    def _actor_option(self, ctx: Any) -> Any:
        if getattr(self, "_actor", None) is None:
            root = next((p for p in ctx.find_root().command.params if p.name == ACTOR), None)
            if root is None:
                return None
            # The root's own option, without its environment variable: that one is read at the root.
            self._actor = copy.copy(root)
            self._actor.envvar, self._actor.expose_value, self._actor.callback = None, False, _act_as
        return self._actor

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse as click does, but a missing option names every required one still missing."""
        try:
            return super().parse_args(ctx, args)
        except click_errors.MissingParameter as exc:
            missing = [p for p in self.get_params(ctx) if p.required and p.name not in ctx.params]
            hints = [p.get_error_hint().split(" / ")[0].strip("'") for p in missing]
            raise MissingParameters(ctx.command_path, hints) from exc


class Group(_Vietnamese, TyperGroup):
    """A group whose unknown command is refused in Vietnamese, with the close matches."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """The command `args` starts with, or NoSuchCommand."""
        if args and self.get_command(ctx, args[0]) is None and not args[0].startswith("-"):
            close = get_close_matches(args[0], list(self.commands))
            raise NoSuchCommand(ctx.command_path, args[0], close)
        return super().resolve_command(ctx, args)


def _act_as(ctx: Any, _param: Any, value: str | None) -> None:
    """`--as` after the command: it names the acting user, unless the root named someone else."""
    if value is None or ctx.obj is None:
        return
    root = ctx.find_root()
    given = root.params.get(ACTOR)
    if given and given != value and root.get_parameter_source(ACTOR).name == "COMMANDLINE":
        raise UsageError(f"--as được ghi hai lần với hai người khác nhau: '{given}' và '{value}'.")
    ctx.obj.actor = value


def adopt(app: typer.Typer) -> None:
    """Give every command and group of `app` (and of its sub-applications) the classes above."""
    # Typer fills in its own classes as defaults; a class of our own (or anyone's) is kept.
    app.info.cls = _ours(app.info.cls, Group)
    app.info.options_metavar, app.info.subcommand_metavar = OPTIONS_METAVAR, SUBCOMMAND_METAVAR
    for info in app.registered_commands:
        info.cls = _ours(info.cls, Command)
        info.options_metavar = OPTIONS_METAVAR
    for group in app.registered_groups:
        group.cls = _ours(group.cls, Group)
        group.options_metavar, group.subcommand_metavar = OPTIONS_METAVAR, SUBCOMMAND_METAVAR
        if group.typer_instance is not None:
            adopt(group.typer_instance)


def _ours(cls: Any, ours: type) -> Any:
    """`ours` where Typer would use its own default class; a class someone chose is kept."""
    chosen = getattr(cls, "value", cls)  # Typer wraps defaults in a DefaultPlaceholder
    return ours if chosen in (None, TyperCommand, TyperGroup) else cls


def vietnamese_help() -> None:
    """The words Typer's help prints around ours, in Vietnamese."""
    rich_utils.ARGUMENTS_PANEL_TITLE = "Đối số"
    rich_utils.OPTIONS_PANEL_TITLE = "Tuỳ chọn"
    rich_utils.COMMANDS_PANEL_TITLE = "Lệnh"
    rich_utils.ERRORS_PANEL_TITLE = "Lỗi"
    rich_utils.REQUIRED_LONG_STRING = "[bắt buộc]"
    rich_utils.DEFAULT_STRING = "[mặc định: {}]"
    rich_utils.ENVVAR_STRING = "[biến môi trường: {}]"
    rich_utils.DEPRECATED_STRING = "(không còn dùng) "
    rich_utils.ABORTED_TEXT = "Đã dừng."
    rich_utils.RICH_HELP = "Xem [blue]'{command_path} {help_option}'[/] để biết cách dùng."
