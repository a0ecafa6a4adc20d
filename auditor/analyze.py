"""Classification, per-pool figures and their sanity: pure functions of the collected models.

Every formula here is documented in the README under the same name, and what each figure
means for each pool type in its per-backend table. A figure libvirt (or qemu-img) reports
that cannot be true becomes unknown (None) with a note saying what was reported and why; it
is left out of sums and ratios, and nothing else is lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from auditor.errors import NotFound
from auditor.models import (
    Disk,
    DiskReport,
    FsInfo,
    HostInventory,
    Inventory,
    Pool,
    PoolSummary,
    Provisioning,
    Summary,
    overcommit_ratio,
)
from auditor.units import human

MiB = 1 << 20
QCOW2_CLUSTER = 64 * 1024
MAX_SIZE = 1 << 62  # 4 EiB: beyond any real disk or pool, so a larger figure is not a size
MAX_SUM = (1 << 63) - 1  # a sum beyond: more than any storage, and than a signed 64-bit column
MAX_VIRTUAL = MAX_SIZE  # a virtual size above it: a corrupt header (libvirt reads it unchecked)
# A volume of these is a whole LUN: capacity = allocation = its size, whatever the array
# behind it provisions (storage_backend_iscsi.c, _iscsi_direct.c, _scsi.c, _mpath.c).
LUN_BACKENDS = frozenset({"iscsi", "iscsi-direct", "scsi", "mpath"})
OPAQUE_BACKENDS = LUN_BACKENDS
Space = tuple[int | None, int | None, int | None]  # capacity, allocation, usable free
SIZE_FIELDS = {"virtual_size": "virtual size", "disk_size": "disk size", "physical": "file size"}


def full_size(fmt: str | None, virtual: int, cluster: int | None = None) -> int:
    """Host bytes a fully written image takes: virtual size, plus metadata for qcow2
    (an L2 entry of 8 bytes and a 16-bit refcount per cluster, and 4 clusters of header,
    L1 and refcount tables)."""
    if fmt != "qcow2":
        return virtual
    c = cluster or QCOW2_CLUSTER
    return virtual + virtual * (8 + 2) // c + 4 * c


def slack(virtual: int) -> int:
    """Growth that still counts as preallocated: max(4 MiB, 1% of the virtual size)."""
    return max(4 * MiB, virtual // 100)


# ---- what the figures of one disk mean, per backend -----------------------------------------


@dataclass(frozen=True)
class Judgement:
    """What the analyzer concludes about one disk's figures."""

    provisioning: Provisioning
    growth: int | None  # None exactly when provisioning is unknown
    reason: str = ""  # why it is unknown, in words, with the figures libvirt reported
    unmeasured: tuple[str, ...] = ()  # Disk fields that are not what they claim: made None
    implausible: tuple[str, ...] = ()  # notes on reported sizes that cannot be true

    @property
    def note(self) -> str:
        return "; ".join(filter(None, [*self.implausible, self.reason]))


def _unknown(reason: str, *unmeasured: str) -> Judgement:
    return Judgement(Provisioning.UNKNOWN, None, reason, unmeasured)


def _rbd(d: Disk, general: Judgement, _doubt: str) -> Judgement | None:
    """RBD (storage_backend_rbd.c): the allocation is measured (rbd_diff_iterate2) only for
    images with fast-diff; otherwise libvirt reports obj_size * num_objs, the virtual size
    rounded up to an object. An allocation short of the virtual size was measured (thin);
    one that reaches it is a fully written image or no measurement at all."""
    if general.provisioning is Provisioning.THIN:
        return None
    return _unknown(
        f"libvirt reports allocation {human(d.disk_size)}, the virtual size (rounded up to an"
        " object), as it does for an RBD image it does not measure (no fast-diff): data"
        " written unknown",
        "disk_size",
    )


