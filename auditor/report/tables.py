"""pandas frames of the rows, and CSV that a spreadsheet cannot execute.

Figures are Python ints, which are exact; the frame keeps them so. It is built with object
dtype (left to infer, pandas makes float64 of an integer column with a None in it, rounding
anything above 2^53), and a size or count column becomes nullable Int64 only when every value
fits in 64 signed bits; otherwise it stays a column of Python ints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from auditor.report.rows import COUNT_COLUMNS, SIZE_COLUMNS

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def neutralise(text: str) -> str:
    """Prefix a cell a spreadsheet would run as a formula with ``'`` (OWASP CSV injection)."""
    return "'" + text if text.startswith(FORMULA_START) else text


def _fits_int64(column: pd.Series) -> bool:
    return all(v is None or INT64_MIN <= v <= INT64_MAX for v in column)


def _cells(column: pd.Series, fn: Callable[[Any], Any]) -> pd.Series:
    """``fn`` of every cell, kept as objects (``Series.map`` would infer a dtype: float64
    for integers with a None among them)."""
    return pd.Series([fn(v) for v in column], index=column.index, dtype=object)


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Typed frame: sizes and counts as nullable integers (exact Python ints in an object
    column where a value does not fit Int64), the ratio as a float."""
    df = pd.DataFrame(rows, columns=columns, dtype=object)
    for c in columns:
        if c in SIZE_COLUMNS or c in COUNT_COLUMNS:
            if _fits_int64(df[c]):
                df[c] = df[c].astype("Int64")
        elif c == "overcommit_ratio":
            df[c] = df[c].astype("Float64")
        elif c == "used_by":
            df[c] = _cells(df[c], lambda v: ";".join(v) if isinstance(v, list) else v)
    return df


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """CSV of the rows: integers exact, text cells neutralised."""
    df = frame(rows, columns)
    for c in df.columns:
        if c not in SIZE_COLUMNS and c not in COUNT_COLUMNS and c != "overcommit_ratio":
            df[c] = _cells(df[c], lambda v: neutralise(v) if isinstance(v, str) else v)
    return str(df.to_csv(index=False, na_rep="", lineterminator="\n"))
