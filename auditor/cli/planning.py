"""auditor plan: growth, days to full, the worst case and what-if, over the history."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import click

from auditor import planning
from auditor.cli.common import format_option, policy_option
from auditor.cli.reporting import DEFAULT_HISTORY, HISTORY
from auditor.config import Config, load
from auditor.errors import EXIT_OK, HistoryError, NotFound
from auditor.history import masked, open_history
from auditor.interfaces import HistoryStore, VolumePoint
from auditor.planning import PLAN_COLUMNS, Change, Planning, PoolPlan
from auditor.report import table
from auditor.report.tables import neutralise
from auditor.units import iec, ratio_text, signed

WHAT_IF_FIGURES = [
    ("provisioned", "provisioned"), ("overcommit ratio", "overcommit_ratio"),
    ("exposure", "exposure"), ("usable free", "available"), ("used space", "used_space"),
    ("every thin disk filled", "worst_used_space"), ("overflow if so", "worst_overflow"),
    ("over critical on", "crit_date"), ("days to critical", "days_to_crit"),
    ("full on", "full_date"), ("days to full", "days_to_full"),
    ("needed at the horizon", "needed_capacity"), ("worst case", "needed_capacity_worst"),
    ("to buy", "to_buy"), ("to buy, worst case", "to_buy_worst"),
]  # fmt: skip


def _span(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        return planning.parse_span(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _adds(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[Any]:
    try:
        return [planning.parse_add(v) for v in value]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _read(
    db: HistoryStore, window: timedelta, horizon: timedelta, host: str | None, config: Config
) -> Planning:
    """The plans of the window that ends at the newest snapshot (not at today)."""
    end = db.newest(host)
    if end is None:
        raise HistoryError("the history holds no snapshot" + (f" of {host}" if host else ""))
    series = db.series(since=end - window, until=end, host=host)
    return planning.plan(series, config, end=end, window=window, horizon=horizon)


def _only(p: Planning, pool: str | None) -> list[PoolPlan]:
    """The pool's plans and those of its shared-fs groups (every plan without a pool)."""
    if pool is None:
        return list(p.pools)
    found = [x for x in p.pools if x.newest.pool == pool or pool in x.newest.members]
    if not found:
        known = sorted({x.newest.pool for x in p.pools})
        raise NotFound(
            f"pool {pool!r} has no figures in the window", f"pools: {', '.join(known) or 'none'}"
        )
    return found


def _target(plans: list[PoolPlan], pool: str) -> PoolPlan:
    """The one libvirt pool a what-if changes."""
    mine = [p for p in plans if p.newest.pool == pool]
    if len(mine) > 1:
        hosts = ", ".join(p.newest.host for p in mine)
        raise click.UsageError(f"pool {pool!r} is on several hosts ({hosts}): pass --host")
    if not mine or mine[0].newest.type == "shared-fs":
        raise click.UsageError(f"{pool!r} is not a pool: a what-if changes one libvirt pool")
    return mine[0]


def _volumes(db: HistoryStore, p: PoolPlan) -> tuple[VolumePoint, ...]:
    """The volume points of the snapshot the pool's newest figures come from."""
    found = db.earlier([p.newest.host], p.at + timedelta(microseconds=1))
    if not found or found[0].collected_at != p.at:
        raise HistoryError(f"no snapshot of {p.newest.host} at {p.at.isoformat()}")
    return found[0].volumes


@click.command()
@click.option(
    "--history", "history_path", type=HISTORY, default=str(DEFAULT_HISTORY), show_default=True,
    metavar="PATH|URL", help="History: an SQLite file or a postgresql:// URL (the fleet's).",
)  # fmt: skip
@click.option(
    "--window", default="30d", show_default=True, metavar="SPAN", callback=_span,
    help="History used for the growth: 12h, 30d, 4w back from the newest snapshot.",
)  # fmt: skip
@click.option(
    "--horizon", default="90d", show_default=True, metavar="SPAN", callback=_span,
    help="How far ahead the capacity needed is worked out.",
)  # fmt: skip
@click.option("--pool", "-p", metavar="NAME", help="Only this pool (and its shared-fs group).")
@click.option("--host", metavar="NAME", help="Only this host.")
@policy_option
@format_option
@click.option(
    "--add", multiple=True, metavar="[COUNTx]SIZE", callback=_adds,
    help="What-if: new raw disks, e.g. 20x40G (repeatable; needs --pool).",
)  # fmt: skip
@click.option(
    "--thin/--preallocated", "thin", default=True, show_default=True,
    help="What-if: the new disks are sparse (0 bytes used) or preallocated (all used).",
)  # fmt: skip
@click.option("--remove", multiple=True, metavar="VOL", help="What-if: remove this volume.")
def plan(
    history_path: str,
    window: timedelta,
    horizon: timedelta,
    pool: str | None,
    host: str | None,
    policy_path: str | None,
    fmt: str,
    add: list[tuple[int, int]],
    thin: bool,
    remove: tuple[str, ...],
) -> int:
    """Growth per pool and shared-fs group (a robust fit over the window), when it reaches
    its critical threshold and capacity, the worst case and the capacity to buy; with --add
    or --remove, the figures after that change beside now."""
    config = load(policy_path)
    change = Change(tuple(add), not thin, remove)
    if (add or remove) and pool is None:
        raise click.UsageError("--add and --remove need --pool")
    with open_history(history_path, create=False) as db:
        whole = _read(db, window, horizon, host, config)
        plans = _only(whole, pool)
        if not (add or remove):
            _show(whole, plans, fmt, history_path)
            return EXIT_OK
        assert pool is not None
        target = _target(plans, pool)
        d = planning.delta(change, pool, _volumes(db, target))
    pairs = [
        (p, planning.what_if(p, d)) for p in planning.affected(whole, target.newest.host, pool)
    ]
    _show_what_if(whole, change, pairs, fmt, history_path)
    return EXIT_OK


