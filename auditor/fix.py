"""Findings → fix plans (resolved, held back, skipped) → apply, through the ops guards.

Safe fixes move no data (refresh or start a pool, turn autostart on, repair qcow2 leaks,
remove what the journal proves an interrupted run left). Unsafe ones (``unsafe=True``:
preallocate, sparsify) move data: a raw file in place in ways that keep every byte, a qcow2
through a verified copy renamed over it. Each is planned first; a guard's refusal is a skip
with its reason, never a stop; a failed fix is reported and the run goes on.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace

from auditor.errors import AuditorError, NotFound, OperationError, PolicyError
from auditor.interfaces import ImageFixer
from auditor.journal import Record, journalled, now
from auditor.models import (
    DiskReport,
    Finding,
    FixKind,
    ImageFix,
    PoolAction,
    PoolOp,
    RemoveMade,
)
from auditor.ops import Action, Context, Plan, apply, plan_autostart, plan_pool, remeasured
from auditor.ops.guards import check_free_space, check_in_use
from auditor.thresholds import used_percent


@dataclass(frozen=True)
class Resolved:
    """A fix ready to run: a libvirt operation, or a fix made on this machine."""

    finding: Finding
    summary: str
    steps: tuple[str, ...]  # the calls or commands, exactly as they will run
    plans: tuple[Plan, ...] = ()
    image: ImageFix | None = None
    report: DiskReport | None = None  # the volume an image fix changes
    force: bool = False


@dataclass(frozen=True)
class NotFixed:
    finding: Finding
    reason: str
    held: bool = False  # an unsafe fix held back (without --unsafe-fixes)


@dataclass(frozen=True)
class Done:
    item: Resolved
    ok: bool
    message: str


Resolution = Resolved | NotFixed


def resolve(
    findings: Iterable[Finding],
    ctx: Context,
    fixer: ImageFixer,
    made: dict[str, tuple[dict[str, object], ...]],
    *,
    unsafe: bool = False,
    force: bool = False,
) -> list[Resolution]:
    """A plan for every finding of ``ctx``'s host that has a fix."""
    out: list[Resolution] = []
    for f in findings:
        if f.fix is None or f.host != ctx.view.host:
            continue
        if not f.fix.safe and not unsafe:
            out.append(NotFixed(f, f"{f.fix}: moves data, needs --unsafe-fixes", held=True))
            continue
        try:
            out.append(_resolve(f, ctx, fixer, made, force))
        except AuditorError as exc:
            out.append(NotFixed(f, str(exc)))
    return out


def _resolve(
    f: Finding,
    ctx: Context,
    fixer: ImageFixer,
    made: dict[str, tuple[dict[str, object], ...]],
    force: bool,
) -> Resolved:
    match f.fix:
        case FixKind.REFRESH_POOL:
            return _from_plan(f, plan_pool(ctx, f.pool, PoolOp.REFRESH))
        case FixKind.START_POOL:
            return _from_plan(f, plan_pool(ctx, f.pool, PoolOp.START))
        case FixKind.AUTOSTART_POOL:
            return _from_plan(f, plan_autostart(ctx, f.pool, enabled=True))
        case FixKind.REMOVE_LEFTOVER:
            return _leftover(f, ctx, fixer, made.get(str(f.figure("journal_id")), ()))
        case FixKind.REPAIR_LEAKS:
            r = _volume(ctx, f)
            check_in_use(ctx.view, r, "repair", force=False, defined_too=False)
            image = ImageFix(FixKind.REPAIR_LEAKS, r.disk.path, "qcow2")
            return Resolved(f, f"repair the leaks of {_name(r)}", fixer.steps(image),
                            image=image, report=r)  # fmt: skip
    return _move_data(f, ctx, fixer, force)


def _from_plan(f: Finding, plan: Plan) -> Resolved:
    if plan.request is None:
        raise OperationError(plan.summary)
    return Resolved(f, plan.summary, tuple(map(str, plan.calls)), plans=(plan,))


def _name(r: DiskReport) -> str:
    return f"{r.disk.pool}/{r.disk.name}" if r.disk.pool else r.disk.path


def _volume(ctx: Context, f: Finding) -> DiskReport:
    if f.pool:
        return ctx.view.volume(f.pool, f.volume)
    for r in ctx.view.summary.disks:
        if r.disk.host == f.host and r.disk.path == f.volume:
            return r
    raise NotFound(f"{f.volume} is no longer there")


def _inode(value: object) -> tuple[int, int] | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _leftover(
    f: Finding, ctx: Context, fixer: ImageFixer, proofs: tuple[dict[str, object], ...]
) -> Resolved:
    """Remove what the journal's ``made`` records prove the run created, nothing else."""
    plans: list[Plan] = []
    steps: list[str] = []
    image = None
    for p in proofs:
        inode = _inode(p.get("inode"))
        if "volume" in p:
            pool, _, name = str(p["volume"]).partition("/")
            req = RemoveMade(pool, name, str(p["key"]), str(p["path"]), inode)
            plan = Plan(Action.VOL_DELETE, f"{pool}/{name}", f"delete the volume {pool}/{name} "
                        "the interrupted run made", req, ctx.calls(req), pool=pool)  # fmt: skip
            plans.append(plan)
            steps += map(str, plan.calls)
        elif "file" in p:
            image = ImageFix(FixKind.REMOVE_LEFTOVER, str(p["file"]), "", inode=inode)
            steps += fixer.steps(image)
    if not plans and image is None:
        raise OperationError("the journal records nothing this run made")
    return Resolved(f, f"remove what the unfinished {f.message.split(',')[0]} left",
                    tuple(steps), plans=tuple(plans), image=image)  # fmt: skip


