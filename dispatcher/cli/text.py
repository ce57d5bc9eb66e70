"""`canhbao text`: what a text costs in encoding, characters and parts."""

from __future__ import annotations

import typer

from dispatcher import smstext
from dispatcher.cli.common import JsonOption, emit, out

text_app = typer.Typer(help="Kiểm tra nội dung tin nhắn.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the commands to the application."""
    app.add_typer(text_app, name="text")


@text_app.command("inspect")
def text_inspect(text: str, as_json: JsonOption = False) -> None:
    """Bảng mã, số ký tự và số phần tin của một nội dung, cùng bản không dấu."""
    report = smstext.inspect(text)
    if as_json:
        emit(report)
        return
    out.print(f"Có dấu: {report['encoding']}, {report['characters']} ký tự, {report['parts']} phần tin")
    out.print(f"Không dấu: {report['ascii_encoding']}, {report['ascii_parts']} phần tin")
    out.print(str(report["ascii"]), markup=False)
    if report["ascii_non_gsm"]:
        out.print(f"[yellow]Ký tự ngoài GSM-7 trong bản không dấu: {''.join(report['ascii_non_gsm'])}[/yellow]")
