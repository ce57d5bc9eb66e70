"""People who use the console and the API: accounts, roles, password logins, sessions and API tokens.

A person holds one or more roles; each page, API call and action says which roles may use it
(the web face checks it on every request; the rules that matter, such as four-eyes, live with
the operations themselves). Passwords are kept as argon2id hashes. A browser session and an API
token are random secrets kept only as their SHA-256: the secret lives in the cookie or with the
client. Failed logins are counted per name and per address, and a lock-out follows too many.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, func, insert, select, update

from dispatcher.audit import audit
from dispatcher.config import WebSettings
from dispatcher.errors import InputRejected, NotAllowed, NotFound, StateError, UsageError
from dispatcher.formats import moment
from dispatcher.models import api_tokens, login_failures, user_roles, users, web_sessions

ROLES = ("police", "approver", "liaison", "operator", "admin")
MIN_PASSWORD = 10
# An office behind one NAT shares an address: it may fail this many times more than one name may.
ADDRESS_FACTOR = 4
# last_seen_at / last_used_at are written at most this often, so reading pages does not write on every request.
TOUCH_EVERY = timedelta(seconds=60)

_hasher = PasswordHasher()  # argon2id, RFC 9106's second recommended parameters (t=3, 64 MiB, p=4)


@functools.cache
def _dummy_hash() -> str:
    """A hash no password matches, checked for an unknown name so that it costs what a wrong password costs.

    Made at the first login, not at import: every command imports this module, and a hash costs
    64 MiB and ~0.1 s of CPU (seconds on a loaded machine) that `canhbao --help` has no use for.
    """
    return _hasher.hash("not a password anyone has")


class LoginRefused(NotAllowed):
    """A wrong name or password, a disabled account, or a lock-out: said without telling which name exists."""

    code = "login_refused"

    def __init__(self, message: str, locked_until: datetime | None = None) -> None:
        super().__init__(message)
        self.locked_until = locked_until
        # A wrong name or password counts towards a lock-out (`record_failure`, after the caller's rollback).
        self.counts = locked_until is None


@dataclass(frozen=True)
class User:
    """A person as the faces see them."""

    id: int
    username: str
    display_name: str
    roles: frozenset[str]
    disabled: bool = False


def parse_roles(texts: list[str]) -> frozenset[str]:
    """Roles given by a user ("police,approver" or several options), each one we know."""
    roles = {part.strip().lower() for text in texts for part in text.split(",") if part.strip()}
    unknown = sorted(roles - set(ROLES))
    if unknown:
        raise UsageError(f"Vai trò không có: {', '.join(unknown)}. Các vai trò: {', '.join(ROLES)}.")
    if not roles:
        raise UsageError(f"Cần ít nhất một vai trò: {', '.join(ROLES)}.")
    return frozenset(roles)


def check_password(username: str, password: str) -> None:
    """Refuse a password too easy to guess, saying why."""
    if len(password) < MIN_PASSWORD:
        raise InputRejected(f"Mật khẩu cần ít nhất {MIN_PASSWORD} ký tự.")
    if username.lower() in password.lower():
        raise InputRejected("Mật khẩu không được chứa tên đăng nhập.")


def _valid_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 64 or not all(ch.isalnum() or ch in "._-" for ch in name):
        raise UsageError(f"Tên đăng nhập {username!r}: chỉ chữ, số và . _ -, tối đa 64 ký tự.")
    return name


def add(
    conn: Connection,
    now: datetime,
    actor: str,
    username: str,
    password: str | None,
    roles: frozenset[str],
    display_name: str | None = None,
) -> User:
    """A new account; `password` None makes one that signs in only once a password is set."""
    name = _valid_username(username)
    if conn.execute(select(users.c.id).where(func.lower(users.c.username) == name.lower())).first():
        raise StateError(f"Đã có người dùng '{name}'.")
    if password is not None:
        check_password(name, password)
    user_id = conn.execute(
        insert(users).values(
            username=name,
            display_name=(display_name or name).strip(),
            password_hash=_hasher.hash(password) if password is not None else None,
            created_at=now,
            password_changed_at=now if password is not None else None,
        )
    ).inserted_primary_key[0]
    conn.execute(insert(user_roles), [{"user_id": user_id, "role": role} for role in sorted(roles)])
    audit(conn, now, actor, "user.add", f"user:{name}", {"roles": sorted(roles)}, after={"roles": sorted(roles)})
    return User(user_id, name, (display_name or name).strip(), roles)


def get(conn: Connection, username: str) -> User:
    """The account called `username` (case does not matter)."""
    row = conn.execute(select(users).where(func.lower(users.c.username) == username.strip().lower())).mappings().first()
    if row is None:
        raise NotFound(f"Không có người dùng '{username}'.")
    return _user(conn, row)


def by_id(conn: Connection, user_id: int) -> User:
    """The account with this id."""
    row = conn.execute(select(users).where(users.c.id == user_id)).mappings().first()
    if row is None:
        raise NotFound(f"Không có người dùng số {user_id}.")
    return _user(conn, row)


def _user(conn: Connection, row: Any) -> User:
    roles = conn.execute(select(user_roles.c.role).where(user_roles.c.user_id == row["id"])).scalars()
    return User(row["id"], row["username"], row["display_name"], frozenset(roles), row["disabled_at"] is not None)


def listing(conn: Connection) -> list[dict[str, Any]]:
    """Every account with its roles, state and active tokens."""
    roles: dict[int, list[str]] = {}
    for user_id, role in conn.execute(select(user_roles.c.user_id, user_roles.c.role).order_by(user_roles.c.role)):
        roles.setdefault(user_id, []).append(role)
    tokens = dict(
        conn.execute(
            select(api_tokens.c.user_id, func.count()).where(api_tokens.c.revoked_at.is_(None)).group_by("user_id")
        ).all()
    )
    rows = conn.execute(select(users).order_by(users.c.username)).mappings()
    return [
        {
            "username": row["username"],
            "display_name": row["display_name"],
            "roles": roles.get(row["id"], []),
            "disabled": row["disabled_at"] is not None,
            "has_password": row["password_hash"] is not None,
            "created_at": row["created_at"],
            "tokens": tokens.get(row["id"], 0),
        }
        for row in rows
    ]


def set_password(conn: Connection, now: datetime, actor: str, username: str, password: str) -> None:
    """A new password; every session of the account ends (whoever held one must sign in again)."""
    user = get(conn, username)
    check_password(user.username, password)
    conn.execute(
        update(users).where(users.c.id == user.id).values(password_hash=_hasher.hash(password), password_changed_at=now)
    )
    _end_sessions(conn, user.id, now)
    conn.execute(delete(login_failures).where(func.lower(login_failures.c.username) == user.username.lower()))
    audit(conn, now, actor, "user.passwd", f"user:{user.username}", {})


def set_roles(conn: Connection, now: datetime, actor: str, username: str, roles: frozenset[str]) -> User:
    """Replace the account's roles."""
    user = get(conn, username)
    if "admin" in user.roles and "admin" not in roles:
        _keep_an_admin(conn, user)
    conn.execute(delete(user_roles).where(user_roles.c.user_id == user.id))
    conn.execute(insert(user_roles), [{"user_id": user.id, "role": role} for role in sorted(roles)])
    audit(conn, now, actor, "user.roles", f"user:{user.username}", {},
          before={"roles": sorted(user.roles)}, after={"roles": sorted(roles)})  # fmt: skip
    return get(conn, username)


