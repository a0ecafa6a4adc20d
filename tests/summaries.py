"""Hand-built summaries for report and history tests (no libvirt)."""

from __future__ import annotations

from datetime import datetime

from auditor.analyze import analyze
from auditor.models import (
    Disk,
    Domain,
    DomainDisk,
    HostInventory,
    Inventory,
    Labels,
    Pool,
    Skip,
    Summary,
)

GiB = 1 << 30


def pool(host: str, name: str, capacity: int, available: int, *, state: str = "running") -> Pool:
    active = state == "running"
    return Pool(
        host=host, name=name, uuid=f"uuid-{name}", type="dir", state=state, persistent=True,
        autostart=True, target_path=f"/{name}",
        capacity=capacity if active else None,
        allocation=capacity - available if active else None,
        available=available if active else None,
    )  # fmt: skip


def disk(host: str, pool: str | None, name: str, virtual: int, size: int) -> Disk:
    return Disk(
        host=host, path=f"/{pool or 'elsewhere'}/{name}", name=name, pool=pool,
        backend="dir" if pool else "unmanaged", kind="file", format="raw",
        virtual_size=virtual, disk_size=size,
    )  # fmt: skip


def host(
    name: str, at: datetime, *, extra: bool = False, skip: bool = False, down: bool = False
) -> HostInventory:
    """Pool 'big' (100 GiB, 60 used, 3 volumes), 'idle' inactive, one unmanaged disk used by
    vm1; ``extra`` adds a 10 GiB volume 'new.raw' to 'big', ``skip`` an unreadable image,
    ``down`` makes 'big' inactive (its volumes unknown)."""
    disks = [
        disk(name, "big", "a.raw", 50 * GiB, 50 * GiB),
        disk(name, "big", "b.raw", 80 * GiB, 5 * GiB),
        disk(name, "big", "c.raw", 40 * GiB, 5 * GiB),
        disk(name, None, "loose.raw", 8 * GiB, 1 * GiB),
    ]
    if extra:
        disks.append(disk(name, "big", "new.raw", 10 * GiB, 10 * GiB))
    dom = Domain(name, "vm1", "u1", "running", True,
                 (DomainDisk("vda", "disk", "file", "/elsewhere/loose.raw"),))  # fmt: skip
    if down:
        disks = [d for d in disks if d.pool != "big"]
    skips = (Skip(name, "image", "/bad.qcow2", "qemu-img: not a qcow2 image"),) if skip else ()
    return HostInventory(
        host=name, uri=f"test:///{name}", collected_at=at,
        pools=(pool(name, "big", 100 * GiB, 40 * GiB - (10 * GiB if extra else 0),
                    state="inactive" if down else "running"),
               pool(name, "idle", 0, 0, state="inactive")),
        disks=tuple(disks), domains=(dom,), skips=skips,
    )  # fmt: skip


def summary(at: datetime, *hosts: str, **kw: bool) -> Summary:
    return analyze(Inventory(hosts=tuple(host(h, at, **kw) for h in hosts or ("h1",))))


def fleet_host(
    name: str, at: datetime, labels: Labels = (), *, used: int = 40, volumes: int = 200
) -> HostInventory:
    """A fleet host: 5 pools of 1000 GiB sharing ``volumes`` thin raw volumes, provisioned at
    their capacity; pool 'p0' is ``used`` % used (90: critical, 80: warning), the others 40 %."""
    capacity, per_pool = 1000 * GiB, volumes // 5
    pools, disks = [], []
    for i in range(5):
        share = capacity * (used if i == 0 else 40) // 100 // per_pool
        pools.append(pool(name, f"p{i}", capacity, capacity - share * per_pool))
        disks += [
            disk(name, f"p{i}", f"vm{j:03}-disk.raw", capacity // per_pool, share)
            for j in range(per_pool)
        ]
    return HostInventory(
        host=name, uri=f"test:///{name}", collected_at=at,
        pools=tuple(pools), disks=tuple(disks), labels=labels,
    )  # fmt: skip
