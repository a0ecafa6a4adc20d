"""Managed operations: ``auditor pool ...`` and ``auditor vol ...``.

Each mutating command plans (auditor.ops), prints the plan, and with ``--dry-run`` stops there;
otherwise it applies the plan and prints what it did with the figures before and after.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import click

from auditor import ops
from auditor.cli.common import App, emit, format_option, group, policy_option
from auditor.config import load
from auditor.journal import Journal, host_lock
from auditor.models import WIPE_ALGORITHMS, PoolDefinition, PoolOp, Progress
from auditor.ops import Change, Context, Outcome, Plan, Unit
from auditor.report.rows import SIZE_COLUMNS, pool_row, volume_row
from auditor.sizes import parse_resize, parse_size
from auditor.units import human, ratio_text

F = TypeVar("F", bound=Callable[..., Any])
POOL_LIST_COLUMNS = [
    "pool",
    "type",
    "state",
    "autostart",
    "persistent",
    "target",
    "capacity",
    "available",
    "volumes",
    "provisioned",
    "overcommit_ratio",
]


def dry_run_option(f: F) -> F:
    return click.option(
        "--dry-run", is_flag=True, help="Print exactly what would be done; change nothing."
    )(f)


def force_option(what: str) -> Callable[[F], F]:
    return click.option("--force", is_flag=True, help=what)


def yes_option(what: str) -> Callable[[F], F]:
    return click.option("--yes", "-y", is_flag=True, help=f"Confirm: {what}.")


# ---- plumbing ------------------------------------------------------------------------------


@contextmanager
def _context(
    app: App, policy_path: str | None = None, *, write: bool = True, act: bool = False
) -> Iterator[Context]:
    """A connection to the one host (read-write unless only reading), the policy, and what the
    audit sees now. ``act``: this run will change the host, so it holds the host's lock (from
    planning to the end) and journals what it does."""
    if len(app.targets) > 1:
        raise click.UsageError(
            "pool and vol commands act on one host: give one --connect (or a hosts file of one)"
        )
    target = app.targets[0]
    if write and app.read_only:
        raise click.UsageError("--read-only: this command needs a read-write connection")
    policy = load(policy_path)
    with ExitStack() as stack:
        host = stack.enter_context(app.open_host(target, write=write, read_only=app.read_only))
        journal = None
        if act:
            stack.enter_context(host_lock(app.state, host.identity(), host.uri, waiting=_waiting))
            journal = Journal(app.state)
        yield ops.context(host, app.probes, policy, journal)


def _waiting(holder: str) -> None:
    click.echo(f"auditor: waiting for another auditor run on this host ({holder})", err=True)


def _value(c: Change, v: ops.Value) -> str:
    if v is None:
        return "-"
    if c.figure.unit is Unit.BYTES and isinstance(v, int):
        return human(v)
    if isinstance(v, float):
        return ratio_text(v)
    return str(v)


def _figures(changes: tuple[Change, ...]) -> list[str]:
    if not changes:
        return []
    rows = [(str(c.figure), _value(c, c.before), _value(c, c.after)) for c in changes]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len("before"), *(len(r[1]) for r in rows))
    lines = [f"  {'':<{w0}}  {'before':<{w1}}    after"]
    lines += [f"  {a:<{w0}}  {b:<{w1}} -> {c}" for a, b, c in rows]
    return lines


def _show_plan(plan: Plan, *, figures: bool = True) -> None:
    click.echo(f"{plan.action} {plan.subject}: {plan.summary}")
    if plan.call:
        click.echo(f"  libvirt: {plan.call}")
    for line in _figures(plan.changes) if figures else []:
        click.echo(line)
    for note in plan.notes:
        click.echo(f"  note: {note}")
    if plan.confirm:
        click.echo(f"  destroys: {plan.confirm} (needs --yes)")


def _show_outcome(outcome: Outcome) -> None:
    if outcome.plan.request is not None:
        click.echo("done; measured:" if outcome.changes else "done.")
    for line in _figures(outcome.changes):
        click.echo(line)
    for note in outcome.notes:
        click.echo(f"  note: {note}")


@contextmanager
def _progress(total: int | None) -> Iterator[Progress | None]:
    """A progress bar on stderr, only when it is a terminal."""
    if not total or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, label="transfer", file=sys.stderr) as bar:
        yield bar.update


def _run(
    app: App,
    make: Callable[[Context], Plan],
    *,
    dry_run: bool,
    yes: bool = False,
    policy_path: str | None = None,
) -> None:
    """Plan, print; unless a dry run, apply and print the outcome."""
    with _context(app, policy_path, act=not dry_run) as ctx:
        plan = make(ctx)
        _show_plan(plan, figures=dry_run)
        if dry_run:
            click.echo("dry run: nothing changed")
            return
        with _progress(plan.transfer) as progress:
            outcome = ops.apply(plan, ctx, yes=yes, progress=progress)
        _show_outcome(outcome)


def _key_values(doc: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
        return
    width = max(len(k) for k in doc)
    for key, value in doc.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, int) and key in SIZE_KEYS:
            value = human(value)
        elif isinstance(value, float):
            value = ratio_text(value)
        elif value is None or value == "":
            value = "-"
        click.echo(f"{key:<{width}}  {value}")


SIZE_KEYS = SIZE_COLUMNS | {"pool_available"}


def _info_format(f: F) -> F:
    return click.option(
        "--format",
        "-f",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table: human sizes (IEC and bytes); json: integer bytes.",
    )(f)


# ---- pool ------------------------------------------------------------------------------------


@click.group(cls=group())
def pool() -> None:
    """Managed storage pools: list, inspect, define, build, start, stop, delete."""


@pool.command("list")
@format_option
@click.pass_obj
def pool_list(app: App, fmt: str) -> int:
    """One row per pool, active or not, with its overcommit ratio."""
    with _context(app, write=False) as ctx:
        summary = ctx.view.summary
        rows = [pool_row(s) for s in summary.pools if s.is_pool]
        return emit("pools", rows, POOL_LIST_COLUMNS, fmt, summary)


@pool.command("info")
@click.argument("name")
@_info_format
@policy_option
@click.pass_obj
def pool_info(app: App, name: str, fmt: str, policy_path: str | None) -> None:
    """Everything the audit knows about one pool, with its thresholds."""
    with _context(app, policy_path, write=False) as ctx:
        p = ctx.view.pool(name)
        s = ctx.view.figures(name)
        doc = pool_row(s) if s is not None else {"pool": name}
        limits = ctx.config.for_pool(name)
        doc |= {
            "target": p.target_path,
            "uuid": p.uuid,
            "overcommit_warn": limits.overcommit_warn,
            "overcommit_crit": limits.overcommit_crit,
        }
        _key_values(doc, fmt)


@pool.command("define")
@click.argument("name")
@click.option(
    "--type",
    "type_",
    type=click.Choice(ops.POOL_TYPES),
    required=True,
    help="dir: a folder; fs: a device mounted on the target; netfs: an NFS/CIFS "
    "export mounted on the target; logical: an LVM volume group.",
)
@click.option(
    "--target",
    required=True,
    metavar="PATH",
    help="The folder (dir), mount point (fs, netfs) or /dev/VG path (logical).",
)
@click.option(
    "--source-dev",
    "source_devs",
    multiple=True,
    metavar="DEVICE",
    help="fs: the device; logical: a physical volume (repeatable).",
)
@click.option("--source-host", metavar="HOST", help="netfs: the server.")
@click.option("--source-path", metavar="DIR", help="netfs: the exported folder.")
@click.option("--source-name", metavar="NAME", help="logical: the volume group name.")
@click.option(
    "--source-format",
    metavar="FORMAT",
    help="fs: ext4, xfs, auto...; netfs: nfs, cifs, auto; logical: lvm2.",
)
@dry_run_option
@click.pass_obj
def pool_define(
    app: App,
    name: str,
    type_: str,
    target: str,
    source_devs: tuple[str, ...],
    source_host: str | None,
    source_path: str | None,
    source_name: str | None,
    source_format: str | None,
    dry_run: bool,
) -> None:
    """Define a persistent pool (inactive: build and start it next)."""
    spec = PoolDefinition(
        name, type_, target, source_host, source_path, source_devs, source_name, source_format
    )
    _run(app, lambda ctx: ops.plan_pool_define(ctx, spec), dry_run=dry_run)


def _pool(app: App, name: str, op: PoolOp, dry_run: bool, *, yes: bool = False) -> None:
    _run(app, lambda ctx: ops.plan_pool(ctx, name, op), dry_run=dry_run, yes=yes)


@pool.command("build")
@click.argument("name")
@click.option(
    "--mkfs", is_flag=True, help="fs: also make the filesystem, only if the device holds none."
)
@dry_run_option
@click.pass_obj
def pool_build(app: App, name: str, mkfs: bool, dry_run: bool) -> None:
    """Create the pool's storage: the folder (dir), the mount point (fs, netfs), the volume
    group (logical, only on devices holding no data). Never overwrites data."""
    _run(app, lambda ctx: ops.plan_build(ctx, name, mkfs=mkfs), dry_run=dry_run)


@pool.command("start")
@click.argument("name")
@dry_run_option
@click.pass_obj
def pool_start(app: App, name: str, dry_run: bool) -> None:
    """Start (activate) the pool; its volumes become visible."""
    _pool(app, name, PoolOp.START, dry_run)


@pool.command("stop")
@click.argument("name")
@dry_run_option
@click.pass_obj
def pool_stop(app: App, name: str, dry_run: bool) -> None:
    """Stop the pool (libvirt's destroy): it becomes inactive and its data stays intact; no
    volume or file is removed."""
    _pool(app, name, PoolOp.STOP, dry_run)


@pool.command("refresh")
@click.argument("name")
@dry_run_option
@click.pass_obj
def pool_refresh(app: App, name: str, dry_run: bool) -> None:
    """Re-read the pool's volumes and figures."""
    _pool(app, name, PoolOp.REFRESH, dry_run)


@pool.command("autostart")
@click.argument("name")
@click.option("--disable", is_flag=True, help="Turn autostart off.")
@dry_run_option
@click.pass_obj
def pool_autostart(app: App, name: str, disable: bool, dry_run: bool) -> None:
    """Start the pool when libvirtd starts (--disable: do not)."""
    _run(app, lambda ctx: ops.plan_autostart(ctx, name, enabled=not disable), dry_run=dry_run)


@pool.command("delete")
@click.argument("name")
@yes_option("the pool's storage (its empty folder or mount point) is removed")
@dry_run_option
@click.pass_obj
def pool_delete(app: App, name: str, yes: bool, dry_run: bool) -> None:
    """Remove the pool's underlying storage. Refuses an active pool and a pool that still
    holds volumes; needs --yes."""
    _pool(app, name, PoolOp.DELETE, dry_run, yes=yes)


@pool.command("undefine")
@click.argument("name")
@dry_run_option
@click.pass_obj
def pool_undefine(app: App, name: str, dry_run: bool) -> None:
    """Make libvirt forget the (inactive) pool; its data stays intact."""
    _pool(app, name, PoolOp.UNDEFINE, dry_run)


# ---- vol -------------------------------------------------------------------------------------


@click.group(cls=group())
def vol() -> None:
    """Managed volumes: inspect, create, clone, resize, delete, upload, download, wipe,
    attach and detach, with the guards libvirt lacks."""


@vol.command("info")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@_info_format
@click.pass_obj
def vol_info(app: App, pool_name: str, name: str, fmt: str) -> None:
    """Everything the audit knows about one volume: sizes, provisioning, growth, backing
    chain, users."""
    with _context(app, write=False) as ctx:
        info = ops.volume_info(ctx, pool_name, name)
        doc = volume_row(info.report) | {
            "backing_chain": list(info.chain),
            "running_users": list(info.users.running),
            "defined_users": list(info.users.defined),
            "overlays": list(info.users.overlays),
            "pool_overcommit_ratio": info.pool.overcommit_ratio if info.pool else None,
            "pool_available": info.pool.usable_free if info.pool else None,
        }
        doc.pop("used_by")
        _key_values(doc, fmt)


@vol.command("create")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.argument("size")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(ops.VOLUME_FORMATS),
    help="Image format. Default: raw, or qcow2 with --backing.",
)
@click.option(
    "--thin/--preallocated",
    "thin",
    default=True,
    help="thin (default): raw sparse, qcow2 preallocation=off; preallocated: raw "
    "fallocated, qcow2 preallocation=falloc.",
)
@click.option("--backing", metavar="POOL/VOL", help="Make a qcow2 overlay over this volume.")
@force_option("Create even if the pool's overcommit ratio would exceed its critical threshold.")
@policy_option
@dry_run_option
@click.pass_obj
def vol_create(
    app: App,
    pool_name: str,
    name: str,
    size: str,
    fmt: str | None,
    thin: bool,
    backing: str | None,
    force: bool,
    policy_path: str | None,
    dry_run: bool,
) -> None:
    """Create a volume of SIZE (bytes, or K M G T = 1024-based, KB MB GB TB = 1000-based)."""
    capacity = parse_size(size)
    _run(
        app,
        lambda ctx: ops.plan_create(
            ctx,
            pool_name,
            name,
            capacity,
            fmt=fmt,
            preallocated=not thin,
            backing=backing,
            force=force,
        ),
        dry_run=dry_run,
        policy_path=policy_path,
    )


