"""`canhbao blast …`, `canhbao worker` and `canhbao log`: the commands of the main job."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from dispatcher import blasts as blast_ops
from dispatcher import delivery_log as log_ops
from dispatcher import labels, metrics
from dispatcher.cli.common import Context, JsonOption, emit, err, out, parse_msisdn
from dispatcher.cli.tables import Column, print_fitted
from dispatcher.dispatch import Worker
from dispatcher.domain import FINAL_DELIVERY_STATES, Audience, BlastState
from dispatcher.errors import NotFound, UsageError
from dispatcher.formats import duration, moment, number, parse_moment
from dispatcher.gateways import build
from dispatcher.models import deliveries
from dispatcher.regions import RegionIndex
from dispatcher.segments import SegmentSpec, resolve


def parse_time(text: str | None, zone: str, option: str) -> datetime | None:
    """'01/12/2026 09:00' or '2026-12-01 09:00', in the deployment's time zone unless the text carries an offset."""
    if text is None:
        return None
    try:
        return parse_moment(text, zone)
    except ValueError:
        raise UsageError(f"{option}: không hiểu thời điểm {text!r} (dạng 01/12/2026 09:00 hoặc "
                         "2026-12-01 09:00).") from None  # fmt: skip


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    blast_app = typer.Typer(help="Đợt gửi cảnh báo: xem trước, duyệt, theo dõi.", no_args_is_help=True)
    app.add_typer(blast_app, name="blast")
    blast_app.command("create")(blast_create)
    blast_app.command("approve")(blast_approve)
    blast_app.command("pause")(blast_pause)
    blast_app.command("resume")(blast_resume)
    blast_app.command("cancel")(blast_cancel)
    blast_app.command("resend-unknown")(blast_resend_unknown)
    blast_app.command("status")(blast_status)
    blast_app.command("list")(blast_list)
    app.command("worker")(worker)
    app.command("log")(delivery_log)


