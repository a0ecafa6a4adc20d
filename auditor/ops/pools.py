"""Plans for pools: define, build, start, stop, refresh, autostart, delete, undefine."""

from __future__ import annotations

import os
from dataclasses import replace

from auditor.collect import FS_POOL_TYPES
from auditor.errors import ConfigError, OperationError
from auditor.models import (
    BuildPool,
    DefinePool,
    Pool,
    PoolAction,
    PoolDefinition,
    PoolOp,
    Request,
    SetAutostart,
)
from auditor.ops.guards import names
from auditor.ops.plan import Action, Figure, Figures, Plan, changes, nothing
from auditor.ops.view import Context

POOL_TYPES = ("dir", "fs", "netfs", "logical")
_NEEDS = {
    "dir": (),
    "fs": ("source_devices",),
    "netfs": ("source_host", "source_path"),
    "logical": (),
}


def plan_pool_define(ctx: Context, spec: PoolDefinition) -> Plan:
    """Define (not start, not build) a persistent pool."""
    _check_definition(ctx, spec)
    request = DefinePool(replace(spec, target=os.path.normpath(spec.target)))
    return Plan(
        action=Action.POOL_DEFINE,
        subject=spec.name,
        summary=f"define a persistent {spec.type} pool {spec.name} on {request.spec.target} "
        "(inactive; build and start it next)",
        request=request,
        calls=ctx.calls(request),
        changes=changes({}, {Figure.STATE: "inactive"}, [Figure.STATE]),
        pool=spec.name,
    )


def _check_definition(ctx: Context, spec: PoolDefinition) -> None:
    if spec.type not in POOL_TYPES:
        raise ConfigError(
            f"pool type {spec.type!r} is not supported", f"use {', '.join(POOL_TYPES)}"
        )
    if not os.path.isabs(spec.target):
        raise ConfigError(f"--target {spec.target!r} must be an absolute path")
    pools = ctx.view.inventory.pools
    if any(p.name == spec.name for p in pools):
        raise OperationError(f"pool {spec.name} already exists", "choose another name")
    target = os.path.normpath(spec.target)
    for p in pools:
        if p.target_path and os.path.normpath(p.target_path) == target:
            raise OperationError(
                f"pool {p.name} already uses {target} as its target",
                "two pools on one folder count every volume twice; use that pool",
            )
    for attr in _NEEDS[spec.type]:
        if not getattr(spec, attr):
            raise ConfigError(
                f"a {spec.type} pool needs --{attr.replace('_', '-').removesuffix('s')}"
            )
    if spec.type == "dir" and (spec.source_devices or spec.source_host or spec.source_path):
        raise ConfigError("a dir pool takes no --source-* options")
    if spec.type == "fs" and len(spec.source_devices) != 1:
        raise ConfigError("an fs pool takes exactly one --source-dev")


def _pool_plan(
    ctx: Context,
    pool: Pool,
    action: Action,
    summary: str,
    request: Request,
    *,
    after: Figures | None = None,
    order: tuple[Figure, ...] = (Figure.STATE,),
    notes: tuple[str, ...] = (),
    confirm: str = "",
) -> Plan:
    before = ctx.view.now(pool.name)
    return Plan(
        action=action,
        subject=pool.name,
        summary=summary,
        request=request,
        calls=ctx.calls(request),
        changes=changes(before, {**before, **(after or {})}, order),
        notes=notes,
        confirm=confirm,
        pool=pool.name,
    )


def plan_build(ctx: Context, name: str, *, mkfs: bool = False) -> Plan:
    """Create the pool's storage; never over existing data. ``mkfs``: an fs pool's device
    gets a filesystem, only if it holds none."""
    pool = ctx.view.pool(name)
    if pool.active:
        raise OperationError(f"pool {pool.name} is active", "build is for an inactive pool")
    what = {
        "dir": f"create the folder {pool.target_path}",
        "netfs": f"create the mount point {pool.target_path}",
        "fs": f"create the mount point {pool.target_path}"
        + (", and make a filesystem on the device only if it holds none" if mkfs else ""),
        "logical": "create the volume group on its devices, only if they hold no data",
    }.get(pool.type, f"build the {pool.type} pool's storage")
    request = BuildPool(pool.name, no_overwrite=mkfs or pool.type == "logical")
    return _pool_plan(ctx, pool, Action.POOL_BUILD, f"build pool {pool.name}: {what}", request)


def plan_autostart(ctx: Context, name: str, *, enabled: bool) -> Plan:
    pool = ctx.view.pool(name)
    word = "on" if enabled else "off"
    if pool.autostart == enabled:
        why = f"pool {pool.name} is already autostart {word}"
        return nothing(Action.POOL_AUTOSTART, pool.name, why, pool=pool.name)
    return _pool_plan(
        ctx,
        pool,
        Action.POOL_AUTOSTART,
        f"turn autostart {word} for pool {pool.name}",
        SetAutostart(pool.name, enabled),
        after={Figure.AUTOSTART: "yes" if enabled else "no"},
        order=(Figure.AUTOSTART,),
    )


