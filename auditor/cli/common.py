"""What every command shares: the composition root (adapters), options and output."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from auditor.adapters import localfs, qemu_img
from auditor.adapters.libvirt import LibvirtHost
from auditor.collect import Probes
from auditor.config import DEFAULT_POLICY
from auditor.errors import EXIT_OK, EXIT_PARTIAL
from auditor.journal import DEFAULT_STATE
from auditor.models import Summary
from auditor.report import table
from auditor.report.rows import SKIP_COLUMNS, skip_row

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "csv", "json")


@dataclass
class App:
    """The composition root: the only place adapters are built."""

    uris: list[str | None]
    debug: bool = False
    read_only: bool = False
    state: str = DEFAULT_STATE  # the journal and the per-host locks

    def connect(self, uri: str | None) -> LibvirtHost:
        """A connection for reading: read-write if allowed (to refresh pools), else read-only."""
        return LibvirtHost.connect(uri, read_only=self.read_only)

    @property
    def probes(self) -> Probes:
        return Probes(images=qemu_img.info_many, fs=localfs)

    @property
    def hostname(self) -> str:
        return socket.gethostname()


def group() -> type[click.Group]:
    """A click group that lists commands in the order they were added."""

    class Ordered(click.Group):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return list(self.commands)

    return Ordered


def format_option(f: F) -> F:
    return click.option(
        "--format", "-f", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
        help="table: human sizes (IEC); csv and json: integer bytes.",
    )(f)  # fmt: skip


def refresh_option(f: F) -> F:
    return click.option(
        "--no-refresh", "no_refresh", is_flag=True,
        help="Do not refresh active pools first (faster; figures as of libvirt's last refresh).",
    )(f)  # fmt: skip


def policy_option(f: F) -> F:
    return click.option(
        "--policy", "policy_path", type=click.Path(dir_okay=False), metavar="FILE",
        envvar="AUDITOR_POLICY", show_envvar=True,
        help="TOML policy file: [thresholds] and per-pool [pools.\"NAME\"] tables. "
        f"Default: {DEFAULT_POLICY} if it exists.",
    )(f)  # fmt: skip


def emit(
    key: str, rows: list[dict[str, Any]], columns: list[str], fmt: str, summary: Summary
) -> int:
    """Print rows in the chosen format, skips on stderr (and in table/json output); exit code."""
    skips = [skip_row(s) for s in summary.skips]
    if fmt == "json":
        doc = {
            "collected_at": summary.collected_at.isoformat(),
            "hosts": list(summary.hosts),
            key: rows,
            "skipped": skips,
            "notices": list(summary.notices),
        }
        click.echo(json.dumps(doc, indent=2))
    elif fmt == "csv":
        from auditor.report.tables import to_csv

        click.echo(to_csv(rows, columns), nl=False)
    else:
        click.echo(table.render(rows, columns))
        if skips:
            click.echo(f"\nSkipped ({len(skips)}):")
            click.echo(table.render(skips, SKIP_COLUMNS))
    return warn(summary)


def warn(summary: Summary) -> int:
    """Notices and skipped items on stderr; the exit code they imply."""
    for notice in summary.notices:
        click.echo(f"auditor: note: {notice}", err=True)
    for s in summary.skips:
        click.echo(f"auditor: skipped {s.kind} {s.name} on {s.host}: {s.reason}", err=True)
    return EXIT_PARTIAL if summary.skips else EXIT_OK