def blast_create(
    ctx: typer.Context,
    alert: Annotated[str, typer.Option(help="Mã mẫu cảnh báo đã duyệt.")],
    province: Annotated[
        list[str] | None, typer.Option(help="Tỉnh/thành phố (tên hoặc mã, cũ hoặc mới); lặp lại để chọn nhiều.")
    ] = None,
    commune: Annotated[
        list[str] | None, typer.Option(help="Xã/phường/đặc khu (tên hoặc mã); lặp lại để chọn nhiều.")
    ] = None,
    legacy_district: Annotated[
        list[str] | None, typer.Option(help="Quận/huyện cũ (trước 1/7/2025), ví dụ 'Quảng Nam (cũ), huyện Duy Xuyên'.")
    ] = None,
    audience: Annotated[
        list[str] | None,
        typer.Option(
            help="Nhóm đối tượng (student, 'sinh viên'…); mặc định theo mẫu cảnh báo; 'all' hoặc 'tất cả': mọi người."
        ),
    ] = None,
    carrier: Annotated[
        list[str] | None, typer.Option(help="Chỉ nhà mạng này (viettel, vinaphone, mobifone…); lặp lại để chọn nhiều.")
    ] = None,
    channel: Annotated[str, typer.Option(help="sms, zalo hoặc zalo_then_sms (Zalo, không được thì SMS).")] = "sms",
    encoding: Annotated[str, typer.Option(help="auto, unicode (có dấu) hoặc ascii (không dấu).")] = "auto",
    start_at: Annotated[
        str | None, typer.Option(help="Bắt đầu lúc, ví dụ '01/12/2026 09:00'; mặc định: ngay khi được duyệt.")
    ] = None,
    not_after: Annotated[
        str | None,
        typer.Option(help="Không gửi sau thời điểm này (tin chưa gửi thì quá hạn), ví dụ '01/12/2026 17:00'."),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Số tin mỗi giây tối đa của đợt này.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Chỉ xem trước, không tạo đợt gửi.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Xem trước và tạo đợt gửi: người nhận, loại trừ, theo nhà mạng và địa bàn, số phần tin, chi phí, thời gian."""
    c: Context = ctx.obj
    zone = c.settings.app.timezone
    spec = SegmentSpec(*(tuple(v or ()) for v in (province, commune, legacy_district, audience, carrier)))
    request = blast_ops.BlastRequest(
        alert_slug=alert, segment=resolve(spec, c.regions), channel=channel, encoding=encoding,
        start_at=parse_time(start_at, zone, "--start-at"), not_after=parse_time(not_after, zone, "--not-after"),
        rate=rate,
    )  # fmt: skip
    with c.engine.begin() as conn:
        if dry_run:
            shown = blast_ops.preview(conn, request, c.settings, c.regions, c.now)
        else:
            _, shown = blast_ops.create(conn, request, c.actor, c.settings, c.regions, c.now)
    if as_json:
        emit(shown)
        return
    _print_preview(shown, zone)
    if not dry_run:
        out.print(f"\nĐã tạo đợt gửi [bold]{shown['blast_id']}[/bold], chờ người khác duyệt:")
        out.print(f"  canhbao blast approve {shown['blast_id']} --as NGƯỜI_DUYỆT", soft_wrap=True)


def _print_preview(shown: dict[str, Any], zone: str) -> None:
    out.print(f"[bold]{shown['alert']['title']}[/bold] ({shown['alert']['id']} bản {shown['alert']['version']})")
    out.print("Phân đoạn: " + "; ".join(shown["segment"]), markup=False)
    out.print("Đối tượng: " + _audience_words(shown["audiences"]), markup=False)
    out.print(f"Người nhận: [bold]{number(shown['recipients'])}[/bold] / {number(shown['matched'])} trong phân đoạn")
    for reason, n in shown["excluded"].items():
        out.print(f"  loại trừ — {labels.exclusion(reason)}: {number(n)}")
    if shown.get("deferred"):
        out.print(f"  hoãn 1 ngày — đã đủ số tin trong 24 giờ: {number(shown['deferred'])} (vẫn nhận, muộn hơn)")
    _print_breakdown(shown)
    _print_cost(shown)
    _print_timing(shown, zone)
    for warning in shown["warnings"]:
        option = WARNING_OPTIONS.get(warning["code"])
        out.print(f"[yellow]Lưu ý{f' ({option})' if option else ''}: {escape(warning['message'])}[/yellow]")
    out.print(shown["text"], markup=False)


# The option a preview's warning is about: the domain words it, the CLI names how to change it.
WARNING_OPTIONS = {"expiring": "--not-after", "zalo_route_missing": "--channel"}


def _audience_words(audiences: dict[str, Any]) -> str:
    """'theo mẫu — học sinh, sinh viên; công nhân, người lao động', 'tất cả (--audience all)'…"""
    if audiences["source"] == "all":
        return "tất cả (--audience all)"
    labels = "; ".join(Audience.parse(slug).label for slug in audiences["groups"])
    everyone = " (mẫu dành cho người dân: gửi mọi người)" if audiences["everyone"] else ""
    return f"{'theo mẫu' if audiences['source'] == 'alert' else 'đã chọn'} — {labels}{everyone}"


def _print_breakdown(shown: dict[str, Any]) -> None:
    """Recipients per carrier, and in the ten largest communes."""
    table = Table("Nhà mạng", "Người nhận")
    for carrier, n in shown["by_carrier"].items():
        table.add_row(labels.carrier(carrier), number(n))
    out.print(table)
    table = Table("Tỉnh/thành phố", "Xã/phường", "Người nhận")
    communes = [(p["name"], c["name"], c["recipients"]) for p in shown["by_province"].values()
                for c in p["communes"].values()]  # fmt: skip
    communes.sort(key=lambda row: -row[2])
    for province, commune, n in communes[:10]:
        table.add_row(province, commune, number(n))
    if len(communes) > 10:
        table.add_row("", f"… và {len(communes) - 10} xã/phường khác", number(sum(n for *_, n in communes[10:])))
    out.print(table)
    if shown["partial_communes"]:
        out.print(f"[yellow]{len(shown['partial_communes'])} xã chỉ một phần thuộc địa bàn cũ đã chọn: "
                  "cả xã sẽ nhận tin.[/yellow]")  # fmt: skip


def _print_cost(shown: dict[str, Any]) -> None:
    """Parts, and the cost split by channel (Zalo per message, SMS per part)."""
    people, cost, currency = shown["recipients_by_channel"], shown["cost_by_channel"], shown["currency"]
    out.print(f"Mỗi tin SMS {shown['parts_per_message']} phần ({shown['encoding']}), "
              f"tổng {number(shown['total_parts'])} phần SMS.")  # fmt: skip
    split = " · ".join(f"{labels.channel(via)} {number(cost[via])} {currency} cho {number(people[via])} người"
                       for via in cost)  # fmt: skip
    fallback = " (chưa tính SMS dự phòng khi Zalo không tới được)" if shown["channel"] == "zalo_then_sms" else ""
    out.print(f"Chi phí ước tính: [bold]{number(shown['cost'])} {currency}[/bold] — {split}{fallback}.")


def _print_timing(shown: dict[str, Any], zone: str) -> None:
    """When it starts, when it would be done, and its deadline."""

    def at(key: str) -> str:
        return moment(datetime.fromisoformat(shown[key]), zone)

    out.print(f"Bắt đầu: {'khi được duyệt' if shown['starts_on_approval'] else at('start_at')}")
    finish = f"nếu duyệt ngay: lúc {at('finish_at')}" if shown["starts_on_approval"] else f"lúc {at('finish_at')}"
    quiet = f"đã tính giờ yên lặng {shown['quiet_hours']}" if shown["quiet_hours"] else "không có giờ yên lặng"
    out.print(f"Gửi xong sau khoảng {duration(shown['eta_seconds'])} ({finish}; {quiet}).")
    if shown["not_after"]:
        out.print(f"Không gửi sau: {at('not_after')}")


BlastIds = Annotated[list[int], typer.Argument(help="Một hoặc nhiều số đợt gửi.")]


def _transition(ctx: typer.Context, blast_ids: list[int], action: str, as_json: bool) -> None:
    c: Context = ctx.obj
    done = []
    with c.engine.begin() as conn:  # all or nothing
        for blast_id in blast_ids:
            blast = getattr(blast_ops, action)(conn, blast_id, c.actor, c.now)
            done.append({"blast_id": blast_id, "state": blast["state"], "actor": c.actor})
    if as_json:
        emit(done[0] if len(done) == 1 else done)
        return
    for item in done:
        out.print(f"Đợt gửi {item['blast_id']}: {labels.blast_state(item['state'])}.")


def blast_approve(ctx: typer.Context, blast_ids: BlastIds, as_json: JsonOption = False) -> None:
    """Duyệt đợt gửi (người duyệt phải khác người tạo): mẫu và phân đoạn được cố định."""
    _transition(ctx, blast_ids, "approve", as_json)


def blast_pause(ctx: typer.Context, blast_ids: BlastIds, as_json: JsonOption = False) -> None:
    """Tạm dừng đợt gửi: không lấy thêm tin nào để gửi."""
    _transition(ctx, blast_ids, "pause", as_json)


def blast_resume(ctx: typer.Context, blast_ids: BlastIds, as_json: JsonOption = False) -> None:
    """Tiếp tục đợt gửi đã tạm dừng."""
    _transition(ctx, blast_ids, "resume", as_json)


def blast_cancel(ctx: typer.Context, blast_ids: BlastIds, as_json: JsonOption = False) -> None:
    """Huỷ đợt gửi: tin chưa gửi bị huỷ, tin đang gửi được ghi nhận kết quả."""
    _transition(ctx, blast_ids, "cancel", as_json)


def blast_resend_unknown(ctx: typer.Context, blast_id: int, as_json: JsonOption = False) -> None:
    """Gửi lại các tin 'chưa rõ' (tiến trình gửi bị dừng đột ngột): người vận hành quyết định."""
    c: Context = ctx.obj
    with c.engine.begin() as conn:
        count = blast_ops.resend_unknown(conn, blast_id, c.actor, c.now)
    if as_json:
        emit({"blast_id": blast_id, "requeued": count})
    else:
        out.print(f"Đợt gửi {blast_id}: {number(count)} tin 'chưa rõ' được xếp gửi lại.")


def _status_document(c: Context, blast_id: int) -> dict[str, Any]:
    with c.engine.connect() as conn:
        blast = blast_ops.get(conn, blast_id)
        d = deliveries.c
        rows = conn.execute(
            select(d.carrier, d.status, func.count()).where(d.blast_id == blast_id).group_by(d.carrier, d.status)
        ).all()
        by_carrier: dict[str, dict[str, int]] = {}
        for carrier, status, n in rows:
            by_carrier.setdefault(carrier, {})[status] = n
        return {"blast_id": blast_id, "state": blast["state"], "counts": blast_ops.counts(conn, blast_id),
                "held": blast["held"] or {}, "by_carrier": by_carrier, **blast_ops.channels(conn, blast)}  # fmt: skip


def blast_status(
    ctx: typer.Context,
    blast_id: int,
    watch: Annotated[bool, typer.Option("--watch", help="Theo dõi đến khi xong (với --json: in khi xong).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Số tin theo trạng thái của một đợt gửi."""
    c: Context = ctx.obj
    document = _watch(c, blast_id, bar=not as_json) if watch else _status_document(c, blast_id)
    if as_json:
        emit(document)
        return
    _print_status(c, blast_id, document)


def _print_status(c: Context, blast_id: int, document: dict[str, Any]) -> None:
    shown = [status for status, n in document["counts"].items() if n]
    columns = [Column("Nhà mạng"), *(Column(labels.delivery_state(status), justify="right") for status in shown)]
    by_size = sorted(document["by_carrier"].items(), key=lambda kv: -sum(kv[1].values()))
    rows = [
        [labels.carrier(carrier), *(number(counts.get(status, 0)) for status in shown)] for carrier, counts in by_size
    ]
    rows.append(["[bold]Tổng[/bold]", *(f"[bold]{number(document['counts'][status])}[/bold]" for status in shown)])
    out.print(f"Đợt gửi {blast_id}: [bold]{labels.blast_state(document['state'])}[/bold]")
    print_fitted(out, columns, rows, "xem đủ: --json")
    held = document["held"]
    if held.get("deferred"):
        out.print(f"Hoãn 1 ngày vì đã đủ số tin trong 24 giờ: {number(held['deferred'])} người (đã tính ở trên).")
    if held.get("capped"):
        out.print(f"Bỏ qua vì đã đủ số tin trong 24 giờ: {number(held['capped'])} người.")
    if len(document["by_channel"]) > 1:
        out.print("Theo kênh: " + " · ".join(f"{labels.channel(channel)} {number(n)}"
                                             for channel, n in sorted(document["by_channel"].items())))  # fmt: skip
    if document["awaiting_receipt"]:
        waited = duration(c.settings.dispatch.receipt_timeout_seconds)
        out.print(f"Chờ Zalo xác nhận đã nhận: {number(document['awaiting_receipt'])} tin "
                  f"(không có xác nhận sau {waited} thì gửi SMS).")  # fmt: skip


def _watch(c: Context, blast_id: int, bar: bool) -> dict[str, Any]:
    """The blast's status once it no longer runs, waits or pauses; a progress bar meanwhile unless `bar` is off."""
    started, first = time.monotonic(), None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                  TimeElapsedColumn(), TextColumn("{task.fields[rate]}"), console=out,
                  disable=not bar) as progress:  # fmt: skip
        task = progress.add_task(f"Đợt {blast_id}", total=None, rate="", count="")
        while True:
            document = _status_document(c, blast_id)
            counts = document["counts"]
            done = sum(n for s, n in counts.items() if s not in ("queued", "sending"))
            first = done if first is None else first
            rate = (done - first) / max(time.monotonic() - started, 1e-9)
            total = sum(counts.values())
            progress.update(task, total=total or None, completed=done, rate=f"{number(rate)} tin/giây",
                            count=f"{number(done)}/{number(total)}")  # fmt: skip
            if document["state"] not in (BlastState.RUNNING.value, BlastState.SCHEDULED.value, BlastState.PAUSED.value):
                return document
            time.sleep(0.5)


def blast_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Các đợt gửi, mới nhất trước."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        rows = blast_ops.listing(conn)
    keys = ("id", "state", "channel", "encoding", "recipients", "created_by", "approved_by", "start_at")
    if as_json:
        emit([{k: r[k] for k in keys} | {"segment": r["preview"]["segment"]} for r in rows])
        return
    zone = c.settings.app.timezone
    print_fitted(out, BLAST_COLUMNS, [_blast_cells(r, zone) for r in rows], "xem đủ: --json")


BLAST_COLUMNS = (
    Column("Số", whole=True, justify="right"), Column("Trạng thái"), Column("Mẫu", whole=True, drop=2),
    Column("Phân đoạn", drop=3, least=16), Column("Kênh", drop=5), Column("Người nhận", whole=True, justify="right"),
    Column("Bắt đầu", drop=6), Column("Tạo → duyệt", drop=4),
)  # fmt: skip


def _blast_cells(r: Any, zone: str) -> list[str]:
    started = r["started_at"] or r["start_at"]
    return [
        str(r["id"]), labels.blast_state(r["state"]), r["preview"]["alert"]["id"], "; ".join(r["preview"]["segment"]),
        labels.channel(r["channel"]), number(r["recipients"] or r["preview"]["recipients"]),
        moment(started, zone) if started else "khi được duyệt", f"{r['created_by']} → {r['approved_by'] or '—'}",
    ]  # fmt: skip


def worker(
    ctx: typer.Context,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="Gửi hết tin đến hạn rồi thoát.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Cổng phục vụ /metrics cho Prometheus (mặc định: [metrics] worker_port; 0: không mở).",
        ),
    ] = None,  # fmt: skip
) -> None:
    """Tiến trình gửi: lấy tin đến hạn, gửi qua các cổng theo tuyến, ghi kết quả. Ctrl-C dừng an toàn."""
    c: Context = ctx.obj
    runner = build_worker(c)
    with _metrics_listener(c, metrics_port):
        _work(c, runner, until_idle)


