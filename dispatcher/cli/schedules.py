"""`canhbao schedules …`, `canhbao scheduler` and `canhbao serve`: recurring campaigns and their processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from dispatcher import labels
from dispatcher import scheduler as scheduling
from dispatcher import schedules as campaigns
from dispatcher.cli.blasts import build_worker, run_worker
from dispatcher.cli.common import Context, JsonOption, emit, err, out
from dispatcher.cli.tables import Column, print_fitted
from dispatcher.cli.web import HostOption, PortOption, server_for, start_in_thread, stop_thread
from dispatcher.formats import moment, number

schedules_app = typer.Typer(help="Chiến dịch định kỳ: nạp từ schedules/, duyệt, xem lịch chạy.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    app.add_typer(schedules_app, name="schedules")
    app.command("scheduler")(scheduler_command)
    app.command("serve")(serve)


@schedules_app.command("sync")
def schedules_sync(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Kiểm tra và nạp các chiến dịch trong schedules/; chiến dịch mới hoặc đã sửa chờ người khác duyệt."""
    c: Context = ctx.obj
    methods = c.catalogue().methods
    with c.engine.begin() as conn:
        specs = campaigns.load_dir(c.settings.scheduler.schedules_dir, c.settings.app.timezone,
                                   lambda spec: campaigns.check(spec, conn, c.regions, methods))  # fmt: skip
        outcome = scheduling.sync(conn, specs, c.actor, c.now)
    if as_json:
        emit(outcome)
        return
    words = {"added": "mới", "changed": "đã sửa", "unchanged": "không đổi", "removed": "đã gỡ (tệp không còn)"}
    for key, names in outcome.items():
        if names:
            out.print(f"{words[key]}: {', '.join(names)}")
    waiting = outcome["added"] + outcome["changed"]
    if waiting:
        out.print(f"Chờ duyệt: canhbao --as NGƯỜI_DUYỆT schedules approve {' '.join(waiting)}", soft_wrap=True)


@schedules_app.command("approve")
def schedules_approve(
    ctx: typer.Context, names: Annotated[list[str], typer.Argument(help="Tên chiến dịch (tên tệp).")]
) -> None:
    """Duyệt chiến dịch (người duyệt khác người nạp): từ đó các lượt chạy của nó được gửi."""
    c: Context = ctx.obj
    with c.engine.begin() as conn:
        for name in names:
            scheduling.approve(conn, name, c.actor, c.now)
    out.print(f"Đã duyệt: {', '.join(names)}.")


@schedules_app.command("list")
def schedules_list(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("--next", min=1, max=50, help="Số lượt chạy sắp tới cần xem.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Các chiến dịch, trạng thái và các lượt chạy sắp tới (giờ địa phương)."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        shown = scheduling.listing(conn, c.now, count)
    if as_json:
        emit(shown)
        return
    if not shown:
        out.print("Chưa có chiến dịch nào: chạy 'canhbao schedules sync'.")
        return
    zone = ZoneInfo(c.settings.app.timezone)
    columns = (
        Column("Chiến dịch", whole=True), Column("Trạng thái"), Column("Lịch", drop=5, least=12),
        Column("Phân đoạn", drop=3, least=12), Column("Nội dung", drop=4, least=12),
        Column(f"{count} lượt tới", whole=True), Column("Lượt trước", drop=6),
    )  # fmt: skip
    rows = [[item["name"], labels.schedule_state(item["state"]), item["when"], "; ".join(item["segment"]),
             _content(item), "\n".join(_local(t, zone) for t in item["next_runs"]),
             _local(item["last_run"], zone) if item["last_run"] else "—"] for item in shown]  # fmt: skip
    print_fitted(out, columns, rows, "xem đủ: --json hoặc một cửa sổ rộng hơn")


def _content(item: dict[str, Any]) -> str:
    if not item["rotation"]:
        return item["content"][0]
    if item["content"][0].startswith("method:"):
        return f"xoay vòng theo {len(item['content'])} phương thức"
    return f"xoay vòng {len(item['content'])} mẫu"


WEEKDAYS_VI = ("T2", "T3", "T4", "T5", "T6", "T7", "CN")


def _local(at: str, zone: ZoneInfo) -> str:
    """'T6 09:00 01/01/2027': the weekday, then the moment the Vietnamese way."""
    local = datetime.fromisoformat(at).astimezone(zone)
    return f"{WEEKDAYS_VI[local.weekday()]} {moment(local, zone)}"


# -- processes ------------------------------------------------------------------------------


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _service(c: Context) -> scheduling.SchedulerService:
    service = scheduling.SchedulerService(c.engine, c.settings, c.regions, _holder())
    if err.is_terminal:  # there the log shows only warnings; elsewhere its JSON lines already tell all this
        zone = c.settings.app.timezone
        service.on_event = lambda kind, detail: err.print(status_line(kind, detail, zone), markup=False)
    return service


def status_line(kind: str, detail: dict[str, Any], zone: str) -> str:
    """What the scheduler did, for a person at the terminal: it leads or waits, started a blast, ran a campaign."""
    if kind == "leading":
        return f"Bộ lập lịch {detail['holder']} đang dẫn: nó chạy các đợt hẹn giờ và chiến dịch định kỳ."
    if kind == "standby":
        return f"Bộ lập lịch {detail['holder']} đang chờ: một tiến trình khác đang dẫn."
    if kind == "blast_started":
        return f"Đã bắt đầu đợt gửi hẹn giờ {detail['blast_id']}."
    run = f"Chiến dịch '{detail['schedule']}' lượt {moment(datetime.fromisoformat(detail['run_at']), zone)}"
    started = f" đợt gửi {detail['blast_id']}" if detail.get("blast_id") else ""
    return f"{run}: {labels.run_outcome(detail['outcome'])}{started}."


def scheduler_command(ctx: typer.Context) -> None:
    """Bộ lập lịch: chạy các đợt hẹn giờ và chiến dịch định kỳ. Nhiều tiến trình thì chỉ một tiến trình dẫn."""
    c: Context = ctx.obj
    service = _service(c)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    err.print(f"Bộ lập lịch {service.holder} đang chạy (Ctrl-C để dừng).")
    service.serve(stop)
    err.print("Đã dừng bộ lập lịch.")


def serve(ctx: typer.Context, host: HostOption = "127.0.0.1", port: PortOption = 8080) -> None:
    """Bộ lập lịch, tiến trình gửi và cổng web trong cùng một tiến trình (cài đặt gọn một máy). Ctrl-C dừng an toàn."""
    c: Context = ctx.obj
    c.may_create = True  # the first `serve` of a fresh installation starts its database
    service = _service(c)
    worker = build_worker(c)
    server, listening = server_for(c, host, port)
    stop = threading.Event()
    thread = threading.Thread(target=service.serve, args=(stop,), name="scheduler", daemon=True)
    thread.start()
    # The web answers in a thread of its own: the worker's database work must not hold up a callback.
    web = start_in_thread(server, listening)
    err.print(f"Cảnh Báo đang chạy: bộ lập lịch, tiến trình gửi {worker.worker_id} và cổng web "
              f"http://{host}:{listening.getsockname()[1]} (Ctrl-C để dừng).")  # fmt: skip
    try:
        asyncio.run(run_worker(worker, until_idle=False))
    finally:
        stop_thread(server, web)
        stop.set()
        thread.join()
    err.print(f"Đã dừng ({number(worker.sent)} tin đã gửi).")
