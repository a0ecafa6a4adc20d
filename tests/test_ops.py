"""`auditor pool …` / `auditor vol …` against the real libvirtd, checked by independent means:
qemu-img, os.stat, file contents and libvirt itself, never auditor's own figures.

Every test works in a fresh scratch pool (and its own domains), never in the shared bed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import libvirt
import pytest
import testbed
from clirun import Ran, auditor
from testbed import PoolSpec, Workspace

from auditor import ops
from auditor.adapters import localfs, qemu_img
from auditor.adapters.libvirt import LibvirtHost
from auditor.collect import Probes
from auditor.errors import InUse, OperationError
from auditor.sizes import NewSize

MiB = 1 << 20
PROBES = Probes(images=qemu_img.info_many, fs=localfs)
ISLANDS = (3 * MiB, 50 * MiB, 200 * MiB)  # offsets of 1 MiB random-data islands


# ---- independent checks ----------------------------------------------------------------------


def cli(*args: str) -> Ran:
    return auditor("-c", testbed.URI, *args)


def ok(*args: str) -> Ran:
    ran = cli(*args)
    assert ran.code == 0, ran.err
    return ran


def refused(*args: str) -> str:
    """Run a command that must be refused: exit 2, one line on stderr, no traceback."""
    ran = cli(*args)
    assert ran.code == 2, (ran.out, ran.err)
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auditor: error: "), ran.err
    return lines[0]


def qemu_info(path: str | Path) -> dict[str, Any]:
    argv = ["qemu-img", "info", "-U", "--output=json", str(path)]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def same_content(a: str | Path, b: str | Path) -> bool:
    argv = ["qemu-img", "compare", "-U", str(a), str(b)]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def allocated(path: str | Path) -> int:
    return os.stat(path).st_blocks * 512


def digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def files(folder: str | Path) -> dict[str, tuple[int, int, str]]:
    """name → (size, allocated bytes, sha256) of every file in the folder."""
    return {
        p.name: (p.stat().st_size, allocated(p), digest(p))
        for p in sorted(Path(folder).iterdir())
        if p.is_file()
    }


def islands(path: Path, size: int = 256 * MiB) -> int:
    """A sparse file of ``size`` with 1 MiB random islands and a 777-byte random tail;
    returns the bytes of data written."""
    offsets = [o for o in ISLANDS if o + MiB < size - 777]
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset in offsets:
            fh.seek(offset)
            fh.write(os.urandom(MiB))
        fh.seek(size - 777)
        fh.write(os.urandom(777))
    return len(offsets) * MiB + 777


def sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.truncate(size)

    return make


def all_zero(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            if chunk.count(0) != len(chunk):
                return False
    return True


def refresh(conn: libvirt.virConnect, pool: PoolSpec) -> None:
    conn.storagePoolLookupByName(pool.name).refresh(0)


def volumes(conn: libvirt.virConnect, pool: PoolSpec) -> set[str]:
    return set(conn.storagePoolLookupByName(pool.name).listVolumes())


def put(
    conn: libvirt.virConnect, pool: PoolSpec, name: str, make: Callable[[Path], object]
) -> Path:
    """Make a file in the pool's folder (not through auditor), then refresh the pool."""
    path = Path(pool.path) / name
    make(path)
    refresh(conn, pool)
    return path


def qcow2(path: Path, size: str = "64M", *extra: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), size], check=True)


def qemu_io(path: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], check=True,
                   capture_output=True)  # fmt: skip


# ---- domains of our own ----------------------------------------------------------------------


def volume_disk(pool: str, volume: str, fmt: str, dev: str) -> str:
    return (
        f"<disk type='volume' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source pool='{pool}' volume='{volume}'/><target dev='{dev}' bus='virtio'/></disk>"
    )


def file_disk(path: Path, fmt: str, dev: str) -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source file='{path}'/><target dev='{dev}' bus='virtio'/></disk>"
    )


Guests = Callable[..., str]
_guest_numbers = count(1)