@contextlib.contextmanager
def _metrics_listener(c: Context, port: int | None) -> Iterator[None]:
    """This worker's figures at http://host:port/metrics while it runs, when a port is set."""
    host, port = c.settings.metrics.worker_host, c.settings.metrics.worker_port if port is None else port
    if not port:
        yield
        return
    try:
        listener = metrics.Listener(host, port)
    except OSError as exc:
        reason = exc.strerror or exc
        raise UsageError(f"Không mở được cổng số liệu {host}:{port} ([metrics] worker_port): {reason}.") from exc
    err.print(f"Số liệu cho Prometheus tại http://{host}:{listener.port}/metrics.", markup=False)
    try:
        yield
    finally:
        listener.close()


def _work(c: Context, runner: Worker, until_idle: bool) -> None:
    """Run the worker (with a bar when someone watches) and say what it did."""
    tally = log_ops.BlastsProgress(since=c.now)
    started = time.monotonic()
    if not until_idle:  # a service says it runs, as `serve` and `web` do
        err.print(f"Tiến trình gửi {runner.worker_id} đang chạy (Ctrl-C để dừng an toàn).", markup=False)
    if err.is_terminal:
        _with_progress(c, runner, until_idle, tally)
    else:  # nobody watches a bar: the tally is read once, for the summary
        asyncio.run(run_worker(runner, until_idle))
    _summary(c, runner, tally, time.monotonic() - started, stopped=not until_idle)


