"""A reach report (`reports.Report`) written out: JSON, CSV, XLSX (native charts), HTML and PDF.

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

FORMATS = ("json", "csv", "html", "xlsx", "pdf")


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
    """The statutory form (Decree 30/2020/NĐ-CP): issuer and national motto, number and date lines left for
    the clerk, the title, the sections with inline SVG charts, "Nơi nhận" and the signature block; A4."""
    title = f"Báo cáo kết quả tuyên truyền phòng, chống lừa đảo qua tin nhắn — {report.period.title}"
    tables = {name: (header, rows) for name, header, rows in report.tables()}
    out.write(f'<!doctype html><html lang="vi"><head><meta charset="utf-8"><title>{_e(title)}</title>'
              f"<style>{STATUTORY_CSS}</style></head><body>{_heading(report)}"
              f'<h1>BÁO CÁO</h1><p class="subtitle">{_e(title[len("Báo cáo "):].capitalize())}</p>'
              f'<p class="period">Kỳ báo cáo: từ ngày {report.period.first:%d/%m/%Y} đến ngày '
              f"{report.period.last:%d/%m/%Y}{_e(_deadline(report))}. Địa bàn: {_e(report.place)}.</p>")  # fmt: skip
    for number_, (heading, names, chart) in enumerate(SECTIONS, 1):
        out.write(f"<h2>{ROMAN[number_ - 1]}. {_e(heading)}</h2>")
        if chart:
            out.write(f"<figure>{chart(report)}</figure>")
        for name in names:
            header, rows = tables[name]
            out.write(_table(name, header, rows))
    out.write(_closing(report) + "</body></html>")


def write_pdf(report: Report, path: Path) -> None:
    """The statutory form as a PDF (A4, page numbers), laid out by WeasyPrint from the same HTML."""
    import io

    from weasyprint import HTML  # only this format needs it (and Pango on the machine)

    page = io.StringIO()
    write_html(report, page)
    HTML(string=page.getvalue()).write_pdf(path)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _deadline(report: Report) -> str:
    """The statutory deadline a period serves: the 6-month report before 10 June, the annual before 10 November."""
    first, last = report.period.first, report.period.last
    if (first.month, first.day, last.month, last.day) == (1, 1, 6, 30):
        return f" (báo cáo 6 tháng, gửi trước ngày 10/6/{first.year})"
    if (first.month, first.day, last.month, last.day) == (1, 1, 12, 31):
        return f" (báo cáo năm, gửi trước ngày 10/11/{first.year})"
    return ""


def _heading(report: Report) -> str:
    return ('<table class="heading"><tr><td><p class="issuer">' + _e(report.issuer) + "</p><hr class=short>"
            '<p>Số: ……/BC-……</p></td><td><p class="motto">CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM</p>'
            '<p class="motto2">Độc lập - Tự do - Hạnh phúc</p><hr class=short>'
            '<p class="date">……, ngày …… tháng …… năm ……</p></td></tr></table>')  # fmt: skip


def _closing(report: Report) -> str:
    recipients = "".join(f"<li>{_e(r)};</li>" for r in report.recipients)
    return ('<table class="closing"><tr><td><p class="to">Nơi nhận:</p><ul>' + recipients + "</ul></td>"
            '<td><p class="sign">THỦ TRƯỞNG ĐƠN VỊ</p><p class="hint">(Ký, ghi rõ họ tên, đóng dấu)</p></td>'
            "</tr></table>")  # fmt: skip


def _table(name: str, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(_shown(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class=data><caption>{_e(name)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _svg(chart: Any) -> str:
    """A pygal chart as inline SVG without the script pygal always adds: the report runs no JavaScript.

    The tooltip layer goes too: only that script shows it, and its inline `style` attribute is one
    the console's Content-Security-Policy would refuse.
    """
    from xml.etree import ElementTree

    tree = chart.render_tree()
    for parent in tree.iter():
        for child in list(parent):
            classes = child.get("class", "").split() if isinstance(child.tag, str) else []
            if isinstance(child.tag, str) and (child.tag.endswith("script") or "tooltip-overlay" in classes):
                parent.remove(child)
    return ElementTree.tostring(tree, encoding="unicode")


def _bar(title: str, labels: list[str], series: dict[str, list[float]]) -> str:
    import pygal

    chart = pygal.HorizontalBar(js=[], width=700, height=max(220, 24 * len(labels) + 80), title=title,
                                show_legend=len(series) > 1, legend_at_bottom=True, print_values=False,
                                truncate_label=40, style=_chart_style())  # fmt: skip
    chart.x_labels = labels
    for name, values in series.items():
        chart.add(name, values)
    return _svg(chart)


def _place_chart(report: Report) -> str:
    rows = report.by_commune if len(report.by_province) <= 1 else report.by_province
    top = list(rows.items())[:15]
    return _bar("Số tin đã gửi theo địa bàn", [k for k, _ in top][::-1], {"Tin đã gửi": [c.sent for _, c in top][::-1]})


def _coverage_chart(report: Report) -> str:
    shown = [c for c in report.coverage if c.base or c.target]
    return _bar("Độ bao phủ so với chỉ tiêu (%)", [c.label for c in shown],
                {"Đã nhận (%)": [c.share for c in shown], "Chỉ tiêu (%)": [c.target or 0 for c in shown]})  # fmt: skip


def _weekly_chart(report: Report) -> str:
    import pygal

    chart = pygal.Line(js=[], width=700, height=280, title="Xu hướng theo tuần", legend_at_bottom=True,
                       x_label_rotation=45, style=_chart_style())  # fmt: skip
    chart.x_labels = [w["week"] for w in report.weekly]
    chart.add("Tin đã gửi", [w["sent"] for w in report.weekly])
    chart.add("Số người đã nhận", [w["people"] for w in report.weekly])
    return _svg(chart)


def _chart_style() -> Any:
    """Black on white, the report's serif font: it prints."""
    from pygal.style import Style

    return Style(background="white", plot_background="white", font_family="'Times New Roman', serif",
                 colors=("#1f4e79", "#c00000", "#548235"))  # fmt: skip