@pytest.fixture
def guests(
    libvirt_conn: libvirt.virConnect, workspace: Workspace, scratch_pool: PoolSpec
) -> Iterator[Guests]:
    """Define (and start) small TCG domains; removed before the scratch pool goes."""
    made: list[str] = []

    def make(*disks: str, running: bool = False, q35: bool = False) -> str:
        name = f"{workspace.prefix}ops{next(_guest_numbers)}"
        ports = (
            "<controller type='pci' index='0' model='pcie-root'/>"
            + "".join(
                f"<controller type='pci' index='{i}' model='pcie-root-port'/>" for i in (1, 2, 3)
            )
            if q35
            else ""
        )
        xml = (
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64' machine='{'q35' if q35 else 'pc'}'>hvm"
            f"</type></os><devices>{''.join(disks)}{ports}<memballoon model='none'/>"
            "</devices></domain>"
        )
        dom = libvirt_conn.defineXML(xml)
        made.append(name)
        if running:
            dom.create()
        return name

    yield make
    for name in made:
        testbed.remove_domain(libvirt_conn, name)


@pytest.fixture
def host(libvirtd: None) -> Iterator[LibvirtHost]:
    with LibvirtHost.connect(testbed.URI, write=True) as h:
        yield h


# ---- create, clone ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "provisioning", "size", "virtual"),
    [
        ("raw", "--thin", "100MB", 100_000_000),
        ("raw", "--preallocated", "64M", 64 * MiB),
        ("qcow2", "--thin", "1G", 1 << 30),
        ("qcow2", "--preallocated", "64MiB", 64 * MiB),
    ],
)
def test_create_agrees_with_qemu_img_and_stat(
    scratch_pool: PoolSpec, fmt: str, provisioning: str, size: str, virtual: int
) -> None:
    name = f"new.{fmt}"
    ran = ok("vol", "create", scratch_pool.name, name, size, "--format", fmt, provisioning)
    assert "done" in ran.out and "libvirt: virStorageVolCreateXML(" in ran.out
    path = Path(scratch_pool.path) / name
    info = qemu_info(path)
    assert info["format"] == fmt
    assert (os.stat(path).st_size if fmt == "raw" else info["virtual-size"]) == virtual
    used = allocated(path)
    if provisioning == "--thin":
        assert used < MiB  # raw: no block at all; qcow2: its header and tables
        if fmt == "raw":
            assert used == 0 and os.stat(path).st_size == virtual
    else:
        assert used >= virtual
    if fmt == "qcow2":
        assert info["format-specific"]["data"]["compat"] == "1.1"
        metadata = "VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA" in ran.out
        assert metadata is (provisioning == "--preallocated")


def test_overlay_over_a_backing_volume(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect
) -> None:
    base = put(libvirt_conn, scratch_pool, "base.qcow2", qcow2)
    qemu_io(base, "write -P 0x5a 1M 2M")
    ok("vol", "create", scratch_pool.name, "top.qcow2", "64M",
       "--backing", f"{scratch_pool.name}/base.qcow2")  # fmt: skip
    top = Path(scratch_pool.path) / "top.qcow2"
    info = qemu_info(top)
    assert info["format"] == "qcow2" and info["full-backing-filename"] == str(base)
    assert same_content(top, base)
    msg = refused("vol", "create", scratch_pool.name, "pre.qcow2", "64M", "--preallocated",
                  "--backing", f"{scratch_pool.name}/base.qcow2")  # fmt: skip
    assert "overlay cannot be preallocated" in msg
    assert not (Path(scratch_pool.path) / "pre.qcow2").exists()


@pytest.mark.parametrize(("provisioning", "fmt"), [("--thin", "raw"), ("--preallocated", "raw"),
                                                    ("--thin", "qcow2")])  # fmt: skip
def test_clone_content_equals_the_source(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, provisioning: str, fmt: str
) -> None:
    src = put(libvirt_conn, scratch_pool, "src.raw", islands)
    data = allocated(src)
    ran = ok("vol", "clone", scratch_pool.name, "src.raw", "copy", provisioning, "--format", fmt)
    assert "virStorageVolCreateXMLFrom(" in ran.out
    copy = Path(scratch_pool.path) / "copy"
    assert same_content(src, copy)
    assert qemu_info(copy)["format"] == fmt
    if provisioning == "--thin":
        assert allocated(copy) <= data + MiB  # zero blocks skipped
    else:
        assert allocated(copy) >= os.stat(src).st_size


