"""`canhbao gateways list|check` and `canhbao inbox`: what operators see of the ways out and of what comes in."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.markup import escape

from dispatcher import health, inbound, labels
from dispatcher.cli.blasts import parse_time
from dispatcher.cli.common import Context, JsonOption, emit, out, parse_msisdn
from dispatcher.cli.tables import Column, print_fitted
from dispatcher.config import GatewayLimits, Settings
from dispatcher.errors import ConfigError, InputRejected, NotFound
from dispatcher.formats import moment, number
from dispatcher.gateways import build
from dispatcher.gateways.base import GatewayError, check

LIST_COLUMNS = (Column("Cổng", whole=True), Column("Loại", whole=True), Column("Tuyến", drop=2),
                Column("Trạng thái", least=12), Column("Tốc độ", drop=3),
                Column("Lỗi gần nhất", drop=1, least=16))  # fmt: skip
CHECK_COLUMNS = (Column("Cổng", whole=True), Column("Kết quả", whole=True), Column("Chi tiết", least=20))
INBOX_COLUMNS = (Column("Lúc", whole=True), Column("Số điện thoại", whole=True), Column("Cổng", drop=1),
                 Column("Nội dung", least=20))  # fmt: skip


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    gateways_app = typer.Typer(help="Cổng gửi: trạng thái, kiểm tra kết nối và tài khoản.", no_args_is_help=True)
    gateways_app.command("list")(gateways_list)
    gateways_app.command("check")(gateways_check)
    app.add_typer(gateways_app, name="gateways")
    app.command("inbox")(inbox_list)


def gateways_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Các cổng gửi: loại, tuyến dùng cổng, trạng thái (tạm ngừng khi lỗi liên tiếp), tốc độ, lỗi gần nhất."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        found = health.load(conn)
    names = health.gateway_names(c.settings)
    documents = [_document(c.settings, name, found.get(name) or health.Health(name)) for name in names]
    if as_json:
        emit(documents)
        return
    zone = c.settings.app.timezone
    rows = [[d["name"], d["kind"], ", ".join(d["routes"]) or "—", _state(d, zone), _rate(d["rate"]),
             _last_error(d, zone)] for d in documents]  # fmt: skip
    print_fitted(out, LIST_COLUMNS, [[escape(cell) for cell in row] for row in rows], "xem đủ với --json")


def _document(settings: Settings, name: str, state: health.Health) -> dict[str, Any]:
    """What `gateways list --json` says of one gateway."""
    section = settings.gateways.get(name) or GatewayLimits(kind=name)
    return {
        "name": name, "kind": section.kind or name,
        "routes": [route for route, names in settings.routes.items() if name in names],
        "state": state.state.value, "until": state.until, "opened_at": state.opened_at, "trips": state.trips,
        "rate": section.rate, "parts_rate": section.parts_rate,
        "last_error": state.last_error, "last_error_at": state.last_error_at,
    }  # fmt: skip


def _state(document: dict[str, Any], zone: str) -> str:
    label = labels.circuit_state(document["state"])
    if document["state"] == health.CircuitState.OPEN and document["until"] is not None:
        return f"{label} đến {moment(document['until'], zone)}"
    return label


def _rate(rate: float) -> str:
    return f"{number(rate)} tin/giây" if rate else "không giới hạn"


def _last_error(document: dict[str, Any], zone: str) -> str:
    if not document["last_error"]:
        return "—"
    return f"{document['last_error']} ({moment(document['last_error_at'], zone)})"


def gateways_check(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(metavar="[TÊN]", help="Chỉ cổng này (mặc định: mọi cổng).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Kiểm tra kết nối và tài khoản của các cổng mà không gửi tin nào; thoát 1 khi có cổng lỗi."""
    c: Context = ctx.obj
    names = health.gateway_names(c.settings)
    if name is not None and name not in names:
        raise NotFound(f"Không có cổng {name!r} (có: {', '.join(names)}).")
    results = asyncio.run(_check_all(c.settings, [name] if name else names))
    if as_json:
        emit([{"name": n, "ok": ok, "message": message} for n, ok, message in results])
    else:
        rows = [[n, "ổn" if ok else "[red]lỗi[/red]", escape(message)] for n, ok, message in results]
        print_fitted(out, CHECK_COLUMNS, rows, "xem đủ với --json")
    if not all(ok for _, ok, _ in results):
        raise typer.Exit(InputRejected.exit_code)


async def _check_all(settings: Settings, names: list[str]) -> list[tuple[str, bool, str]]:
    """(name, fine, what is fine or what is wrong) of each gateway, one after the other."""
    return [await _check_one(settings, name) for name in names]


async def _check_one(settings: Settings, name: str) -> tuple[str, bool, str]:
    try:
        gateway = build(name, settings.gateways)
    except ConfigError as error:  # a kind this build cannot make: say so for this gateway, check the others
        return name, False, str(error)
    try:
        return name, True, await check(gateway)
    except GatewayError as error:
        return name, False, str(error)
    finally:
        await gateway.close()


def inbox_list(
    ctx: typer.Context,
    gateway: Annotated[str | None, typer.Option(help="Chỉ tin đến qua cổng này.")] = None,
    msisdn: Annotated[str | None, typer.Option(help="Chỉ tin từ số này.")] = None,
    contains: Annotated[str | None, typer.Option(help="Chỉ tin có chữ này.")] = None,
    since: Annotated[str | None, typer.Option(help="Từ thời điểm, ví dụ '01/12/2026 09:00'.")] = None,
    until: Annotated[str | None, typer.Option(help="Đến trước thời điểm này.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Số tin tối đa, mới nhất trước.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Tin người dân nhắn đến mà không phải lời từ chối (số điện thoại được che), mới nhất trước."""
    c: Context = ctx.obj
    zone = c.settings.app.timezone
    found = inbound.InboxFilter(
        gateway=gateway, msisdn=None if msisdn is None else parse_msisdn(msisdn), contains=contains, limit=limit,
        since=parse_time(since, zone, "--since"), until=parse_time(until, zone, "--until"),
    )  # fmt: skip
    with c.engine.connect() as conn:
        kept = inbound.read(conn, found)  # the sender and any number written in the text are masked
    if as_json:
        emit(kept)
        return
    if not kept:
        filtered = found != inbound.InboxFilter(limit=limit)
        out.print("Không có tin nào khớp." if filtered else "Chưa có tin nhắn đến nào.")
        return
    rows = [[moment(m["received_at"], zone), m["msisdn"], m["gateway"], m["text"]] for m in kept]
    print_fitted(out, INBOX_COLUMNS, [[escape(cell) for cell in row] for row in rows], "xem đủ với --json")
