"""``auditor status``: is each host fine? One screen (also ``auditor`` alone on a terminal)."""

from __future__ import annotations

import sys

import click

from auditor.analyze import analyze
from auditor.cli.common import App, colour_allowed, policy_option, refresh_option, terminal_width
from auditor.config import load
from auditor.errors import EXIT_OK, EXIT_PARTIAL
from auditor.report.status import Style, render


@click.command()
@policy_option
@refresh_option
@click.pass_obj
def status(app: App, policy_path: str | None, no_refresh: bool) -> int:
    """One screen per host: the verdict, a bar per pool of the space used and provisioned
    against its capacity, unmanaged disks and skipped items. Exit 1 if some items could not
    be read (as the other read commands)."""
    config = load(policy_path)
    summary = analyze(app.collect(refresh=not no_refresh))
    encoding = (sys.stdout.encoding or "").lower().replace("-", "")
    style = Style(colour=colour_allowed(), unicode=encoding == "utf8")
    click.echo(render(summary, config, style, terminal_width() or 100))
    return EXIT_PARTIAL if summary.skips else EXIT_OK


COMMANDS = [status]