@vol.command("clone")
@click.argument("pool_name", metavar="POOL")
@click.argument("source", metavar="SRC")
@click.argument("name", metavar="NEW")
@click.option(
    "--thin/--preallocated",
    "thin",
    default=None,
    help="thin skips zero blocks; default: the source's provisioning.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(ops.VOLUME_FORMATS),
    help="Format of the clone (default: the source's; another one converts).",
)
@click.option(
    "--reflink",
    is_flag=True,
    help="Share the blocks (copy-on-write) instead of copying; raw only, needs a "
    "filesystem that can (btrfs, xfs with reflink=1).",
)
@force_option("Clone even if the pool's overcommit ratio would exceed its critical threshold.")
@policy_option
@dry_run_option
@click.pass_obj
def vol_clone(
    app: App,
    pool_name: str,
    source: str,
    name: str,
    thin: bool | None,
    fmt: str | None,
    reflink: bool,
    force: bool,
    policy_path: str | None,
    dry_run: bool,
) -> None:
    """Copy volume SRC to a new volume NEW in the same pool."""
    prealloc = None if thin is None else not thin
    _run(
        app,
        lambda ctx: ops.plan_clone(
            ctx,
            pool_name,
            source,
            name,
            preallocated=prealloc,
            fmt=fmt,
            reflink=reflink,
            force=force,
        ),
        dry_run=dry_run,
        policy_path=policy_path,
    )


