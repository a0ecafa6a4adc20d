"""Managed pool and volume operations: first a plan, then ``apply``.

A ``Plan`` says what will be done, the libvirt call in words and the figures before and after
(volume sizes, the pool's provisioned bytes, overcommit ratio and usable free space); a dry run
prints it and stops there. ``apply`` does it and measures the same figures again.

The guards libvirt lacks live here, evaluated while planning:

- in use: delete, wipe, shrink and offline resize refuse a volume referenced by a running
  domain (as a disk, by pool and volume, or in a backing chain); delete and wipe also refuse
  one referenced by a defined domain or backing another image unless ``force``;
- overcommit: create, clone, upload and grow refuse when the pool's overcommit ratio after the
  operation would exceed ``overcommit_crit`` (``force`` overrides); anything that allocates
  refuses when it needs more than the usable free space (nothing overrides that);
- format traps: wiping a volume with an image header needs ``destroy_format``; uploads always
  use sparse streams; reflink is only for raw copies;
- confirmation: a plan that destroys data carries ``confirm``; ``apply`` needs ``yes=True``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from auditor.analyze import analyze, full_size, ratio
from auditor.collect import FS_POOL_TYPES, Probes, collect_host, is_local
from auditor.config import Config
from auditor.errors import ConfigError, InUse, NotFound, OperationError, PolicyError
from auditor.interfaces import HostSource
from auditor.models import (
    DiskReport,
    DiskSpec,
    Domain,
    HostInventory,
    Inventory,
    Pool,
    PoolDefinition,
    PoolSummary,
    Progress,
    Provisioning,
    Summary,
    VolumeSpec,
)
from auditor.report.table import iec
from auditor.sizes import NewSize

POOL_TYPES = ("dir", "fs", "netfs", "logical")
VOLUME_FORMATS = ("raw", "qcow2")
WIPE_ALGORITHMS = (
    "zero",
    "nnsa",
    "dod",
    "bsi",
    "gutmann",
    "schneier",
    "pfitzner7",
    "pfitzner33",
    "random",
    "trim",
)
HEADERLESS = frozenset({"raw", "none", "", None})  # formats a wipe cannot break
TARGET = re.compile(r"(vd|sd|hd|xvd)[a-z]+")
BUS = {"vd": "virtio", "sd": "scsi", "hd": "ide", "xvd": "xen"}


@dataclass(frozen=True)
class PoolAction:
    pool: str
    action: str  # build, start, stop, refresh, autostart, delete, undefine
    flag: bool = False  # build: NO_OVERWRITE; autostart: on


@dataclass(frozen=True)
class DefinePool:
    spec: PoolDefinition


@dataclass(frozen=True)
class CreateVolume:
    spec: VolumeSpec


@dataclass(frozen=True)
class ResizeVolume:
    pool: str
    name: str
    capacity: int
    allocate: bool = False
    shrink: bool = False
    live: tuple[str, str] | None = None  # (domain, target): grown through the running domain


@dataclass(frozen=True)
class DeleteVolume:
    pool: str
    name: str


@dataclass(frozen=True)
class WipeVolume:
    pool: str
    name: str
    algorithm: str


@dataclass(frozen=True)
class Upload:
    spec: VolumeSpec  # the volume created for the file
    file: str


@dataclass(frozen=True)
class Download:
    pool: str
    name: str
    file: str
    overwrite: bool


@dataclass(frozen=True)
class Attach:
    disk: DiskSpec


@dataclass(frozen=True)
class Detach:
    disk: DiskSpec


Request = (
    PoolAction
    | DefinePool
    | CreateVolume
    | ResizeVolume
    | DeleteVolume
    | WipeVolume
    | Upload
    | Download
    | Attach
    | Detach
)


class StorageHost(HostSource, Protocol):
    """A libvirt connection that can change pools, volumes and domain disks."""

    def domain_targets(self, domain: str) -> frozenset[str]: ...
    def define_pool(self, spec: PoolDefinition) -> None: ...
    def pool_action(self, pool: str, action: str, flag: bool = False) -> None: ...
    def create_volume(self, spec: VolumeSpec) -> None: ...
    def resize_volume(
        self, pool: str, name: str, capacity: int, *, allocate: bool, shrink: bool
    ) -> None: ...
    def block_resize(self, domain: str, target: str, capacity: int) -> None: ...
    def delete_volume(self, pool: str, name: str) -> None: ...
    def wipe_volume(self, pool: str, name: str, algorithm: str) -> None: ...
    def upload_volume(self, spec: VolumeSpec, file: str, progress: Progress | None) -> None: ...
    def download_volume(
        self, pool: str, name: str, file: str, *, overwrite: bool, progress: Progress | None
    ) -> None: ...
    def attach_disk(self, disk: DiskSpec) -> None: ...
    def detach_disk(self, disk: DiskSpec) -> None: ...


# ---- plans and outcomes ------------------------------------------------------------------

Value = int | float | str | None

VIRTUAL, DISK = "virtual size", "disk size"
PROVISIONED, RATIO, USABLE = "pool provisioned", "overcommit ratio", "pool usable free"
VOLUMES, STATE, AUTOSTART = "pool volumes", "pool state", "pool autostart"
FILE_SIZE, FILE_DATA = "file size", "file disk size"
TARGETS = "domain disks"
BYTE_FIGURES = frozenset({VIRTUAL, DISK, PROVISIONED, USABLE, FILE_SIZE, FILE_DATA})


@dataclass(frozen=True)
class Change:
    """One figure before and after; ``None`` is "does not exist" or "not known"."""

    what: str
    before: Value
    after: Value

    @property
    def is_bytes(self) -> bool:
        return self.what in BYTE_FIGURES


@dataclass(frozen=True)
class Plan:
    """What an operation will do; ``request`` None means there is nothing to do."""

    action: str  # "vol create", "pool stop", ...
    subject: str  # "POOL/VOLUME", "POOL" or "DOMAIN"
    summary: str  # one sentence: what will be done
    call: str  # the libvirt call, in words
    request: Request | None
    changes: tuple[Change, ...] = ()  # expected
    notes: tuple[str, ...] = ()
    confirm: str = ""  # what is lost: apply needs yes=True
    pool: str | None = None  # whose figures change
    volume: str | None = None  # the volume measured after apply
    domain: str | None = None
    transfer: int | None = None  # bytes a stream will carry (upload, download)


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    done: str  # one sentence: what was done
    changes: tuple[Change, ...]  # measured before and after
    notes: tuple[str, ...] = ()


# ---- what the audit knows now ----------------------------------------------------------------


@dataclass(frozen=True)
class Users:
    """Who references a volume."""

    running: tuple[str, ...] = ()  # running domains (as a disk or in a backing chain)
    defined: tuple[str, ...] = ()  # domains that are not running
    attached: tuple[tuple[str, str], ...] = ()  # (running domain, target) using it as a disk
    overlays: tuple[str, ...] = ()  # images whose backing file it is

    @property
    def any(self) -> bool:
        return bool(self.running or self.defined or self.overlays)

    def who(self) -> str:
        """'running domain(s) a and defined domain(s) b and the overlay(s) backed by it: p/c'."""
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("running domain(s)", self.running),
                ("defined domain(s)", self.defined),
                ("the overlay(s) backed by it:", self.overlays),
            )
            if names
        ]
        return " and ".join(parts)


@dataclass(frozen=True)
class View:
    """One host as the audit sees it: pools, volumes with their users, pool figures."""

    inventory: HostInventory
    summary: Summary

    def pool(self, name: str) -> Pool:
        for p in self.inventory.pools:
            if p.name == name:
                return p
        raise NotFound(f"pool {name} not found", "see `auditor pool list`")

    def active_pool(self, name: str) -> Pool:
        pool = self.pool(name)
        if not pool.active:
            raise OperationError(
                f"pool {name} is not active ({pool.state})",
                f"start it with `auditor pool start {name}`",
            )
        return pool

    def figures(self, name: str) -> PoolSummary | None:
        for s in self.summary.pools:
            if s.pool == name and s.type not in ("shared-fs", "unmanaged"):
                return s
        return None

    def find(self, pool: str, name: str) -> DiskReport | None:
        for r in self.summary.disks:
            if r.disk.pool == pool and r.disk.name == name:
                return r
        return None

    def volume(self, pool: str, name: str) -> DiskReport:
        self.active_pool(pool)
        found = self.find(pool, name)
        if found is None:
            raise NotFound(
                f"volume {name} not found in pool {pool}",
                f"see `auditor volumes --pool {pool}`",
            )
        return found

    def domain(self, name: str) -> Domain:
        for d in self.summary.domains:
            if d.name == name:
                return d
        raise NotFound(f"domain {name} not found", "see `virsh list --all`")

    def users(self, report: DiskReport) -> Users:
        """Who references the volume; refused when a domain could not be read (the guards
        would miss it)."""
        for skip in self.summary.skips:
            if skip.kind in ("domain", "host"):
                raise OperationError(
                    f"cannot tell which domains use {_label(report)}: {skip.kind} {skip.name} "
                    f"could not be read ({skip.reason})",
                    "retry; if it persists, check that domain with `virsh dumpxml`",
                )
        path = report.disk.path
        domains = {d.name: d for d in self.summary.domains}
        running = tuple(n for n in report.used_by if n in domains and domains[n].active)
        attached = tuple(
            (n, dd.target)
            for n in running
            for dd in domains[n].disks
            if dd.path == path and not dd.readonly
        )
        overlays = tuple(_label(r) for r in self.summary.disks if r.disk.backing_file == path)
        defined = tuple(n for n in report.used_by if n not in running)
        return Users(running, defined, attached, overlays)

    def pool_users(self, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(running, other) domains using any volume of pool ``name``."""
        running: set[str] = set()
        other: set[str] = set()
        for d in self.summary.domains:
            if any(dd.pool == name for dd in d.disks) or any(
                r.disk.pool == name and d.name in r.used_by for r in self.summary.disks
            ):
                (running if d.active else other).add(d.name)
        return tuple(sorted(running)), tuple(sorted(other))


