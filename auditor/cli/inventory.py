"""Read-only commands: volumes, pools, scan."""

from __future__ import annotations

from typing import Any

import click

from auditor.analyze import analyze, require_pool
from auditor.cli.common import (
    POOL,
    App,
    View,
    emit,
    format_option,
    policy_option,
    refresh_option,
    view_options,
)
from auditor.collect import collect_files
from auditor.config import load
from auditor.models import Summary
from auditor.report.rows import POOL_COLUMNS, VOLUME_COLUMNS, pool_rows, volume_rows
from auditor.thresholds import assess

# What the table shows unless --columns or --wide: a reading, not every figure. The host
# joins them when several hosts are read; a pool's note when some pool has one.
VOLUME_DEFAULT = [
    "pool", "volume", "format", "provisioning", "virtual_size", "disk_size", "used_by", "note",
]  # fmt: skip
POOL_EXTRA = ["used_percent", "level"]  # table only: not in CSV or JSON
POOL_DEFAULT = [
    "pool", "type", "state", "capacity", "used_percent", "available", "provisioned",
    "overcommit_ratio", "exposure", "level",
]  # fmt: skip


def _defaults(default: list[str], summary: Summary, rows: list[dict[str, Any]]) -> list[str]:
    shown = (["host"] if len(summary.hosts) > 1 else []) + default
    if "note" not in shown and any(r.get("note") for r in rows):
        shown.append("note")
    return shown


@click.command()
@click.option("--pool", "-p", metavar="NAME", type=POOL, help="Only the volumes of this pool.")
@format_option
@refresh_option
@view_options(VOLUME_COLUMNS)
@click.pass_obj
def volumes(app: App, pool: str | None, fmt: str, no_refresh: bool, view: View) -> int:
    """One row per disk: managed volumes and unmanaged domain disks."""
    summary = analyze(app.collect(refresh=not no_refresh))
    require_pool(summary, pool)
    rows = volume_rows(summary, pool)
    shown = _defaults(VOLUME_DEFAULT, summary, rows)
    return emit("volumes", rows, VOLUME_COLUMNS, fmt, summary, view=view, shown=shown)


@click.command()
@format_option
@refresh_option
@policy_option
@view_options([*POOL_COLUMNS, *POOL_EXTRA])
@click.pass_obj
def pools(app: App, fmt: str, no_refresh: bool, policy_path: str | None, view: View) -> int:
    """One row per pool, per group of pools sharing a filesystem, and per filesystem
    holding unmanaged disks."""
    config = load(policy_path)
    summary = analyze(app.collect(refresh=not no_refresh))
    rows = pool_rows(summary)
    judged = [assess(p, config.for_pool(p.pool, p.host)) for p in summary.pools]
    extra = [{"used_percent": a.used_percent, "level": a.level.value} for a in judged]
    shown = _defaults(POOL_DEFAULT, summary, rows)
    return emit("pools", rows, POOL_COLUMNS, fmt, summary, view=view, shown=shown, extra=extra)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@format_option
@view_options(VOLUME_COLUMNS)
@click.pass_obj
def scan(app: App, paths: tuple[str, ...], fmt: str, view: View) -> int:
    """Image files and folders (recursively) through qemu-img only; no libvirt needed."""
    summary = analyze(collect_files(list(paths), app.probes, app.hostname))
    rows = volume_rows(summary)
    shown = ["path", "format", "provisioning", "virtual_size", "disk_size", "backing_file", "note"]
    return emit("volumes", rows, VOLUME_COLUMNS, fmt, summary, view=view, shown=shown)


COMMANDS = [volumes, pools, scan]