def test_reflink_on_a_filesystem_without_it_is_a_clear_error(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect
) -> None:
    put(libvirt_conn, scratch_pool, "src.raw", islands)
    fstype = subprocess.run(["stat", "-f", "-c", "%T", scratch_pool.path], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    if fstype not in ("ext2/ext3", "ext4", "tmpfs"):  # btrfs, xfs: the clone shares blocks
        ok("vol", "clone", scratch_pool.name, "src.raw", "copy.raw", "--reflink")
        assert same_content(Path(scratch_pool.path, "src.raw"), Path(scratch_pool.path, "copy.raw"))
        return
    before = files(scratch_pool.path)
    msg = refused("vol", "clone", scratch_pool.name, "src.raw", "copy.raw", "--reflink")
    assert "cannot reflink" in msg and "btrfs" in msg
    assert files(scratch_pool.path) == before  # no partial clone left
    assert volumes(libvirt_conn, scratch_pool) == {"src.raw"}


# ---- resize ----------------------------------------------------------------------------------


def test_grow_delta_grow_and_shrink_refusals(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect
) -> None:
    p = scratch_pool.name
    raw = put(libvirt_conn, scratch_pool, "disk.raw", lambda f: islands(f, 64 * MiB))
    ok("vol", "resize", p, "disk.raw", "96M")
    assert os.stat(raw).st_size == 96 * MiB
    ok("vol", "resize", p, "disk.raw", "+32M")
    assert os.stat(raw).st_size == 128 * MiB
    before = digest(raw)
    assert "--shrink --yes" in refused("vol", "resize", p, "disk.raw", "64M")
    assert "--yes" in refused("vol", "resize", p, "disk.raw", "64M", "--shrink")
    assert digest(raw) == before and os.stat(raw).st_size == 128 * MiB
    ok("vol", "resize", p, "disk.raw", "-64M", "--shrink", "--yes")
    assert os.stat(raw).st_size == 64 * MiB

    img = put(libvirt_conn, scratch_pool, "disk.qcow2", qcow2)
    ok("vol", "resize", p, "disk.qcow2", "+64M")
    assert qemu_info(img)["virtual-size"] == 128 * MiB
    assert "only for raw" in refused("vol", "resize", p, "disk.qcow2", "+1M", "--allocate")
    ok("vol", "resize", p, "disk.qcow2", "32M", "--shrink", "--yes")
    assert qemu_info(img)["virtual-size"] == 32 * MiB


def test_grow_with_allocate(scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect) -> None:
    raw = put(libvirt_conn, scratch_pool, "thin.raw", sparse(64 * MiB))
    assert allocated(raw) == 0
    ok("vol", "resize", scratch_pool.name, "thin.raw", "96M", "--allocate")
    assert os.stat(raw).st_size == 96 * MiB and allocated(raw) >= 96 * MiB


# ---- upload, download, wipe ------------------------------------------------------------------


def test_sparse_upload_download_round_trip(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, workspace: Workspace, tmp_path: Path
) -> None:
    src = tmp_path / "islands.img"
    data = islands(src)
    ran = ok("vol", "upload", scratch_pool.name, "up.raw", str(src))
    assert "SPARSE_STREAM" in ran.out
    vol = Path(scratch_pool.path) / "up.raw"
    assert vol.read_bytes() == src.read_bytes()
    assert allocated(vol) < data + MiB  # close to the data, not to the 256 MiB virtual size
    out = tmp_path / "down.img"
    ok("vol", "download", scratch_pool.name, "up.raw", str(out))
    assert out.read_bytes() == src.read_bytes()
    assert allocated(out) < data + MiB
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert "already exists" in refused("vol", "download", scratch_pool.name, "up.raw", str(out))
    assert "already exists" in refused("vol", "upload", scratch_pool.name, "up.raw", str(src))


def test_progress_counts_every_byte_holes_included(
    scratch_pool: PoolSpec, host: LibvirtHost, tmp_path: Path
) -> None:
    src = tmp_path / "islands.img"
    islands(src, 64 * MiB)
    seen: list[int] = []
    ctx = ops.context(host, PROBES)
    plan = ops.plan_upload(ctx, scratch_pool.name, "up.raw", str(src))
    assert plan.transfer == 64 * MiB
    ops.apply(plan, ctx, progress=seen.append)
    assert sum(seen) == 64 * MiB
    seen.clear()
    ctx = ops.context(host, PROBES)
    ops.apply(ops.plan_download(ctx, scratch_pool.name, "up.raw", str(tmp_path / "d")), ctx,
              progress=seen.append)  # fmt: skip
    assert sum(seen) == 64 * MiB and (tmp_path / "d").read_bytes() == src.read_bytes()


def test_upload_of_a_qcow2_file_keeps_its_format(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, tmp_path: Path
) -> None:
    src = tmp_path / "img.qcow2"
    qcow2(src, "1G")
    qemu_io(src, "write -P 0x11 5M 1M")
    ran = ok("vol", "upload", scratch_pool.name, "img.qcow2", str(src))
    assert "qcow2 image of 1.0 GiB" in ran.out
    vol = Path(scratch_pool.path) / "img.qcow2"
    assert digest(vol) == digest(src)
    info = qemu_info(vol)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 1 << 30)


