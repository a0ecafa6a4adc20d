"""``auditor audit``: findings against the policy, and ``--fix`` to repair what is safe."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import click

from auditor import fix as fixes
from auditor.adapters import fixer, qemu_img
from auditor.analyze import analyze
from auditor.audit import Readers, audit, gather
from auditor.cli.common import FORMATS, App, policy_option, warn
from auditor.config import Config, load
from auditor.errors import EXIT_OK, EXIT_PARTIAL
from auditor.journal import Journal, host_lock
from auditor.models import Finding, Severity, Summary, Target
from auditor.ops import Context, View
from auditor.report import table
from auditor.report.rows import FINDING_COLUMNS, finding_doc, finding_row
from auditor.rules import Facts, codes


def _facts(app: App, config: Config, journal: Journal) -> tuple[Summary, Facts]:
    summary = analyze(app.collect(refresh=False))
    return summary, gather(summary, config, Readers(qemu_img.check_many, app.probes.fs), journal)


def _show(findings: list[Finding], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps({"findings": [finding_doc(f) for f in findings]}, indent=2))
    elif fmt == "csv":
        from auditor.report.tables import to_csv

        click.echo(to_csv([finding_row(f) for f in findings], FINDING_COLUMNS), nl=False)
    else:
        click.echo(table.render([finding_row(f) for f in findings], FINDING_COLUMNS))
        click.echo(f"{len(findings)} finding(s)")


def _fix_host(app: App, host_name: str, summary: Summary, facts: Facts, opts: dict[str, Any],
              findings: list[Finding]) -> tuple[int, int, int]:  # fmt: skip
    """Plan (and unless a dry run, apply) the fixes of one host: (fixed, held, not fixed)."""
    uri = next(h.uri for h in summary.inventory.hosts if h.host == host_name)
    journal = Journal(app.state)
    with ExitStack() as stack:
        host = stack.enter_context(app.open_host(Target(uri, host_name), write=True))
        if not opts["dry_run"]:
            stack.enter_context(host_lock(app.state, host.identity(), host.uri))
        ctx = Context(host, app.probes, facts.config, View(summary, host_name), journal)
        still = {r.id for r in journal.incomplete()}  # with the lock: none finishes meanwhile
        findings = [f for f in findings if f.code != "AUD801" or f.figure("journal_id") in still]
        made = {k: tuple(dict(p) for p in v) for k, v in facts.made.items()}
        plans = fixes.resolve(findings, ctx, fixer, made, unsafe=opts["unsafe"],
                              force=opts["force"])  # fmt: skip
        for item in plans:
            _say(item)
        if opts["dry_run"]:
            return 0, sum(isinstance(i, fixes.NotFixed) and i.held for i in plans), 0
        done = fixes.apply_fixes(plans, ctx, fixer)
    for d in done:
        click.echo(f"  {'fixed' if d.ok else 'FAILED'}: {d.item.finding.code} {d.message}")
    held = sum(isinstance(i, fixes.NotFixed) and i.held for i in plans)
    return sum(d.ok for d in done), held, sum(not d.ok for d in done)


def _say(item: fixes.Resolution) -> None:
    f = item.finding
    if isinstance(item, fixes.Resolved):
        click.echo(f"fix {f.code} {f.pool or f.volume}: {item.summary}")
        for step in item.steps:
            click.echo(f"  run: {step}")
    else:
        word = "held back" if item.held else "not fixed"
        click.echo(f"{word} {f.code} {f.pool or f.volume}: {item.reason}")


@click.command("audit")
@click.option("--pool", "-p", "pools", multiple=True, metavar="NAME", help="Only these pools.")
@click.option("--select", metavar="CODES", help="Only these codes (AUD101,AUD2 ...).")
@click.option("--ignore", metavar="CODES", help="Not these codes.")
@click.option("--fix", "do_fix", is_flag=True, help="Apply the safe fixes.")
@click.option("--unsafe-fixes", "unsafe", is_flag=True,
              help="Also the fixes that move data (preallocate, sparsify).")  # fmt: skip
@click.option("--force", is_flag=True, help="Fix volumes of defined (not running) domains too.")
@click.option("--dry-run", is_flag=True, help="Print the fixes' plans; change nothing.")
@click.option("--fail-on", type=click.Choice(["warn", "crit"]), default="warn",
              show_default=True, help="Exit 1 while findings this bad remain.")  # fmt: skip
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default="table",
              show_default=True)  # fmt: skip
@policy_option
@click.pass_obj
def audit_command(app: App, pools: tuple[str, ...], select: str | None, ignore: str | None,
                  do_fix: bool, unsafe: bool, force: bool, dry_run: bool, fail_on: str,
                  fmt: str, policy_path: str | None) -> int:  # fmt: skip
    """Findings against the policy, worst first; --fix repairs what is safe to repair. Exit 0
    when nothing at or above --fail-on remains, 1 when findings remain, 2 on errors."""
    config = load(policy_path)
    journal = Journal(app.state)
    chosen = {"select": codes(select), "ignore": codes(ignore), "pools": pools}
    summary, facts = _facts(app, config, journal)
    findings = audit(facts, **chosen)
    if do_fix or unsafe or dry_run:
        opts = {"dry_run": dry_run, "unsafe": unsafe, "force": force}
        totals = [0, 0, 0]
        for host_name in sorted({f.host for f in findings if f.fix is not None}):
            for i, n in enumerate(_fix_host(app, host_name, summary, facts, opts, findings)):
                totals[i] += n
        click.echo(f"fixed {totals[0]}, held back {totals[1]} unsafe fix(es), failed {totals[2]}")
        if not dry_run:
            summary, facts = _facts(app, config, journal)
            findings = audit(facts, **chosen)
    _show(findings, fmt)
    worst = Severity.CRIT if fail_on == "crit" else Severity.WARN
    remain = any(f.severity.rank <= worst.rank for f in findings)
    return max(EXIT_PARTIAL if remain else EXIT_OK, warn(summary))


COMMANDS = [audit_command]
