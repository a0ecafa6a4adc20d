"""pandas frames of the rows, and CSV that a spreadsheet cannot execute."""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditor.report.rows import COUNT_COLUMNS, SIZE_COLUMNS

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """Prefix a cell a spreadsheet would run as a formula with ``'`` (OWASP CSV injection)."""
    return "'" + text if text.startswith(FORMULA_START) else text


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Typed frame: sizes and counts as nullable integers, the ratio as a float."""
    df = pd.DataFrame(rows, columns=columns)
    for c in columns:
        if c in SIZE_COLUMNS or c in COUNT_COLUMNS:
            df[c] = df[c].astype("Int64")
        elif c == "overcommit_ratio":
            df[c] = df[c].astype("Float64")
        elif c == "used_by":
            df[c] = df[c].map(lambda v: ";".join(v) if isinstance(v, list) else v)
    return df


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    df = frame(rows, columns)
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):  # object or pandas' str dtype
            df[c] = df[c].map(lambda v: neutralise(v) if isinstance(v, str) else v)
    return str(df.to_csv(index=False, na_rep="", lineterminator="\n"))
