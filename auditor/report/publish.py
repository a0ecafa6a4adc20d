"""The four files of a report, and writing them atomically: all of them, or none.

Everything is written into a fresh folder beside the target, flushed, then renamed into
place. An earlier report in the target is moved aside first and restored if the rename
fails, so a failed run never leaves half a report and never loses the previous one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path

from auditor.errors import PublishError
from auditor.report import html
from auditor.report.page import Page
from auditor.report.rows import POOL_COLUMNS, VOLUME_COLUMNS, pool_rows, volume_rows
from auditor.report.tables import to_csv

FILES = ("report.html", "pools.csv", "volumes.csv", "summary.json")


def render_files(page: Page) -> dict[str, bytes]:
    """``report.html``, ``pools.csv``, ``volumes.csv`` and ``summary.json`` of a page."""
    s = page.summary
    return {
        "report.html": html.render(page).encode(),
        "pools.csv": to_csv(pool_rows(s), POOL_COLUMNS).encode(),
        "volumes.csv": to_csv(volume_rows(s), VOLUME_COLUMNS).encode(),
        "summary.json": (json.dumps(page.document(), indent=2) + "\n").encode(),
    }


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(out: Path, files: Mapping[str, bytes]) -> Path:
    """Make ``out`` hold exactly ``files``; refuse a folder holding anything else."""
    try:
        return _publish(out, files)
    except OSError as exc:
        raise PublishError(
            f"cannot write the report to {out}: {exc.strerror or exc}",
            "the previous report, if any, is unchanged",
        ) from exc


def _publish(out: Path, files: Mapping[str, bytes]) -> Path:
    if out.exists():
        if not out.is_dir():
            raise PublishError(f"{out} exists and is not a folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in FILES)
        if foreign:
            raise PublishError(
                f"{out} holds files that are not a report ({', '.join(foreign[:3])}); "
                "pick an empty folder for --out"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    stage = out.parent / f".{out.name}.new-{token}"
    old = out.parent / f".{out.name}.old-{token}"
    stage.mkdir()
    try:
        for name, data in files.items():
            path = stage / name
            path.write_bytes(data)
            _fsync(path)
        _fsync(stage)
        if out.exists():
            out.rename(old)
        try:
            stage.rename(out)
        except OSError:
            if old.exists():
                old.rename(out)
            raise
        _fsync(out.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out