def _summary(c: Context, runner: Worker, tally: log_ops.BlastsProgress, seconds: float, stopped: bool) -> None:
    """One line: what this worker sent, how fast, and where the blasts it worked on stand."""
    with c.engine.connect() as conn:
        tally.refresh(conn)
        states = tally.by_state(conn)
    rate = runner.sent / seconds if seconds > 0 else 0.0
    lead = "Đã dừng tiến trình gửi" if stopped else "Xong"
    line = f"{lead} sau {duration(seconds)}: đã trao {number(runner.sent)} tin cho các cổng ({number(rate)} tin/giây)."
    if states:
        blast_ids = ", ".join(map(str, sorted(tally.totals)))
        line += f" Đợt {blast_ids}: " + " · ".join(f"{labels.delivery_state(s)} {number(n)}" for s, n in states.items())
        line += "."
    out.print(line, soft_wrap=True)  # one line, however wide: the terminal wraps it


def build_worker(c: Context) -> Worker:
    """A dispatch worker with every gateway the routes name."""
    used = {name for route in c.settings.routes.values() for name in route}
    gateways = {name: build(name, c.settings.gateways, c.engine) for name in used}
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    names = RegionIndex.load(legacy_units=False)  # the worker only names regions: no legacy tables
    return Worker(c.engine, gateways, c.settings, names, lambda: datetime.now(UTC), worker_id)


