"""The analyzer on hand-built models; expectations are literal numbers, not calls into it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from auditor.analyze import analyze, classify
from auditor.models import Disk, Domain, DomainDisk, FsInfo, HostInventory, Inventory, Pool

GiB = 1 << 30
MiB = 1 << 20
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def disk(name: str, fmt: str, v: int | None, a: int | None, **kw: object) -> Disk:
    defaults: dict[str, object] = {
        "host": "h",
        "path": f"/p/{name}",
        "name": name,
        "pool": "p",
        "backend": "dir",
        "kind": "file",
    }
    defaults.update(kw)
    return Disk(format=fmt, virtual_size=v, disk_size=a, **defaults)  # type: ignore[arg-type]


# Measured on ext4 for 1 GiB images (shared facts §1).
@pytest.mark.parametrize(
    ("fmt", "alloc", "expected", "growth"),
    [
        ("raw", 0, "thin", GiB),  # truncate
        ("raw", GiB, "preallocated", 0),  # dd
        ("raw", GiB + 4096, "preallocated", 0),  # fallocate: +1 extent block
        ("qcow2", 200704, "thin", 1074167808 - 200704),  # preallocation=off
        ("qcow2", 331776, "thin", 1074167808 - 331776),  # preallocation=metadata
        ("qcow2", 1074077696, "preallocated", 1074167808 - 1074077696),  # falloc / full
    ],
)
def test_classify_measured_images(fmt: str, alloc: int, expected: str, growth: int) -> None:
    prov, g, _ = classify(disk("x", fmt, GiB, alloc))
    assert (prov.value, g) == (expected, growth)


def test_slack_is_4mib_or_one_percent() -> None:
    assert classify(disk("a", "raw", 64 * MiB, 60 * MiB))[0].value == "preallocated"  # 4 MiB
    assert classify(disk("b", "raw", 64 * MiB, 60 * MiB - 1))[0].value == "thin"
    v = 100 * GiB  # 1% = 1 GiB
    assert classify(disk("c", "raw", v, v - v // 100))[0].value == "preallocated"
    assert classify(disk("d", "raw", v, v - v // 100 - 1))[0].value == "thin"


def test_unknown_backends_and_missing_sizes() -> None:
    prov, growth, reason = classify(disk("lun", "raw", GiB, GiB, backend="iscsi"))
    assert (prov.value, growth) == ("unknown", None) and "iscsi" in reason
    assert classify(disk("n", "raw", None, None))[0].value == "unknown"


def _fs(dev: int = 7) -> FsInfo:
    return FsInfo(device=dev, mount_point="/srv", capacity=10 * GiB, free=6 * GiB, usable=5 * GiB)


def _pool(name: str, fs: FsInfo | None, state: str = "running") -> Pool:
    active = state == "running"
    return Pool(
        host="h",
        name=name,
        uuid=name,
        type="dir",
        state=state,
        persistent=True,
        autostart=True,
        target_path=f"/srv/{name}",
        capacity=10 * GiB if active else None,
        allocation=4 * GiB if active else None,
        available=6 * GiB if active else None,
        fs=fs,
    )


def test_pool_figures_shared_filesystem_and_inactive_pool() -> None:
    a = disk("a", "raw", 8 * GiB, 0, pool="a", path="/srv/a/a")
    b = disk("b", "raw", 6 * GiB, 6 * GiB, pool="b", path="/srv/b/b")
    c = disk("c", "qcow2", 20 * GiB, GiB, pool="b", path="/srv/b/c")
    host = HostInventory(
        host="h",
        uri="qemu:///system",
        collected_at=NOW,
        pools=(_pool("a", _fs()), _pool("b", _fs()), _pool("off", None, "inactive")),
        disks=(a, b, c),
    )
    s = analyze(Inventory(hosts=(host,)))
    rows = {p.pool: p for p in s.pools}
    assert rows["a"].provisioned == 8 * GiB and rows["a"].used == 0
    assert rows["a"].usable_free == 5 * GiB  # usable (f_bavail), not libvirt's 6 GiB
    assert rows["a"].overcommit_ratio == 0.8 and rows["a"].exposure == 8 * GiB
    assert (rows["b"].volumes, rows["b"].thin, rows["b"].preallocated) == (2, 1, 1)
    assert rows["b"].overcommit_ratio == 2.6
    off = rows["off"]
    assert off.state == "inactive" and off.capacity is None and off.volumes is None
    group = rows["a+b"]
    assert group.type == "shared-fs" and group.members == ("a", "b")
    assert (group.capacity, group.allocation, group.usable_free) == (10 * GiB, 4 * GiB, 5 * GiB)
    assert group.provisioned == 34 * GiB and group.overcommit_ratio == 3.4


def test_used_by_follows_backing_files_and_backing_only_images_do_not_count() -> None:
    base = disk("base", "qcow2", 10 * GiB, GiB)
    top = disk("top", "qcow2", 10 * GiB, 200704, backing_file="/p/base")
    other = disk("free", "raw", GiB, 0)
    dom = Domain(
        host="h",
        name="vm1",
        uuid="u",
        state="shut off",
        persistent=True,
        disks=(DomainDisk(target="vda", device="disk", type="file", path="/p/top"),),
    )
    host = HostInventory(
        host="h",
        uri="x",
        collected_at=NOW,
        pools=(_pool("p", None),),
        disks=(base, top, other),
        domains=(dom,),
    )
    s = analyze(Inventory(hosts=(host,)))
    by = {r.disk.name: r for r in s.disks}
    assert by["top"].used_by == ("vm1",) and by["base"].used_by == ("vm1",)
    assert by["free"].used_by == ()
    assert by["base"].backing_only and not by["top"].backing_only
    pool = next(p for p in s.pools if p.pool == "p")
    assert pool.exposure == (by["top"].growth or 0) + GiB  # base's growth left out


def test_unmanaged_disks_grouped_by_filesystem() -> None:
    f1 = disk("u1", "raw", GiB, 0, pool=None, backend="unmanaged", fs=_fs(1))
    f2 = disk("u2", "raw", GiB, GiB, pool=None, backend="unmanaged", fs=_fs(1))
    blk = disk("loop0", "raw", GiB, GiB, pool=None, backend="unmanaged", kind="block")
    host = HostInventory(host="h", uri="x", collected_at=NOW, disks=(f1, f2, blk))
    rows = [p for p in analyze(Inventory(hosts=(host,))).pools if p.type == "unmanaged"]
    assert [(r.filesystem, r.volumes, r.capacity) for r in rows] == [
        ("/srv", 2, 10 * GiB),
        (None, 1, None),
    ]


def test_implausible_virtual_size_is_unknown_and_not_provisioned() -> None:
    bogus = disk("bogus", "qcow2", (1 << 64) - 1, 200704)
    prov, growth, reason = classify(bogus)
    assert (prov.value, growth) == ("unknown", None) and "corrupt" in reason
    host = HostInventory(
        host="h",
        uri="x",
        collected_at=NOW,
        pools=(_pool("p", None),),
        disks=(bogus, disk("ok", "raw", GiB, 0)),
    )
    pool = next(p for p in analyze(Inventory(hosts=(host,))).pools if p.pool == "p")
    assert pool.provisioned == GiB and pool.unknown == 1
