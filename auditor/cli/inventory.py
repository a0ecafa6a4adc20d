"""Read-only commands: volumes, pools, scan."""

from __future__ import annotations

import click

from auditor.analyze import analyze, require_pool
from auditor.cli.common import App, emit, format_option, refresh_option
from auditor.collect import collect, collect_files
from auditor.report.rows import POOL_COLUMNS, VOLUME_COLUMNS, pool_rows, volume_rows


@click.command()
@click.option("--pool", "-p", metavar="NAME", help="Only the volumes of this pool.")
@format_option
@refresh_option
@click.pass_obj
def volumes(app: App, pool: str | None, fmt: str, no_refresh: bool) -> int:
    """One row per disk: managed volumes and unmanaged domain disks."""
    summary = analyze(collect(app.uris, app.connect, app.probes, refresh=not no_refresh))
    require_pool(summary, pool)
    return emit("volumes", volume_rows(summary, pool), VOLUME_COLUMNS, fmt, summary)


@click.command()
@format_option
@refresh_option
@click.pass_obj
def pools(app: App, fmt: str, no_refresh: bool) -> int:
    """One row per pool, per group of pools sharing a filesystem, and per filesystem
    holding unmanaged disks."""
    summary = analyze(collect(app.uris, app.connect, app.probes, refresh=not no_refresh))
    return emit("pools", pool_rows(summary), POOL_COLUMNS, fmt, summary)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@format_option
@click.pass_obj
def scan(app: App, paths: tuple[str, ...], fmt: str) -> int:
    """Image files and folders (recursively) through qemu-img only; no libvirt needed."""
    summary = analyze(collect_files(list(paths), app.probes, app.hostname))
    return emit("volumes", volume_rows(summary), VOLUME_COLUMNS, fmt, summary)


COMMANDS = [volumes, pools, scan]