@vol.command("resize", context_settings={"ignore_unknown_options": True})
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.argument("size", metavar="SIZE|+DELTA")
@click.option("--allocate", is_flag=True, help="Also allocate the new space (raw, offline only).")
@click.option("--shrink", is_flag=True, help="Allow a smaller size (data beyond it is lost).")
@yes_option("shrinking loses the data beyond the new size")
@force_option("Grow even if the pool's overcommit ratio would exceed its critical threshold.")
@policy_option
@dry_run_option
@click.pass_obj
def vol_resize(
    app: App,
    pool_name: str,
    name: str,
    size: str,
    allocate: bool,
    shrink: bool,
    yes: bool,
    force: bool,
    policy_path: str | None,
    dry_run: bool,
) -> None:
    """Set a volume's virtual size to SIZE, or grow it by +DELTA (shrink by -DELTA). A disk of
    a running domain grows live through the domain (block resize), never offline."""
    new = parse_resize(size)
    _run(
        app,
        lambda ctx: ops.plan_resize(
            ctx, pool_name, name, new, allocate=allocate, shrink=shrink, force=force
        ),
        dry_run=dry_run,
        yes=yes,
        policy_path=policy_path,
    )


@vol.command("delete")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@yes_option("the volume and its data are deleted")
@force_option("Delete even if a defined (not running) domain or an overlay uses it.")
@dry_run_option
@click.pass_obj
def vol_delete(app: App, pool_name: str, name: str, yes: bool, force: bool, dry_run: bool) -> None:
    """Delete a volume. Refuses one a running domain uses (--force cannot override that)."""
    _run(
        app,
        lambda ctx: ops.plan_delete(ctx, pool_name, name, force=force),
        dry_run=dry_run,
        yes=yes,
    )