def test_failed_transfers_leave_nothing_behind(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, host: LibvirtHost, tmp_path: Path
) -> None:
    src = tmp_path / "islands.img"
    islands(src)

    def broken(_n: int) -> None:
        raise OSError(5, "Input/output error")

    ctx = ops.context(host, PROBES)
    plan = ops.plan_upload(ctx, scratch_pool.name, "up.raw", str(src))
    with pytest.raises(OperationError, match=r"upload of .* Input/output error"):
        ops.apply(plan, ctx, progress=broken)
    refresh(libvirt_conn, scratch_pool)
    assert volumes(libvirt_conn, scratch_pool) == set() and files(scratch_pool.path) == {}

    put(libvirt_conn, scratch_pool, "vol.raw", islands)
    ctx = ops.context(host, PROBES)
    out = tmp_path / "down.img"
    plan = ops.plan_download(ctx, scratch_pool.name, "vol.raw", str(out))
    with pytest.raises(OperationError, match=r"download of .* Input/output error"):
        ops.apply(plan, ctx, progress=broken)
    assert not out.exists()


def test_wipe_leaves_zeros_and_guards_qcow2(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect
) -> None:
    p = scratch_pool.name
    raw = put(libvirt_conn, scratch_pool, "data.raw", lambda f: islands(f, 64 * MiB))
    assert "--yes" in refused("vol", "wipe", p, "data.raw")
    assert not all_zero(raw)
    ok("vol", "wipe", p, "data.raw", "--yes")
    assert os.stat(raw).st_size == 64 * MiB and all_zero(raw)

    img = put(libvirt_conn, scratch_pool, "disk.qcow2", qcow2)
    qemu_io(img, "write -P 0x77 0 1M")
    before = digest(img)
    msg = refused("vol", "wipe", p, "disk.qcow2", "--yes")
    assert "overwrites its header" in msg and "--destroy-format" in msg
    assert digest(img) == before
    ok("vol", "wipe", p, "disk.qcow2", "--yes", "--destroy-format")
    assert all_zero(img) and qemu_info(img)["format"] == "raw"


# ---- pools -----------------------------------------------------------------------------------


def test_pool_stop_keeps_every_file_and_start_brings_the_volumes_back(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect
) -> None:
    put(libvirt_conn, scratch_pool, "a.raw", islands)
    put(libvirt_conn, scratch_pool, "b.qcow2", qcow2)
    before = files(scratch_pool.path)
    ran = ok("pool", "stop", scratch_pool.name)
    assert "its data stays intact" in ran.out
    pool = libvirt_conn.storagePoolLookupByName(scratch_pool.name)
    assert not pool.isActive()
    assert files(scratch_pool.path) == before
    ran = ok("pool", "start", scratch_pool.name)
    assert pool.isActive() and set(pool.listVolumes()) == {"a.raw", "b.qcow2"}
    assert files(scratch_pool.path) == before
    assert "pool volumes" in ran.out