def _zfs(d: Disk, general: Judgement, _doubt: str) -> Judgement | None:
    """ZFS (storage_backend_zfs.c): capacity = volsize, allocation = refreservation. A zvol
    whose reservation covers its size is preallocated (the pool holds the space for it); a
    sparse zvol reports its reservation, not the data written."""
    if general.provisioning is Provisioning.PREALLOCATED:
        return None
    return _unknown(
        f"sparse zvol: libvirt reports its refreservation {human(d.disk_size)}, not the data"
        " written (zfs get used): growth unknown",
        "disk_size",
    )


def _partition(d: Disk, general: Judgement, _doubt: str) -> Judgement | None:
    """Disk pools (storage_backend_disk.c): a partition is a fixed extent, capacity =
    allocation = its size (preallocated). An extended partition is listed too, with its size
    as capacity and the sum of the logical partitions inside it as allocation: a container,
    left out so that the logical partitions (listed as well) are not counted twice."""
    if d.format != "extended" and general.provisioning is Provisioning.PREALLOCATED:
        return None
    return _unknown(
        f"extended partition of {human(d.virtual_size)} holding {human(d.disk_size)} of logical"
        " partitions (listed as volumes themselves): a container, left out of the sums",
        "virtual_size",
        "disk_size",
    )


def _lv(d: Disk, general: Judgement, doubt: str) -> Judgement | None:
    """Logical pools (storage_backend_logical.c): a thick LV has allocation = capacity, and a
    thin LV is listed the same way (its virtual size as allocation; the thin pool holding it
    is not listed); a COW snapshot reports its COW size (thin by the general rule). An LV
    that looks thick is believed only when the VG's allocation is the sum of its LVs."""
    if not doubt or general.provisioning is Provisioning.THIN:
        return None
    return _unknown(
        f"allocation {human(d.disk_size)} = capacity, as libvirt lists thick LVs and thin ones"
        f" (their virtual size) alike, and {doubt}: thin or thick unknown",
        "disk_size",
    )


BACKEND_RULES = {"rbd": _rbd, "zfs": _zfs, "disk": _partition, "logical": _lv}


def _judge(disk: Disk, doubt: str, vetted: bool) -> Judgement:
    v, a = disk.virtual_size, disk.disk_size
    if disk.backend in LUN_BACKENDS:
        return _unknown(f"{disk.backend} LUNs hide the array's provisioning")
    if v is None or a is None:
        return _unknown("" if vetted else "sizes not reported")
    growth = max(0, full_size(disk.format, v, disk.cluster_size) - a)
    thin = growth > slack(v)
    general = Judgement(Provisioning.THIN if thin else Provisioning.PREALLOCATED, growth)
    rule = BACKEND_RULES.get(disk.backend)
    return (rule(disk, general, doubt) if rule else None) or general


def judge(disk: Disk, doubt: str = "") -> Judgement:
    """The provisioning and growth of one disk: growth = max(0, full size - disk size),
    preallocated when growth <= slack, else thin; unknown where the backend cannot tell or
    a size cannot be true (``vet_disk``). ``doubt`` says why a logical pool's LVs do not add
    up to its allocation ('' when they do)."""
    vetted, implausible = vet_disk(disk)
    j = _judge(vetted, doubt, bool(implausible))
    dropped = tuple(f for f in SIZE_FIELDS if getattr(disk, f) != getattr(vetted, f))
    return replace(j, unmeasured=dropped + j.unmeasured, implausible=implausible)


def classify(disk: Disk, doubt: str = "") -> tuple[Provisioning, int | None, str]:
    """(provisioning, growth, reason) of one disk (see ``judge``)."""
    j = judge(disk, doubt)
    return j.provisioning, j.growth, j.note


# ---- sanity: figures that cannot be true become unknown, with a note -------------------------