def disable(conn: Connection, now: datetime, actor: str, username: str) -> None:
    """The account can no longer sign in or use its tokens; its sessions end now."""
    user = get(conn, username)
    if user.disabled:
        raise StateError(f"Người dùng '{user.username}' đã bị khoá.")
    if "admin" in user.roles:
        _keep_an_admin(conn, user)
    conn.execute(update(users).where(users.c.id == user.id).values(disabled_at=now))
    _end_sessions(conn, user.id, now)
    audit(conn, now, actor, "user.disable", f"user:{user.username}", {}, before={"disabled": False},
          after={"disabled": True})  # fmt: skip


def enable(conn: Connection, now: datetime, actor: str, username: str) -> None:
    """A disabled account may sign in again."""
    user = get(conn, username)
    if not user.disabled:
        raise StateError(f"Người dùng '{user.username}' không bị khoá.")
    conn.execute(update(users).where(users.c.id == user.id).values(disabled_at=None))
    audit(conn, now, actor, "user.enable", f"user:{user.username}", {}, before={"disabled": True},
          after={"disabled": False})  # fmt: skip


def _keep_an_admin(conn: Connection, leaving: User) -> None:
    """Refuse to take away the last active administrator: nobody could manage accounts any more."""
    others = conn.execute(
        select(func.count())
        .select_from(user_roles.join(users, users.c.id == user_roles.c.user_id))
        .where(user_roles.c.role == "admin", users.c.disabled_at.is_(None), users.c.id != leaving.id)
    ).scalar_one()  # fmt: skip
    if not others:
        raise StateError(f"'{leaving.username}' là người quản trị cuối cùng: hãy cho người khác vai trò admin trước.")


