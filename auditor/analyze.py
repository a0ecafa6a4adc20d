"""Classification and per-pool figures: pure functions of the collected models.

Every formula here is documented in the README under the same name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

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

MiB = 1 << 20
QCOW2_CLUSTER = 64 * 1024
OPAQUE_BACKENDS = frozenset({"iscsi", "iscsi-direct", "scsi", "mpath"})
MAX_VIRTUAL = 1 << 62  # beyond any real disk: a corrupt header (libvirt reads it unchecked)


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


def classify(disk: Disk) -> tuple[Provisioning, int | None, str]:
    """(provisioning, growth, reason) of one disk."""
    if disk.backend in OPAQUE_BACKENDS:
        return Provisioning.UNKNOWN, None, f"{disk.backend} LUNs hide the array's provisioning"
    if disk.virtual_size is None or disk.disk_size is None:
        return Provisioning.UNKNOWN, None, "sizes not reported"
    if disk.virtual_size > MAX_VIRTUAL:
        return Provisioning.UNKNOWN, None, "implausible virtual size: corrupt image header?"
    growth = max(0, full_size(disk.format, disk.virtual_size, disk.cluster_size) - disk.disk_size)
    if growth <= slack(disk.virtual_size):
        return Provisioning.PREALLOCATED, growth, ""
    return Provisioning.THIN, growth, ""


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


def report_disks(inventory: Inventory) -> list[DiskReport]:
    users, backing_only = _users(inventory.hosts)
    out = []
    for h in inventory.hosts:
        for d in h.disks:
            prov, growth, reason = classify(d)
            key = (h.host, d.path)
            notes = "; ".join(filter(None, [reason, *d.notes]))
            out.append(
                DiskReport(
                    disk=d,
                    provisioning=prov,
                    growth=growth,
                    used_by=tuple(sorted(users.get(key, ()))),
                    reason=notes,
                    backing_only=key in backing_only,
                )
            )
    return out


def _plausible(virtual: int | None) -> int:
    return virtual if virtual is not None and virtual <= MAX_VIRTUAL else 0


@dataclass(frozen=True)
class Figures:
    """Counts and sums over a set of disks."""

    volumes: int
    thin: int
    preallocated: int
    unknown: int
    provisioned: int
    used: int
    exposure: int

    @classmethod
    def of(cls, rows: list[DiskReport]) -> Figures:
        """provisioned = Σ virtual size (implausible sizes left out); exposure = Σ growth,
        leaving out read-only backing images (they cannot grow)."""
        return cls(
            volumes=len(rows),
            thin=sum(r.provisioning is Provisioning.THIN for r in rows),
            preallocated=sum(r.provisioning is Provisioning.PREALLOCATED for r in rows),
            unknown=sum(r.provisioning is Provisioning.UNKNOWN for r in rows),
            provisioned=sum(_plausible(r.disk.virtual_size) for r in rows),
            used=sum(r.disk.disk_size or 0 for r in rows),
            exposure=sum(r.growth or 0 for r in rows if not r.backing_only),
        )


def _summary(
    host: str,
    name: str,
    type_: str,
    state: str,
    space: tuple[int | None, int | None, int | None],
    rows: list[DiskReport] | None,
    filesystem: str | None = None,
    members: tuple[str, ...] = (),
) -> PoolSummary:
    """A summary row; ``rows`` None means the disks cannot be known (an inactive pool)."""
    capacity, allocation, available = space
    f = Figures.of(rows) if rows is not None else None
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
        provisioned=f.provisioned if f else None,
        used=f.used if f else None,
        overcommit_ratio=overcommit_ratio(f.provisioned, capacity) if f else None,
        exposure=f.exposure if f else None,
        filesystem=filesystem,
        members=members,
    )


def _fs_space(fs: FsInfo | None) -> tuple[int | None, int | None, int | None]:
    """(capacity, allocation, available) of a filesystem: allocation = capacity - free."""
    return (fs.capacity, fs.capacity - fs.free, fs.usable) if fs else (None, None, None)


def summarize_pools(host: HostInventory, reports: list[DiskReport]) -> list[PoolSummary]:
    """One summary per pool, per group of pools sharing a filesystem, and per filesystem
    holding unmanaged disks."""
    mine = [r for r in reports if r.disk.host == host.host]
    by_pool: dict[str, list[DiskReport]] = defaultdict(list)
    for r in mine:
        if r.disk.pool is not None:
            by_pool[r.disk.pool].append(r)
    out = [
        replace(
            _summary(
                host.host, p.name, p.type, p.state, (p.capacity, p.allocation, p.usable),
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
    pools = [s for h in inventory.hosts for s in summarize_pools(h, reports)]
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
