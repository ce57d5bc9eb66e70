"""`canhbao blast …`, `canhbao worker` and `canhbao log`: the commands of the main job."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import case, func, select

from dispatcher import blasts as blast_ops
from dispatcher.cli import Context, JsonOption, _emit, _msisdn, err, out
from dispatcher.dispatch import Worker
from dispatcher.domain import FINAL_DELIVERY_STATES, Audience, BlastState, DeliveryStatus
from dispatcher.errors import UsageError
from dispatcher.formats import duration, moment, number, parse_moment
from dispatcher.gateways import build
from dispatcher.models import blasts, deliveries, delivery_queue
from dispatcher.phones import mask
from dispatcher.regions import RegionIndex
from dispatcher.segments import SegmentSpec, resolve

STATUS_VI = {
    "queued": "chờ gửi", "sending": "đang gửi", "sent": "đã gửi", "delivered": "đã nhận", "failed": "lỗi",
    "undeliverable": "không tới được", "expired": "quá hạn", "unknown": "chưa rõ", "cancelled": "đã huỷ",
}  # fmt: skip
CHANNEL_VI = {"sms": "SMS", "zalo": "Zalo"}
REASON_VI = {"opted_out": "từ chối nhận", "no_channel": "không có kênh này", "already_received": "đã nhận mẫu này",
             "capped": "đã đủ số tin trong 24 giờ"}  # fmt: skip


def parse_time(text: str | None, zone: str, option: str) -> datetime | None:
    """'01/12/2026 09:00' or '2026-12-01 09:00', in the deployment's time zone unless the text carries an offset."""
    if text is None:
        return None
    try:
        return parse_moment(text, zone)
    except ValueError:
        raise UsageError(f"{option}: không hiểu thời điểm {text!r} (dạng 01/12/2026 09:00 hoặc "
                         "2026-12-01 09:00).") from None  # fmt: skip


def register(app: typer.Typer, blast_app: typer.Typer) -> None:
    """Attach the commands to the application."""
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
        _emit(shown)
        return
    _print_preview(shown, zone)
    if not dry_run:
        out.print(f"\nĐã tạo đợt gửi [bold]{shown['blast_id']}[/bold], chờ người khác duyệt: "
                  f"canhbao --as NGƯỜI_DUYỆT blast approve {shown['blast_id']}")  # fmt: skip


