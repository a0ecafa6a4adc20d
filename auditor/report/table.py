"""Terminal tables with human IEC sizes: chosen columns, sorted rows, a width that fits;
and the rows' CSV without pandas.

Cells are never shortened unless a width is given (a terminal): then the longest text cells
(names, paths, users, notes) lose their middle to an ellipsis until the table fits.
Control characters in names are shown escaped, so a hostile name cannot drive the terminal.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from auditor.models import LABEL_PREFIX
from auditor.report.rows import COUNT_COLUMNS, SIZE_COLUMNS
from auditor.units import iec

ELLIPSIS = "\u2026"
GAP = "  "
MIN_SHRUNK = 10  # a shortened column keeps at least this many characters
LABELS = {
    "virtual_size": "virtual",
    "disk_size": "disk",
    "used_by": "used by",
    "backing_file": "backing file",
    "overcommit_ratio": "overcommit",
    "available": "usable free",
    "used_percent": "used %",
}
RIGHT = SIZE_COLUMNS | COUNT_COLUMNS | {"overcommit_ratio", "used_percent"}
SHRINKABLE = frozenset(
    {"host", "pool", "volume", "path", "used_by", "backing_file", "note", "target",
     "filesystem", "name", "reason", "subject", "detail", "message", "members"}
)  # fmt: skip
LEVEL_ORDER = {"crit": 0, "warn": 1, "unknown": 2, "ok": 3}
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def label(column: str) -> str:
    """The header of a column: a short word for the long CSV names."""
    return LABELS.get(column, column)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in SIZE_COLUMNS:
        return iec(value)
    if column == "overcommit_ratio":
        return f"{value:.2f}"
    if column == "used_percent":
        return f"{value:.1f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value).translate(_CONTROL)
    return str(value).translate(_CONTROL)


def width_of(text: str) -> int:
    """Terminal cells of ``text``: wide (CJK) characters take two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def shorten(text: str, width: int, mark: str = ELLIPSIS) -> str:
    """``text`` in at most ``width`` cells, its middle replaced by ``mark``."""
    if width_of(text) <= width:
        return text
    room = width - len(mark)
    if room < 2:
        return text[:width]
    head, tail = text[: (room + 1) // 2], text[len(text) - room // 2 :]
    while width_of(head) + width_of(tail) > room:  # wide characters: drop more
        head, tail = (head[:-1], tail) if width_of(head) >= width_of(tail) else (head, tail[1:])
    return head + mark + tail


def fit(widths: dict[str, int], width: int) -> dict[str, int]:
    """Column widths whose table fits ``width`` cells, shrinking the widest shrinkable
    columns first, none below ``MIN_SHRUNK`` (or its header); may still be too wide."""
    out = dict(widths)
    floors = {c: max(MIN_SHRUNK, width_of(label(c))) for c in out if c in SHRINKABLE}
    excess = sum(out.values()) + len(GAP) * (len(out) - 1) - width
    while excess > 0:
        movable = [c for c, floor in floors.items() if out[c] > floor]
        if not movable:
            break
        widest = max(movable, key=lambda c: out[c])
        out[widest] -= 1
        excess -= 1
    return out


def render(rows: list[dict[str, Any]], columns: Sequence[str], width: int | None = None) -> str:
    """A plain-text table, numbers right-aligned; fitted to ``width`` cells when given."""
    body = [[_cell(c, r.get(c)) for c in columns] for r in rows]
    widths = {c: width_of(label(c)) for c in columns}
    for line in body:
        for c, text in zip(columns, line, strict=True):
            widths[c] = max(widths[c], width_of(text))
    if width is not None:
        widths = fit(widths, width)
    out = [
        _line([label(c) for c in columns], columns, widths),
        _line(["-" * widths[c] for c in columns], columns, widths),
    ]
    out += [_line([shorten(t, widths[c]) for c, t in zip(columns, line, strict=True)],
                  columns, widths) for line in body]  # fmt: skip
    return "\n".join(out)


def _line(cells: Iterable[str], columns: Sequence[str], widths: dict[str, int]) -> str:
    parts = []
    for c, text in zip(columns, cells, strict=True):
        pad = " " * (widths[c] - width_of(text))
        parts.append(pad + text if c in RIGHT else text + pad)
    return GAP.join(parts).rstrip()


# ---- choosing and ordering columns and rows -----------------------------------------------


def _name(text: str) -> str:
    return text.strip().lower().replace("-", "_").replace(" ", "_")


def label_name(column: str) -> str | None:
    """``label_site`` (also ``LABEL-site``, ``label site``) as the column of a host label;
    None when the text names no label column."""
    wanted = _name(column)
    return wanted if wanted.startswith(LABEL_PREFIX) and len(wanted) > len(LABEL_PREFIX) else None


def resolve(column: str, known: Sequence[str]) -> str:
    """The column ``column`` names: a column name or its header ('virtual', 'used by');
    ValueError naming the known columns otherwise."""
    wanted = _name(column)
    for c in known:
        if wanted in (c, _name(label(c))):
            return c
    raise ValueError(f"unknown column {column.strip()!r} (known: {', '.join(known)})")


def choose(spec: str, known: Sequence[str]) -> list[str]:
    """The columns of a comma-separated ``spec``, in its order; ValueError for an unknown
    or repeated one, or none at all."""
    chosen = [resolve(part, known) for part in spec.split(",") if part.strip()]
    if not chosen:
        raise ValueError(f"no column named (known: {', '.join(known)})")
    repeated = sorted({c for c in chosen if chosen.count(c) > 1})
    if repeated:
        raise ValueError(f"column {repeated[0]!r} named twice")
    return chosen


def sort_key(column: str) -> Callable[[dict[str, Any]], Any]:
    """How rows sort by ``column``: numbers by value, text case-insensitively, levels by
    severity (crit first)."""

    def key(row: dict[str, Any]) -> Any:
        value = row.get(column)
        if column == "level":
            return LEVEL_ORDER.get(str(value), len(LEVEL_ORDER))
        if isinstance(value, list | tuple):
            value = ", ".join(value)
        return value.casefold() if isinstance(value, str) else value

    return key


def sort_rows(rows: list[dict[str, Any]], column: str, reverse: bool = False) -> list[int]:
    """The order (indexes into ``rows``) by ``column``; empty values last either way."""
    empty = [i for i, r in enumerate(rows) if r.get(column) in (None, "", [])]
    blank = set(empty)
    key = sort_key(column)
    full = sorted((i for i in range(len(rows)) if i not in blank),
                  key=lambda i: key(rows[i]), reverse=reverse)  # fmt: skip
    return full + empty


# ---- CSV without pandas --------------------------------------------------------------------

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # as report/tables.py


def _csv_text_cell(value: Any) -> Any:
    if isinstance(value, list):
        value = ";".join(value)
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value  # a spreadsheet would run it as a formula (OWASP CSV injection)
    return value


def _csv_ratio(value: Any) -> Any:
    return None if value is None else float(value)


def csv_text(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """The text ``report.tables.to_csv`` writes (exact integers, ``;``-joined users, formula-
    like text prefixed with ``'``), without importing pandas: 0.2 s of a read command's
    start-up. tests/test_cli_tables.py checks that both agree."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")  # None is written as an empty cell
    writer.writerow(columns)
    numbers = SIZE_COLUMNS | COUNT_COLUMNS
    cells = [None if c in numbers else _csv_ratio if c == "overcommit_ratio" else _csv_text_cell
             for c in columns]  # fmt: skip
    for r in rows:
        values = [r.get(c) for c in columns]
        writer.writerow([v if f is None else f(v) for f, v in zip(cells, values, strict=True)])
    return out.getvalue()