def _label(r: DiskReport) -> str:
    return f"{r.disk.pool}/{r.disk.name}" if r.disk.pool else r.disk.path


def look(host: HostSource, probes: Probes) -> View:
    """Collect and analyze one host (pools refreshed): the basis of a plan."""
    inventory = collect_host(host, probes, refresh=True)
    return View(inventory, analyze(Inventory(hosts=(inventory,))))


@dataclass(frozen=True)
class Context:
    """Everything planning needs: the host, the local probes, the policy and the view."""

    host: StorageHost
    probes: Probes
    config: Config
    view: View


def context(host: StorageHost, probes: Probes, config: Config | None = None) -> Context:
    """The host as the audit sees it now (pools refreshed), with the policy."""
    return Context(host, probes, config or Config(), look(host, probes))


def _state(view: View, pool: str | None, volume: str | None) -> dict[str, Value]:
    """The figures an operation may change, as the view has them now."""
    out: dict[str, Value] = {}
    p = next((p for p in view.inventory.pools if p.name == pool), None)
    if p is not None:
        s = view.figures(p.name)
        out[STATE] = "active" if p.active else p.state
        out[AUTOSTART] = "yes" if p.autostart else "no"
        if s is not None:
            out |= {
                VOLUMES: s.volumes,
                PROVISIONED: s.provisioned,
                RATIO: s.overcommit_ratio,
                USABLE: s.available,
            }
        if volume is not None and p.active:
            r = view.find(p.name, volume)
            if r is not None:
                out |= {VIRTUAL: r.disk.virtual_size, DISK: r.disk.disk_size}
    return out


def _changes(
    before: dict[str, Value], after: dict[str, Value], order: list[str]
) -> tuple[Change, ...]:
    return tuple(Change(k, before.get(k), after.get(k)) for k in order)


def show_ratio(r: float | None) -> str:
    """2 decimals; 4 when a small non-zero ratio would read as 0.00."""
    if r is None:
        return "?"
    return f"{r:.4f}" if 0 < abs(r) < 0.005 else f"{r:.2f}"


def human(n: int | None) -> str:
    """'1.0 GiB (1073741824 B)'."""
    return "none" if n is None else f"{iec(n)} ({n} B)" if n >= 1024 else f"{n} B"


@dataclass(frozen=True)
class VolumeInfo:
    """Everything the audit knows about one volume."""

    report: DiskReport
    users: Users
    chain: tuple[str, ...]  # backing images, nearest first
    pool: PoolSummary | None