def test_pool_life_cycle(libvirt_conn: libvirt.virConnect, workspace: Workspace) -> None:
    name, target = f"{workspace.prefix}opscycle", workspace.root / "ops-cycle"
    try:
        ok("pool", "define", name, "--type", "dir", "--target", str(target))
        pool = libvirt_conn.storagePoolLookupByName(name)
        assert pool.isPersistent() and not pool.isActive()
        assert "start it" in refused("vol", "create", name, "x.raw", "1M")
        ok("pool", "build", name)
        assert target.is_dir()
        ok("pool", "start", name)
        ok("pool", "autostart", name)
        assert pool.autostart() == 1
        ok("pool", "autostart", name, "--disable")
        assert pool.autostart() == 0
        ok("vol", "create", name, "x.raw", "1M")
        assert "is active" in refused("pool", "delete", name, "--yes")
        ok("pool", "stop", name)
        assert "holds 1 file" in refused("pool", "delete", name, "--yes")
        (target / "x.raw").unlink()
        assert "--yes" in refused("pool", "delete", name)
        assert target.is_dir()
        ok("pool", "delete", name, "--yes")
        assert not target.exists()
        ok("pool", "undefine", name)
        assert name not in libvirt_conn.listStoragePools() + libvirt_conn.listDefinedStoragePools()
    finally:
        testbed.remove_pool(libvirt_conn, name)


def test_fs_pool_mkfs_only_on_an_empty_device(
    libvirt_conn: libvirt.virConnect, workspace: Workspace
) -> None:
    name, target, image = (f"{workspace.prefix}opsfs", workspace.root / "ops-fs-mnt",
                           workspace.root / "ops-fs-dev.img")  # fmt: skip
    image.write_bytes(b"")
    os.truncate(image, 64 * MiB)
    argv = ["losetup", "--find", "--show", str(image)]
    device = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    try:
        ok("pool", "define", name, "--type", "fs", "--target", str(target),
           "--source-dev", device, "--source-format", "ext4")  # fmt: skip
        ok("pool", "build", name, "--mkfs")
        blkid = ["blkid", "-o", "value", "-s", "TYPE", device]
        assert subprocess.run(blkid, capture_output=True, text=True).stdout.strip() == "ext4"
        ok("pool", "start", name)
        ok("vol", "create", name, "keep.raw", "4M")
        msg = refused("vol", "create", name, "fat.raw", "100M", "--preallocated", "--force")
        assert "usable" in msg  # the 64 MiB filesystem cannot hold it: refused, not ENOSPC
        ok("pool", "stop", name)
        assert "already formatted" in refused("pool", "build", name, "--mkfs")
        ok("pool", "start", name)
        pool = libvirt_conn.storagePoolLookupByName(name)
        assert "keep.raw" in pool.listVolumes()  # the second build overwrote nothing
    finally:
        testbed.remove_pool(libvirt_conn, name)
        subprocess.run(["losetup", "-d", device], check=False)


# ---- guards with domains ---------------------------------------------------------------------


def test_volumes_of_a_running_domain(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, guests: Guests
) -> None:
    p = scratch_pool.name
    disk = put(libvirt_conn, scratch_pool, "disk.qcow2", qcow2)
    base = put(libvirt_conn, scratch_pool, "base.qcow2", qcow2)
    top = put(libvirt_conn, scratch_pool, "top.qcow2",
              lambda f: qcow2(f, "64M", "-b", str(base), "-F", "qcow2"))  # fmt: skip
    vm = guests(volume_disk(p, "disk.qcow2", "qcow2", "vda"), file_disk(top, "qcow2", "vdb"),
                running=True)  # fmt: skip
    before = files(scratch_pool.path)
    for args in (("delete", p, "disk.qcow2", "--yes", "--force"),
                 ("wipe", p, "disk.qcow2", "--yes", "--force"),
                 ("resize", p, "disk.qcow2", "32M", "--shrink", "--yes")):  # fmt: skip
        msg = refused("vol", *args)
        assert f"is used by running domain(s) {vm}" in msg
    for args in (
        ("delete", p, "base.qcow2", "--yes", "--force"),
        ("resize", p, "base.qcow2", "+1M"),
    ):
        assert vm in refused("vol", *args)
    assert files(scratch_pool.path) == before

    ran = ok("vol", "resize", p, "disk.qcow2", "+64M")
    assert f"virDomainBlockResize(domain '{vm}', disk 'vda'" in ran.out
    assert qemu_info(disk)["virtual-size"] == 128 * MiB
    assert libvirt_conn.lookupByName(vm).blockInfo("vda")[0] == 128 * MiB