def _print_preview(shown: dict[str, Any], zone: str) -> None:
    out.print(f"[bold]{shown['alert']['title']}[/bold] ({shown['alert']['id']} bản {shown['alert']['version']})")
    out.print("Phân đoạn: " + "; ".join(shown["segment"]), markup=False)
    out.print("Đối tượng: " + _audience_words(shown["audiences"]), markup=False)
    out.print(f"Người nhận: [bold]{number(shown['recipients'])}[/bold] / {number(shown['matched'])} trong phân đoạn")
    for reason, n in shown["excluded"].items():
        out.print(f"  loại trừ — {REASON_VI[reason]}: {number(n)}")
    if shown.get("deferred"):
        out.print(f"  hoãn 1 ngày — đã đủ số tin trong 24 giờ: {number(shown['deferred'])} (vẫn nhận, muộn hơn)")
    _print_breakdown(shown)
    _print_cost(shown)
    _print_timing(shown, zone)
    for warning in shown["warnings"]:
        out.print(f"[yellow]Lưu ý: {escape(warning['message'])}[/yellow]")
    out.print(shown["text"], markup=False)


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
        table.add_row(carrier, number(n))
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
    split = " · ".join(f"{CHANNEL_VI[via]} {number(cost[via])} {currency} cho {number(people[via])} người"
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
        _emit(done[0] if len(done) == 1 else done)
        return
    for item in done:
        out.print(f"Đợt gửi {item['blast_id']}: {blast_ops.STATE_VI[item['state']]}.")


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
        _emit({"blast_id": blast_id, "requeued": count})
    else:
        out.print(f"Đợt gửi {blast_id}: {count:,} tin 'chưa rõ' được xếp gửi lại.")


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
    watch: Annotated[bool, typer.Option("--watch", help="Theo dõi đến khi xong.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Số tin theo trạng thái của một đợt gửi."""
    c: Context = ctx.obj
    document = _status_document(c, blast_id)
    if watch and not as_json:
        document = _watch(c, blast_id)
    if as_json:
        _emit(document)
        return
    shown = [status for status, n in document["counts"].items() if n]
    table = Table("Nhà mạng", *(STATUS_VI[status] for status in shown))
    for carrier, counts in sorted(document["by_carrier"].items(), key=lambda kv: -sum(kv[1].values())):
        table.add_row(carrier, *(f"{counts.get(status, 0):,}" for status in shown))
    table.add_row("[bold]Tổng[/bold]", *(f"[bold]{document['counts'][status]:,}[/bold]" for status in shown))
    out.print(f"Đợt gửi {blast_id}: [bold]{blast_ops.STATE_VI[document['state']]}[/bold]")
    out.print(table)
    held = document["held"]
    if held.get("deferred"):
        out.print(f"Hoãn 1 ngày vì đã đủ số tin trong 24 giờ: {held['deferred']:,} người (đã tính ở trên).")
    if held.get("capped"):
        out.print(f"Bỏ qua vì đã đủ số tin trong 24 giờ: {held['capped']:,} người.")
    if len(document["by_channel"]) > 1:
        out.print("Theo kênh: " + " · ".join(f"{CHANNEL_VI.get(channel, channel)} {n:,}"
                                             for channel, n in sorted(document["by_channel"].items())))  # fmt: skip
    if document["awaiting_receipt"]:
        waited = c.settings.dispatch.receipt_timeout_seconds
        out.print(f"Chờ Zalo xác nhận đã nhận: {document['awaiting_receipt']:,} tin "
                  f"(không có xác nhận sau {waited:g} giây thì gửi SMS).")  # fmt: skip


def _watch(c: Context, blast_id: int) -> dict[str, Any]:
    started, first = time.monotonic(), None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[rate]}"), console=out) as progress:  # fmt: skip
        task = progress.add_task(f"Đợt {blast_id}", total=None, rate="")
        while True:
            document = _status_document(c, blast_id)
            counts = document["counts"]
            done = sum(n for s, n in counts.items() if s not in ("queued", "sending"))
            first = done if first is None else first
            rate = (done - first) / max(time.monotonic() - started, 1e-9)
            progress.update(task, total=sum(counts.values()) or None, completed=done, rate=f"{rate:,.0f} tin/giây")
            if document["state"] not in (BlastState.RUNNING.value, BlastState.SCHEDULED.value, BlastState.PAUSED.value):
                return document
            time.sleep(0.5)


def blast_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Các đợt gửi, mới nhất trước."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        rows = conn.execute(select(blasts).order_by(blasts.c.id.desc()).limit(50)).mappings().all()
    keys = ("id", "state", "channel", "encoding", "recipients", "created_by", "approved_by", "start_at")
    if as_json:
        _emit([{k: r[k] for k in keys} | {"segment": r["preview"]["segment"]} for r in rows])
        return
    table = Table("Số", "Trạng thái", "Mẫu", "Phân đoạn", "Người nhận", "Tạo", "Duyệt")
    for r in rows:
        table.add_row(
            str(r["id"]),
            blast_ops.STATE_VI[r["state"]],
            r["preview"]["alert"]["id"],
            "; ".join(r["preview"]["segment"]),
            f"{r['recipients'] or r['preview']['recipients']:,}",
            r["created_by"],
            r["approved_by"] or "—",
        )
    out.print(table)


def worker(
    ctx: typer.Context,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="Gửi hết tin đến hạn rồi thoát.")] = False,
) -> None:
    """Tiến trình gửi: lấy tin đến hạn, gửi qua các cổng theo tuyến, ghi kết quả. Ctrl-C dừng an toàn."""
    c: Context = ctx.obj
    runner = build_worker(c)
    if not err.is_terminal:
        asyncio.run(run_worker(runner, until_idle))
    else:
        _with_progress(c, runner, until_idle)
    if not until_idle:
        err.print(f"Đã dừng tiến trình gửi ({runner.sent:,} tin đã gửi).")


def build_worker(c: Context) -> Worker:
    """A dispatch worker with every gateway the routes name."""
    used = {name for route in c.settings.routes.values() for name in route}
    gateways = {name: build(name, c.settings.gateways) for name in used}
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    names = RegionIndex.load(legacy_units=False)  # the worker only names regions: no legacy tables
    return Worker(c.engine, gateways, c.settings, names, lambda: datetime.now(UTC), worker_id)