def volume_info(ctx: Context, pool: str, name: str) -> VolumeInfo:
    view = ctx.view
    r = view.volume(pool, name)
    by_path = {d.disk.path: d for d in view.summary.disks}
    chain: list[str] = []
    nxt = r.disk.backing_file
    while nxt and nxt not in chain:
        chain.append(nxt)
        base = by_path.get(nxt)
        nxt = base.disk.backing_file if base else None
    labels = tuple(_label(by_path[p]) if p in by_path else p for p in chain)
    return VolumeInfo(r, view.users(r), labels, view.figures(pool))


# ---- guards ----------------------------------------------------------------------------------


def _overcommit(
    ctx: Context, pool: str, added: int, force: bool, notes: list[str]
) -> tuple[int | None, float | None]:
    """(provisioned, ratio) after adding ``added`` bytes of virtual size; refuse above the
    pool's critical ratio unless ``force``."""
    s = ctx.view.figures(pool)
    if s is None or s.provisioned is None:
        return None, None
    after = s.provisioned + added
    new_ratio = ratio(after, s.capacity)
    crit = ctx.config.for_pool(pool).overcommit_crit
    if added > 0 and new_ratio is not None and new_ratio > crit:
        msg = (
            f"pool {pool}: overcommit ratio would go from {show_ratio(s.overcommit_ratio)} to "
            f"{show_ratio(new_ratio)}, above its critical threshold {show_ratio(crit)}"
        )
        if not force:
            raise PolicyError(
                msg,
                f'raise overcommit_crit under [pools."{pool}"] in the --config file, '
                "or pass --force",
            )
        notes.append(f"--force: {msg}")
    if s.capacity is None:
        notes.append(f"pool {pool} reports no capacity: the overcommit ratio is not known")
    return after, new_ratio


def _free_space(ctx: Context, pool: str, need: int, what: str) -> int | None:
    """Usable free space after using ``need`` bytes; refuse if there is not enough."""
    s = ctx.view.figures(pool)
    usable = s.available if s is not None else None
    if usable is None:
        return None
    if need > usable:
        raise PolicyError(
            f"pool {pool}: {what} needs {human(need)} but only {human(usable)} is usable "
            "(statvfs f_bavail: blocks reserved for root do not count)",
            "free space in the pool or choose a thin volume; --force does not override this",
        )
    return usable - need


def _names(items: tuple[str, ...]) -> str:
    return ", ".join(items)


def _in_use(view: View, r: DiskReport, op: str, *, force: bool, defined_too: bool) -> Users:
    """Refuse ``op`` on a volume a running domain references; with ``defined_too`` also one
    a defined domain references or another image uses as its backing file, unless ``force``."""
    users = view.users(r)
    name = f"{r.disk.pool}/{r.disk.name}"
    if users.running:
        raise InUse(
            f"{op} refused: volume {name} is used by running domain(s) {_names(users.running)}",
            "shut them down or detach the disk first",
        )
    if defined_too and not force and (users.defined or users.overlays):
        raise InUse(
            f"{op} refused: volume {name} is used by {users.who()}",
            "detach it first, or pass --force",
        )
    return users


def _fresh_name(view: View, pool: str, name: str) -> None:
    if view.find(pool, name) is not None:
        raise OperationError(f"volume {name} already exists in pool {pool}", "choose another name")


def _provisioning(fmt: str, capacity: int, preallocated: bool) -> tuple[int, bool, str]:
    """(allocation, PREALLOC_METADATA flag, words) as libvirt needs them: raw thin is sparse
    (allocation 0), raw preallocated is fallocated (allocation = capacity); qcow2 honours
    <allocation> only with PREALLOC_METADATA, and allocation = capacity gives falloc."""
    if not preallocated:
        return 0, False, "thin (sparse)" if fmt == "raw" else "thin (preallocation=off)"
    if fmt == "raw":
        return capacity, False, "preallocated (fallocated)"
    return capacity, True, "preallocated (preallocation=falloc)"


def _call_create(spec: VolumeSpec, func: str) -> str:
    flags = [
        f
        for f, on in (
            ("VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA", spec.prealloc_metadata),
            ("VIR_STORAGE_VOL_CREATE_REFLINK", spec.reflink),
        )
        if on
    ]
    parts = [f"pool {spec.pool!r}", f"name {spec.name!r}", f"capacity {spec.capacity}"]
    parts.append(f"allocation {spec.allocation}" if spec.allocation is not None else "")
    parts.append(f"format {spec.format}" + (" (compat 1.1)" if spec.format == "qcow2" else ""))
    if spec.backing:
        parts.append(f"backing store {spec.backing[0]} ({spec.backing[1]})")
    if spec.source:
        parts.append(f"from volume {spec.source!r}")
    parts.append("flags " + ("|".join(flags) or "0"))
    return f"{func}(" + ", ".join(p for p in parts if p) + ")"


# ---- pool plans ------------------------------------------------------------------------------


def plan_pool_define(ctx: Context, spec: PoolDefinition) -> Plan:
    """Define (not start, not build) a persistent pool."""
    view = ctx.view
    if spec.type not in POOL_TYPES:
        raise ConfigError(
            f"pool type {spec.type!r} is not supported", f"use {', '.join(POOL_TYPES)}"
        )
    if not os.path.isabs(spec.target):
        raise ConfigError(f"--target {spec.target!r} must be an absolute path")
    if any(p.name == spec.name for p in view.inventory.pools):
        raise OperationError(f"pool {spec.name} already exists", "choose another name")
    target = os.path.normpath(spec.target)
    for p in view.inventory.pools:
        if p.target_path and os.path.normpath(p.target_path) == target:
            raise OperationError(
                f"pool {p.name} already uses {target} as its target",
                "two pools on one folder count every volume twice; use that pool",
            )
    needs = {
        "dir": (),
        "fs": ("source_devices",),
        "netfs": ("source_host", "source_path"),
        "logical": (),
    }[spec.type]
    for attr in needs:
        if not getattr(spec, attr):
            raise ConfigError(
                f"a {spec.type} pool needs --{attr.replace('_', '-').removesuffix('s')}"
            )
    if spec.type == "dir" and (spec.source_devices or spec.source_host or spec.source_path):
        raise ConfigError("a dir pool takes no --source-* options")
    if spec.type == "fs" and len(spec.source_devices) != 1:
        raise ConfigError("an fs pool takes exactly one --source-dev")
    source = ", ".join(
        f"{k} {v}"
        for k, v in (
            ("host", spec.source_host),
            ("dir", spec.source_path),
            ("devices", " ".join(spec.source_devices) or None),
            ("name", spec.source_name),
            ("format", spec.source_format),
        )
        if v
    )
    return Plan(
        action="pool define",
        subject=spec.name,
        summary=f"define a persistent {spec.type} pool {spec.name} on {target} "
        "(inactive; build and start it next)",
        call=f"virStoragePoolDefineXML(<pool type={spec.type!r}> name {spec.name!r}, "
        f"target {target}" + (f", source {source}" if source else "") + ", flags 0)",
        request=DefinePool(replace(spec, target=target)),
        changes=(Change(STATE, None, "inactive"),),
        pool=spec.name,
    )