def _end_sessions(conn: Connection, user_id: int, now: datetime) -> None:
    conn.execute(
        update(web_sessions)
        .where(web_sessions.c.user_id == user_id, web_sessions.c.ended_at.is_(None))
        .values(ended_at=now)
    )


# -- logging in ---------------------------------------------------------------------------


def authenticate(
    conn: Connection, now: datetime, username: str, password: str, address: str, web: WebSettings, zone: str
) -> User:
    """The account when name and password match and no lock-out holds; else LoginRefused.

    A refusal that `counts` must be recorded with `record_failure` in a transaction of its own
    (the caller's is rolled back by the refusal).

    The same words whether the name exists or not, and a hash is checked either way, so neither
    the message nor the time tells a guesser which names exist.
    """
    name = username.strip()[:64]
    locked_until = _locked_until(conn, now, name, address, web)
    if locked_until is not None:
        raise LoginRefused(
            f"Đăng nhập tạm khoá vì nhập sai nhiều lần; thử lại sau {moment(locked_until, zone)}.", locked_until
        )
    row = conn.execute(select(users).where(func.lower(users.c.username) == name.lower())).mappings().first()
    stored = row["password_hash"] if row is not None and row["password_hash"] else _dummy_hash()
    try:
        _hasher.verify(stored, password)
        matched = row is not None and row["password_hash"] is not None
    except (VerificationError, InvalidHashError):
        matched = False
    if not matched or row["disabled_at"] is not None:
        raise LoginRefused("Tên đăng nhập hoặc mật khẩu không đúng (hoặc tài khoản đã bị khoá).")
    conn.execute(delete(login_failures).where(login_failures.c.username == name.lower()))
    if _hasher.check_needs_rehash(stored):
        conn.execute(update(users).where(users.c.id == row["id"]).values(password_hash=_hasher.hash(password)))
    return _user(conn, row)


def record_failure(conn: Connection, now: datetime, username: str, address: str) -> None:
    """Count a failed login for the name and for the address."""
    conn.execute(insert(login_failures).values(username=username.strip()[:64].lower(), address=address[:64], at=now))


def _locked_until(conn: Connection, now: datetime, name: str, address: str, web: WebSettings) -> datetime | None:
    window = timedelta(minutes=web.lockout_minutes)
    since = now - window
    for column, value, limit in (
        (login_failures.c.username, name.lower(), web.lockout_failures),
        (login_failures.c.address, address[:64], web.lockout_failures * ADDRESS_FACTOR),
    ):
        recent = select(login_failures.c.at).where(column == value, login_failures.c.at > since)
        times = conn.execute(recent.order_by(login_failures.c.at)).scalars().all()
        if len(times) >= limit:
            return times[-limit] + window
    return None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


SESSION_REF_LENGTH = 10


@dataclass(frozen=True)
class Session:
    """A signed-in browser: whose it is and the token its forms must carry."""

    user: User
    csrf_token: str
    ref: str = ""
    """A short name of the session for the audit log: the head of the stored hash, which reveals nothing of the
    cookie's secret (a hash is not reversed), yet finds its row in `web_sessions`."""
    due: bool = False
    """Its last-seen time is due to be written and was not (read with `write` False): `touch` writes it."""


def start_session(conn: Connection, now: datetime, user: User, address: str, replacing: str | None = None) -> str:
    """A new session for `user`, its secret returned (for the cookie); the browser's previous one, if any, ends.

    A new secret at every login: a session id planted before login is worth nothing after it.
    """
    if replacing:
        end_session(conn, now, replacing)
    secret = secrets.token_urlsafe(32)
    conn.execute(
        insert(web_sessions).values(
            id_hash=_digest(secret), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
            created_at=now, last_seen_at=now, address=address[:64],
        )
    )  # fmt: skip
    return secret


