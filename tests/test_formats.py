"""Rendering: IEC sizes, CSV that spreadsheets cannot execute, CSV ↔ JSON round trip."""

from __future__ import annotations

import io

import pandas as pd

from auditor.report.rows import VOLUME_COLUMNS
from auditor.report.table import iec
from auditor.report.tables import neutralise, to_csv


def test_iec() -> None:
    assert iec(None) == ""
    assert iec(0) == "0 B"
    assert iec(1023) == "1023 B"
    assert iec(1536) == "1.5 KiB"
    assert iec(64 << 20) == "64.0 MiB"
    assert iec(3 << 40) == "3.0 TiB"


def test_neutralise_formula_cells() -> None:
    for bad in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise(bad) == "'" + bad
    assert neutralise("/var/lib/x.qcow2") == "/var/lib/x.qcow2"


def test_csv_keeps_numbers_numeric_and_text_safe() -> None:
    row = {c: "" for c in VOLUME_COLUMNS} | {
        "volume": "=HYPERLINK(1)",
        "physical": None,
        "virtual_size": 1 << 30,
        "disk_size": None,
        "growth": 5,
        "managed": True,
        "used_by": ["vm1", "vm2"],
    }
    text = to_csv([row], VOLUME_COLUMNS)
    df = pd.read_csv(io.StringIO(text))
    assert df.loc[0, "volume"] == "'=HYPERLINK(1)"
    assert df.loc[0, "virtual_size"] == 1 << 30
    assert pd.isna(df.loc[0, "disk_size"])
    assert df.loc[0, "used_by"] == "vm1;vm2"