def plan_pool(ctx: Context, name: str, op: PoolOp) -> Plan:
    """Start, stop, refresh, delete or undefine pool ``name``."""
    pool = ctx.view.pool(name)
    return _POOL_OPS[op](ctx, pool)


def _plan_start(ctx: Context, pool: Pool) -> Plan:
    if pool.active:
        why = f"pool {pool.name} is already active"
        return nothing(Action.POOL_START, pool.name, why, pool=pool.name)
    return _pool_plan(
        ctx,
        pool,
        Action.POOL_START,
        f"start pool {pool.name} (activate it and list its volumes)",
        PoolAction(pool.name, PoolOp.START),
        after={Figure.STATE: "active"},
        order=(Figure.STATE, Figure.VOLUMES),
    )


def _plan_stop(ctx: Context, pool: Pool) -> Plan:
    if not pool.active:
        why = f"pool {pool.name} is already inactive"
        return nothing(Action.POOL_STOP, pool.name, why, pool=pool.name)
    running, other = ctx.view.pool_users(pool.name)
    notes = []
    if running:
        notes.append(
            f"running domain(s) {names(running)} use its volumes: they keep running but "
            "cannot start again until the pool does"
            + ("" if pool.type == "dir" else "; unmounting fails while files are open")
        )
    if other:
        notes.append(
            f"domain(s) {names(other)} use its volumes: they cannot start until the pool does"
        )
    count = ctx.view.now(pool.name).get(Figure.VOLUMES) or 0
    summary = (
        f"stop pool {pool.name} (libvirt's destroy): the pool goes inactive and its data stays "
        f"intact; its {count} volume(s) stay in {pool.target_path}"
    )
    return _pool_plan(
        ctx,
        pool,
        Action.POOL_STOP,
        summary,
        PoolAction(pool.name, PoolOp.STOP),
        after={Figure.STATE: "inactive"},
        order=(Figure.STATE, Figure.VOLUMES),
        notes=tuple(notes),
    )


def _plan_refresh(ctx: Context, pool: Pool) -> Plan:
    ctx.view.active_pool(pool.name)
    return _pool_plan(
        ctx,
        pool,
        Action.POOL_REFRESH,
        f"refresh pool {pool.name} (re-read its volumes)",
        PoolAction(pool.name, PoolOp.REFRESH),
        order=(Figure.VOLUMES, Figure.PROVISIONED, Figure.RATIO, Figure.USABLE),
        notes=("the figures before already come from a refresh",),
    )


def _plan_delete(ctx: Context, pool: Pool) -> Plan:
    """Only an inactive pool whose storage holds no files (checked on this host)."""
    if pool.active:
        raise OperationError(
            f"pool {pool.name} is active", f"stop it first with `auditor pool stop {pool.name}`"
        )
    if pool.type not in FS_POOL_TYPES or not ctx.host.local:
        raise OperationError(
            f"pool {pool.name}: cannot tell whether the inactive {pool.type} pool still holds "
            "volumes",
            "start it, delete its volumes with `auditor vol delete`, then stop it and delete "
            "its storage on the host itself",
        )
    found, _ = ctx.probes.fs.list_files([pool.target_path])
    if found:
        raise OperationError(
            f"pool {pool.name} still holds {len(found)} file(s) in {pool.target_path}",
            "delete its volumes first (start the pool, `auditor vol delete`)",
        )
    what = {
        "dir": f"the empty folder {pool.target_path}",
        "fs": f"the mount point {pool.target_path} (the device is left as it is)",
        "netfs": f"the mount point {pool.target_path} (the export is left as it is)",
    }[pool.type]
    return _pool_plan(
        ctx,
        pool,
        Action.POOL_DELETE,
        f"delete pool {pool.name}'s storage: remove {what}",
        PoolAction(pool.name, PoolOp.DELETE),
        confirm=what,
    )


def _plan_undefine(ctx: Context, pool: Pool) -> Plan:
    if pool.active:
        raise OperationError(
            f"pool {pool.name} is active",
            f"stop it first with `auditor pool stop {pool.name}` (undefining an active pool "
            "makes it transient)",
        )
    return _pool_plan(
        ctx,
        pool,
        Action.POOL_UNDEFINE,
        f"undefine pool {pool.name}: libvirt forgets it, its data stays intact",
        PoolAction(pool.name, PoolOp.UNDEFINE),
        after={Figure.STATE: None},
    )


_POOL_OPS = {
    PoolOp.START: _plan_start,
    PoolOp.STOP: _plan_stop,
    PoolOp.REFRESH: _plan_refresh,
    PoolOp.DELETE: _plan_delete,
    PoolOp.UNDEFINE: _plan_undefine,
}
