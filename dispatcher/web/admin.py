"""`/users` (admin): accounts, roles and API tokens; `/account` (everyone): one's own password and tokens.

The same operations as `canhbao users …` (dispatcher/users.py), so the rules hold once: a
password long enough, a name not taken, sessions ended at a password change or a lock.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from dispatcher import users
from dispatcher.errors import CanhBaoError, NotFound
from dispatcher.web import i18n
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import in_transaction
from dispatcher.web.proxies import client_address
from dispatcher.web.templating import render

router = APIRouter()
Admin = Annotated[Principal, allow("admin")]
Anyone = Annotated[Principal, allow(*users.ROLES)]

i18n.register(
    {
        "Người dùng mới": "New user",
        "Họ tên": "Full name",
        "Mật khẩu ban đầu": "Initial password",
        "Tạo người dùng": "Create user",
        "Trạng thái": "State",
        "hoạt động": "active",
        "đã khoá": "disabled",
        "Khoá": "Disable",
        "Mở khoá": "Enable",
        "Đổi vai trò": "Change roles",
        "Khoá API": "API tokens",
        "Cấp khoá API": "Issue an API token",
        "Tên gợi nhớ": "Label",
        "Thu hồi": "Revoke",
        "đã thu hồi": "revoked",
        "chưa dùng": "never used",
        "Dùng lần cuối": "Last used",
        "Tạo lúc": "Created",
        "Khoá API mới (chỉ hiện một lần, hãy lưu lại ngay):": "New API token (shown once, store it now):",
        "Tài khoản của tôi": "My account",
        "Đổi mật khẩu": "Change password",
        "Mật khẩu hiện tại": "Current password",
        "Mật khẩu mới": "New password",
        "Nhập lại mật khẩu mới": "Repeat the new password",
        "Hai lần nhập mật khẩu không giống nhau.": "The two passwords differ.",
        "Đã lưu.": "Saved.",
        "Mật khẩu hiện tại không đúng.": "The current password is wrong.",
    }
)


async def _users_page(request: Request, status: int = 200, **context: Any) -> Response:
    def read(conn: Any, _now: Any) -> dict[str, Any]:
        return {"accounts": users.listing(conn), "tokens": users.tokens(conn)}

    found = await in_transaction(request, read)
    return render(request, "users.html", {**found, "roles": users.ROLES, **context}, status)


@router.get("/users")
async def users_page(request: Request, principal: Admin) -> Response:
    """Accounts, their roles and tokens."""
    return await _users_page(request)


@router.post("/users")
async def users_add(
    request: Request,
    principal: Admin,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    display_name: Annotated[str, Form(max_length=120)] = "",
    role: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """A new account."""
    try:
        roles = users.parse_roles(role or [])
        await in_transaction(request, lambda conn, now: users.add(conn, now, principal.actor, username, password, roles,
                                                        display_name or None))  # fmt: skip
    except CanhBaoError as exc:
        return await _users_page(
            request, 400, error=str(exc), draft={"username": username, "display_name": display_name}
        )
    return RedirectResponse("/users", 303)


@router.post("/users/{username}/roles")
async def users_roles(
    request: Request, principal: Admin, username: str, role: Annotated[list[str] | None, Form()] = None
) -> Response:
    """Replace an account's roles."""
    try:
        roles = users.parse_roles(role or [])
        await in_transaction(request, lambda conn, now: users.set_roles(conn, now, principal.actor, username, roles))
    except CanhBaoError as exc:
        return await _users_page(request, 400, error=str(exc))
    return RedirectResponse("/users", 303)


@router.post("/users/{username}/disable")
async def users_disable(request: Request, principal: Admin, username: str) -> Response:
    """Lock an account out (its sessions end now)."""
    return await _change(request, lambda conn, now: users.disable(conn, now, principal.actor, username))