def vet_disk(d: Disk) -> tuple[Disk, tuple[str, ...]]:
    """The disk with every size above MAX_SIZE made None, and a note per figure saying what
    was reported and why it cannot be true."""
    source = "libvirt" if d.managed else "qemu-img"
    notes: list[str] = []
    gone: list[str] = []
    for field, label in SIZE_FIELDS.items():
        n = getattr(d, field)
        if n is not None and n > MAX_SIZE:
            why = ", a corrupt image header?" if field == "virtual_size" else ""
            notes.append(
                f"{source} reports {label} {human(n)}: more than any real disk"
                f" (2^62 bytes){why}; {label} unknown"
            )
            gone.append(field)
    return without(d, gone), tuple(notes)


def without(d: Disk, fields: Iterable[str]) -> Disk:
    """The disk with these size fields made None (not known)."""
    gone: dict[str, Any] = dict.fromkeys(fields)
    return replace(d, **gone) if gone else d


def _wrapped(p: Pool) -> str:
    """Why libvirt's available can exceed the capacity, when that is the reason."""
    c, a, v = p.capacity, p.allocation, p.available
    if c is not None and a is not None and a > c and v == (c - a) % (1 << 64):
        return (
            ": it is capacity - allocation wrapped around 2^64 (libvirt subtracts in"
            " unsigned 64-bit arithmetic, and the allocation exceeds the capacity)"
        )
    return ""


def _capacity_note(cap: int | None) -> str | None:
    if cap == 0:
        return (
            "libvirt reports capacity 0 for an active pool: an active pool has a size (its"
            " backend did not measure it); capacity unknown"
        )
    if cap is not None and cap > MAX_SIZE:
        return (
            f"libvirt reports capacity {human(cap)}: more than any real pool (2^62 bytes);"
            " capacity unknown"
        )
    return None


def _figure_note(p: Pool, label: str, n: int | None) -> str | None:
    """Why ``n``, the pool's allocation or available, cannot be true; None if it can."""
    cap = p.capacity
    if n is None:
        return None
    if cap is not None and cap <= MAX_SIZE:
        if n <= cap:
            return None
        why = _wrapped(p) if label == "available" else ": a pool cannot hold more than its size"
        return (
            f"libvirt reports {label} {human(n)}, more than the capacity {human(cap)}{why};"
            f" {label} unknown"
        )
    if n <= MAX_SIZE:
        return None
    return (
        f"libvirt reports {label} {human(n)}: more than any real pool (2^62 bytes); {label} unknown"
    )


def vet_space(p: Pool) -> tuple[Space, tuple[str, ...]]:
    """(capacity, allocation, available) of an active pool as libvirt reports them, each
    figure that cannot be true made None, with a note saying what was reported and why:
    a capacity of 0 or above MAX_SIZE, an allocation or available above the capacity."""
    cap_note = _capacity_note(p.capacity)
    alloc_note = _figure_note(p, "allocation", p.allocation)
    avail_note = _figure_note(p, "available", p.available)
    space = (
        None if cap_note else p.capacity,
        None if alloc_note else p.allocation,
        None if avail_note else p.available,
    )
    return space, tuple(n for n in (cap_note, alloc_note, avail_note) if n)


def backend_space(p: Pool, space: Space) -> tuple[Space, tuple[str, ...]]:
    """The figures a backend's libvirt numbers cannot give made None, with a note: RBD's
    capacity and available are the Ceph cluster's raw ones (storage_backend_rbd.c:
    rados_cluster_stat kb and kb_avail, before replication, shared by every Ceph pool);
    a pool of LUNs has no free space of its own (libvirt reports available 0)."""
    cap, alloc, avail = space
    if p.type == "rbd" and (cap is not None or avail is not None):
        figures = " and ".join(
            f"{label} {human(n)}"
            for label, n in (("capacity", cap), ("available", avail))
            if n is not None
        )
        note = (
            f"libvirt reports {figures}, the Ceph cluster's raw figures (all OSDs, before"
            " replication, shared by every Ceph pool): this pool's capacity and usable free"
            " space are unknown (ceph df: MAX AVAIL)"
        )
        return (None, alloc, None), (note,)
    if p.type in LUN_BACKENDS and avail is not None:
        note = (
            f"libvirt reports available {human(avail)} for a pool of {p.type} LUNs: the"
            " LUNs are fixed by the target, whose own free space is not visible; usable"
            " free unknown"
        )
        return (cap, alloc, None), (note,)
    return space, ()