def _pool_plan(
    view: View,
    pool: Pool,
    action: str,
    summary: str,
    call: str,
    *,
    flag: bool = False,
    after: dict[str, Value] | None = None,
    order: tuple[str, ...] = (STATE,),
    notes: tuple[str, ...] = (),
    confirm: str = "",
) -> Plan:
    before = _state(view, pool.name, None)
    return Plan(
        action=f"pool {action}",
        subject=pool.name,
        summary=summary,
        call=call,
        request=PoolAction(pool.name, action, flag),
        changes=_changes(before, before | (after or {}), list(order)),
        notes=notes,
        confirm=confirm,
        pool=pool.name,
    )


def _nothing(pool: Pool, action: str, why: str) -> Plan:
    return Plan(
        f"pool {action}",
        pool.name,
        f"nothing to do: pool {pool.name} is {why}",
        "",
        None,
        pool=pool.name,
    )


def _plan_build(ctx: Context, pool: Pool, mkfs: bool) -> Plan:
    if pool.active:
        raise OperationError(f"pool {pool.name} is active", "build is for an inactive pool")
    no_overwrite = mkfs or pool.type == "logical"
    what = {
        "dir": f"create the folder {pool.target_path}",
        "netfs": f"create the mount point {pool.target_path}",
        "fs": f"create the mount point {pool.target_path}"
        + (", and make a filesystem on the device only if it holds none" if mkfs else ""),
        "logical": "create the volume group on its devices, only if they hold no data",
    }.get(pool.type, f"build the {pool.type} pool's storage")
    flags = "VIR_STORAGE_POOL_BUILD_NO_OVERWRITE" if no_overwrite else "0"
    return _pool_plan(
        ctx.view,
        pool,
        "build",
        f"build pool {pool.name}: {what}",
        f"virStoragePoolBuild(flags {flags})",
        flag=no_overwrite,
    )


def _plan_start(ctx: Context, pool: Pool, _flag: bool) -> Plan:
    if pool.active:
        return _nothing(pool, "start", "already active")
    return _pool_plan(
        ctx.view,
        pool,
        "start",
        f"start pool {pool.name} (activate it and list its volumes)",
        "virStoragePoolCreate(flags 0)",
        after={STATE: "active"},
        order=(STATE, VOLUMES),
    )


def _plan_stop(ctx: Context, pool: Pool, _flag: bool) -> Plan:
    if not pool.active:
        return _nothing(pool, "stop", "already inactive")
    running, other = ctx.view.pool_users(pool.name)
    notes = []
    if running:
        notes.append(
            f"running domain(s) {_names(running)} use its volumes: they keep running but "
            "cannot start again until the pool does"
            + ("" if pool.type == "dir" else "; unmounting fails while files are open")
        )
    if other:
        notes.append(
            f"domain(s) {_names(other)} use its volumes: they cannot start until the pool does"
        )
    count = _state(ctx.view, pool.name, None).get(VOLUMES) or 0
    summary = (
        f"stop pool {pool.name} (libvirt's destroy): the pool goes inactive and its data stays "
        f"intact; its {count} volume(s) stay in {pool.target_path}"
    )
    return _pool_plan(
        ctx.view,
        pool,
        "stop",
        summary,
        "virStoragePoolDestroy()",
        after={STATE: "inactive"},
        order=(STATE, VOLUMES),
        notes=tuple(notes),
    )


def _plan_refresh(ctx: Context, pool: Pool, _flag: bool) -> Plan:
    ctx.view.active_pool(pool.name)
    return _pool_plan(
        ctx.view,
        pool,
        "refresh",
        f"refresh pool {pool.name} (re-read its volumes)",
        "virStoragePoolRefresh(flags 0)",
        order=(VOLUMES, PROVISIONED, RATIO, USABLE),
        notes=("the figures before already come from a refresh",),
    )


def _plan_autostart(ctx: Context, pool: Pool, on: bool) -> Plan:
    word = "on" if on else "off"
    if pool.autostart == on:
        return _nothing(pool, "autostart", f"already autostart {word}")
    return _pool_plan(
        ctx.view,
        pool,
        "autostart",
        f"turn autostart {word} for pool {pool.name}",
        f"virStoragePoolSetAutostart({int(on)})",
        flag=on,
        after={AUTOSTART: "yes" if on else "no"},
        order=(AUTOSTART,),
    )


def _plan_delete(ctx: Context, pool: Pool, _flag: bool) -> Plan:
    """Only an inactive pool whose storage holds no files (checked on this host)."""
    if pool.active:
        raise OperationError(
            f"pool {pool.name} is active", f"stop it first with `auditor pool stop {pool.name}`"
        )
    if pool.type not in FS_POOL_TYPES or not is_local(ctx.host.uri):
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
        ctx.view,
        pool,
        "delete",
        f"delete pool {pool.name}'s storage: remove {what}",
        "virStoragePoolDelete(flags 0)",
        confirm=what,
    )


def _plan_undefine(ctx: Context, pool: Pool, _flag: bool) -> Plan:
    if pool.active:
        raise OperationError(
            f"pool {pool.name} is active",
            f"stop it first with `auditor pool stop {pool.name}` (undefining an active pool "
            "makes it transient)",
        )
    return _pool_plan(
        ctx.view,
        pool,
        "undefine",
        f"undefine pool {pool.name}: libvirt forgets it, its data stays intact",
        "virStoragePoolUndefine()",
        after={STATE: None},
    )


POOL_ACTIONS: dict[str, Callable[[Context, Pool, bool], Plan]] = {
    "build": _plan_build,
    "start": _plan_start,
    "stop": _plan_stop,
    "refresh": _plan_refresh,
    "autostart": _plan_autostart,
    "delete": _plan_delete,
    "undefine": _plan_undefine,
}


