"""``auditor journal``: what auditor changed, and what it started but never finished."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime

import click

from auditor.cli.common import App, format_option
from auditor.errors import EXIT_OK, EXIT_PARTIAL
from auditor.history import parse_since
from auditor.journal import Journal, Record
from auditor.report import table

COLUMNS = ["time", "host", "action", "subject", "phase", "outcome", "detail"]


def _row(r: Record, open_ids: set[str]) -> dict[str, str]:
    if r.phase == "intent":
        detail = ("NOT FINISHED; may have left: " if r.id in open_ids else "") + ", ".join(
            r.leftovers
        )
    elif r.phase == "made":
        detail = ", ".join(f"{k} {v}" for k, v in r.made.items() if v is not None)
    else:
        detail = r.message
    return {
        "time": r.time, "host": r.host, "action": r.action, "subject": r.subject,
        "phase": r.phase, "outcome": r.outcome, "detail": detail,
    }  # fmt: skip


@click.command("journal")
@click.option(
    "--since", metavar="WHEN",
    help="Only records from then on: ISO-8601 date or time, or 12h, 7d, 4w ago.",
)  # fmt: skip
@format_option
@click.pass_obj
def journal(app: App, since: str | None, fmt: str) -> int:
    """Print the journal of changes: an intent before each action, an outcome after. Exit 1
    if an action never finished (killed: see what it may have left)."""
    try:
        start = parse_since(since, datetime.now(UTC)) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    store = Journal(app.state)
    records = store.records(start)
    open_ids = {r.id for r in store.incomplete()}
    if fmt == "json":
        doc = {"journal": str(store.path), "records": [asdict(r) for r in records],
               "incomplete": sorted(open_ids)}  # fmt: skip
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        rows = [_row(r, open_ids) for r in records]
        if fmt == "csv":
            from auditor.report.tables import to_csv

            click.echo(to_csv(rows, COLUMNS), nl=False)
        else:
            click.echo(table.render(rows, COLUMNS))
    return EXIT_PARTIAL if open_ids else EXIT_OK


COMMANDS = [journal]