def pool_space(p: Pool) -> tuple[Space, tuple[str, ...]]:
    """(capacity, allocation, usable free) of a pool with the notes on what is unknown:
    usable free is statvfs f_bavail where the pool is on a local filesystem."""
    if not p.active:
        return (None, None, None), ()
    space, notes = vet_space(p)
    space, more = backend_space(p, space)
    if p.fs is not None:
        space = (space[0], space[1], p.fs.usable)
    return space, notes + more


def _users(
    hosts: Iterable[HostInventory],
) -> tuple[dict[tuple[str, str], set[str]], set[tuple[str, str]]]:
    """(host, path) → domains using the image, directly or as a backing file; and the set of
    (host, path) that domains open only as backing images."""
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    tops: set[tuple[str, str]] = set()
    backs: set[tuple[str, str]] = set()
    for h in hosts:
        backing = {d.path: d.backing_file for d in h.disks if d.backing_file}
        for d in h.disks:
            if d.backing_file:
                backs.add((h.host, d.backing_file))
        for dom in h.domains:
            for dd in dom.disks:
                if not dd.path:
                    continue
                tops.add((h.host, dd.path))
                chain = list(dd.backing_chain)
                seen = {dd.path, *chain}
                nxt = backing.get(chain[-1] if chain else dd.path)
                while nxt and nxt not in seen:  # shut-off domains list no chain: follow files
                    chain.append(nxt)
                    seen.add(nxt)
                    nxt = backing.get(nxt)
                for p in (dd.path, *chain):
                    users[(h.host, p)].add(dom.name)
                backs.update((h.host, p) for p in chain)
    return users, backs - tops


def _lvm_doubts(host: HostInventory) -> dict[str, str]:
    """Per active logical pool whose LVs do not add up to the VG's allocation (within the
    slack of the allocation), that doubt in words: space held by LVs libvirt does not list
    (thin pools), or virtual sizes listed as allocations (thin LVs)."""
    sizes: dict[str, int] = defaultdict(int)
    for d in host.disks:
        size = vet_disk(d)[0].disk_size
        if d.pool is not None and size is not None:
            sizes[d.pool] += size
    out = {}
    for p in host.pools:
        if p.type != "logical" or not p.active:
            continue
        alloc, total = vet_space(p)[0][1], sizes.get(p.name, 0)
        if alloc is None:
            out[p.name] = f"this VG's allocation is unknown (its LVs add up to {human(total)})"
        elif abs(alloc - total) > slack(alloc):
            out[p.name] = (
                f"this VG's LVs add up to {human(total)} while its allocation is {human(alloc)}"
            )
    return out


def report_disks(inventory: Inventory) -> list[DiskReport]:
    """Every disk with its judgement: figures that are not what they claim made None."""
    users, backing_only = _users(inventory.hosts)
    out = []
    for h in inventory.hosts:
        doubts = _lvm_doubts(h)
        for d in h.disks:
            j = judge(d, doubts.get(d.pool or "", "") if d.backend == "logical" else "")
            key = (h.host, d.path)
            out.append(
                DiskReport(
                    disk=without(d, j.unmeasured),
                    provisioning=j.provisioning,
                    growth=j.growth,
                    used_by=tuple(sorted(users.get(key, ()))),
                    reason="; ".join(filter(None, [j.note, *d.notes])),
                    backing_only=key in backing_only,
                    implausible=j.implausible,
                )
            )
    return out


def _total(values: Iterable[int | None]) -> int | None:
    """Σ of the known values; None when there are values and none of them is known."""
    given = list(values)
    known = [v for v in given if v is not None]
    return sum(known) if known or not given else None