def _move_data(f: Finding, ctx: Context, fixer: ImageFixer, force: bool) -> Resolved:
    """Preallocate or sparsify a volume: guards first (in use, free space, thresholds)."""
    r = _volume(ctx, f)
    kind = f.fix or FixKind.PREALLOCATE
    check_in_use(ctx.view, r, str(kind).split()[0], force=force, defined_too=True)
    fmt = r.disk.format or "raw"
    if fmt not in ("raw", "qcow2"):
        raise PolicyError(f"{_name(r)} is {fmt}: only raw and qcow2 volumes can be converted")
    copy = ""
    if fmt == "qcow2":
        _convertible(ctx, r)
        folder, base = os.path.split(r.disk.path)
        copy = os.path.join(folder, f".{base}.auditor-fix-{secrets.token_hex(4)}")
    image = ImageFix(kind, r.disk.path, fmt, r.disk.virtual_size or 0, copy)
    need = fixer.need(image)
    check_free_space(ctx.view, r.disk.pool or "", need, f"{kind} of {_name(r)}")
    _thresholds_hold(ctx, r, need if kind is FixKind.PREALLOCATE else 0)
    return Resolved(f, f"{kind} {_name(r)} (needs {need} B free while it runs)",
                    fixer.steps(image), image=image, report=r, force=force)  # fmt: skip


def _convertible(ctx: Context, r: DiskReport) -> None:
    """A qcow2 copy keeps the guest's bytes but not a backing link or internal snapshots."""
    if r.disk.backing_file:
        raise PolicyError(f"{_name(r)} has a backing image: a copy would not keep the link")
    for _, info in ctx.probes.images([(r.disk.path, "qcow2")]):
        if isinstance(info, AuditorError):
            raise info
        if info.snapshots or info.encrypted:
            raise PolicyError(f"{_name(r)} has internal snapshots or encryption: not converted")


def _thresholds_hold(ctx: Context, r: DiskReport, added: int) -> None:
    """Refuse a fix that would take its pool to used_crit or beyond."""
    s = ctx.view.figures(r.disk.pool or "")
    if s is None or not added or s.usable_free is None or not s.capacity:
        return
    after = used_percent(replace(s, usable_free=s.usable_free - added))
    crit = ctx.config.for_pool(s.pool, s.host).used_crit
    if after is not None and after >= crit:
        raise PolicyError(
            f"pool {s.pool} would be {after:.1f}% used afterwards, at or above used_crit {crit:g}"
        )


def apply_fixes(items: Iterable[Resolution], ctx: Context, fixer: ImageFixer) -> list[Done]:
    """Run every resolved fix in turn; a failure is reported and the next one runs. A signal
    stops the run (the fix in progress cleans up after itself)."""
    out: list[Done] = []
    for item in items:
        if not isinstance(item, Resolved):
            continue
        try:
            message = _apply(item, ctx, fixer)
            out.append(Done(item, True, message))
        except AuditorError as exc:
            out.append(Done(item, False, str(exc)))
    return out


def _apply(item: Resolved, ctx: Context, fixer: ImageFixer) -> str:
    for plan in item.plans:
        apply(plan, ctx, yes=True)
    if item.image is not None:
        _apply_image(item, item.image, ctx, fixer)
    if item.finding.fix is FixKind.REMOVE_LEFTOVER and item.image is not None and item.finding.pool:
        ctx.host.execute(PoolAction(item.finding.pool, PoolOp.REFRESH))  # forget the file
    if item.finding.fix is FixKind.REMOVE_LEFTOVER and ctx.journal is not None:
        f = item.finding
        record = Record(str(f.figure("journal_id")), "outcome", now(), f.host, "fix", f.pool,
                        outcome="cleaned up", message=item.summary)  # fmt: skip
        ctx.journal.append(record)
    return item.summary


def _apply_image(item: Resolved, image: ImageFix, ctx: Context, fixer: ImageFixer) -> None:
    """A fix on this machine: the in-use guard once more against a fresh read of the domains
    right before it, journalled, then the pool refreshed."""
    pool = item.report.disk.pool if item.report else None
    if item.report is not None:
        fresh = remeasured(ctx, [pool] if pool else []).view
        r = fresh.volume(pool, item.report.disk.name) if pool else item.report
        op = str(image.kind).split()[0]
        check_in_use(fresh, r, op, force=item.force, defined_too=image.copy != "" or item.force)
    if ctx.journal is None:
        fixer.execute(image)
    else:
        left = (f"file {image.copy}",) if image.copy else ()
        record = journalled(
            ctx.journal, host=ctx.view.host, action=f"fix: {image.kind}",
            subject=_name(item.report) if item.report else image.path,
            before={}, after={}, leftovers=left,
        )  # fmt: skip
        with record as entry:
            fixer.execute(image, entry.made)
            entry.finish("done")
    if pool:
        ctx.host.execute(PoolAction(pool, PoolOp.REFRESH))
