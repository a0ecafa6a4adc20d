"""The nightly report, history snapshots and the recorded series: report, snapshot, history."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from auditor.analyze import analyze
from auditor.cli.common import App, F, format_option, policy_option, refresh_option, warn
from auditor.config import Config, load
from auditor.errors import EXIT_OK
from auditor.history import masked, open_history, parse_since, parse_time, series_table
from auditor.models import Finding, Summary
from auditor.report import table

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

DEFAULT_HISTORY = Path("reports") / "history.sqlite"


class Timestamp(click.ParamType[datetime]):
    """An ISO-8601 date or time; without an offset it is UTC."""

    name = "ISO-8601"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class HistoryLocation(click.ParamType[str]):
    """An SQLite file or a postgresql:// URL, kept as given (a path type would fold the URL's
    ``//``); completed in the shell as a file name."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not text:
            self.fail("give a file or a postgresql:// URL", param, ctx)
        return text

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(incomplete, type="file")]


HISTORY = HistoryLocation()


def history_option(f: F) -> F:
    return click.option(
        "--history", "history_path", type=HISTORY, default=str(DEFAULT_HISTORY),
        show_default=True, metavar="PATH|URL",
        help="History: an SQLite file (created if missing) or a postgresql://user@host/db URL "
        "(password from ~/.pgpass or PGPASSWORD).",
    )(f)  # fmt: skip


def at_option(f: F) -> F:
    return click.option(
        "--at", type=Timestamp(), metavar="ISO",
        help="Record the figures as collected at this time (backfills, tests). Default: now.",
    )(f)  # fmt: skip


def _collect(app: App, at: datetime | None, no_refresh: bool) -> Summary:
    summary = analyze(app.collect(refresh=not no_refresh))
    return replace(summary, collected_at=at) if at else summary


@click.command()
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
    help="Folder for the four files. Default: reports/YYYY-MM-DD (the collection date).",
)  # fmt: skip
@history_option
@policy_option
@at_option
@refresh_option
@click.pass_obj
def report(
    app: App,
    out: Path | None,
    history_path: str,
    policy_path: str | None,
    at: datetime | None,
    no_refresh: bool,
) -> int:
    """Write report.html, pools.csv, volumes.csv, findings.csv and summary.json (atomically)
    and record a history snapshot. Exit 1 if some items could not be read."""
    from auditor import nightly  # pandas and jinja2: only the report needs them

    config = load(policy_path)
    with open_history(history_path) as history:
        summary = _collect(app, at, no_refresh)
        folder = out or Path("reports") / summary.collected_at.astimezone().strftime("%Y-%m-%d")
        sources = tuple(u or "libvirt default URI" for u in app.uris)
        found = tuple(_findings(app, summary, config))
        page = nightly.report(summary, config, history, folder, sources, version("auditor"),
                              found)  # fmt: skip
    click.echo(f"report: {folder / 'report.html'}")
    problems = page.problems
    if problems:
        names = ", ".join(f"{s.pool.pool} on {s.pool.host} ({s.level})" for s in problems)
        click.echo(f"{len(problems)} over a threshold: {names}")
    else:
        click.echo("no pool over a threshold")
    return warn(summary)


def _findings(app: App, summary: Summary, config: Config) -> list[Finding]:
    """The audit's findings on the collected summary (qemu-img check, stat, the journal)."""
    from auditor.adapters import qemu_img
    from auditor.audit import Readers, audit, gather
    from auditor.journal import Journal

    readers = Readers(qemu_img.check_many, app.probes.fs)
    return audit(gather(summary, config, readers, Journal(app.state)))


@click.command()
@history_option
@at_option
@refresh_option
@click.pass_obj
def snapshot(app: App, history_path: str, at: datetime | None, no_refresh: bool) -> int:
    """Collect and record one history snapshot, without rendering a report."""
    with open_history(history_path) as history:
        summary = _collect(app, at, no_refresh)
        sid = history.record(summary, version("auditor"))
    click.echo(
        f"snapshot {sid}: {len(summary.pools)} pools, {len(summary.disks)} volumes "
        f"at {summary.collected_at.isoformat()} in {masked(history_path)}"
    )
    return warn(summary)


@click.command()
@click.option("--pool", "-p", metavar="NAME", help="Only this pool.")
@click.option("--host", metavar="NAME", help="Only this host.")
@click.option(
    "--since", metavar="WHEN",
    help="Only snapshots from then on: ISO-8601 date or time, or 12h, 7d, 4w ago.",
)  # fmt: skip
@format_option
@click.option(
    "--history", "history_path", type=HISTORY, default=str(DEFAULT_HISTORY), show_default=True,
    metavar="PATH|URL", help="History: an SQLite file or a postgresql:// URL.",
)  # fmt: skip
def history(
    pool: str | None, host: str | None, since: str | None, fmt: str, history_path: str
) -> int:
    """Print the recorded series: one row per pool and snapshot, oldest first."""
    try:
        start = parse_since(since, datetime.now(UTC)) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    with open_history(history_path, create=False) as db:
        rows, columns = series_table(db.series(pool=pool, since=start, host=host))
    if fmt == "json":
        click.echo(json.dumps({"history": masked(history_path), "pools": rows}, indent=2))
    elif fmt == "csv":
        from auditor.report.tables import to_csv

        click.echo(to_csv(rows, columns), nl=False)
    else:
        click.echo(table.render(rows, columns))
    return EXIT_OK


COMMANDS = [report, snapshot, history]