@dataclass(frozen=True)
class Figures:
    """Counts and sums over a set of disks."""

    volumes: int
    thin: int
    preallocated: int
    unknown: int
    provisioned: int | None
    used: int | None
    exposure: int | None

    @classmethod
    def of(cls, rows: list[DiskReport]) -> Figures:
        """provisioned = Σ virtual size, used = Σ disk size, exposure = Σ growth (leaving
        out read-only backing images: they cannot grow), each over the known values."""
        return cls(
            volumes=len(rows),
            thin=sum(r.provisioning is Provisioning.THIN for r in rows),
            preallocated=sum(r.provisioning is Provisioning.PREALLOCATED for r in rows),
            unknown=sum(r.provisioning is Provisioning.UNKNOWN for r in rows),
            provisioned=_total(_plausible(r.disk.virtual_size) for r in rows),
            used=_total(r.disk.disk_size for r in rows),
            exposure=_total(r.growth for r in rows if not r.backing_only),
        )


def _plausible(size: int | None) -> int | None:
    return size if size is not None and size <= MAX_SIZE else None


def _used_note(used: int | None, capacity: int | None) -> str | None:
    """Why the volumes' Σ disk size cannot be what they use; None if it can."""
    if used is None or capacity is None or used <= capacity:
        return None
    return (
        f"the volumes' disk sizes add up to {human(used)}, more than the capacity"
        f" {human(capacity)}: extents shared between volumes (reflinks, deduplication) or"
        " virtual sizes listed as allocations (thin LVs, VDO); used unknown"
    )


def _bounded(label: str, figure: str, total: int | None, notes: list[str]) -> int | None:
    """A sum of 2^63 bytes or more (8 EiB) is beyond any storage and any signed 64-bit
    integer (the history's columns): unknown, with a note."""
    if total is None or total <= MAX_SUM:
        return total
    notes.append(
        f"the volumes' {label} add up to {human(total)}, beyond 8 EiB (2^63 bytes): more than"
        f" any storage holds; {figure} unknown"
    )
    return None


def _partial_note(rows: list[DiskReport], figures: Figures) -> str | None:
    """Which sums leave out volumes whose figure is unknown (when some of them are known)."""
    parts = []
    growing = [r for r in rows if not r.backing_only]
    for label, total, missing in (
        ("used", figures.used, sum(r.disk.disk_size is None for r in rows)),
        ("exposure", figures.exposure, sum(r.growth is None for r in growing)),
    ):
        if total is not None and missing:
            parts.append(f"{label} leaves out {missing} volume{'s' if missing > 1 else ''}")
    return "; ".join(parts) + " of unknown size or growth (see their notes)" if parts else None


def _summary(
    host: str,
    name: str,
    type_: str,
    state: str,
    space: tuple[Space, tuple[str, ...]],
    rows: list[DiskReport] | None,
    filesystem: str | None = None,
    members: tuple[str, ...] = (),
) -> PoolSummary:
    """A summary row; ``rows`` None means the disks cannot be known (an inactive pool);
    ``space`` is (capacity, allocation, usable free) with the notes on unknown figures."""
    (capacity, allocation, available), notes = space
    f = Figures.of(rows) if rows is not None else None
    big: list[str] = []
    if f is not None:
        f = replace(
            f,
            provisioned=_bounded("virtual sizes", "provisioned", f.provisioned, big),
            used=_bounded("disk sizes", "used", f.used, big),
            exposure=_bounded("growths", "exposure", f.exposure, big),
        )
    used_note = _used_note(f.used, capacity) if f else None
    partial = _partial_note(rows, f) if rows is not None and f and not used_note else None
    provisioned = f.provisioned if f else None
    ratio = overcommit_ratio(provisioned, capacity) if provisioned is not None else None
    return PoolSummary(
        host=host,
        pool=name,
        type=type_,
        state=state,
        capacity=capacity,
        allocation=allocation,
        usable_free=available,
        volumes=f.volumes if f else None,
        thin=f.thin if f else None,
        preallocated=f.preallocated if f else None,
        unknown=f.unknown if f else None,
        provisioned=provisioned,
        used=None if used_note or not f else f.used,
        overcommit_ratio=ratio,
        exposure=f.exposure if f else None,
        filesystem=filesystem,
        members=members,
        notes=notes + tuple(big) + tuple(n for n in (used_note, partial) if n),
    )