@vol.command("upload")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@force_option("Upload even if the pool's overcommit ratio would exceed its critical threshold.")
@policy_option
@dry_run_option
@click.pass_obj
def vol_upload(
    app: App,
    pool_name: str,
    name: str,
    file: str,
    force: bool,
    policy_path: str | None,
    dry_run: bool,
) -> None:
    """Create volume NAME from FILE, sent as a sparse stream (holes stay holes)."""
    _run(
        app,
        lambda ctx: ops.plan_upload(ctx, pool_name, name, file, force=force),
        dry_run=dry_run,
        policy_path=policy_path,
    )


@vol.command("download")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace FILE if it exists (with --yes).")
@yes_option("FILE's current content is replaced")
@dry_run_option
@click.pass_obj
def vol_download(
    app: App, pool_name: str, name: str, file: str, overwrite: bool, yes: bool, dry_run: bool
) -> None:
    """Copy a volume's content into FILE (mode 0600) as a sparse stream (holes stay holes)."""
    _run(
        app,
        lambda ctx: ops.plan_download(ctx, pool_name, name, file, overwrite=overwrite),
        dry_run=dry_run,
        yes=yes,
    )


@vol.command("wipe")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.option(
    "--algorithm",
    type=click.Choice(WIPE_ALGORITHMS),
    default="zero",
    show_default=True,
    help="zero writes zeros; the others need the scrub program.",
)
@click.option(
    "--destroy-format",
    is_flag=True,
    help="Allow wiping a qcow2 (or other image with a header): the volume becomes "
    "raw and its virtual disk is gone.",
)
@yes_option("all data of the volume is overwritten")
@force_option("Wipe even if a defined (not running) domain or an overlay uses it.")
@dry_run_option
@click.pass_obj
def vol_wipe(
    app: App,
    pool_name: str,
    name: str,
    algorithm: str,
    destroy_format: bool,
    yes: bool,
    force: bool,
    dry_run: bool,
) -> None:
    """Overwrite a volume's content; the volume stays. Refuses one a running domain uses."""
    _run(
        app,
        lambda ctx: ops.plan_wipe(
            ctx, pool_name, name, algorithm=algorithm, destroy_format=destroy_format, force=force
        ),
        dry_run=dry_run,
        yes=yes,
    )