def _with_progress(c: Context, runner: Worker, until_idle: bool, tally: log_ops.BlastsProgress) -> None:
    """Run the worker under a progress bar of the running blasts' deliveries, counted every 2 s."""
    with Progress(TextColumn("Đang gửi"), BarColumn(), TextColumn("{task.fields[count]}"), TimeElapsedColumn(),
                  TextColumn("{task.fields[rate]}"), console=err, transient=True) as progress:  # fmt: skip
        task = progress.add_task("", total=None, rate="", count="")
        started, checked = time.monotonic(), -math.inf

        def show() -> None:
            nonlocal checked
            now = time.monotonic()
            if now - checked >= 2:  # counting reads the queue: not on every batch
                checked = now
                with c.engine.connect() as conn:
                    done, total = tally.refresh(conn)
                progress.update(task, completed=done, total=total or None, count=f"{number(done)}/{number(total)}")
            progress.update(task, rate=f"{number(runner.sent / max(now - started, 1e-9))} tin/giây")

        asyncio.run(run_worker(runner, until_idle, show))


async def run_worker(runner: Worker, until_idle: bool, on_tick: Callable[[], None] | None = None) -> None:
    """Run `runner` until idle or stopped by Ctrl-C / SIGTERM, then close its gateways."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)  # finish the batch in flight, record it, then stop
    try:
        await runner.run(until_idle=until_idle, stop=stop, on_tick=on_tick)
    finally:
        for gateway in runner.gateways.values():
            await gateway.close()


def delivery_log(
    ctx: typer.Context,
    blast: Annotated[int | None, typer.Option(help="Chỉ đợt gửi này.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Chỉ trạng thái này: 'đã gửi', 'lỗi', 'chưa rõ'… hay mã: sent, failed…")
    ] = None,
    carrier: Annotated[str | None, typer.Option(help="Chỉ nhà mạng này (Viettel, VinaPhone, MobiFone…).")] = None,
    province: Annotated[
        str | None, typer.Option(help="Chỉ tỉnh/thành phố này (tên hoặc mã; tỉnh cũ: các xã/phường nó đã thành).")
    ] = None,
    commune: Annotated[str | None, typer.Option(help="Chỉ xã/phường này (tên hoặc mã).")] = None,
    since: Annotated[str | None, typer.Option(help="Từ thời điểm, ví dụ '01/12/2026 09:00'.")] = None,
    msisdn: Annotated[str | None, typer.Option(help="Chỉ số điện thoại này.")] = None,
    gateway: Annotated[str | None, typer.Option(help="Chỉ các tin đã đi qua cổng này (tên trong [gateways]).")] = None,
    limit: Annotated[int | None, typer.Option(help="Số dòng tối đa (mặc định: 50, khi xuất: tất cả).")] = None,
    export: Annotated[str | None, typer.Option(help="csv hoặc xlsx: xuất mọi dòng khớp bộ lọc.")] = None,
    output: Annotated[Path | None, typer.Option(help="Tệp ghi kết quả xuất (không có: CSV ra stdout).")] = None,
    delivery: Annotated[
        int | None, typer.Option(help="Từng lần gửi của tin này: cổng, mã của nhà cung cấp, lỗi nguyên văn.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Nhật ký gửi từng tin (số điện thoại được che), lọc theo đợt, trạng thái, nhà mạng, địa bàn; xuất CSV, XLSX."""
    c: Context = ctx.obj
    if delivery is not None:
        _attempts(c, delivery, as_json)
        return
    fmt = _export_format(export, output, as_json)
    shown = limit if limit is not None or fmt else 50  # a screen shows the first 50; an export, everything
    where = log_ops.place(c.regions, province, commune)
    log = log_ops.LogFilter(
        blast_id=blast, status=None if status is None else labels.parse_delivery_state(status),
        carrier=None if carrier is None else log_ops.carrier_named(carrier),
        province_codes=where.province_codes, commune_codes=where.commune_codes,
        since=parse_time(since, c.settings.app.timezone, "--since"),
        msisdn=None if msisdn is None else parse_msisdn(msisdn), gateway=gateway and gateway.strip(), limit=shown,
    )  # fmt: skip
    for note in where.notes:
        err.print(note, markup=False)
    if fmt is not None:
        _export(c, log, fmt, output, as_json)
        return
    with c.engine.connect() as conn:
        rows = list(log_ops.read(conn, log))
    if as_json:
        emit([log_ops.as_json(row) for row in rows])
    else:
        _print_log(rows, c.settings.app.timezone, shown)