def _fs_space(fs: FsInfo | None) -> tuple[Space, tuple[str, ...]]:
    """(capacity, allocation, available) of a filesystem: allocation = capacity - free."""
    return ((fs.capacity, fs.capacity - fs.free, fs.usable) if fs else (None, None, None)), ()


def summarize_pools(host: HostInventory, reports: list[DiskReport]) -> list[PoolSummary]:
    """One summary per pool, per group of pools sharing a filesystem, and per filesystem
    holding unmanaged disks (``reports`` may hold other hosts' disks: they are left out)."""
    mine = [r for r in reports if r.disk.host == host.host]
    by_pool: dict[str, list[DiskReport]] = defaultdict(list)
    for r in mine:
        if r.disk.pool is not None:
            by_pool[r.disk.pool].append(r)
    out = [
        replace(
            _summary(
                host.host, p.name, p.type, p.state, pool_space(p),
                by_pool.get(p.name, []) if p.active else None,
                p.fs.mount_point if p.fs else None,
            ),
            target=p.target_path, autostart=p.autostart, persistent=p.persistent,
        )
        for p in sorted(host.pools, key=lambda p: p.name)
    ]  # fmt: skip

    shared: dict[int, list[Pool]] = defaultdict(list)
    for p in host.pools:
        if p.active and p.fs is not None:
            shared[p.fs.device].append(p)
    for group in shared.values():
        if len(group) < 2:
            continue
        fs = group[0].fs
        names = tuple(sorted(p.name for p in group))
        rows = list({r.disk.path: r for n in names for r in by_pool.get(n, [])}.values())
        out.append(
            _summary(host.host, "+".join(names), "shared-fs", "running", _fs_space(fs), rows,
                     fs.mount_point if fs else None, names)
        )  # fmt: skip

    unmanaged: dict[str | None, list[DiskReport]] = defaultdict(list)
    for r in mine:
        if r.disk.pool is None:
            unmanaged[r.disk.fs.mount_point if r.disk.fs else None].append(r)
    for mount, rows in sorted(unmanaged.items(), key=lambda kv: kv[0] or "\uffff"):
        fs = rows[0].disk.fs if mount else None
        out.append(_summary(host.host, "(unmanaged)", "unmanaged", "", _fs_space(fs), rows, mount))
    return out


def require_pool(summary: Summary, pool: str | None) -> None:
    """Raise NotFound unless ``pool`` (when given) is a pool of some collected host."""
    if pool is not None and not any(p.pool == pool and p.is_pool for p in summary.pools):
        known = sorted({p.pool for p in summary.pools if p.is_pool})
        raise NotFound(f"pool {pool!r} not found", f"known pools: {', '.join(known) or 'none'}")


def analyze(inventory: Inventory, now: datetime | None = None) -> Summary:
    """Classify every disk and summarise every pool of every host."""
    reports = report_disks(inventory)
    by_host: dict[str, list[DiskReport]] = defaultdict(list)
    for r in reports:
        by_host[r.disk.host].append(r)
    pools = [s for h in inventory.hosts for s in summarize_pools(h, by_host[h.host])]
    collected = min((h.collected_at for h in inventory.hosts), default=now or datetime.now(UTC))
    return Summary(
        collected_at=collected,
        hosts=tuple(h.host for h in inventory.hosts),
        disks=tuple(reports),
        pools=tuple(pools),
        skips=inventory.all_skips,
        notices=tuple(n for h in inventory.hosts for n in h.notices),
        inventory=inventory,
    )
