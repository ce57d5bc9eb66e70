"""Tables that fit the terminal: cells wrap, less important columns are left out, and what the
user types next (an id, a number) is never cut.

Rich shrinks a table wider than the terminal by truncating cells with '…', which can turn blast
'1234' into '12…'. Here a table is measured first; while even its narrowest layout is too wide,
the column with the highest `drop` rank is left out, and the output says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, JustifyMethod
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """One column: `whole` cells never wrap or shrink; a column with `drop` > 0 may be left out (highest first).

    `least` is the narrowest a wrapping column is still worth reading at: rather than squeeze it
    below that, another column goes.
    """

    header: str
    whole: bool = False
    drop: int = 0
    justify: JustifyMethod = "left"
    least: int = 0


def fitted(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> tuple[Table, list[str]]:
    """The table of `rows` as wide as `console` at most, and the headers of the columns left out."""
    shown = list(range(len(columns)))
    while True:
        ranges = [_range(console, columns[i], rows, i) for i in shown]
        room = console.width - 3 * len(shown) - 1  # each column's padding and left border, and the right edge
        optional = [i for i in shown if columns[i].drop]
        if sum(low for low, _ in ranges) <= room or not optional:
            table = _table(columns, rows, shown, _share(ranges, room))
            return table, [columns[i].header for i in range(len(columns)) if i not in shown]
        shown.remove(max(optional, key=lambda i: columns[i].drop))


def print_fitted(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], hint: str) -> None:
    """Print the fitted table; when columns had to go, say which and where to see them (`hint`)."""
    table, left_out = fitted(console, columns, rows)
    console.print(table)
    if left_out:
        console.print(f"[dim]Ẩn cột {', '.join(left_out)} cho vừa màn hình; {hint}.[/dim]")


def _range(console: Console, column: Column, rows: Sequence[Sequence[str]], i: int) -> tuple[int, int]:
    """(narrowest, widest) content width of column `i`: its longest word, its longest line."""
    cells = [Measurement.get(console, console.options, Text.from_markup(text)) for text in (column.header,
             *(row[i] for row in rows))]  # fmt: skip
    widest = max(m.maximum for m in cells)
    return (widest if column.whole else min(widest, max(column.least, *(m.minimum for m in cells)))), widest


def _share(ranges: list[tuple[int, int]], room: int) -> list[int | None]:
    """Column widths within `room`: each at least its narrowest; the space left goes first to the
    columns that want little more, so that short cells stay on one line and long ones wrap.

    Rich, left to itself, narrows the widest columns first, even below their longest word.
    """
    if sum(high for _, high in ranges) <= room:
        return [None] * len(ranges)  # it fits as it is
    widths = [low for low, _ in ranges]
    spare = room - sum(widths)
    for k in sorted(range(len(ranges)), key=lambda k: ranges[k][1] - ranges[k][0]):
        extra = max(0, min(spare, ranges[k][1] - widths[k]))
        widths[k], spare = widths[k] + extra, spare - extra
    return list(widths)


def _table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], shown: list[int], widths: list[int | None]
) -> Table:
    table = Table()
    for i, width in zip(shown, widths, strict=True):
        column = columns[i]
        # 'fold' breaks a word longer than its column instead of cutting it with '…'; a whole
        # column is given its full width, so only a table with nothing left to drop is cut.
        table.add_column(column.header, justify=column.justify, no_wrap=column.whole, width=width,
                         overflow="ellipsis" if column.whole else "fold")  # fmt: skip
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table