def test_defined_domains_and_overlays_need_force(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, guests: Guests
) -> None:
    p = scratch_pool.name
    put(libvirt_conn, scratch_pool, "disk.raw", lambda f: islands(f, 64 * MiB))
    base = put(libvirt_conn, scratch_pool, "base.qcow2", qcow2)
    put(libvirt_conn, scratch_pool, "top.qcow2",
        lambda f: qcow2(f, "64M", "-b", str(base), "-F", "qcow2"))  # fmt: skip
    vm = guests(volume_disk(p, "disk.raw", "raw", "vda"))
    before = files(scratch_pool.path)
    for cmd in (("delete",), ("wipe", "--destroy-format")):
        msg = refused("vol", *cmd, p, "disk.raw", "--yes")
        assert f"defined domain(s) {vm}" in msg and "--force" in msg
        assert f"{p}/top.qcow2" in refused("vol", *cmd, p, "base.qcow2", "--yes")
    assert files(scratch_pool.path) == before
    ok("vol", "delete", p, "base.qcow2", "--yes", "--force")
    ok("vol", "delete", p, "disk.raw", "--yes", "--force")
    assert volumes(libvirt_conn, scratch_pool) == {"top.qcow2"}


def test_attach_and_detach_by_pool_and_volume(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, guests: Guests
) -> None:
    p = scratch_pool.name
    put(libvirt_conn, scratch_pool, "os.qcow2", qcow2)
    put(libvirt_conn, scratch_pool, "data.raw", sparse(64 * MiB))
    vm = guests(volume_disk(p, "os.qcow2", "qcow2", "vda"))
    other = guests()
    ran = ok("vol", "attach", vm, f"{p}/data.raw", "--config")
    assert "as vdb" in ran.out
    dom = libvirt_conn.lookupByName(vm)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert f"<source pool='{p}' volume='data.raw'/>" in xml and "dev='vdb'" in xml
    assert vm in refused("vol", "attach", other, f"{p}/data.raw", "--config")
    assert "already attached" in refused("vol", "attach", vm, f"{p}/data.raw", "--config")
    ok("vol", "detach", vm, f"{p}/data.raw", "--config")
    assert "data.raw" not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "has no disk" in refused("vol", "detach", vm, f"{p}/data.raw", "--config")


def test_live_attach_on_a_hotplug_capable_guest(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, guests: Guests
) -> None:
    put(libvirt_conn, scratch_pool, "hot.raw", sparse(16 * MiB))
    vm = guests(running=True, q35=True)
    ok("vol", "attach", vm, f"{scratch_pool.name}/hot.raw", "--live")
    live = libvirt_conn.lookupByName(vm).XMLDesc(0)
    assert "volume='hot.raw'" in live and "dev='vda'" in live


# ---- policy guards, dry runs, errors ---------------------------------------------------------


def test_overcommit_and_free_space_guards(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, tmp_path: Path
) -> None:
    p = scratch_pool.name
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[pools."{p}"]\novercommit_warn = 0.00001\novercommit_crit = 0.0001\n')
    msg = refused("vol", "create", p, "x.raw", "1T", "--policy", str(policy))
    vfs = os.statvfs(scratch_pool.path)  # the pool's capacity, as the filesystem has it
    after = round((1 << 40) / (vfs.f_blocks * vfs.f_frsize), 4)
    assert f"overcommit ratio would go from 0.00 to {after:.2f}" in msg, msg
    assert "threshold 0.0001" in msg
    assert volumes(libvirt_conn, scratch_pool) == set()
    ran = ok("vol", "create", p, "x.raw", "1T", "--policy", str(policy), "--force")
    assert "--force" in ran.out
    msg = refused("vol", "create", p, "fat.raw", "1P", "--preallocated", "--force")
    assert "usable" in msg and "--force does not override" in msg
    assert volumes(libvirt_conn, scratch_pool) == {"x.raw"}


