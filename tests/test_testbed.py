"""Checks that the libvirtd test bed is what testbed.py promises, measured independently."""

import json
import os
import secrets
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest
import testbed
from testbed import Bed, ImageSpec, MiB, PoolSpec, Workspace


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)


def qemu_img_json(*args: str) -> dict:
    proc = qemu_img(*args, "--output=json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def provisioning(image: ImageSpec) -> str:
    """The rule of the brief, from st_blocks and `qemu-img measure` (not from libvirt)."""
    st = os.stat(image.path)
    if stat.S_ISBLK(st.st_mode):
        return "preallocated"
    full = image.virtual_size
    if image.format == "qcow2":
        measure = qemu_img_json("measure", "--size", str(full), "-O", "qcow2")
        full = measure["fully-allocated"]
    slack = max(4 * MiB, image.virtual_size // 100)
    return "preallocated" if full - st.st_blocks * 512 <= slack else "thin"


def pool_of(conn: libvirt.virConnect, spec: PoolSpec) -> libvirt.virStoragePool:
    return conn.storagePoolLookupByName(spec.name)


def test_marker_added_automatically(bed: Bed, request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("libvirtd") is not None
    assert bed.uri == "qemu:///system"
    assert bed.prefix.startswith(testbed.NAME_ROOT)


def test_pool_states(bed: Bed, libvirt_conn: libvirt.virConnect) -> None:
    for spec in (bed.dir_pool, bed.fs_pool):
        pool = pool_of(libvirt_conn, spec)
        assert pool.isActive() and pool.isPersistent(), spec
        assert pool.name().startswith(bed.prefix)
    inactive = pool_of(libvirt_conn, bed.inactive_pool)
    assert not inactive.isActive() and inactive.isPersistent()
    assert os.listdir(bed.inactive_pool.path) == ["idle.raw"]


def test_fs_pool_is_a_mounted_loop_device(bed: Bed, libvirt_conn: libvirt.virConnect) -> None:
    pool = pool_of(libvirt_conn, bed.fs_pool)
    xml = ET.fromstring(pool.XMLDesc(0))
    assert xml.get("type") == "fs"
    assert xml.find("source/device").get("path") == bed.fs_pool.device
    assert xml.find("source/format").get("type") == "ext4"
    assert os.path.ismount(bed.fs_pool.path)
    assert stat.S_ISBLK(os.stat(bed.fs_pool.device).st_mode)


def test_fs_pool_numbers_match_statvfs(bed: Bed, libvirt_conn: libvirt.virConnect) -> None:
    pool = pool_of(libvirt_conn, bed.fs_pool)
    pool.refresh(0)
    _, capacity, allocation, available = pool.info()
    vfs = os.statvfs(bed.fs_pool.path)
    assert capacity == vfs.f_frsize * vfs.f_blocks
    assert available == vfs.f_frsize * vfs.f_bfree
    assert allocation == capacity - available
    # mkfs.ext4 -m 0 reserves nothing for root, yet ext4 still holds back its own
    # reserved_clusters (min(4096 clusters, 2%)) from f_bavail.
    device = os.path.basename(bed.fs_pool.device)
    reserved = int(Path(f"/sys/fs/ext4/{device}/reserved_clusters").read_text())
    assert vfs.f_bfree - vfs.f_bavail == reserved
    assert 200 * MiB < capacity < 256 * MiB  # 1 KiB blocks: ~10% goes to metadata


def test_pool_volumes(bed: Bed, libvirt_conn: libvirt.virConnect) -> None:
    def volumes(spec: PoolSpec) -> dict[str, tuple[str, int]]:
        pool = pool_of(libvirt_conn, spec)
        return {v.name(): (v.path(), v.info()[0]) for v in pool.listAllVolumes(0)}

    def expected(spec: PoolSpec) -> dict[str, tuple[str, int]]:
        specs = [i for i in bed.images.values() if i.pool == spec.name]
        return {i.volume: (i.path, libvirt.VIR_STORAGE_VOL_FILE) for i in specs}

    corrupt = {
        Path(p).name: (p, libvirt.VIR_STORAGE_VOL_FILE)
        for p in (bed.corrupt_image, bed.truncated_image)
    }
    assert volumes(bed.dir_pool) == expected(bed.dir_pool) | corrupt
    lost_found = {"lost+found": (f"{bed.fs_pool.path}/lost+found", libvirt.VIR_STORAGE_VOL_DIR)}
    assert volumes(bed.fs_pool) == expected(bed.fs_pool) | lost_found


def test_domain_states(bed: Bed, libvirt_conn: libvirt.virConnect) -> None:
    running = libvirt_conn.lookupByName(bed.running_domain)
    assert running.state()[0] == libvirt.VIR_DOMAIN_RUNNING and running.isPersistent()
    defined = libvirt_conn.lookupByName(bed.defined_domain)
    assert defined.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and defined.isPersistent()


# What the brief asks for: target dev -> (disk type, image key).
DOMAIN_LAYOUTS = {
    "running_domain": {
        "vda": ("volume", "overlay"),
        "vdb": ("file", "unmanaged_file"),
        "vdc": ("block", "unmanaged_block"),
        "vdd": ("file", "raw_partial"),
    },
    "defined_domain": {
        "vda": ("volume", "fs_qcow2"),
        "vdb": ("file", "raw_sparse"),
        "vdc": ("file", "qcow2_falloc"),
    },
}


@pytest.mark.parametrize("which", DOMAIN_LAYOUTS)
def test_domain_disks(bed: Bed, libvirt_conn: libvirt.virConnect, which: str) -> None:
    name, layout = getattr(bed, which), DOMAIN_LAYOUTS[which]
    assert bed.domain_disks[name] == {dev: key for dev, (_, key) in layout.items()}
    xml = ET.fromstring(libvirt_conn.lookupByName(name).XMLDesc(0))
    found = {}
    for disk in xml.findall("devices/disk"):
        src = disk.find("source")
        source = {
            "file": src.get("file"),
            "block": src.get("dev"),
            "volume": f"{src.get('pool')}/{src.get('volume')}",
        }[disk.get("type")]
        found[disk.find("target").get("dev")] = (
            disk.get("type"),
            source,
            disk.find("driver").get("type"),
        )
    want = {}
    for dev, (kind, key) in layout.items():
        image = bed.images[key]
        source = f"{image.pool}/{image.volume}" if kind == "volume" else image.path
        want[dev] = (kind, source, image.format)
    assert found == want
    backing = xml.findall("devices/disk/backingStore/source")
    if which == "running_domain":  # the live XML resolves the overlay's chain
        assert [b.get("file") for b in backing] == [bed.images["base"].path]


@pytest.mark.parametrize("key", testbed.IMAGE_KEYS)
def test_image(bed: Bed, libvirt_conn: libvirt.virConnect, key: str) -> None:
    image = bed.images[key]
    st = os.stat(image.path)
    if stat.S_ISBLK(st.st_mode):
        size = subprocess.run(
            ["blockdev", "--getsize64", image.path], capture_output=True, text=True, check=True
        )
        assert int(size.stdout) == image.virtual_size
    elif image.format == "raw":
        assert st.st_size == image.virtual_size
    info = qemu_img_json("info", "-U", image.path)
    rounded = -(-image.virtual_size // 512) * 512  # qemu rounds sizes up to whole sectors
    assert (info["format"], info["virtual-size"]) == (image.format, rounded)
    assert provisioning(image) == image.expected

    if image.pool is None:
        with pytest.raises(libvirt.libvirtError):
            libvirt_conn.storageVolLookupByPath(image.path)
        return
    pool = libvirt_conn.storagePoolLookupByName(image.pool)
    assert os.path.dirname(image.path) == ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
    if pool.isActive():
        vol = pool.storageVolLookupByName(image.volume)
        assert vol.path() == image.path
        assert vol.info() == [libvirt.VIR_STORAGE_VOL_FILE, image.virtual_size, st.st_blocks * 512]


def test_overlay_chain(bed: Bed) -> None:
    info = qemu_img_json("info", "-U", bed.images["overlay"].path)
    assert info["backing-filename"] == "base.qcow2"
    assert info["full-backing-filename"] == bed.images["base"].path
    assert info["backing-filename-format"] == "qcow2"


def test_unmanaged_block_is_a_loop_over_a_bed_file(bed: Bed) -> None:
    back = subprocess.run(
        ["losetup", "--noheadings", "--output", "BACK-FILE", bed.unmanaged_block.path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert back.startswith(bed.root + "/")
    assert os.stat(back).st_blocks * 512 >= bed.unmanaged_block.virtual_size
    assert bed.images["unmanaged_block"] is bed.unmanaged_block
    assert bed.images["unmanaged_file"] is bed.unmanaged_file


def test_corrupt_images_keep_the_pool_usable(bed: Bed, libvirt_conn: libvirt.virConnect) -> None:
    pool = pool_of(libvirt_conn, bed.dir_pool)
    pool.refresh(0)
    assert pool.isActive()
    errors = {bed.corrupt_image: "Unsupported cluster size", bed.truncated_image: "too short"}
    for path, error in errors.items():
        assert Path(path).read_bytes()[:4] == testbed.QCOW2_MAGIC
        proc = qemu_img("info", "-U", "--output=json", path)
        assert proc.returncode != 0 and error in proc.stderr
        vol = pool.storageVolLookupByName(Path(path).name)  # libvirt reads the header anyway
        assert ET.fromstring(vol.XMLDesc(0)).find("target/format").get("type") == "qcow2"
        assert vol.info()[1] == 64 * MiB


def test_scratch_pool_fixture(scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect) -> None:
    pool = pool_of(libvirt_conn, scratch_pool)
    assert pool.isActive() and pool.listAllVolumes(0) == []
    assert os.listdir(scratch_pool.path) == []


def test_scratch_pool_is_removed_with_volumes(
    libvirt_conn: libvirt.virConnect, workspace: Workspace
) -> None:
    with testbed.scratch_pool(libvirt_conn, workspace) as spec:
        xml = "<volume><name>v.raw</name><capacity unit='M'>1</capacity></volume>"
        pool_of(libvirt_conn, spec).createXML(xml, 0)
        assert os.path.exists(f"{spec.path}/v.raw")
    with pytest.raises(libvirt.libvirtError):
        pool_of(libvirt_conn, spec)
    assert not os.path.exists(spec.path)


# Another run: it takes a manifest in STATE, records KIND=NAME entries, prints its path, and holds
# the lock until its stdin closes.
HOLDER = """
import sys, testbed
manifest = testbed.Manifest.create(testbed.Path(sys.argv[1]))
for entry in sys.argv[2:]:
    manifest.record(*entry.split("=", 1))
print(manifest.path, flush=True)
sys.stdin.read()
"""


def _dir_pool(conn: libvirt.virConnect, name: str, path: Path) -> None:
    xml = f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
    conn.storagePoolDefineXML(xml, 0)


def test_cleanup_leftovers_removes_only_what_unlocked_manifests_list(
    libvirt_conn: libvirt.virConnect, tmp_path: Path
) -> None:
    """A live run (another process holds its manifest's lock) keeps everything, even names
    with a dead pid; a dead run's manifest (lock free) loses what it lists and what is named
    with its prefix; an `audt-*` object no manifest lists is never touched."""
    state = tmp_path / "state"
    tag = secrets.token_hex(4)
    live_root, dead_root = (testbed.TMP_PARENT / f"audt-999999999-{w}-{tag}" for w in "ld")
    live_pool, orphan_pool = f"{live_root.name}-pool", f"audt-999999999-orphan-{tag}"
    for folder in (live_root, dead_root):
        folder.mkdir()
    (dead_root / "disk.raw").write_bytes(b"\0" * 4096)
    loop = subprocess.run(["losetup", "--find", "--show", dead_root / "disk.raw"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, state, f"pool={live_pool}", f"folder={live_root}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(testbed.__file__).parent,
    )  # fmt: skip
    dead = testbed.Manifest.create(state)  # a run that crashed: its lock went with it
    dead_pool, by_prefix = f"{dead_root.name}-pool", f"{dead.prefix}guest"
    dead.record("domain", f"{dead_root.name}-dom")
    dead.record("pool", dead_pool)
    dead.record("folder", str(dead_root))
    dead.close()
    made = {live_pool: live_root, orphan_pool: tmp_path / "o", dead_pool: dead_root,
            by_prefix: tmp_path / "p"}  # fmt: skip
    try:
        assert holder.stdout is not None
        live_manifest = Path(holder.stdout.readline().strip())
        for name, path in made.items():
            _dir_pool(libvirt_conn, name, path)
        libvirt_conn.defineXML(
            f"<domain type='qemu'><name>{dead_root.name}-dom</name><memory unit='MiB'>64"
            "</memory><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
        )

        assert testbed.cleanup_leftovers(libvirt_conn, state) == [dead.path]
        pools = {p.name() for p in libvirt_conn.listAllStoragePools(0)}
        assert {live_pool, orphan_pool} <= pools and not {dead_pool, by_prefix} & pools
        assert f"{dead_root.name}-dom" not in libvirt_conn.listDefinedDomains()
        assert live_root.is_dir() and not dead_root.exists()
        assert live_manifest.exists() and not dead.path.exists()
        listing = subprocess.run(["losetup", "--list"], capture_output=True, text=True).stdout
        assert f"{loop} " not in listing

        holder.communicate("", timeout=30)  # that run ends without cleaning: now a leftover
        assert testbed.cleanup_leftovers(libvirt_conn, state) == [live_manifest]
        assert live_pool not in {p.name() for p in libvirt_conn.listAllStoragePools(0)}
        assert not live_root.exists() and not live_manifest.exists()
        assert orphan_pool in {p.name() for p in libvirt_conn.listAllStoragePools(0)}
    finally:
        holder.kill()
        holder.wait()
        testbed.remove_domain(libvirt_conn, f"{dead_root.name}-dom")
        for name in made:
            testbed.remove_pool(libvirt_conn, name)
        for folder in (live_root, dead_root):
            testbed.purge_files(folder)


def test_the_workspace_manifest_is_locked_and_lists_the_bed(bed: Bed, workspace: Workspace) -> None:
    manifest = workspace.manifest
    assert manifest.path.parent == testbed.STATE and workspace.prefix == manifest.prefix
    probe = subprocess.run(["flock", "--nonblock", "--conflict-exit-code", "9", manifest.path,
                            "true"], check=False)  # fmt: skip
    assert probe.returncode == 9  # held by this run
    pools = (bed.dir_pool, bed.fs_pool, bed.inactive_pool)
    expected = {
        testbed.Entry("prefix", bed.prefix),
        testbed.Entry("folder", bed.root),
        *(testbed.Entry("pool", p.name) for p in pools),
        *(testbed.Entry("domain", d) for d in (bed.running_domain, bed.defined_domain)),
    }
    assert expected <= set(manifest.entries())


def test_a_manifest_is_released_at_exit(tmp_path: Path) -> None:
    manifest = testbed.Manifest.create(tmp_path)
    assert testbed.PREFIX_RE.fullmatch(manifest.prefix)
    manifest.record("pool", "p")
    assert testbed.read_entries(manifest.path)[1:] == [testbed.Entry("pool", "p")]
    with manifest.path.open("a") as f:
        f.write('{"kind": "pool", "na')  # a crash mid-line
    assert len(manifest.entries()) == 2
    manifest.release()
    assert not manifest.path.exists()
