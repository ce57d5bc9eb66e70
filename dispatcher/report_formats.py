"""A reach report (`reports.Report`) written out: JSON, CSV, XLSX (native charts) and HTML.

Every format renders the same structure; the tables come from `Report.tables()`, so a figure is
never computed twice. Files are written beside their place, then moved there: whole or not at all.
"""

from __future__ import annotations

import csv
import html
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from dispatcher.errors import UsageError
from dispatcher.formats import number
from dispatcher.reports import Report

FORMATS = ("json", "csv", "html", "xlsx")


def to_json(report: Report) -> dict[str, Any]:
    """The report as one JSON document (codes kept, times ISO 8601)."""
    document = asdict(report)
    document["period"] = {"name": report.period.name, "title": report.period.title,
                          "first": report.period.first.isoformat(), "last": report.period.last.isoformat()}  # fmt: skip
    document["generated_at"] = report.generated_at.isoformat()
    document["coverage"] = [{**asdict(c), "share": c.share, "met": c.met} for c in report.coverage]
    return document


def write_csv(report: Report, out: TextIO) -> None:
    """Every table one after another, each behind its title line and a blank line; a BOM for Excel."""
    out.write("\ufeff")
    writer = csv.writer(out)
    for title, header, rows in report.tables():
        writer.writerow([title])
        writer.writerow(header)
        writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
        writer.writerow([])


# Which tables get a native bar chart in the workbook: (title, value column).
CHARTS = {"Theo tỉnh/thành phố": 2, "Theo xã/phường": 2, "Độ bao phủ theo nhóm đối tượng": 4, "Xu hướng theo tuần": 2}


def write_xlsx(report: Report, path: Path) -> None:
    """One sheet per table, headers bold and frozen, a native bar chart beside the chosen ones."""
    from openpyxl import Workbook  # only this format needs it
    from openpyxl.chart import BarChart, Reference
    from openpyxl.styles import Font

    book = Workbook()
    book.remove(book.active)
    for title, header, rows in report.tables():
        sheet = book.create_sheet(_sheet_name(title, book.sheetnames))
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        sheet.freeze_panes = "A2"
        sheet.column_dimensions["A"].width = 40
        for row in rows:
            sheet.append(row)
        if title in CHARTS and rows:
            chart = BarChart()
            chart.title, chart.y_axis.title = title, header[CHARTS[title] - 1]
            last = min(len(rows), 30) + 1
            chart.add_data(Reference(sheet, min_col=CHARTS[title], min_row=1, max_row=last), titles_from_data=True)
            chart.set_categories(Reference(sheet, min_col=1, min_row=2, max_row=last))
            sheet.add_chart(chart, "L2")
    book.save(path)


def _sheet_name(title: str, taken: list[str]) -> str:
    """A sheet name Excel takes: at most 31 characters, none of []:*?/\\, unique."""
    name = "".join(" " if c in "[]:*?/\\" else c for c in title)[:31]
    return name if name not in taken else f"{name[:28]} {len(taken)}"


def write_html(report: Report, out: TextIO) -> None:
    """A plain HTML page of every table (the statutory form's layout is a later step)."""
    out.write('<!doctype html><html lang="vi"><head><meta charset="utf-8">'
              f"<title>Báo cáo {html.escape(report.period.title)}</title></head><body>"
              "<h1>Báo cáo kết quả tuyên truyền phòng, chống lừa đảo qua tin nhắn — "
              f"{html.escape(report.period.title)}</h1>")  # fmt: skip
    for title, header, rows in report.tables():
        out.write(f"<h2>{html.escape(title)}</h2><table><thead><tr>")
        out.write("".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for row in rows:
            out.write("<tr>" + "".join(f"<td>{html.escape(_shown(c))}</td>" for c in row) + "</tr>")
        out.write("</tbody></table>")
    out.write("</body></html>")


def _shown(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return number(cell, 1 if isinstance(cell, float) and not cell.is_integer() else 0)
    return str(cell)


def write(report: Report, fmt: str, path: Path) -> None:
    """Write the report in `fmt` to `path`, whole or not at all."""
    if path.is_dir():
        raise UsageError(f"{path} là một thư mục: hãy cho tên tệp, ví dụ {path / ('bao-cao.' + fmt)}.")
    partial = path.with_name(f".{path.name}.part")
    try:
        if fmt == "xlsx":
            write_xlsx(report, partial)
        else:
            with partial.open("w", encoding="utf-8", newline="") as fh:
                {"csv": write_csv, "html": write_html}[fmt](report, fh)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
