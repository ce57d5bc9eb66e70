"""`canhbao alerts`: the catalogue of alerts and their four-eyes lifecycle."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from dispatcher import alerts as catalogue
from dispatcher import formats, labels, smstext
from dispatcher.cli.common import Context, JsonOption, emit, out
from dispatcher.cli.tables import Column, print_fitted
from dispatcher.errors import UsageError

alerts_app = typer.Typer(help="Mẫu cảnh báo (thư mục messages/).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    app.add_typer(alerts_app, name="alerts")


@alerts_app.command("sync")
def alerts_sync(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Nạp thư mục messages/: mẫu mới, phiên bản mới khi nội dung đổi (bản cũ giữ lại)."""
    c: Context = ctx.obj
    loaded = catalogue.load_catalogue_dir(c.settings.catalogue.messages_dir, c.catalogue())
    with c.engine.begin() as conn:
        result = catalogue.sync(conn, loaded, c.actor, c.now)
    if as_json:
        emit(result.to_json())
        return
    out.print(
        f"Đã nạp {len(loaded)} mẫu: {len(result.added)} mới, {len(result.new_versions)} phiên bản mới, "
        f"{len(result.unchanged)} không đổi."
    )
    for slug in result.new_versions:
        out.print(f"  phiên bản mới (chờ duyệt lại): {slug}")