SECTIONS = (
    ("Kết quả chung", ("Tổng hợp",), None),
    ("Độ bao phủ theo nhóm đối tượng", ("Độ bao phủ theo nhóm đối tượng",), _coverage_chart),
    ("Kết quả theo địa bàn", ("Theo tỉnh/thành phố", "Số người đã nhận theo tỉnh/thành phố", "Theo xã/phường"),
     _place_chart),
    ("Kết quả theo nhà mạng và kênh gửi", ("Theo nhà mạng", "Theo kênh", "Theo nhóm đối tượng"), None),
    ("Kết quả theo phương thức lừa đảo và mẫu cảnh báo", ("Theo phương thức lừa đảo", "Số người đã nhận theo "
     "phương thức", "Theo mẫu cảnh báo", "Mẫu cảnh báo tới nhiều người nhất"), None),
    ("Các đợt gửi", ("Các đợt gửi",), None),
    ("Xu hướng theo tuần", ("Xu hướng theo tuần",), _weekly_chart),
)  # fmt: skip
ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII")
# Decree 30/2020/NĐ-CP: A4, margins top/bottom 20–25 mm, left 30–35 mm, right 15–20 mm, Times New Roman 13–14 pt.
STATUTORY_CSS = (
    "@page{size:A4;margin:20mm 15mm 20mm 30mm;@bottom-center{content:counter(page)}}"
    "body{font-family:'Times New Roman',serif;font-size:13pt;line-height:1.3;color:#000}"
    "table.heading,table.closing{width:100%;border:0;margin-bottom:12pt}"
    "table.heading td,table.closing td{width:50%;vertical-align:top;text-align:center;border:0}"
    "table.heading td:first-child{width:38%}table.heading td+td{width:62%}.motto{font-size:12pt;white-space:nowrap}"
    ".issuer,.motto,.sign{font-weight:bold;margin:0}.motto2{font-weight:bold;margin:0}"
    "hr.short{width:35%;border:0;border-top:1px solid #000;margin:2pt auto 6pt}"
    ".date{font-style:italic}h1{text-align:center;font-size:14pt;margin:12pt 0 0}"
    ".subtitle{text-align:center;font-weight:bold;margin:0 0 8pt}.period{font-style:italic}"
    "h2{font-size:13pt;margin:12pt 0 4pt;break-after:avoid}"
    "table.data{border-collapse:collapse;width:100%;font-size:11pt;margin:4pt 0 10pt;break-inside:auto}"
    "table.data caption{text-align:left;font-weight:bold;padding:2pt 0}"
    "table.data th,table.data td{border:1px solid #000;padding:2pt 4pt}table.data td+td{text-align:right}"
    "table.data tr{break-inside:avoid}thead{display:table-header-group}"
    "figure{margin:4pt 0;break-inside:avoid}figure svg{width:100%;height:auto}"
    ".closing td:first-child{text-align:left;font-size:11pt}.to{font-weight:bold;font-style:italic;margin:0}"
    ".closing ul{list-style:none;padding:0;margin:0}.hint{font-style:italic;margin:0 0 60pt}"
    "table.closing tr{break-inside:avoid}"  # the signature block stays whole on one page
    "@media screen{body{max-width:170mm;margin:10mm auto;padding:0 8mm}}"  # opened in a browser: a page's width
)


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
        elif fmt == "pdf":
            write_pdf(report, partial)
        else:
            with partial.open("w", encoding="utf-8", newline="") as fh:
                {"csv": write_csv, "html": write_html}[fmt](report, fh)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