def session(conn: Connection, now: datetime, secret: str, web: WebSettings, write: bool = True) -> Session | None:
    """The live session behind a cookie's secret, or None (unknown, ended, idle too long, too old, user disabled).

    With `write` False nothing is written: an idle or too old session is refused all the same (by
    the same times at every lookup), and one whose last-seen time is due says so (`due`).
    """
    # The account's row comes with the session's: one query fewer on every request a browser makes.
    row = conn.execute(
        select(web_sessions, users.c.id, users.c.username, users.c.display_name, users.c.disabled_at)
        .join(users, users.c.id == web_sessions.c.user_id)
        .where(web_sessions.c.id_hash == _digest(secret), web_sessions.c.ended_at.is_(None))
    ).mappings().first()  # fmt: skip
    if row is None or row["disabled_at"] is not None:
        return None
    idle = now - row["last_seen_at"] > timedelta(minutes=web.session_idle_minutes)
    old = now - row["created_at"] > timedelta(hours=web.session_hours)
    if idle or old:
        if write:
            conn.execute(update(web_sessions).where(web_sessions.c.id_hash == row["id_hash"]).values(ended_at=now))
        return None
    due = now - row["last_seen_at"] >= TOUCH_EVERY
    if due and write:
        touch(conn, now, secret)
    return Session(_user(conn, row), row["csrf_token"], row["id_hash"][:SESSION_REF_LENGTH], due and not write)


def touch(conn: Connection, now: datetime, secret: str) -> None:
    """Write that the session behind `secret` was seen at `now` (never moving its time back)."""
    s = web_sessions.c
    seen = update(web_sessions).where(s.id_hash == _digest(secret), s.last_seen_at < now)
    conn.execute(seen.values(last_seen_at=now))


def end_session(conn: Connection, now: datetime, secret: str) -> None:
    """Log out: the session's secret is worth nothing from now on."""
    conn.execute(
        update(web_sessions)
        .where(web_sessions.c.id_hash == _digest(secret), web_sessions.c.ended_at.is_(None))
        .values(ended_at=now)
    )


# -- API tokens ---------------------------------------------------------------------------

TOKEN_PREFIX = "cb_"


def issue_token(conn: Connection, now: datetime, actor: str, username: str, name: str) -> tuple[int, str]:
    """A new API token for `username`: (its id, the token). The token is shown once; only its hash is kept."""
    user = get(conn, username)
    if user.disabled:
        raise StateError(f"Người dùng '{user.username}' đã bị khoá.")
    label = name.strip()[:80] or "api"
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = conn.execute(
        insert(api_tokens).values(user_id=user.id, name=label, token_hash=_digest(token), created_at=now)
    ).inserted_primary_key[0]
    audit(conn, now, actor, "token.issue", f"user:{user.username}", {"token_id": token_id, "name": label})
    return token_id, token


def revoke_token(conn: Connection, now: datetime, actor: str, token_id: int) -> None:
    """The token stops working at once."""
    row = conn.execute(
        select(api_tokens.c.revoked_at, users.c.username)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.id == token_id)
    ).first()  # fmt: skip
    if row is None:
        raise NotFound(f"Không có khoá API số {token_id}.")
    if row.revoked_at is not None:
        raise StateError(f"Khoá API số {token_id} đã bị thu hồi.")
    conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=now))
    audit(conn, now, actor, "token.revoke", f"user:{row.username}", {"token_id": token_id},
          before={"revoked": False}, after={"revoked": True})  # fmt: skip


def token_user(conn: Connection, now: datetime, token: str) -> tuple[User, int] | None:
    """The account and token id behind a bearer token, or None (unknown, revoked, user disabled)."""
    row = conn.execute(
        select(api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.last_used_at, users.c.disabled_at)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.token_hash == _digest(token), api_tokens.c.revoked_at.is_(None))
    ).first()  # fmt: skip
    if row is None or row.disabled_at is not None:
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        conn.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(last_used_at=now))
    return by_id(conn, row.user_id), row.id


def tokens(conn: Connection, username: str | None = None) -> list[dict[str, Any]]:
    """API tokens (never the token itself), newest first."""
    query = (
        select(api_tokens.c.id, users.c.username, api_tokens.c.name, api_tokens.c.created_at,
               api_tokens.c.last_used_at, api_tokens.c.revoked_at)
        .join(users, users.c.id == api_tokens.c.user_id)
        .order_by(api_tokens.c.id.desc())
    )  # fmt: skip
    if username is not None:
        query = query.where(api_tokens.c.user_id == get(conn, username).id)
    return [dict(row) for row in conn.execute(query).mappings()]
