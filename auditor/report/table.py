"""Terminal tables (tabulate) with human IEC sizes."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from auditor.report.rows import COUNT_COLUMNS, SIZE_COLUMNS
from auditor.units import iec

RIGHT = SIZE_COLUMNS | COUNT_COLUMNS | {"overcommit_ratio"}


def _cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if column in SIZE_COLUMNS:
        return iec(value)
    if column == "overcommit_ratio":
        return f"{value:.2f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value)
    return value


def render(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table; numbers right-aligned."""
    body = [[_cell(c, r.get(c)) for c in columns] for r in rows]
    return tabulate(body, headers=columns, tablefmt="simple", disable_numparse=True,
                    colalign=["right" if c in RIGHT else "left" for c in columns])  # fmt: skip