@alerts_app.command("add")
def alerts_add(
    ctx: typer.Context,
    alert_id: Annotated[str, typer.Option("--id", help="Mã mẫu: chữ thường không dấu và '-'.")],
    method: Annotated[str, typer.Option(help="Phương thức lừa đảo (xem 'alerts methods').")],
    title: Annotated[str, typer.Option(help="Tiêu đề ngắn.")],
    body: Annotated[str, typer.Option(help="Nội dung tin nhắn (có dấu).")],
    source: Annotated[str, typer.Option(help="Văn bản, nguồn chính thức của cảnh báo.")],
    audience: Annotated[list[str] | None, typer.Option(help="Nhóm đối tượng (lặp lại được).")] = None,
    priority: Annotated[str, typer.Option(help="normal hoặc urgent.")] = "normal",
    valid_days: Annotated[int, typer.Option(help="Số ngày còn hiệu lực.")] = 180,
    body_ascii: Annotated[str | None, typer.Option(help="Bản không dấu do người viết (mặc định tự tạo).")] = None,
    var: Annotated[list[str] | None, typer.Option(help="Biến: ten=giá trị mặc định (lặp lại được).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Công an tạo mẫu cảnh báo mới: ghi tệp vào messages/ và lưu bản nháp."""
    c: Context = ctx.obj
    variables = dict(_pair(v) for v in var or [])
    spec = catalogue.AlertSpec(
        id=alert_id, method=method, title=smstext.normalize(title), body=smstext.normalize(body), source=source,
        body_ascii=body_ascii, variables=variables, audiences=tuple(audience or ["public"]), priority=priority,
        valid_days=valid_days, author=c.actor,
    )  # fmt: skip
    with c.engine.begin() as conn:
        row, renderings, path = catalogue.create(
            conn, spec, c.catalogue(), c.settings.catalogue.messages_dir, c.actor, "cli", c.now
        )
    if as_json:
        emit(_alert_document(c, row, renderings))
    else:
        out.print(f"Đã tạo mẫu '{alert_id}' (bản nháp) và tệp {path}. Gửi duyệt:")
        out.print(f"  canhbao alerts submit {alert_id}", soft_wrap=True)


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"--var cần dạng ten=giá trị, nhận được {text!r}.")
    return name.strip(), value.strip()


@alerts_app.command("list")
def alerts_list(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="Chỉ trạng thái: draft, submitted, approved, rejected, retired.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Danh sách mẫu cảnh báo (phiên bản mới nhất của mỗi mẫu)."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        rows = [r for r in catalogue.listing(conn) if status is None or r["status"] == status]
    if as_json:
        keys = ("slug", "version", "versions", "status", "method", "priority", "title", "author", "approver")
        emit([{k: r[k] for k in keys} for r in rows])
        return
    methods = c.catalogue().methods
    cells = [[r["slug"], str(r["version"]), labels.alert_status(r["status"]), methods.get(r["method"], r["method"]),
              labels.priority(r["priority"]), r["title"]] for r in rows]  # fmt: skip
    print_fitted(out, ALERT_COLUMNS, cells, "xem đủ: --json hoặc canhbao alerts show MÃ")


ALERT_COLUMNS = (
    Column("Mã", whole=True), Column("Bản", whole=True, justify="right"), Column("Trạng thái"),
    Column("Phương thức", drop=4, least=14), Column("Ưu tiên", drop=2), Column("Tiêu đề", drop=3, least=16),
)  # fmt: skip


def _alert_document(c: Context, row: dict[str, Any], renderings: catalogue.Renderings,
                    rejection: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    prices = c.settings.sms.price_per_part
    return {
        "id": row["slug"], "version": row["version"], "status": row["status"], "method": row["method"],
        "title": row["title"], "priority": row["priority"], "valid_days": row["valid_days"],
        "audiences": row["audiences"], "variables": row["variables"], "source": row["source"],
        "author": row["author"], "approver": row["approver"], "zalo": row["zalo"],
        "rejection": rejection and {**rejection, "rejected_at": rejection["rejected_at"].isoformat()},
        "renderings": {"unicode": renderings.unicode.to_json(), "ascii": renderings.ascii.to_json()},
        "currency": c.settings.sms.currency, "cost_per_part": prices,
    }  # fmt: skip


@alerts_app.command("show")
def alerts_show(
    ctx: typer.Context,
    alert_id: str,
    version: Annotated[int | None, typer.Option(help="Phiên bản (mặc định mới nhất).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Xem một mẫu: hai bản có dấu / không dấu, bảng mã, số ký tự, số phần tin và chi phí."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        row = catalogue.version(conn, alert_id, version)
        rejection = catalogue.rejections(conn, alert_id).get(row["version"])
    renderings = catalogue.render(catalogue.spec_of(row))
    document = _alert_document(c, row, renderings, rejection)
    if as_json:
        emit(document)
        return
    status = labels.alert_status(row["status"])
    out.print(f"[bold]{row['title']}[/bold]  ({row['slug']} bản {row['version']}, {status})")
    method = c.catalogue().methods.get(row["method"], row["method"])
    out.print(f"Phương thức: {method} · ưu tiên {labels.priority(row['priority'])} · "
              f"hiệu lực {row['valid_days']} ngày · đối tượng: {labels.audiences(row['audiences'])}")  # fmt: skip
    out.print(f"Nguồn: {row['source']}")
    out.print(f"Tác giả: {row['author']} · người duyệt: {row['approver'] or '—'}")
    if rejection:
        out.print(f"Bị {rejection['rejected_by']} trả lại: {rejection['reason']}", markup=False)
    sms = c.settings.sms
    for label, rendering in (("Có dấu", renderings.unicode), ("Không dấu", renderings.ascii)):
        info = rendering.info
        out.print(f"\n[bold]{label}[/bold] — {info.encoding}, {formats.number(info.characters)} ký tự, "
                  f"{info.parts} phần tin")  # fmt: skip
        out.print(rendering.text, markup=False)
    columns = (Column("Nhà mạng"), *(Column(h, whole=True, justify="right")
               for h in (f"Giá/phần ({sms.currency})", "Có dấu/tin", "Không dấu/tin")))  # fmt: skip
    rows = [[labels.carrier(cost.carrier), *(formats.number(n) for n in (cost.per_part, cost.unicode, cost.ascii))]
            for cost in catalogue.costs(renderings, sms)]  # fmt: skip
    out.print()
    print_fitted(out, columns, rows, "xem đủ: --json")
    out.print("Số phần tin tính với giá trị dài nhất của các biến ({ten_tinh}, {ten_xa}).", markup=False)


def _lifecycle(ctx: typer.Context, alert_ids: list[str], as_json: bool, action: str) -> None:
    c: Context = ctx.obj
    done = []
    with c.engine.begin() as conn:  # all or nothing: one refusal leaves every alert as it was
        for alert_id in alert_ids:
            if action == "retire":
                versions = catalogue.retire(conn, alert_id, c.actor, c.now)
                row = catalogue.version(conn, alert_id)
            else:
                row = getattr(catalogue, action)(conn, alert_id, c.actor, c.now)
                versions = [row["version"]]
            done.append({"id": alert_id, "versions": versions, "status": row["status"], "actor": c.actor})
    if as_json:
        emit(done[0] if len(done) == 1 else done)
        return
    for item in done:
        versions = ", ".join(map(str, item["versions"]))
        out.print(f"Mẫu '{item['id']}' bản {versions}: {labels.alert_status(item['status'])}.")


AlertIds = Annotated[list[str], typer.Argument(help="Một hoặc nhiều mã mẫu.")]


@alerts_app.command("submit")
def alerts_submit(ctx: typer.Context, alert_ids: AlertIds, as_json: JsonOption = False) -> None:
    """Gửi bản nháp mới nhất đi duyệt."""
    _lifecycle(ctx, alert_ids, as_json, "submit")


@alerts_app.command("approve")
def alerts_approve(ctx: typer.Context, alert_ids: AlertIds, as_json: JsonOption = False) -> None:
    """Duyệt mẫu đang chờ duyệt (người duyệt phải khác tác giả)."""
    _lifecycle(ctx, alert_ids, as_json, "approve")


@alerts_app.command("reject")
def alerts_reject(
    ctx: typer.Context,
    alert_id: Annotated[str, typer.Argument(help="Mã mẫu.")],
    reason: Annotated[str, typer.Option("--reason", help="Lý do trả lại, để tác giả sửa.")],
    as_json: JsonOption = False,
) -> None:
    """Trả lại mẫu đang chờ duyệt cho tác giả, kèm lý do (người trả lại phải khác tác giả)."""
    c: Context = ctx.obj
    with c.engine.begin() as conn:
        row = catalogue.reject(conn, alert_id, c.actor, reason, c.now)
    if as_json:
        emit({"id": alert_id, "versions": [row["version"]], "status": row["status"], "actor": c.actor,
              "reason": reason.strip()})  # fmt: skip
        return
    out.print(f"Mẫu '{alert_id}' bản {row['version']}: {labels.alert_status(row['status'])}.")


@alerts_app.command("retire")
def alerts_retire(ctx: typer.Context, alert_ids: AlertIds, as_json: JsonOption = False) -> None:
    """Ngừng dùng mẫu (giữ lại để tra cứu)."""
    _lifecycle(ctx, alert_ids, as_json, "retire")


@alerts_app.command("history")
def alerts_history(ctx: typer.Context, alert_id: str, as_json: JsonOption = False) -> None:
    """Các phiên bản của một mẫu (mới nhất trước), mỗi bản với những dòng đã đổi so với bản trước."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        versions = catalogue.history(conn, alert_id)
        rejections = catalogue.rejections(conn, alert_id)
    changes = catalogue.changes(versions)
    if as_json:
        emit([_version_document(row, rejections.get(row["version"]), lines)
              for row, lines in zip(versions, changes, strict=True)])  # fmt: skip
        return
    zone = c.settings.app.timezone
    for row, lines in zip(versions, changes, strict=True):
        out.print(f"[bold]Bản {row['version']}[/bold] · {labels.alert_status(row['status'])} · {row['author']} · "
                  f"{formats.moment(row['created_at'], zone)}")  # fmt: skip
        if (rejection := rejections.get(row["version"])) is not None:
            out.print(f"  Bị {rejection['rejected_by']} trả lại: {rejection['reason']}", markup=False)
        marks = {"added": "+ ", "removed": "- "}
        for line in [line for line in lines or [] if line.kind != "same"]:
            out.print(f"  {marks[line.kind]}{line.text}", markup=False, soft_wrap=True)
        if lines is None:
            out.print("  (bản đầu tiên)")


def _version_document(row: dict[str, Any], rejection: dict[str, Any] | None, lines: list | None) -> dict[str, Any]:
    return {
        "version": row["version"], "status": row["status"], "author": row["author"], "approver": row["approver"],
        "created_at": row["created_at"].isoformat(), "rejection": rejection and rejection["reason"],
        "changes": None if lines is None else [{"kind": x.kind, "text": x.text} for x in lines if x.kind != "same"],
    }  # fmt: skip


@alerts_app.command("methods")
def alerts_methods(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Các phương thức lừa đảo được nhận."""
    methods = ctx.obj.catalogue().methods
    if as_json:
        emit(methods)
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)  # the code is what `--method` takes: never wrapped
    table.add_column()
    for slug, label in methods.items():
        table.add_row(slug, label)
    out.print(table)