def test_dry_run_changes_nothing(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, guests: Guests, tmp_path: Path
) -> None:
    p = scratch_pool.name
    put(libvirt_conn, scratch_pool, "a.raw", lambda f: islands(f, 64 * MiB))
    put(libvirt_conn, scratch_pool, "b.qcow2", qcow2)
    src = tmp_path / "up.img"
    islands(src, 16 * MiB)
    vm = guests(volume_disk(p, "b.qcow2", "qcow2", "vda"))
    dom, pool = libvirt_conn.lookupByName(vm), libvirt_conn.storagePoolLookupByName(p)
    state = (files(scratch_pool.path), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
             pool.UUIDString(), pool.isActive(), pool.autostart())  # fmt: skip
    commands = [
        ("vol", "create", p, "new.raw", "1G", "--preallocated"),
        ("vol", "clone", p, "a.raw", "c.raw"),
        ("vol", "resize", p, "a.raw", "+1G", "--allocate"),
        ("vol", "resize", p, "a.raw", "32M", "--shrink"),
        ("vol", "delete", p, "a.raw"),
        ("vol", "wipe", p, "a.raw"),
        ("vol", "upload", p, "up.raw", str(src)),
        ("vol", "download", p, "a.raw", str(tmp_path / "down.img")),
        ("vol", "attach", vm, f"{p}/a.raw"),
        ("vol", "detach", vm, f"{p}/b.qcow2", "--config"),
        ("pool", "stop", p),
        ("pool", "autostart", p),
        ("pool", "refresh", p),
    ]
    for args in commands:
        ran = ok(*args, "--dry-run")
        assert ran.out.rstrip().endswith("dry run: nothing changed"), args
        assert "libvirt: vir" in ran.out, args
    assert not (tmp_path / "down.img").exists()
    after = (files(scratch_pool.path), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
             pool.UUIDString(), pool.isActive(), pool.autostart())  # fmt: skip
    assert set(pool.listVolumes()) == {"a.raw", "b.qcow2"}
    assert after == state


def test_errors_are_one_line_with_exit_2(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect
) -> None:
    p = scratch_pool.name
    put(libvirt_conn, scratch_pool, "a.raw", sparse(MiB))
    assert "pool nope not found" in refused("vol", "create", "nope", "x.raw", "1M")
    assert "volume nope not found in pool" in refused("vol", "delete", p, "nope", "--yes")
    assert "already exists" in refused("vol", "create", p, "a.raw", "1M")
    assert "'12Q'" in refused("vol", "create", p, "x.raw", "12Q")
    msg = cli("-c", "test:///default", "vol", "create", p, "x.raw", "1M")  # two hosts
    assert msg.code == 2 and "one host" in msg.err
    denied = auditor("-c", testbed.URI, "vol", "create", p, "x.raw", "1M", user="daemon")
    assert denied.code == 2 and "read-write" in denied.err and "Traceback" not in denied.err
    assert volumes(libvirt_conn, scratch_pool) == {"a.raw"}


def test_vol_and_pool_info(scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect) -> None:
    base = put(libvirt_conn, scratch_pool, "base.qcow2", qcow2)
    put(libvirt_conn, scratch_pool, "top.qcow2",
        lambda f: qcow2(f, "64M", "-b", str(base), "-F", "qcow2"))  # fmt: skip
    doc = json.loads(ok("vol", "info", scratch_pool.name, "top.qcow2", "-f", "json").out)
    assert doc["virtual_size"] == 64 * MiB == qemu_info(base)["virtual-size"]
    assert doc["backing_chain"] == [f"{scratch_pool.name}/base.qcow2"]
    doc = json.loads(ok("vol", "info", scratch_pool.name, "base.qcow2", "-f", "json").out)
    assert doc["overlays"] == [f"{scratch_pool.name}/top.qcow2"]
    pool = json.loads(ok("pool", "info", scratch_pool.name, "-f", "json").out)
    assert pool["volumes"] == 2 and pool["provisioned"] == 128 * MiB
    assert pool["overcommit_crit"] == 2.0
    vfs = os.statvfs(scratch_pool.path)
    assert abs(pool["available"] - vfs.f_bavail * vfs.f_frsize) < 64 * MiB
    listed = json.loads(ok("pool", "list", "-f", "json").out)["pools"]
    assert scratch_pool.name in {r["pool"] for r in listed}


def test_resize_api_refuses_a_backing_image_of_a_running_domain_without_touching_it(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, guests: Guests, host: LibvirtHost
) -> None:
    base = put(libvirt_conn, scratch_pool, "base.qcow2", qcow2)
    top = put(libvirt_conn, scratch_pool, "top.qcow2",
              lambda f: qcow2(f, "64M", "-b", str(base), "-F", "qcow2"))  # fmt: skip
    guests(file_disk(top, "qcow2", "vda"), running=True)
    ctx = ops.context(host, PROBES)
    with pytest.raises(InUse, match="as a backing image"):
        ops.plan_resize(ctx, scratch_pool.name, "base.qcow2", NewSize(MiB, delta=True))