def _affect_options(f: F) -> F:
    """virsh's --live, --config and --persistent (the running guest and, if it runs, its
    definition); none: the running guest if it runs, else its definition."""
    for name, text in (
        ("--persistent", "Change the definition, and the running guest if it runs."),
        ("--config", "Change the persistent definition (next boot)."),
        ("--live", "Change the running guest."),
    ):
        f = click.option(name, is_flag=True, help=text)(f)
    return f


@vol.command("attach")
@click.argument("domain")
@click.argument("volume", metavar="POOL/NAME")
@click.option("--target", metavar="DEV", help="Device name in the guest (default: next free vdX).")
@_affect_options
@dry_run_option
@click.pass_obj
def vol_attach(
    app: App,
    domain: str,
    volume: str,
    target: str | None,
    live: bool,
    config: bool,
    persistent: bool,
    dry_run: bool,
) -> None:
    """Attach a volume to DOMAIN by pool and volume name (<disk type='volume'>). Without
    --live/--config: the running guest if it runs, else its definition."""
    _run(
        app,
        lambda ctx: ops.plan_attach(
            ctx, domain, volume, target=target, live=live, config=config, persistent=persistent
        ),
        dry_run=dry_run,
    )


@vol.command("detach")
@click.argument("domain")
@click.argument("volume", metavar="POOL/NAME")
@_affect_options
@dry_run_option
@click.pass_obj
def vol_detach(
    app: App,
    domain: str,
    volume: str,
    live: bool,
    config: bool,
    persistent: bool,
    dry_run: bool,
) -> None:
    """Detach the disk that is volume POOL/NAME from DOMAIN; the volume stays."""
    _run(
        app,
        lambda ctx: ops.plan_detach(
            ctx, domain, volume, live=live, config=config, persistent=persistent
        ),
        dry_run=dry_run,
    )


COMMANDS = [pool, vol]