def plan_pool(ctx: Context, name: str, action: str, *, flag: bool = False) -> Plan:
    """One of POOL_ACTIONS. ``flag``: build also makes the filesystem (fs pools, only on a
    device holding none); autostart turns it on (off without)."""
    if action not in POOL_ACTIONS:
        raise ConfigError(f"unknown pool action {action!r}", f"use {', '.join(POOL_ACTIONS)}")
    return POOL_ACTIONS[action](ctx, ctx.view.pool(name), flag)


# ---- volume plans ----------------------------------------------------------------------------


def _volume_ref(text: str) -> tuple[str, str]:
    pool, sep, name = text.partition("/")
    if not (sep and pool and name):
        raise ConfigError(f"bad volume reference {text!r}", "write POOL/VOLUME")
    return pool, name


def plan_create(
    ctx: Context,
    pool: str,
    name: str,
    capacity: int,
    *,
    fmt: str | None = None,
    preallocated: bool = False,
    backing: str | None = None,
    force: bool = False,
) -> Plan:
    """A new volume: thin (sparse / preallocation=off) or preallocated (falloc); a qcow2
    overlay when ``backing`` ("POOL/VOLUME") is given."""
    view = ctx.view
    view.active_pool(pool)
    _fresh_name(view, pool, name)
    fmt = fmt or ("qcow2" if backing else "raw")
    if fmt not in VOLUME_FORMATS:
        raise ConfigError(f"volume format {fmt!r} is not supported", "use raw or qcow2")
    if capacity <= 0:
        raise ConfigError(f"size {capacity} must be positive")
    notes: list[str] = []
    backing_pair = None
    if backing is not None:
        bpool, bname = _volume_ref(backing)
        base = view.volume(bpool, bname)
        if fmt != "qcow2":
            raise PolicyError("a raw volume cannot have a backing file", "use --format qcow2")
        if preallocated:
            raise PolicyError(
                "an overlay cannot be preallocated (libvirt: metadata preallocation conflicts "
                "with backing store)",
                "drop --preallocated",
            )
        if (base.disk.virtual_size or 0) > capacity:
            raise PolicyError(
                f"the overlay ({human(capacity)}) would be smaller than its backing image "
                f"{backing} ({human(base.disk.virtual_size)})",
                "give at least the backing image's virtual size",
            )
        writers = view.users(base).attached
        if writers:
            raise InUse(
                f"backing image {backing} is written by running domain(s) "
                f"{_names(tuple(d for d, _ in writers))}: an overlay over a changing image is "
                "corrupt",
                "shut them down first",
            )
        backing_pair = (base.disk.path, base.disk.format or "raw")
    allocation, metadata, words = _provisioning(fmt, capacity, preallocated)
    spec = VolumeSpec(pool, name, capacity, fmt, allocation, metadata, backing_pair)
    if fmt == "qcow2" and capacity % 1024:
        capacity = -(-capacity // 1024) * 1024
        notes.append(f"libvirt makes a qcow2 in whole KiB: its virtual size is {human(capacity)}")
    need = full_size(fmt, capacity) if preallocated else 0
    summary = f"create a {iec(capacity)} {fmt} volume {name} in pool {pool}, {words}" + (
        f", over backing image {backing}" if backing else ""
    )
    disk = need if preallocated else (0 if fmt == "raw" else None)
    return _new_volume(
        ctx,
        "vol create",
        spec,
        summary,
        (capacity, disk),
        (need, f"a preallocated {fmt} volume"),
        force,
        notes,
    )


def _new_volume(
    ctx: Context,
    action: str,
    spec: VolumeSpec,
    summary: str,
    sizes: tuple[int, int | None],
    need: tuple[int, str],
    force: bool,
    notes: list[str],
    request: Request | None = None,
    transfer: int | None = None,
) -> Plan:
    """The plan of a new volume of (virtual, disk) ``sizes`` that needs ``need`` bytes of
    free space (for what), after the free space and overcommit guards."""
    before = _state(ctx.view, spec.pool, spec.name)
    after = dict(before) | {VIRTUAL: sizes[0], DISK: sizes[1]}
    if need[0]:
        after[USABLE] = _free_space(ctx, spec.pool, *need)
    after[PROVISIONED], after[RATIO] = _overcommit(ctx, spec.pool, sizes[0], force, notes)
    func = "virStorageVolCreateXMLFrom" if spec.source else "virStorageVolCreateXML"
    call = _call_create(spec, func)
    if isinstance(request, Upload):
        call += "; virStorageVolUpload(offset 0, length 0, VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)"
    return Plan(
        action=action,
        subject=f"{spec.pool}/{spec.name}",
        summary=summary,
        call=call,
        request=request or CreateVolume(spec),
        changes=_changes(before, after, [VIRTUAL, DISK, PROVISIONED, RATIO, USABLE]),
        notes=tuple(notes),
        pool=spec.pool,
        volume=spec.name,
        transfer=transfer,
    )


def _plus(n: Value, k: int) -> Value:
    return n + k if isinstance(n, int) else n


def plan_clone(
    ctx: Context,
    pool: str,
    source: str,
    name: str,
    *,
    preallocated: bool | None = None,
    fmt: str | None = None,
    reflink: bool = False,
    force: bool = False,
) -> Plan:
    """A copy of ``source`` in the same pool; thin skips zero blocks. By default the clone
    keeps the source's format and provisioning."""
    view = ctx.view
    src = view.volume(pool, source)
    _fresh_name(view, pool, name)
    fmt = fmt or src.disk.format or "raw"
    if fmt not in VOLUME_FORMATS:
        raise ConfigError(f"volume format {fmt!r} is not supported", "use raw or qcow2")
    capacity = src.disk.virtual_size
    if capacity is None:
        raise OperationError(f"volume {pool}/{source} reports no virtual size")
    if preallocated is None:
        preallocated = src.provisioning is Provisioning.PREALLOCATED
    if reflink and not (fmt == "raw" and src.disk.format == "raw"):
        raise PolicyError(
            "--reflink shares blocks only between raw files (libvirt copies other formats "
            "with qemu-img)",
            "clone with --format raw from a raw volume, or drop --reflink",
        )
    notes: list[str] = []
    users = view.users(src)
    if users.running:
        notes.append(
            f"the source is in use by running domain(s) {_names(users.running)}: the copy is "
            "at best crash-consistent (a locked qcow2 makes libvirt fail)"
        )
    if src.disk.backing_file:
        notes.append(f"the clone is standalone: it holds the data of the backing chain of {source}")
    allocation, metadata, words = _provisioning(fmt, capacity, preallocated)
    spec = VolumeSpec(
        pool, name, capacity, fmt, allocation, metadata, source=source, reflink=reflink
    )
    data = src.disk.disk_size or 0
    need = full_size(fmt, capacity) if preallocated else (0 if reflink else data)
    what = f"a preallocated {fmt} clone" if preallocated else f"copying up to {iec(data)} of data"
    summary = (
        f"clone {pool}/{source} ({src.disk.format}, {iec(capacity)}) to {fmt} volume {name}, "
        + words
        + (" with shared blocks (reflink)" if reflink else "")
        + ("" if preallocated else "; zero blocks are skipped")
    )
    sizes = (capacity, need if preallocated else None)
    return _new_volume(ctx, "vol clone", spec, summary, sizes, (need, what), force, notes)


def plan_resize(
    ctx: Context,
    pool: str,
    name: str,
    size: NewSize,
    *,
    allocate: bool = False,
    shrink: bool = False,
    force: bool = False,
) -> Plan:
    """Grow (live through the domain when a running one has it as a disk) or shrink."""
    view = ctx.view
    r = view.volume(pool, name)
    current, disk = r.disk.virtual_size, r.disk.disk_size or 0
    if current is None:
        raise OperationError(f"volume {pool}/{name} reports no virtual size")
    new = size.resolve(current)
    if new <= 0:
        raise ConfigError(f"the new size {new} B of {pool}/{name} must be positive")
    before = _state(view, pool, name)
    subject = f"{pool}/{name}"
    if new == current:
        return Plan(
            "vol resize",
            subject,
            f"nothing to do: {subject} is already {human(new)}",
            "",
            None,
            pool=pool,
            volume=name,
        )
    notes: list[str] = []
    after = dict(before) | {VIRTUAL: new}
    confirm = ""
    live: tuple[str, str] | None = None
    if new < current:
        if not shrink:
            raise PolicyError(
                f"{subject} would shrink from {human(current)} to {human(new)}: the data "
                "beyond the new end is lost",
                "pass --shrink --yes if that is what you want",
            )
        if allocate:
            raise ConfigError("--allocate applies only when growing")
        _in_use(view, r, "shrink", force=False, defined_too=False)
        if new < disk:
            raise PolicyError(
                f"{subject} cannot shrink to {human(new)}: libvirt refuses to shrink below "
                f"the volume's disk size ({human(disk)})",
                "a fully allocated volume cannot be shrunk in place; clone it thin first",
            )
        confirm = f"the last {human(current - new)} of {subject}'s virtual disk"
        after[PROVISIONED], after[RATIO] = _overcommit(ctx, pool, new - current, force, notes)
        after[DISK] = None
    else:
        users = view.users(r)
        if len(users.attached) > 1 or (users.running and not users.attached):
            raise InUse(
                f"resize refused: volume {subject} is used by running domain(s) "
                f"{_names(users.running)}"
                + ("" if users.attached else " (read-only, or as a backing image)"),
                "shut them down first",
            )
        if users.attached:
            live = users.attached[0]
            if allocate:
                raise PolicyError(
                    f"{subject} is in use by running domain {live[0]}: it can only grow "
                    "thin, through the domain",
                    "drop --allocate",
                )
            notes.append(f"grown live by running domain {live[0]} (disk {live[1]}), not offline")
        if allocate and r.disk.format != "raw":
            raise PolicyError(
                "--allocate works only for raw volumes (libvirt: preallocate is only "
                "supported for raw type volume)",
                "drop --allocate",
            )
        after[PROVISIONED], after[RATIO] = _overcommit(ctx, pool, new - current, force, notes)
        if allocate:
            after[USABLE] = _free_space(ctx, pool, max(0, new - disk), "--allocate")
            after[DISK] = new
    if live is not None:
        call = (
            f"virDomainBlockResize(domain {live[0]!r}, disk {live[1]!r}, {new}, "
            "VIR_DOMAIN_BLOCK_RESIZE_BYTES)"
        )
    else:
        flags = [
            f
            for f, on in (
                ("VIR_STORAGE_VOL_RESIZE_ALLOCATE", allocate),
                ("VIR_STORAGE_VOL_RESIZE_SHRINK", new < current),
            )
            if on
        ]
        call = f"virStorageVolResize({subject}, {new}, flags {'|'.join(flags) or '0'})"
    if r.disk.format == "qcow2" and new % 512:
        notes.append("qcow2 rounds the size up to a multiple of 512 bytes")
    verb = "shrink" if new < current else "grow"
    return Plan(
        action="vol resize",
        subject=subject,
        summary=f"{verb} {subject} from {human(current)} to {human(new)}"
        + (" and allocate it" if allocate else ""),
        call=call,
        request=ResizeVolume(pool, name, new, allocate, new < current, live),
        changes=_changes(before, after, [VIRTUAL, DISK, PROVISIONED, RATIO, USABLE]),
        notes=tuple(notes),
        confirm=confirm,
        pool=pool,
        volume=name,
    )


def plan_delete(ctx: Context, pool: str, name: str, *, force: bool = False) -> Plan:
    view = ctx.view
    r = view.volume(pool, name)
    users = _in_use(view, r, "delete", force=force, defined_too=True)
    notes = [f"--force: in use by {users.who()}"] if users.any else []
    before = _state(view, pool, name)
    after = dict(before) | {VIRTUAL: None, DISK: None, VOLUMES: _plus(before.get(VOLUMES), -1)}
    capacity = r.disk.virtual_size or 0
    after[PROVISIONED] = _plus(before.get(PROVISIONED), -capacity)
    s = view.figures(pool)
    provisioned = after[PROVISIONED]
    after[RATIO] = ratio(provisioned, s.capacity) if s and isinstance(provisioned, int) else None
    after[USABLE] = _plus(before.get(USABLE), r.disk.disk_size or 0)
    subject = f"{pool}/{name}"
    return Plan(
        action="vol delete",
        subject=subject,
        summary=f"delete volume {subject} ({r.disk.format}, {iec(capacity)} virtual, "
        f"{iec(r.disk.disk_size)} on disk)",
        call=f"virStorageVolDelete({subject}, flags 0)",
        request=DeleteVolume(pool, name),
        changes=_changes(before, after, [VIRTUAL, DISK, VOLUMES, PROVISIONED, RATIO, USABLE]),
        notes=tuple(notes),
        confirm=f"volume {subject} and all its data",
        pool=pool,
        volume=name,
    )


def plan_wipe(
    ctx: Context,
    pool: str,
    name: str,
    *,
    algorithm: str = "zero",
    destroy_format: bool = False,
    force: bool = False,
) -> Plan:
    view = ctx.view
    r = view.volume(pool, name)
    if algorithm not in WIPE_ALGORITHMS:
        raise ConfigError(
            f"unknown wipe algorithm {algorithm!r}", f"use {', '.join(WIPE_ALGORITHMS)}"
        )
    users = _in_use(view, r, "wipe", force=force, defined_too=True)
    subject = f"{pool}/{name}"
    notes = [f"--force: in use by {users.who()}"] if users.any else []
    if r.disk.format not in HEADERLESS:
        if not destroy_format:
            raise PolicyError(
                f"wiping {r.disk.format} volume {subject} overwrites its header: libvirt then "
                f"sees a raw volume of {human(r.disk.physical)} (the file size) and the "
                f"{iec(r.disk.virtual_size)} virtual disk is gone",
                "pass --destroy-format --yes to do it anyway, or delete and re-create the volume",
            )
        notes.append(
            f"--destroy-format: the {r.disk.format} header is destroyed; the volume becomes raw"
        )
    if algorithm not in ("zero", "trim"):
        notes.append(f"libvirt needs the scrub program for the {algorithm} algorithm")
    before = _state(view, pool, name)
    after = dict(before) | {DISK: None}
    if r.disk.format not in HEADERLESS:
        after[VIRTUAL] = r.disk.physical
    return Plan(
        action="vol wipe",
        subject=subject,
        summary=f"wipe volume {subject} with the {algorithm} algorithm (its content is lost, "
        "the volume stays)",
        call=f"virStorageVolWipePattern({subject}, VIR_STORAGE_VOL_WIPE_ALG_{algorithm.upper()}, "
        "flags 0)",
        request=WipeVolume(pool, name, algorithm),
        changes=_changes(before, after, [VIRTUAL, DISK]),
        notes=tuple(notes),
        confirm=f"all data of volume {subject}",
        pool=pool,
        volume=name,
    )


def local_file(path: str) -> tuple[int, int]:
    """(size, disk size) of a local file; NotFound if it is not a readable regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise NotFound(f"{path}: {exc.strerror}") from exc
    if not os.path.isfile(path):
        raise NotFound(f"{path} is not a regular file")
    return st.st_size, st.st_blocks * 512


def plan_upload(ctx: Context, pool: str, name: str, file: str, *, force: bool = False) -> Plan:
    """A new volume holding ``file``, sent as a sparse stream: holes stay holes."""
    view = ctx.view
    view.active_pool(pool)
    _fresh_name(view, pool, name)
    size, data = local_file(file)
    if size == 0:
        raise PolicyError(f"{file} is empty", "nothing to upload")
    virtual, fmt = size, "raw"
    for _, res in ctx.probes.images([(os.path.abspath(file), None)]):
        if not isinstance(res, Exception):
            virtual, fmt = res.virtual_size, res.format
    notes = []
    if fmt != "raw":
        notes.append(
            f"the file is a {fmt} image of {human(virtual)} virtual size; libvirt detects the "
            "format from the content once the upload is done"
        )
    spec = VolumeSpec(pool, name, size, "raw", 0)
    summary = (
        f"create volume {pool}/{name} ({human(size)}, sparse) and upload {file} into it as a "
        f"sparse stream ({human(data)} of data; holes stay holes)"
    )
    request = Upload(spec, os.path.abspath(file))
    need = (data, f"the {iec(data)} of data in {file}")
    return _new_volume(
        ctx,
        "vol upload",
        spec,
        summary,
        (virtual, data),
        need,
        force,
        notes,
        request,
        transfer=size,
    )


def plan_download(
    ctx: Context, pool: str, name: str, file: str, *, overwrite: bool = False
) -> Plan:
    """Copy a volume's content into a local file, holes kept (sparse stream)."""
    view = ctx.view
    r = view.volume(pool, name)
    path = os.path.abspath(file)
    exists = os.path.lexists(path)
    if exists and not overwrite:
        raise OperationError(f"{path} already exists", "choose another file or pass --overwrite")
    if exists and not os.path.isfile(path):
        raise OperationError(f"{path} is not a regular file", "choose another file")
    notes: list[str] = []
    users = view.users(r)
    if users.running:
        notes.append(
            f"in use by running domain(s) {_names(users.running)}: the copy is at best "
            "crash-consistent"
        )
    fs = ctx.probes.fs.filesystem(os.path.dirname(path))
    if fs is not None and (r.disk.disk_size or 0) > fs.usable:
        notes.append(
            f"the volume holds up to {human(r.disk.disk_size)} of data and {fs.mount_point} has "
            f"{human(fs.usable)} free: the download may run out of space (it is then removed)"
        )
    size = r.disk.physical or r.disk.virtual_size
    subject = f"{pool}/{name}"
    before_file = local_file(path) if exists else (None, None)
    return Plan(
        action="vol download",
        subject=subject,
        summary=f"download volume {subject} into {path} as a sparse stream (holes stay holes)"
        + (", replacing the file" if exists else ""),
        call="virStorageVolDownload(offset 0, length 0, VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)",
        request=Download(pool, name, path, overwrite),
        transfer=size,
        changes=(
            Change(FILE_SIZE, before_file[0], size),
            Change(FILE_DATA, before_file[1], None),
        ),
        notes=tuple(notes),
        confirm=f"the current content of {path}" if exists else "",
        pool=pool,
        volume=name,
    )


def _next_target(used: frozenset[str], prefix: str = "vd") -> str:
    """vda, vdb, ..., vdz, vdaa, ...: the first name not in ``used``."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    n = 0
    while True:
        k, suffix = n, ""
        while True:
            suffix = letters[k % 26] + suffix
            k = k // 26 - 1
            if k < 0:
                break
        if prefix + suffix not in used:
            return prefix + suffix
        n += 1


def _affect(live: bool, config: bool) -> str:
    flags = [
        f
        for f, on in (("VIR_DOMAIN_AFFECT_LIVE", live), ("VIR_DOMAIN_AFFECT_CONFIG", config))
        if on
    ]
    return "|".join(flags) or "VIR_DOMAIN_AFFECT_CURRENT"


def _where(dom: Domain, live: bool, config: bool) -> str:
    if live or config:
        return " and ".join(
            w for w, on in (("the running guest", live), ("its definition", config)) if on
        )
    return "the running guest" if dom.active else "its definition"


def plan_attach(
    ctx: Context,
    domain: str,
    volume: str,
    *,
    target: str | None = None,
    live: bool = False,
    config: bool = False,
) -> Plan:
    """Give ``domain`` the volume "POOL/VOLUME" as a ``<disk type='volume'>``."""
    view = ctx.view
    dom = view.domain(domain)
    pool, name = _volume_ref(volume)
    r = view.volume(pool, name)
    users = view.users(r)
    if domain in users.running + users.defined:
        raise OperationError(f"volume {volume} is already attached to domain {domain}")
    if users.any:
        raise InUse(
            f"attach refused: volume {volume} is used by {users.who()}: two writers corrupt a disk",
            "detach it there first",
        )
    if live and not dom.active:
        raise OperationError(f"domain {domain} is not running", "drop --live")
    used = ctx.host.domain_targets(domain)
    if target is None:
        target = _next_target(used)
    elif not TARGET.fullmatch(target):
        raise ConfigError(f"bad target {target!r}", "use a device name such as vdb, sdb or hdb")
    elif target in used:
        raise OperationError(
            f"domain {domain} already has a disk {target}", "choose another --target"
        )
    bus = BUS[TARGET.fullmatch(target).group(1)]  # type: ignore[union-attr]
    fmt = r.disk.format or "raw"
    disk = DiskSpec(domain, pool, name, fmt, target, bus, live, config)
    notes = []
    if dom.active and (live or not config):
        notes.append("a live attach needs a hotplug-capable bus (a pc machine's pci.0 is not)")
    return Plan(
        action="vol attach",
        subject=domain,
        summary=f"attach volume {volume} ({fmt}, {iec(r.disk.virtual_size)}) to domain {domain} "
        f"as {target} ({bus}), in {_where(dom, live, config)}",
        call=f"virDomainAttachDeviceFlags(<disk type='volume' device='disk'> source pool "
        f"{pool!r} volume {name!r}, driver type {fmt}, target {target} bus {bus}, "
        f"{_affect(live, config)})",
        request=Attach(disk),
        changes=(
            Change(TARGETS, ", ".join(sorted(used)) or "none", ", ".join(sorted(used | {target}))),
        ),
        notes=tuple(notes),
        pool=pool,
        volume=name,
        domain=domain,
    )


def plan_detach(
    ctx: Context, domain: str, volume: str, *, live: bool = False, config: bool = False
) -> Plan:
    """Take the disk that is volume "POOL/VOLUME" away from ``domain``."""
    view = ctx.view
    dom = view.domain(domain)
    pool, name = _volume_ref(volume)
    r = view.volume(pool, name)
    if live and not dom.active:
        raise OperationError(f"domain {domain} is not running", "drop --live")
    matches = [
        dd for dd in dom.disks if dd.path == r.disk.path or (dd.pool, dd.volume) == (pool, name)
    ]
    if not matches:
        raise NotFound(f"domain {domain} has no disk that is volume {volume}")
    dd = matches[0]
    used = ctx.host.domain_targets(domain)
    disk = DiskSpec(
        domain, pool, name, dd.format or r.disk.format or "raw", dd.target, "", live, config
    )
    notes = []
    if dom.active and (live or not config):
        notes.append("the guest must release the disk (unmount it first); libvirt only asks it to")
    return Plan(
        action="vol detach",
        subject=domain,
        summary=f"detach disk {dd.target} (volume {volume}) from domain {domain}, in "
        f"{_where(dom, live, config)}; the volume and its data stay",
        call=f"virDomainDetachDeviceFlags(<disk> target {dd.target}, {_affect(live, config)})",
        request=Detach(disk),
        changes=(
            Change(
                TARGETS, ", ".join(sorted(used)), ", ".join(sorted(used - {dd.target})) or "none"
            ),
        ),
        notes=tuple(notes),
        pool=pool,
        volume=name,
        domain=domain,
    )


# ---- apply -----------------------------------------------------------------------------------


def apply(
    plan: Plan,
    ctx: Context,
    *,
    yes: bool = False,
    progress: Progress | None = None,
) -> Outcome:
    """Do what ``plan`` says, then measure the figures again. A plan with ``confirm`` needs
    ``yes``."""
    req = plan.request
    if req is None:
        return Outcome(plan, plan.summary, ())
    if plan.confirm and not yes:
        raise PolicyError(
            f"{plan.action} {plan.subject} destroys {plan.confirm}", "pass --yes to confirm"
        )
    host = ctx.host
    done = plan.summary
    match req:
        case DefinePool(spec):
            host.define_pool(spec)
        case PoolAction(pool, action, flag):
            host.pool_action(pool, action, flag)
        case CreateVolume(spec):
            host.create_volume(spec)
        case ResizeVolume(pool, name, capacity, allocate, shrink, live):
            if live is not None:
                host.block_resize(live[0], live[1], capacity)
            else:
                host.resize_volume(pool, name, capacity, allocate=allocate, shrink=shrink)
        case DeleteVolume(pool, name):
            host.delete_volume(pool, name)
        case WipeVolume(pool, name, algorithm):
            host.wipe_volume(pool, name, algorithm)
        case Upload(spec, file):
            host.upload_volume(spec, file, progress)
        case Download(pool, name, file, overwrite):
            host.download_volume(pool, name, file, overwrite=overwrite, progress=progress)
        case Attach(disk):
            host.attach_disk(disk)
        case Detach(disk):
            host.detach_disk(disk)
    return _measure(plan, replace(ctx, view=look(host, ctx.probes)), done)


def _measure(plan: Plan, ctx: Context, done: str) -> Outcome:
    view = ctx.view
    notes: list[str] = []
    now = _state(view, plan.pool, plan.volume)
    if isinstance(plan.request, Download):
        size, data = local_file(plan.request.file)
        now |= {FILE_SIZE: size, FILE_DATA: data}
    if plan.domain is not None:
        now[TARGETS] = ", ".join(sorted(ctx.host.domain_targets(plan.domain))) or "none"
        wanted = next((c.after for c in plan.changes if c.what == TARGETS), None)
        if isinstance(plan.request, Detach) and now[TARGETS] != wanted:
            notes.append(
                "the guest has not released the disk yet: libvirt detaches it once it does"
            )
    changes = tuple(Change(c.what, c.before, now.get(c.what)) for c in plan.changes)
    return Outcome(plan, done, changes, tuple(notes))