ATTEMPT_COLUMNS = (Column("Lần", whole=True, justify="right"), Column("Lúc", whole=True), Column("Cổng", whole=True),
                   Column("Kết quả", least=10), Column("Mã nhà cung cấp", drop=2), Column("Lỗi", least=16))  # fmt: skip


def _attempts(c: Context, delivery_id: int, as_json: bool) -> None:
    """Every attempt of one delivery: which gateway, what the provider called it, and its error as written."""
    with c.engine.connect() as conn:
        found = log_ops.attempts(conn, delivery_id)
    if found is None:
        raise NotFound(f"Không có tin {delivery_id}.")
    if as_json:
        emit({"delivery_id": delivery_id, "attempts": found})
        return
    zone = c.settings.app.timezone
    rows = [[str(a["attempt"]), moment(a["at"], zone, seconds=True), escape(a["gateway"]),
             labels.attempt_outcome(a["outcome"]), escape(a["provider_id"] or "—"),
             escape(a["error"] or "—")] for a in found]  # fmt: skip
    if not rows:
        out.print(f"Tin {delivery_id} chưa được gửi lần nào.")
        return
    print_fitted(out, ATTEMPT_COLUMNS, rows, "xem đủ với --json")


def _export_format(export: str | None, output: Path | None, as_json: bool) -> str | None:
    """The export asked for, refused before anything is read when the options cannot go together."""
    if export is None:
        if output is not None:
            raise UsageError("--output đi cùng --export csv hoặc --export xlsx.")
        return None
    fmt = log_ops.export_format(export)
    if output is None and fmt == "xlsx":
        raise UsageError("--export xlsx cần --output TỆP.xlsx: bảng tính không in ra màn hình được.")
    if output is None and as_json:
        raise UsageError("--json cùng --export cần --output TỆP: stdout đã dành cho CSV.")
    return fmt