# ---- output ----------------------------------------------------------------------------------


def _header(p: Planning) -> str:
    return (
        f"growth over {_days(p.window)} back from the newest snapshot "
        f"({p.end.isoformat(timespec='minutes')}); horizon {_days(p.horizon)} "
        f"(to {(p.end + p.horizon).date().isoformat()})"
    )


def _days(span: timedelta) -> str:
    n = span / timedelta(days=1)
    return f"{n:g} day{'' if n == 1 else 's'}"


def _when(date: str | None, n: float | None, status: str) -> str:
    if status == planning.NOT_ENOUGH:
        return ""
    if n is None:
        return "never at this rate"
    return "already" if n == 0 else f"{date or 'beyond 100 y'} ({n:g} d)"


def _human(r: dict[str, Any]) -> dict[str, Any]:
    """A plan row as the table shows it."""
    short = r["status"] == planning.NOT_ENOUGH
    worst = r["worst_overflow"]
    return {
        "host": r["host"],
        "pool": r["pool"] + (" (shared-fs)" if r["type"] == "shared-fs" else ""),
        "status": r["status"],
        "snapshots": r["snapshots"],
        "used space": f"{iec(r['used_space'])} of {iec(r['capacity'])}",
        "used/day": "" if short else signed(r["used_space_per_day"]),
        "provisioned/day": "" if short else signed(r["provisioned_per_day"]),
        "R²": "" if r["fit_r2"] is None else f"{r['fit_r2']:.2f}",
        f"over {r['used_crit']:g} %": _when(r["crit_date"], r["days_to_crit"], r["status"]),
        "full": _when(r["full_date"], r["days_to_full"], r["status"]),
        "thin disks filled": "" if worst is None else f"over by {iec(worst)}" if worst else "fits",
        "to buy (worst)": "" if short else f"{iec(r['to_buy'])} ({iec(r['to_buy_worst'])})",
    }


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Integer bytes, empty for unknown; text a spreadsheet would run is neutralised."""
    out = io.StringIO()
    w = csv.DictWriter(out, columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: neutralise(v) if isinstance(v, str) else v for k, v in r.items()})
    return out.getvalue()


def _show(whole: Planning, plans: list[PoolPlan], fmt: str, path: str) -> None:
    rows = [p.row() for p in plans]
    if fmt == "json":
        doc = {"history": masked(path)} | whole.as_dict() | {"pools": rows}
        click.echo(json.dumps(doc, indent=2))
    elif fmt == "csv":
        click.echo(_csv(rows, PLAN_COLUMNS), nl=False)
    else:
        click.echo(_header(whole))
        human = [_human(r) for r in rows]
        click.echo(table.render(human, list(human[0]) if human else ["pool"]))
        for r in rows:
            if r["note"]:
                click.echo(f"note: {r['pool']} on {r['host']}: {r['note']}")


def _change_text(change: Change) -> str:
    kind = "preallocated" if change.preallocated else "thin"
    parts = [f"add {n} x {iec(size)} {kind} raw" for n, size in change.add]
    if change.remove:
        parts.append("remove " + ", ".join(change.remove))
    return "; ".join(parts)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "overcommit_ratio":
        return ratio_text(value)
    if key in planning.BYTE_COLUMNS:
        return iec(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _diff(key: str, now: Any, after: Any) -> str:
    if now is None or after is None or isinstance(now, str):
        return ""
    if key in planning.BYTE_COLUMNS:
        return signed(after - now)
    return f"{after - now:+.2f}" if key == "overcommit_ratio" else f"{after - now:+g}"


def _show_what_if(
    whole: Planning, change: Change, pairs: list[tuple[PoolPlan, PoolPlan]], fmt: str, path: str
) -> None:
    rows = [(now.row(), after.row()) for now, after in pairs]
    flat: list[dict[str, Any]] = []
    for now_row, after_row in rows:
        flat += [{"scenario": "now"} | now_row, {"scenario": "after"} | after_row]
    if fmt == "json":
        doc = {"history": masked(path)} | whole.as_dict() | {"change": _change_doc(change)}
        click.echo(json.dumps(doc | {"pools": flat}, indent=2))
        return
    if fmt == "csv":
        click.echo(_csv(flat, ["scenario", *PLAN_COLUMNS]), nl=False)
        return
    click.echo(f"what-if: {_change_text(change)}\n{_header(whole)}")
    for now, after in rows:
        click.echo(f"\n{now['pool']} on {now['host']} ({now['type']}):")
        body = [
            {"figure": name, "now": _cell(k, now[k]), "after": _cell(k, after[k]),
             "change": _diff(k, now[k], after[k])}
            for name, k in WHAT_IF_FIGURES
        ]  # fmt: skip
        click.echo(table.render(body, ["figure", "now", "after", "change"]))


def _change_doc(change: Change) -> dict[str, Any]:
    return {
        "add": [{"count": n, "virtual_size": size} for n, size in change.add],
        "provisioning": "preallocated" if change.preallocated else "thin",
        "remove": list(change.remove),
    }


COMMANDS = [plan]