def _with_progress(c: Context, runner: Worker, until_idle: bool) -> None:
    """Run the worker under a progress bar; the count of waiting messages is refreshed every 2 s."""
    with Progress(TextColumn("Đang gửi"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[rate]}"), console=err) as progress:  # fmt: skip
        task = progress.add_task("", total=None, rate="")
        started = checked = time.monotonic()
        waiting = _waiting(c)

        def show() -> None:
            nonlocal checked, waiting
            now = time.monotonic()
            if now - checked >= 2:  # counting waiting rows reads the table: not on every batch
                checked, waiting = now, _waiting(c)
            rate = runner.sent / max(now - started, 1e-9)
            progress.update(task, completed=runner.sent, total=max(runner.sent + waiting, runner.sent),
                            rate=f"{rate:,.0f} tin/giây")  # fmt: skip

        asyncio.run(run_worker(runner, until_idle, show))


def _waiting(c: Context) -> int:
    """Messages waiting on the queue for running blasts."""
    with c.engine.connect() as conn:
        return conn.execute(
            select(func.count())
            .select_from(delivery_queue.join(blasts, blasts.c.id == delivery_queue.c.blast_id))
            .where(blasts.c.state == BlastState.RUNNING.value)
        ).scalar_one()


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
    status: Annotated[str | None, typer.Option(help="Chỉ trạng thái này (sent, failed, unknown…).")] = None,
    carrier: Annotated[str | None, typer.Option(help="Chỉ nhà mạng này.")] = None,
    province: Annotated[str | None, typer.Option(help="Chỉ tỉnh/thành phố này (tên hoặc mã).")] = None,
    since: Annotated[str | None, typer.Option(help="Từ thời điểm, ví dụ '2026-12-01 09:00'.")] = None,
    msisdn: Annotated[str | None, typer.Option(help="Chỉ số điện thoại này.")] = None,
    limit: Annotated[int, typer.Option(help="Số dòng tối đa (khi không xuất tệp).")] = 50,
    export: Annotated[str | None, typer.Option(help="'csv': xuất toàn bộ ra stdout dạng CSV.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Nhật ký gửi từng tin (số điện thoại được che), lọc theo đợt, trạng thái, nhà mạng, địa bàn."""
    c: Context = ctx.obj
    d = deliveries.c
    queued_at = blasts.c.started_at  # every delivery is queued when its blast starts
    # The channel it went on: its own after a fallback, else the blast's first.
    channel = func.coalesce(d.channel, case((blasts.c.channel == "sms", "sms"), else_="zalo"))
    query = (
        select(
            d.id,
            d.blast_id,
            d.msisdn,
            d.carrier,
            d.province_code,
            channel.label("channel"),
            d.status,
            d.attempts,
            d.gateway,
            d.provider_id,
            d.error_code,
            d.error,
            queued_at.label("queued_at"),
            d.sent_at,
            d.finished_at,
        )
        .select_from(deliveries.join(blasts, blasts.c.id == d.blast_id))
        .order_by(d.id)
    )
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise UsageError(f"Trạng thái '{status}' không có (nhận: {', '.join(s.value for s in DeliveryStatus)}).")
    filters = [
        (blast, lambda v: d.blast_id == v), (status, lambda v: d.status == v),
        (carrier, lambda v: d.carrier == v.lower()),
        (province, lambda v: d.province_code == c.regions.one(v).code),
        (since, lambda v: queued_at >= parse_time(v, c.settings.app.timezone, "--since")),
        (msisdn, lambda v: d.msisdn == _msisdn(v)),
    ]  # fmt: skip
    for value, condition in filters:
        if value is not None:
            query = query.where(condition(value))
    if export is None:
        query = query.limit(limit)
    with c.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for row in rows:
        row["msisdn"] = mask(row["msisdn"])
    if export == "csv":
        _export_csv(rows)
    elif as_json:
        _emit(rows)
    else:
        _print_log(rows, c.settings.app.timezone)


def _export_csv(rows: list[dict[str, Any]]) -> None:
    columns = ["id", "blast_id", "msisdn", "carrier", "province_code", "channel", "status", "attempts", "gateway",
               "provider_id", "error_code", "error", "queued_at", "sent_at", "finished_at"]  # fmt: skip
    writer = csv.DictWriter(sys.stdout, columns)
    writer.writeheader()
    writer.writerows({k: row[k] for k in columns} for row in rows)


def _print_log(rows: list[dict[str, Any]], zone: str) -> None:
    table = Table("Tin", "Đợt", "Số", "Nhà mạng", "Kênh", "Trạng thái", "Lần", "Cổng", "Mã nhà cung cấp", "Lỗi",
                  "Gửi lúc")  # fmt: skip
    for r in rows:
        sent = blast_ops.utc(r["sent_at"])
        sent = sent.astimezone(ZoneInfo(zone)) if sent else None
        table.add_row(str(r["id"]), str(r["blast_id"]), r["msisdn"], r["carrier"], r["channel"], STATUS_VI[r["status"]],
                      str(r["attempts"]), r["gateway"] or "", r["provider_id"] or "", r["error_code"] or "",
                      f"{sent:%H:%M:%S %d/%m}" if sent else "")  # fmt: skip
    out.print(table)
    final = sum(1 for r in rows if r["status"] in FINAL_DELIVERY_STATES)
    out.print(f"{len(rows)} dòng ({final} đã có kết quả cuối).")