@router.post("/users/{username}/enable")
async def users_enable(request: Request, principal: Admin, username: str) -> Response:
    """Let a locked account in again."""
    return await _change(request, lambda conn, now: users.enable(conn, now, principal.actor, username))


@router.post("/users/{username}/tokens")
async def users_token(
    request: Request, principal: Admin, username: str, label: Annotated[str, Form(max_length=80)] = "api"
) -> Response:
    """A new API token for the account, shown on this page once."""
    try:
        token_id, token = await in_transaction(request, lambda conn, now: users.issue_token(conn, now, principal.actor,
                                                                                 username, label))  # fmt: skip
    except CanhBaoError as exc:
        return await _users_page(request, 400, error=str(exc))
    return await _users_page(request, new_token={"id": token_id, "username": username, "token": token})


@router.post("/tokens/{token_id}/revoke")
async def token_revoke(request: Request, principal: Admin, token_id: int) -> Response:
    """A token stops working at once."""
    return await _change(request, lambda conn, now: users.revoke_token(conn, now, principal.actor, token_id))


async def _change(request: Request, work: Any) -> Response:
    try:
        await in_transaction(request, work)
    except CanhBaoError as exc:
        return await _users_page(request, 404 if exc.code == "not_found" else 409, error=str(exc))
    return RedirectResponse("/users", 303)


# -- one's own account --------------------------------------------------------------------


async def _account_page(request: Request, principal: Principal, status: int = 200, **context: Any) -> Response:
    found = await in_transaction(request, lambda conn, _now: users.tokens(conn, principal.username))
    return render(request, "account.html", {"tokens": found, **context}, status)


@router.get("/account")
async def account(request: Request, principal: Anyone) -> Response:
    """One's own password and API tokens."""
    return await _account_page(request, principal)


@router.post("/account/password")
async def account_password(
    request: Request,
    principal: Anyone,
    current: Annotated[str, Form(max_length=1024)],
    password: Annotated[str, Form(max_length=1024)],
    repeat: Annotated[str, Form(max_length=1024)],
) -> Response:
    """Change one's own password after proving the current one; every session ends, this one too."""
    _ = i18n.translator(i18n.page_language(request))
    if password != repeat:
        return await _account_page(request, principal, 400, error=_("Hai lần nhập mật khẩu không giống nhau."))
    web, zone = request.app.state.settings.web, request.app.state.settings.app.timezone
    address = client_address(request) or "unknown"

    def change(conn: Any, now: Any) -> None:
        users.authenticate(conn, now, principal.username, current, address, web, zone)
        users.set_password(conn, now, principal.actor, principal.username, password)

    try:
        await in_transaction(request, change)
    except users.LoginRefused:
        return await _account_page(request, principal, 400, error=_("Mật khẩu hiện tại không đúng."))
    except CanhBaoError as exc:
        return await _account_page(request, principal, 400, error=str(exc))
    return RedirectResponse("/login", 303)


@router.post("/account/tokens")
async def account_token(
    request: Request, principal: Anyone, label: Annotated[str, Form(max_length=80)] = "api"
) -> Response:
    """A new API token of one's own, shown once."""
    token_id, token = await in_transaction(
        request, lambda conn, now: users.issue_token(conn, now, principal.actor, principal.username, label)
    )
    return await _account_page(request, principal, new_token={"id": token_id, "token": token})


@router.post("/account/tokens/{token_id}/revoke")
async def account_token_revoke(request: Request, principal: Anyone, token_id: int) -> Response:
    """Revoke one of one's own tokens (someone else's is not found)."""

    def revoke(conn: Any, now: Any) -> None:
        if not any(t["id"] == token_id for t in users.tokens(conn, principal.username)):
            raise NotFound(f"Không có khoá API số {token_id}.")
        users.revoke_token(conn, now, principal.actor, token_id)

    try:
        await in_transaction(request, revoke)
    except CanhBaoError as exc:
        return await _account_page(request, principal, 404, error=str(exc))
    return RedirectResponse("/account", 303)
