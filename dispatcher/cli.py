"""`canhbao`: the command line, and the composition root that wires settings into the parts.

Messages a user reads are Vietnamese. With `--json` a command prints exactly one JSON document
on stdout, an error too. Exit statuses and error codes: see dispatcher/errors.py.
"""

from __future__ import annotations

import csv
import getpass
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, func, select

from dispatcher import alerts as catalogue
from dispatcher import cli_errors, db, formats, labels, logs, population, smstext
from dispatcher.audit import audit
from dispatcher.cli_click import OPTIONS_METAVAR, SUBCOMMAND_METAVAR, Group, adopt, vietnamese_help
from dispatcher.cli_tables import Column, print_fitted
from dispatcher.config import Settings, load_settings
from dispatcher.domain import METHODS, Audience, Channel, audience_mask
from dispatcher.errors import ConfigError, InputRejected, StateError, UsageError
from dispatcher.formats import number
from dispatcher.models import subscribers
from dispatcher.phones import InvalidNumber, PhoneBook, mask
from dispatcher.regions import Level, RegionIndex
from dispatcher.subscribers import (
    ENCODINGS,
    ImportSummary,
    OptOut,
    RejectsFile,
    RowParser,
    SubscriberImporter,
    find_subscriber,
    held_refusal,
    held_refusals,
    set_opt_out,
)