def _export(c: Context, log: log_ops.LogFilter, fmt: str, output: Path | None, as_json: bool) -> None:
    """Stream the log into `output` (or CSV to stdout), with progress on stderr in a terminal."""
    zone = c.settings.app.timezone
    province = functools.cache(lambda code: c.regions.province(code).name)
    with c.engine.connect() as conn, _export_progress() as progress:
        total = log_ops.count(conn, log) if err.is_terminal else 0  # counting costs a read: only for a bar
        task = progress.add_task("Xuất nhật ký", total=total or None, count="")
        rows = _counted(log_ops.read(conn, log),
                        lambda n: progress.update(task, completed=n, count=f"{number(n)}/{number(total)}"))  # fmt: skip
        if output is None:
            written = log_ops.write_csv(rows, sys.stdout, zone, province)
        else:
            written = log_ops.export(rows, fmt, output, zone, province)
    if as_json:
        emit({"file": str(output), "format": fmt, "rows": written})
    elif output is not None:
        out.print(f"Đã xuất {number(written)} dòng nhật ký ra {output}.", markup=False)


def _export_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                    TimeElapsedColumn(), console=err, disable=not err.is_terminal, transient=True)  # fmt: skip


def _counted(rows: Iterator[dict[str, Any]], on_count: Callable[[int], None]) -> Iterator[dict[str, Any]]:
    """`rows` as they come, telling `on_count` every thousand (a progress bar need not see each row)."""
    n = 0
    for n, row in enumerate(rows, 1):
        if n % 1_000 == 0:
            on_count(n)
        yield row
    on_count(n)


LOG_COLUMNS = (
    Column("Tin", whole=True, justify="right"), Column("Đợt", whole=True, justify="right"), Column("Số", whole=True),
    Column("Nhà mạng", drop=3), Column("Kênh", drop=6), Column("Trạng thái"), Column("Lần", drop=7, justify="right"),
    Column("Cổng", drop=8), Column("Mã nhà cung cấp", drop=9), Column("Mã lỗi", drop=4), Column("Gửi lúc", drop=5),
)  # fmt: skip


def _print_log(rows: list[dict[str, Any]], zone: str, limit: int) -> None:
    cells = [
        [str(r["id"]), str(r["blast_id"]), r["msisdn"], labels.carrier(r["carrier"]), labels.channel(r["channel"]),
         labels.delivery_state(r["status"]), str(r["attempts"]), r["gateway"] or "", r["provider_id"] or "",
         r["error_code"] or "", moment(r["sent_at"], zone, seconds=True) if r["sent_at"] else ""]
        for r in rows
    ]  # fmt: skip
    print_fitted(out, LOG_COLUMNS, cells, "xem đủ: --json hoặc --export csv")
    final = sum(1 for r in rows if r["status"] in FINAL_DELIVERY_STATES)
    more = " Có thể còn nữa: --limit lớn hơn, hoặc --export csv." if len(rows) == limit else ""
    out.print(f"{number(len(rows))} dòng ({number(final)} đã có kết quả cuối).{more}")
