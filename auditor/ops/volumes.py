"""Plans for volumes: create, clone, resize, delete, wipe; and what is known about one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from auditor.analyze import full_size
from auditor.errors import ConfigError, InUse, OperationError, PolicyError
from auditor.models import (
    WIPE_ALGORITHMS,
    BackingStore,
    BlockResize,
    CreateVolume,
    DeleteVolume,
    DiskReport,
    PoolSummary,
    Provisioning,
    Request,
    ResizeVolume,
    VolumeSpec,
    WipeVolume,
    overcommit_ratio,
)
from auditor.ops.guards import (
    check_free_space,
    check_fresh_name,
    check_in_use,
    check_overcommit,
    names,
)
from auditor.ops.plan import Action, Figure, Plan, Value, changes, nothing
from auditor.ops.view import Context, Users, View
from auditor.sizes import NewSize
from auditor.units import human, iec

VOLUME_FORMATS = ("raw", "qcow2")
HEADERLESS = frozenset({"raw", "none", "", None})  # formats a wipe cannot break
SIZES = (Figure.VIRTUAL, Figure.DISK, Figure.PROVISIONED, Figure.RATIO, Figure.USABLE)


def volume_ref(text: str) -> tuple[str, str]:
    """'POOL/VOLUME' → (pool, volume)."""
    pool, sep, name = text.partition("/")
    if not (sep and pool and name):
        raise ConfigError(f"bad volume reference {text!r}", "write POOL/VOLUME")
    return pool, name


def _format(fmt: str) -> str:
    if fmt not in VOLUME_FORMATS:
        raise ConfigError(f"volume format {fmt!r} is not supported", "use raw or qcow2")
    return fmt


def provisioning(fmt: str, capacity: int, preallocated: bool) -> tuple[int, bool, str]:
    """(allocation, PREALLOC_METADATA flag, words) as libvirt needs them: raw thin is sparse
    (allocation 0), raw preallocated is fallocated (allocation = capacity); qcow2 honours
    <allocation> only with PREALLOC_METADATA, and allocation = capacity gives falloc."""
    if not preallocated:
        return 0, False, "thin (sparse)" if fmt == "raw" else "thin (preallocation=off)"
    if fmt == "raw":
        return capacity, False, "preallocated (fallocated)"
    return capacity, True, "preallocated (preallocation=falloc)"


@dataclass(frozen=True)
class NewVolume:
    """A volume an operation makes, with what it will take from the pool."""

    action: Action
    spec: VolumeSpec
    summary: str
    virtual: int  # its virtual size once made
    disk: int | None  # its disk size once made, if known
    need: int = 0  # bytes of usable free space it needs
    need_what: str = ""  # what needs them, in words
    notes: list[str] = field(default_factory=list)
    request: Request | None = None  # default: CreateVolume(spec)
    transfer: int | None = None


def plan_new_volume(ctx: Context, new: NewVolume, *, force: bool) -> Plan:
    """The plan of a new volume, after the free space and overcommit guards."""
    pool, notes = new.spec.pool, list(new.notes)
    before = ctx.view.now(pool, new.spec.name)
    after: dict[Figure, Value] = {**before, Figure.VIRTUAL: new.virtual, Figure.DISK: new.disk}
    if new.need:
        after[Figure.USABLE] = check_free_space(ctx.view, pool, new.need, new.need_what)
    after[Figure.PROVISIONED], after[Figure.RATIO] = check_overcommit(
        ctx.view, ctx.config, pool, new.virtual, force=force, notes=notes
    )
    request = new.request or CreateVolume(new.spec)
    return Plan(
        action=new.action,
        subject=f"{pool}/{new.spec.name}",
        summary=new.summary,
        request=request,
        calls=ctx.calls(request),
        changes=changes(before, after, SIZES),
        notes=tuple(notes),
        pool=pool,
        volume=new.spec.name,
        transfer=new.transfer,
    )


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
    ctx.view.active_pool(pool)
    check_fresh_name(ctx.view, pool, name)
    fmt = _format(fmt or ("qcow2" if backing else "raw"))
    if capacity <= 0:
        raise ConfigError(f"size {capacity} must be positive")
    store = _backing(ctx.view, backing, fmt, capacity, preallocated) if backing else None
    allocation, metadata, words = provisioning(fmt, capacity, preallocated)
    spec = VolumeSpec(pool, name, capacity, fmt, allocation, metadata, store)
    notes = []
    if fmt == "qcow2" and capacity % 1024:
        capacity = -(-capacity // 1024) * 1024
        notes.append(f"libvirt makes a qcow2 in whole KiB: its virtual size is {human(capacity)}")
    need = full_size(fmt, capacity) if preallocated else 0
    summary = f"create a {iec(capacity)} {fmt} volume {name} in pool {pool}, {words}" + (
        f", over backing image {backing}" if backing else ""
    )
    disk = need if preallocated else (0 if fmt == "raw" else None)
    new = NewVolume(
        Action.VOL_CREATE, spec, summary, capacity, disk, need, f"a preallocated {fmt} volume",
        notes,
    )  # fmt: skip
    return plan_new_volume(ctx, new, force=force)


def _backing(view: View, backing: str, fmt: str, capacity: int, preallocated: bool) -> BackingStore:
    """The backing image of a new overlay, checked: qcow2, thin, not smaller, not written."""
    base = view.volume(*volume_ref(backing))
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
            f"{names(tuple(d for d, _ in writers))}: an overlay over a changing image is "
            "corrupt",
            "shut them down first",
        )
    return BackingStore(base.disk.path, base.disk.format or "raw")


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
    src = ctx.view.volume(pool, source)
    check_fresh_name(ctx.view, pool, name)
    fmt = _format(fmt or src.disk.format or "raw")
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
    allocation, metadata, words = provisioning(fmt, capacity, preallocated)
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
    disk = need if preallocated else None
    notes = _clone_notes(ctx.view.users(src), src, source)
    new = NewVolume(Action.VOL_CLONE, spec, summary, capacity, disk, need, what, notes)
    return plan_new_volume(ctx, new, force=force)


def _clone_notes(users: Users, src: DiskReport, source: str) -> list[str]:
    notes = []
    if users.running:
        notes.append(
            f"the source is in use by running domain(s) {names(users.running)}: the copy is "
            "at best crash-consistent (a locked qcow2 makes libvirt fail)"
        )
    if src.disk.backing_file:
        notes.append(f"the clone is standalone: it holds the data of the backing chain of {source}")
    return notes


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
    r = ctx.view.volume(pool, name)
    current = r.disk.virtual_size
    if current is None:
        raise OperationError(f"volume {pool}/{name} reports no virtual size")
    new = size.resolve(current)
    if new <= 0:
        raise ConfigError(f"the new size {new} B of {pool}/{name} must be positive")
    if new == current:
        why = f"{pool}/{name} is already {human(new)}"
        return nothing(Action.VOL_RESIZE, f"{pool}/{name}", why, pool=pool, volume=name)
    if new < current:
        return _plan_shrink(ctx, r, new, allow=shrink, allocate=allocate, force=force)
    return _plan_grow(ctx, r, new, allocate=allocate, force=force)


def _resize_plan(
    ctx: Context,
    r: DiskReport,
    request: ResizeVolume | BlockResize,
    after: dict[Figure, Value],
    notes: list[str],
    confirm: str = "",
) -> Plan:
    pool, name, current = r.disk.pool or "", r.disk.name, r.disk.virtual_size or 0
    new = request.capacity
    if r.disk.format == "qcow2" and new % 512:
        notes.append("qcow2 rounds the size up to a multiple of 512 bytes")
    allocate = isinstance(request, ResizeVolume) and request.allocate
    verb = "shrink" if new < current else "grow"
    return Plan(
        action=Action.VOL_RESIZE,
        subject=f"{pool}/{name}",
        summary=f"{verb} {pool}/{name} from {human(current)} to {human(new)}"
        + (" and allocate it" if allocate else ""),
        request=request,
        calls=ctx.calls(request),
        changes=changes(ctx.view.now(pool, name), after, SIZES),
        notes=tuple(notes),
        confirm=confirm,
        pool=pool,
        volume=name,
    )


def _plan_shrink(
    ctx: Context, r: DiskReport, new: int, *, allow: bool, allocate: bool, force: bool
) -> Plan:
    subject, current, disk = f"{r.disk.pool}/{r.disk.name}", r.disk.virtual_size or 0, 0
    if not allow:
        raise PolicyError(
            f"{subject} would shrink from {human(current)} to {human(new)}: the data "
            "beyond the new end is lost",
            "pass --shrink --yes if that is what you want",
        )
    if allocate:
        raise ConfigError("--allocate applies only when growing")
    users = check_in_use(ctx.view, r, "shrink", force=force, defined_too=True)
    disk = r.disk.disk_size or 0
    if new < disk:
        raise PolicyError(
            f"{subject} cannot shrink to {human(new)}: libvirt refuses to shrink below "
            f"the volume's disk size ({human(disk)})",
            "a fully allocated volume cannot be shrunk in place; clone it thin first",
        )
    notes = [f"--force: in use by {users.who()}"] if users.any else []
    after = {**ctx.view.now(r.disk.pool, r.disk.name), Figure.VIRTUAL: new, Figure.DISK: None}
    after[Figure.PROVISIONED], after[Figure.RATIO] = check_overcommit(
        ctx.view, ctx.config, r.disk.pool or "", new - current, force=force, notes=notes
    )
    request = ResizeVolume(r.disk.pool or "", r.disk.name, new, shrink=True)
    confirm = f"the last {human(current - new)} of {subject}'s virtual disk"
    return replace(_resize_plan(ctx, r, request, after, notes, confirm), force=force)


def _plan_grow(ctx: Context, r: DiskReport, new: int, *, allocate: bool, force: bool) -> Plan:
    pool, name, subject = r.disk.pool or "", r.disk.name, f"{r.disk.pool}/{r.disk.name}"
    users = ctx.view.users(r)
    if len(users.attached) > 1 or (users.running and not users.attached):
        raise InUse(
            f"resize refused: volume {subject} is used by running domain(s) "
            f"{names(users.running)}"
            + ("" if users.attached else " (read-only, or as a backing image)"),
            "shut them down first",
        )
    notes: list[str] = []
    if users.attached and allocate:
        raise PolicyError(
            f"{subject} is in use by running domain {users.attached[0][0]}: it can only grow "
            "thin, through the domain",
            "drop --allocate",
        )
    if allocate and r.disk.format != "raw":
        raise PolicyError(
            "--allocate works only for raw volumes (libvirt: preallocate is only "
            "supported for raw type volume)",
            "drop --allocate",
        )
    after = {**ctx.view.now(pool, name), Figure.VIRTUAL: new}
    after[Figure.PROVISIONED], after[Figure.RATIO] = check_overcommit(
        ctx.view, ctx.config, pool, new - (r.disk.virtual_size or 0), force=force, notes=notes
    )
    if allocate:
        need = max(0, new - (r.disk.disk_size or 0))
        after[Figure.USABLE] = check_free_space(ctx.view, pool, need, "--allocate")
        after[Figure.DISK] = new
    request: ResizeVolume | BlockResize = ResizeVolume(pool, name, new, allocate=allocate)
    if users.attached:
        domain, target = users.attached[0]
        notes.append(f"grown live by running domain {domain} (disk {target}), not offline")
        request = BlockResize(domain, target, new)
    return _resize_plan(ctx, r, request, after, notes)


def _minus(value: Value, k: int) -> Value:
    return value - k if isinstance(value, int) else value


def plan_delete(ctx: Context, pool: str, name: str, *, force: bool = False) -> Plan:
    r = ctx.view.volume(pool, name)
    users = check_in_use(ctx.view, r, "delete", force=force, defined_too=True)
    notes = (f"--force: in use by {users.who()}",) if users.any else ()
    before = ctx.view.now(pool, name)
    capacity = r.disk.virtual_size or 0
    provisioned = _minus(before.get(Figure.PROVISIONED), capacity)
    s: PoolSummary | None = ctx.view.figures(pool)
    after = {
        **before,
        Figure.VIRTUAL: None,
        Figure.DISK: None,
        Figure.VOLUMES: _minus(before.get(Figure.VOLUMES), 1),
        Figure.PROVISIONED: provisioned,
        Figure.RATIO: overcommit_ratio(provisioned, s.capacity)
        if s and isinstance(provisioned, int)
        else None,
        Figure.USABLE: _minus(before.get(Figure.USABLE), -(r.disk.disk_size or 0)),
    }
    subject, request = f"{pool}/{name}", DeleteVolume(pool, name)
    return Plan(
        action=Action.VOL_DELETE,
        subject=subject,
        summary=f"delete volume {subject} ({r.disk.format}, {iec(capacity)} virtual, "
        f"{iec(r.disk.disk_size)} on disk)",
        request=request,
        calls=ctx.calls(request),
        changes=changes(before, after, (Figure.VIRTUAL, Figure.DISK, Figure.VOLUMES, *SIZES[2:])),
        notes=notes,
        confirm=f"volume {subject} and all its data",
        pool=pool,
        volume=name,
        force=force,
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
    r = ctx.view.volume(pool, name)
    if algorithm not in WIPE_ALGORITHMS:
        raise ConfigError(
            f"unknown wipe algorithm {algorithm!r}", f"use {', '.join(WIPE_ALGORITHMS)}"
        )
    users = check_in_use(ctx.view, r, "wipe", force=force, defined_too=True)
    notes = [f"--force: in use by {users.who()}"] if users.any else []
    notes += _format_trap(r, destroy_format)
    if algorithm not in ("zero", "trim"):
        notes.append(f"libvirt needs the scrub program for the {algorithm} algorithm")
    before = ctx.view.now(pool, name)
    after = {**before, Figure.DISK: None}
    if r.disk.format not in HEADERLESS:
        after[Figure.VIRTUAL] = r.disk.physical
    subject, request = f"{pool}/{name}", WipeVolume(pool, name, algorithm)
    return Plan(
        action=Action.VOL_WIPE,
        subject=subject,
        summary=f"wipe volume {subject} with the {algorithm} algorithm (its content is lost, "
        "the volume stays)",
        request=request,
        calls=ctx.calls(request),
        changes=changes(before, after, (Figure.VIRTUAL, Figure.DISK)),
        notes=tuple(notes),
        confirm=f"all data of volume {subject}",
        pool=pool,
        volume=name,
        force=force,
    )


def _format_trap(r: DiskReport, destroy_format: bool) -> list[str]:
    """Wiping an image with a header destroys the virtual disk: only with destroy_format."""
    if r.disk.format in HEADERLESS:
        return []
    if not destroy_format:
        raise PolicyError(
            f"wiping {r.disk.format} volume {r.disk.pool}/{r.disk.name} overwrites its header: "
            f"libvirt then sees a raw volume of {human(r.disk.physical)} (the file size) and "
            f"the {iec(r.disk.virtual_size)} virtual disk is gone",
            "pass --destroy-format --yes to do it anyway, or delete and re-create the volume",
        )
    return [f"--destroy-format: the {r.disk.format} header is destroyed; the volume becomes raw"]


@dataclass(frozen=True)
class VolumeInfo:
    """Everything the audit knows about one volume."""

    report: DiskReport
    users: Users
    chain: tuple[str, ...]  # backing images, nearest first
    pool: PoolSummary | None


def volume_info(ctx: Context, pool: str, name: str) -> VolumeInfo:
    r = ctx.view.volume(pool, name)
    return VolumeInfo(r, ctx.view.users(r), ctx.view.chain(r), ctx.view.figures(pool))
