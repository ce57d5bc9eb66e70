"""`canhbao users`: accounts for the console and the API, their roles, passwords and API tokens.

Passwords are never options (they would stay in the shell's history and in `ps`): they are asked
twice at a prompt, or read from stdin with `--password-stdin` for scripts.
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer
from rich.markup import escape

from dispatcher import labels, users
from dispatcher.cli.common import Context, JsonOption, emit, err, out
from dispatcher.cli.tables import Column, print_fitted
from dispatcher.errors import InputRejected, UsageError
from dispatcher.formats import moment

users_app = typer.Typer(help="Người dùng cổng web và API: vai trò, mật khẩu, khoá API.", no_args_is_help=True)

RoleOption = Annotated[
    list[str], typer.Option("--role", help=f"Vai trò (lặp lại hoặc cách nhau bởi dấu phẩy): {', '.join(users.ROLES)}.")
]
StdinOption = Annotated[bool, typer.Option("--password-stdin", help="Đọc mật khẩu từ stdin (dùng trong script).")]
LIST_COLUMNS = (Column("Tên đăng nhập", whole=True), Column("Họ tên", drop=2), Column("Vai trò", least=12),
                Column("Trạng thái", whole=True), Column("Khoá API", drop=1))  # fmt: skip
TOKEN_COLUMNS = (Column("Số", whole=True), Column("Người dùng", whole=True), Column("Tên", drop=2),
                 Column("Tạo lúc", drop=3), Column("Dùng lần cuối", least=10),
                 Column("Trạng thái", whole=True))  # fmt: skip


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    app.add_typer(users_app, name="users")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise UsageError("Không có bàn phím để hỏi mật khẩu: dùng --password-stdin.")
    else:
        password = getpass.getpass("Mật khẩu: ")
        if getpass.getpass("Nhập lại mật khẩu: ") != password:
            raise InputRejected("Hai lần nhập mật khẩu không giống nhau.")
    if not password:
        raise InputRejected("Mật khẩu trống.")
    return password


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Tên đăng nhập: chữ, số và . _ -")],
    role: RoleOption,
    name: Annotated[str | None, typer.Option("--name", help="Họ tên hiển thị.")] = None,
    password_stdin: StdinOption = False,
    as_json: JsonOption = False,
) -> None:
    """Tạo người dùng với một hay nhiều vai trò; mật khẩu hỏi ở dấu nhắc (người quản trị đầu tiên: --role admin)."""
    c: Context = ctx.obj
    roles = users.parse_roles(role)
    password = _password(password_stdin)
    with c.engine.begin() as conn:
        user = users.add(conn, c.now, c.actor, username, password, roles, name)
    if as_json:
        emit({"username": user.username, "display_name": user.display_name, "roles": sorted(user.roles)})
        return
    shown = ", ".join(labels.role(r) for r in sorted(user.roles))
    out.print(f"Đã tạo người dùng '{escape(user.username)}' ({escape(shown)}).")


@users_app.command("passwd")
def users_passwd(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Tên đăng nhập.")],
    password_stdin: StdinOption = False,
    as_json: JsonOption = False,
) -> None:
    """Đặt mật khẩu mới; mọi phiên đăng nhập của người đó kết thúc."""
    c: Context = ctx.obj
    password = _password(password_stdin)
    with c.engine.begin() as conn:
        users.set_password(conn, c.now, c.actor, username, password)
    if as_json:
        emit({"username": username, "password_changed": True})
        return
    out.print(f"Đã đổi mật khẩu của '{escape(username)}'; các phiên đăng nhập cũ đã kết thúc.")


@users_app.command("roles")
def users_roles(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Tên đăng nhập.")],
    role: RoleOption,
    as_json: JsonOption = False,
) -> None:
    """Thay các vai trò của một người dùng."""
    c: Context = ctx.obj
    roles = users.parse_roles(role)
    with c.engine.begin() as conn:
        user = users.set_roles(conn, c.now, c.actor, username, roles)
    if as_json:
        emit({"username": user.username, "roles": sorted(user.roles)})
        return
    out.print(f"'{escape(user.username)}' nay là: {escape(', '.join(labels.role(r) for r in sorted(user.roles)))}.")


@users_app.command("disable")
def users_disable(
    ctx: typer.Context, username: Annotated[str, typer.Argument(help="Tên đăng nhập.")], as_json: JsonOption = False
) -> None:
    """Khoá tài khoản: không đăng nhập được, khoá API không dùng được, các phiên kết thúc ngay."""
    c: Context = ctx.obj
    with c.engine.begin() as conn:
        users.disable(conn, c.now, c.actor, username)
    if as_json:
        emit({"username": username, "disabled": True})
        return
    out.print(f"Đã khoá tài khoản '{escape(username)}'.")


@users_app.command("enable")
def users_enable(
    ctx: typer.Context, username: Annotated[str, typer.Argument(help="Tên đăng nhập.")], as_json: JsonOption = False
) -> None:
    """Mở lại tài khoản đã khoá."""
    c: Context = ctx.obj
    with c.engine.begin() as conn:
        users.enable(conn, c.now, c.actor, username)
    if as_json:
        emit({"username": username, "disabled": False})
        return
    out.print(f"Đã mở lại tài khoản '{escape(username)}'.")


@users_app.command("list")
def users_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Các người dùng, vai trò và trạng thái."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        found = users.listing(conn)
    if as_json:
        emit(found)
        return
    if not found:
        out.print("Chưa có người dùng nào. Tạo người quản trị đầu tiên: canhbao users add TÊN --role admin")
        return
    rows = [[escape(u["username"]), escape(u["display_name"]), ", ".join(labels.role(r) for r in u["roles"]),
             "đã khoá" if u["disabled"] else ("hoạt động" if u["has_password"] else "chưa có mật khẩu"),
             str(u["tokens"])] for u in found]  # fmt: skip
    print_fitted(out, LIST_COLUMNS, rows, "xem đủ với --json")


@users_app.command("token")
def users_token(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Tên đăng nhập.")],
    label: Annotated[str, typer.Option("--label", help="Tên gợi nhớ của khoá (chương trình nào dùng).")] = "api",
    as_json: JsonOption = False,
) -> None:
    """Cấp một khoá API (Authorization: Bearer …) cho người dùng; khoá chỉ hiện một lần."""
    c: Context = ctx.obj
    with c.engine.begin() as conn:
        token_id, token = users.issue_token(conn, c.now, c.actor, username, label)
    if as_json:
        emit({"token_id": token_id, "username": username, "token": token})
        return
    err.print(f"Khoá API số {token_id} của '{escape(username)}' (chỉ hiện lần này, hãy lưu lại):")
    print(token)


@users_app.command("tokens")
def users_tokens(
    ctx: typer.Context,
    username: Annotated[str | None, typer.Argument(help="Chỉ khoá của người này.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Các khoá API (không bao giờ hiện lại khoá), lần dùng cuối."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        found = users.tokens(conn, username)
    if as_json:
        emit(found)
        return
    zone = c.settings.app.timezone
    rows = [[str(t["id"]), escape(t["username"]), escape(t["name"]), moment(t["created_at"], zone),
             moment(t["last_used_at"], zone) if t["last_used_at"] else "chưa dùng",
             "đã thu hồi" if t["revoked_at"] else "dùng được"] for t in found]  # fmt: skip
    print_fitted(out, TOKEN_COLUMNS, rows, "xem đủ với --json")


@users_app.command("revoke")
def users_revoke(
    ctx: typer.Context, token_id: Annotated[int, typer.Argument(help="Số của khoá API.")], as_json: JsonOption = False
) -> None:
    """Thu hồi một khoá API: nó thôi dùng được ngay."""
    c: Context = ctx.obj
    with c.engine.begin() as conn:
        users.revoke_token(conn, c.now, c.actor, token_id)
    if as_json:
        emit({"token_id": token_id, "revoked": True})
        return
    out.print(f"Đã thu hồi khoá API số {token_id}.")