app = typer.Typer(
    cls=Group, help="Cảnh Báo: gửi cảnh báo lừa đảo qua SMS và Zalo.", no_args_is_help=True, add_completion=False
)
db_app = typer.Typer(help="Cơ sở dữ liệu.", no_args_is_help=True)
regions_app = typer.Typer(help="Địa giới hành chính (34 tỉnh, 3.321 xã từ 1/7/2025).", no_args_is_help=True)
subscribers_app = typer.Typer(help="Thuê bao nhận cảnh báo.", no_args_is_help=True)
alerts_app = typer.Typer(help="Mẫu cảnh báo (thư mục messages/).", no_args_is_help=True)
text_app = typer.Typer(help="Kiểm tra nội dung tin nhắn.", no_args_is_help=True)
blast_app = typer.Typer(help="Đợt gửi cảnh báo: xem trước, duyệt, theo dõi.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(regions_app, name="regions")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(alerts_app, name="alerts")
app.add_typer(text_app, name="text")
app.add_typer(blast_app, name="blast")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

LONG_RUNNING = {"worker", "serve", "scheduler", "web"}
JsonOption = Annotated[bool, typer.Option("--json", help="In một tài liệu JSON ra stdout.")]


@dataclass
class Context:
    """What every command needs, built once from the settings."""

    settings: Settings
    actor: str
    long_running: bool = False
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Only the commands that start an installation (`serve`, `subscribers import`/`generate`;
    # `db upgrade` on its own) may create the database: any other on a mistyped URL says so.
    may_create: bool = False
    _engine: Engine | None = None
    _regions: RegionIndex | None = None

    @property
    def engine(self) -> Engine:
        """The database, opened and migrated to the newest schema on first use (created only if `may_create`)."""
        if self._engine is None:
            settings = self.settings.database
            self._engine, created = db.open_database(settings, self.may_create, checkpoint_thread=self.long_running)
            if created:
                where = self._engine.url.render_as_string(hide_password=True)
                err.print(f"Đã tạo cơ sở dữ liệu mới tại {escape(where)}.", soft_wrap=True)
        return self._engine

    @property
    def regions(self) -> RegionIndex:
        """The region index (loaded on first use: it takes about a second)."""
        if self._regions is None:
            self._regions = RegionIndex.load()
        return self._regions

    def close(self) -> None:
        """Let the database go (and its checkpoint thread finish its round) as the command ends."""
        if self._engine is not None:
            self._engine.dispose()

    def catalogue(self) -> catalogue.Catalogue:
        """The methods and limits alerts are checked against."""
        methods = {**METHODS, **self.settings.catalogue.extra_methods}
        return catalogue.Catalogue(methods=methods, max_parts=self.settings.sms.max_parts)


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
    ctx.obj = Context(settings=settings, actor=acting_user or getpass.getuser(), long_running=long_running)
    ctx.call_on_close(ctx.obj.close)


def run(args: list[str] | None = None) -> int:
    """Run the command line on `args` and return the exit status (see dispatcher/errors.py)."""
    args = list(sys.argv[1:] if args is None else args)
    as_json = "--json" in (args[: args.index("--")] if "--" in args else args)
    try:
        status = typer.main.get_command(app).main(args, prog_name="canhbao", standalone_mode=False)
    except Exception as exc:  # noqa: BLE001  (what is not a user's mistake is raised again below)
        failure = cli_errors.describe(exc)
        if failure is None:
            raise
        return _fail(failure, as_json)
    if status == cli_errors.interrupted().exit_code:  # Typer turns Ctrl-C into this status
        return _fail(cli_errors.interrupted(), as_json)
    return status if isinstance(status, int) else 0


def _fail(failure: cli_errors.Failure, as_json: bool) -> int:
    """Tell the user what went wrong: in Vietnamese on stderr, and as the one JSON document with --json."""
    if as_json:
        _emit(failure.to_json())
    err.print(f"[red]Lỗi:[/red] {escape(failure.message)}", soft_wrap=True)
    if failure.hint and not as_json:
        err.print(escape(failure.hint), soft_wrap=True)
    return failure.exit_code


def main() -> None:
    """Entry point of the `canhbao` console script."""
    sys.exit(run())


def _emit(document: Any) -> None:
    """The one JSON document of a --json command."""
    print(json.dumps(document, ensure_ascii=False, indent=2, default=str))


# -- db -----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Nâng cấp lược đồ cơ sở dữ liệu lên phiên bản mới nhất."""
    c: Context = ctx.obj
    engine = db.make_engine(c.settings.database)
    before, after = db.upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    if as_json:
        _emit({"database": where, "from": before, "to": after})
    elif before == after:
        out.print(f"Cơ sở dữ liệu {where} đã ở phiên bản mới nhất ({after}).")
    else:
        out.print(f"Đã nâng cấp {where}: {before or 'trống'} → {after}.")


# -- regions ------------------------------------------------------------------------------


@regions_app.command("show")
def regions_show(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Tên hoặc mã: 'Quảng Nam', 'Phường 1, Quận 3, TP.HCM', '48', 'mã huyện cũ 503'.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Cho biết một tên địa danh (mới hoặc cũ) nay ứng với tỉnh, xã nào."""
    c: Context = ctx.obj
    resolution = c.regions.resolve(name)
    if as_json:
        _emit(resolution.to_json())
        return
    matched = resolution.matched
    # Not wrapped: the code marker at the end is what the user may copy.
    out.print(f"[bold]{escape(name)}[/bold] → {escape(c.regions.describe(matched))}", soft_wrap=True)
    if resolution.whole_province:
        count = number(len(c.regions.communes_by_province[matched.code]))
        out.print(f"Toàn tỉnh/thành phố: {count} xã, phường, đặc khu.")
        return
    out.print("Nay thuộc: " + ", ".join(escape(c.regions.describe(p)) for p in resolution.today), soft_wrap=True)
    table = Table("Mã", "Xã/phường hiện nay", "Tỉnh/thành phố", "Ghi chú")
    for cover in resolution.communes:
        note = "[yellow]chỉ một phần[/yellow]" if cover.partial else ""
        table.add_row(str(cover.unit.code), cover.unit.name, c.regions.province(cover.unit.province_code).name, note)
    out.print(table)
    partial = number(sum(1 for cover in resolution.communes if cover.partial))
    total = number(len(resolution.communes))
    out.print(f"{total} xã/phường, trong đó {partial} chỉ một phần thuộc '{escape(matched.name)}'.")


# -- subscribers --------------------------------------------------------------------------


def _importer(c: Context) -> SubscriberImporter:
    s = c.settings.subscribers
    defaults = _defaults(s.default_audiences, s.default_channels)
    return SubscriberImporter(c.engine, c.regions, s.rejects_dir, s.batch_size, *defaults)


def _defaults(audiences: list[str], channels: list[str]) -> tuple[int, int]:
    try:
        audience_bits = audience_mask({Audience.parse(a) for a in audiences})
    except ValueError as exc:
        raise ConfigError(f"Cấu hình subscribers.default_audiences: nhóm không rõ {exc}.") from exc
    channel_bits = sum(ch.mask for ch in Channel if ch.slug in channels)
    return audience_bits, channel_bits


def _progress(as_json: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, disable=as_json or not err.is_terminal, transient=True,
    )  # fmt: skip


def _report_import(summary: ImportSummary, seconds: float, as_json: bool) -> None:
    """The summary; exit 1 when rows were refused (duplicates alone are not a refusal)."""
    if as_json:
        _emit(summary.to_json())
    else:
        _print_import(summary, seconds)
    if summary.rejected:
        raise typer.Exit(InputRejected.exit_code)


def _print_import(summary: ImportSummary, seconds: float) -> None:
    n = formats.number
    rate = f" ({n(summary.rows / seconds)} dòng/giây)" if summary.rows >= 10_000 and seconds > 0 else ""
    out.print(
        f"Đã đọc {n(summary.rows)} dòng trong {formats.duration(seconds)}{rate}: "
        f"[green]thêm {n(summary.added)}[/green], cập nhật {n(summary.updated)}, không đổi {n(summary.unchanged)}, "
        f"trùng {n(summary.duplicates)}, [red]từ chối {n(summary.rejected)}[/red].",
        soft_wrap=True,
    )
    if summary.encoding:
        out.print(f"Bảng mã của tệp: {ENCODINGS[summary.encoding]}.")
    if summary.refusals_applied:
        out.print(f"{n(summary.refusals_applied)} số đã từ chối nhận từ trước: nhập ở trạng thái từ chối.")
    if summary.rejects_file:
        out.print(f"Các dòng bị từ chối hoặc trùng số, và lý do: {escape(str(summary.rejects_file))}", soft_wrap=True)
    if summary.ignored_columns:
        out.print(f"Bỏ qua các cột không dùng: {escape(', '.join(summary.ignored_columns))}")


@subscribers_app.command("import")
def subscribers_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Tệp CSV (UTF-8, UTF-16 hoặc Windows-1258) hoặc XLSX.")],
    as_json: JsonOption = False,
) -> None:
    """Nhập thuê bao từ tệp: thêm số mới, cập nhật số đã có, báo các dòng bị từ chối."""
    c: Context = ctx.obj
    c.may_create = True  # the first import of a fresh installation starts its database
    importer = _importer(c)
    started = time.perf_counter()
    with _progress(as_json) as progress:
        task = progress.add_task(f"Nhập {file.name}", total=None)
        summary = importer.import_file(file, c.now, lambda n: progress.update(task, completed=n))
    with c.engine.begin() as conn:
        audit(conn, c.now, c.actor, "subscribers.import", f"file:{file.name}", summary.to_json())
    _report_import(summary, time.perf_counter() - started, as_json)


@subscribers_app.command("generate")
def subscribers_generate(
    ctx: typer.Context,
    province: Annotated[str, typer.Option(help="Tỉnh/thành phố (mã hoặc tên).")],
    count: Annotated[int, typer.Option(min=1, help="Số thuê bao.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Hạt giống ngẫu nhiên: cùng hạt giống, cùng dân số.")] = 1,
    output: Annotated[Path | None, typer.Option(help="Ghi ra tệp CSV thay vì nhập vào cơ sở dữ liệu.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Tạo dân số thuê bao giả lập (đầu số, nhà mạng, xã, nhóm đối tượng như thật)."""
    c: Context = ctx.obj
    unit = c.regions.one(province, frozenset({Level.PROVINCE}))
    code = unit.code if unit.scheme == "2025" else c.regions.current_provinces(unit)[0]
    rows = population.generate(c.regions, code, count, seed)
    started = time.perf_counter()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(population.HEADER)
            writer.writerows(rows)
        if as_json:
            _emit({"file": str(output), "rows": count})
        else:
            out.print(f"Đã ghi {formats.number(count)} thuê bao giả lập vào {output}.")
        return
    c.may_create = True  # as an import does
    importer = _importer(c)
    positions = {name: i for i, name in enumerate(population.HEADER)}
    rejects = RejectsFile(c.settings.subscribers.rejects_dir / f"generate-{c.now:%Y%m%d-%H%M%S}.rejects.csv")
    with _progress(as_json) as progress:
        task = progress.add_task("Tạo thuê bao", total=count)
        summary = importer.load(
            rows, RowParser(c.regions, positions), c.now, f"generate:seed={seed}", rejects,
            on_progress=lambda n: progress.update(task, completed=n),
        )  # fmt: skip
    _report_import(summary, time.perf_counter() - started, as_json)


def _msisdn(raw: str) -> str:
    try:
        return PhoneBook().normalize(raw).e164
    except InvalidNumber as exc:
        raise UsageError(f"Số {raw!r}: {exc}.") from None


@subscribers_app.command("opt-out")
def subscribers_opt_out(ctx: typer.Context, msisdn: str, as_json: JsonOption = False) -> None:
    """Ghi nhận thuê bao từ chối nhận cảnh báo (có hiệu lực với mọi đợt gửi chưa bắt đầu)."""
    _set_opt_out(ctx.obj, msisdn, True, as_json)


@subscribers_app.command("opt-in")
def subscribers_opt_in(ctx: typer.Context, msisdn: str, as_json: JsonOption = False) -> None:
    """Huỷ ghi nhận từ chối (khi thuê bao đồng ý nhận lại)."""
    _set_opt_out(ctx.obj, msisdn, False, as_json)


def _set_opt_out(c: Context, raw: str, opted_out: bool, as_json: bool) -> None:
    number = _msisdn(raw)
    with c.engine.begin() as conn:
        outcome = set_opt_out(conn, number, opted_out, c.now, c.actor)
        row = find_subscriber(conn, number)
        since = row["opted_out_at"] if row else held_refusal(conn, number)
    if outcome is OptOut.UNKNOWN:
        raise InputRejected(f"Không có thuê bao {mask(number)}, cũng không có lời từ chối nào của số này để huỷ.")
    if as_json:
        _emit({"msisdn": mask(number), "opted_out": opted_out, "opted_out_at": since, "outcome": outcome.value})
    else:
        out.print(_OPT_OUT_SAID[outcome, opted_out].format(number=mask(number)), soft_wrap=True)


_OPT_OUT_SAID = {
    (OptOut.SUBSCRIBER, True): "Thuê bao {number} đã từ chối nhận cảnh báo.",
    (OptOut.SUBSCRIBER, False): "Thuê bao {number} nhận lại cảnh báo.",
    (OptOut.HELD, True): "Chưa có thuê bao {number}: đã ghi vào danh sách từ chối, mọi lần nhập sau sẽ tôn trọng.",
    (OptOut.LIFTED, False): "Chưa có thuê bao {number}: đã xoá khỏi danh sách từ chối, lần nhập sau nhận bình thường.",
}


@subscribers_app.command("stats")
def subscribers_stats(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Số thuê bao theo tỉnh và nhà mạng."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        rows = conn.execute(
            select(
                subscribers.c.province_code, subscribers.c.carrier, func.count(),
                func.count(subscribers.c.opted_out_at),
            ).group_by(subscribers.c.province_code, subscribers.c.carrier)
        ).all()  # fmt: skip
        held = held_refusals(conn)
    document = [{"province_code": p, "carrier": ca, "subscribers": n, "opted_out": o} for p, ca, n, o in rows]
    total = sum(r["subscribers"] for r in document)
    if as_json:
        _emit({"groups": document, "total": total, "held_refusals": held})
        return
    columns = (Column("Tỉnh/thành phố"), Column("Nhà mạng"), Column("Thuê bao", whole=True, justify="right"),
               Column("Từ chối", whole=True, justify="right"))  # fmt: skip
    rows = [[c.regions.province(r["province_code"]).name, labels.carrier(r["carrier"]),
             formats.number(r["subscribers"]), formats.number(r["opted_out"])] for r in document]  # fmt: skip
    print_fitted(out, columns, rows, "xem đủ: --json")
    out.print(f"Tổng: {formats.number(total)} thuê bao.")
    out.print(f"Lời từ chối của số chưa nhập (áp dụng khi nhập): {formats.number(held)}.")


# -- alerts -------------------------------------------------------------------------------


@alerts_app.command("sync")
def alerts_sync(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Nạp thư mục messages/: mẫu mới, phiên bản mới khi nội dung đổi (bản cũ giữ lại)."""
    c: Context = ctx.obj
    loaded = catalogue.load_catalogue_dir(c.settings.catalogue.messages_dir, c.catalogue())
    with c.engine.begin() as conn:
        result = catalogue.sync(conn, loaded, c.actor, c.now)
    if as_json:
        _emit(result.to_json())
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
    renderings = catalogue.check(spec, c.catalogue(), f"mẫu '{alert_id}'")
    path = c.settings.catalogue.messages_dir / f"{alert_id}.toml"
    if path.exists():
        raise StateError(f"Đã có tệp {path}: sửa tệp đó rồi chạy 'canhbao alerts sync'.")
    with c.engine.begin() as conn:
        if catalogue.latest(conn, alert_id) is not None:
            raise StateError(f"Đã có mẫu '{alert_id}' trong cơ sở dữ liệu.")
        catalogue.store(conn, spec, "cli", c.actor, c.now)
        row = catalogue.version(conn, alert_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(catalogue.to_toml(spec), encoding="utf-8")
    if as_json:
        _emit(_alert_document(c, row, renderings))
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
    status: Annotated[str | None, typer.Option(help="Chỉ trạng thái này: draft, submitted, approved, retired.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Danh sách mẫu cảnh báo (phiên bản mới nhất của mỗi mẫu)."""
    c: Context = ctx.obj
    with c.engine.connect() as conn:
        rows = [r for r in catalogue.listing(conn) if status is None or r["status"] == status]
    if as_json:
        keys = ("slug", "version", "versions", "status", "method", "priority", "title", "author", "approver")
        _emit([{k: r[k] for k in keys} for r in rows])
        return
    methods = c.catalogue().methods
    cells = [[r["slug"], str(r["version"]), labels.alert_status(r["status"]), methods.get(r["method"], r["method"]),
              labels.priority(r["priority"]), r["title"]] for r in rows]  # fmt: skip
    print_fitted(out, ALERT_COLUMNS, cells, "xem đủ: --json hoặc canhbao alerts show MÃ")


ALERT_COLUMNS = (
    Column("Mã", whole=True), Column("Bản", whole=True, justify="right"), Column("Trạng thái"),
    Column("Phương thức", drop=4, least=14), Column("Ưu tiên", drop=2), Column("Tiêu đề", drop=3, least=16),
)  # fmt: skip


def _alert_document(c: Context, row: dict[str, Any], renderings: catalogue.Renderings) -> dict[str, Any]:
    prices = c.settings.sms.price_per_part
    return {
        "id": row["slug"], "version": row["version"], "status": row["status"], "method": row["method"],
        "title": row["title"], "priority": row["priority"], "valid_days": row["valid_days"],
        "audiences": row["audiences"], "variables": row["variables"], "source": row["source"],
        "author": row["author"], "approver": row["approver"], "zalo": row["zalo"],
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
    renderings = catalogue.render(catalogue.spec_of(row))
    document = _alert_document(c, row, renderings)
    if as_json:
        _emit(document)
        return
    status = labels.alert_status(row["status"])
    out.print(f"[bold]{row['title']}[/bold]  ({row['slug']} bản {row['version']}, {status})")
    method = c.catalogue().methods.get(row["method"], row["method"])
    out.print(f"Phương thức: {method} · ưu tiên {labels.priority(row['priority'])} · "
              f"hiệu lực {row['valid_days']} ngày · đối tượng: {labels.audiences(row['audiences'])}")  # fmt: skip
    out.print(f"Nguồn: {row['source']}")
    out.print(f"Tác giả: {row['author']} · người duyệt: {row['approver'] or '—'}")
    sms = c.settings.sms
    for label, rendering in (("Có dấu", renderings.unicode), ("Không dấu", renderings.ascii)):
        info = rendering.info
        out.print(f"\n[bold]{label}[/bold] — {info.encoding}, {formats.number(info.characters)} ký tự, "
                  f"{info.parts} phần tin")  # fmt: skip
        out.print(rendering.text, markup=False)
    columns = (Column("Nhà mạng"), *(Column(h, whole=True, justify="right")
               for h in (f"Giá/phần ({sms.currency})", "Có dấu/tin", "Không dấu/tin")))  # fmt: skip
    prices = sorted(sms.price_per_part.items(), key=lambda kv: kv[0] == "default")  # 'các mạng khác' last
    parts = (1, renderings.unicode.info.parts, renderings.ascii.info.parts)
    rows = [[labels.carrier(carrier), *(formats.number(price * n) for n in parts)] for carrier, price in prices]
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
        _emit(done[0] if len(done) == 1 else done)
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


@alerts_app.command("retire")
def alerts_retire(ctx: typer.Context, alert_ids: AlertIds, as_json: JsonOption = False) -> None:
    """Ngừng dùng mẫu (giữ lại để tra cứu)."""
    _lifecycle(ctx, alert_ids, as_json, "retire")


@alerts_app.command("methods")
def alerts_methods(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Các phương thức lừa đảo được nhận."""
    methods = ctx.obj.catalogue().methods
    if as_json:
        _emit(methods)
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)  # the code is what `--method` takes: never wrapped
    table.add_column()
    for slug, label in methods.items():
        table.add_row(slug, label)
    out.print(table)


# -- text ---------------------------------------------------------------------------------


@text_app.command("inspect")
def text_inspect(text: str, as_json: JsonOption = False) -> None:
    """Bảng mã, số ký tự và số phần tin của một nội dung, cùng bản không dấu."""
    report = smstext.inspect(text)
    if as_json:
        _emit(report)
        return
    out.print(f"Có dấu: {report['encoding']}, {report['characters']} ký tự, {report['parts']} phần tin")
    out.print(f"Không dấu: {report['ascii_encoding']}, {report['ascii_parts']} phần tin")
    out.print(str(report["ascii"]), markup=False)
    if report["ascii_non_gsm"]:
        out.print(f"[yellow]Ký tự ngoài GSM-7 trong bản không dấu: {''.join(report['ascii_non_gsm'])}[/yellow]")


from dispatcher.cli_blasts import register  # noqa: E402  (the blast commands live in their own module)

register(app, blast_app)

from dispatcher.cli_schedules import register as register_schedules  # noqa: E402

register_schedules(app)

from dispatcher.cli_gateways import register as register_gateways  # noqa: E402

register_gateways(app)

from dispatcher.cli_web import register as register_web  # noqa: E402

register_web(app)
adopt(app)  # every command, wherever it was registered: `--as` after it, Vietnamese usage errors and help
vietnamese_help()

if __name__ == "__main__":  # pragma: no cover
    main()
