"""`auditor audit [--fix]` against the real libvirtd, real images and a small loop-mounted fs.

Every expectation is checked by independent means: the guest-visible content as `qemu-img
convert -O raw` + sha256, allocation from `stat`, formats from `qemu-img info`, pool state and
XML from libvirt itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
import testbed
from testbed import PoolSpec, Workspace

MiB = 1 << 20


def run(
    *args: str, state: Path | None = None, policy: Path | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "auditor", "-c", testbed.URI, *args]
    env = dict(os.environ)
    if state is not None:
        env["AUDITOR_STATE"] = str(state)
    if policy is not None:
        env["AUDITOR_POLICY"] = str(policy)
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=300)


def findings(*args: str, **kw: Any) -> tuple[int, list[dict[str, Any]]]:
    ran = run("audit", "--format", "json", *args, **kw)
    assert ran.returncode in (0, 1), ran.stderr
    doc = json.loads(ran.stdout[ran.stdout.index("{") :])
    return ran.returncode, doc["findings"]


def codes(found: list[dict[str, Any]], pool: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in found:
        if f["pool"] == pool:
            out.setdefault(f["code"], set()).add(f["volume"])
    return out


def guest_digest(path: Path, fmt: str) -> str:
    """sha256 of what the guest sees: the image converted to raw."""
    out = path.parent.parent / f"{path.name}.guest.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(path), str(out)],
                   check=True)  # fmt: skip
    h = hashlib.sha256()
    with open(out, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    out.unlink()
    return h.hexdigest()


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def refresh(conn: libvirt.virConnect, pool: PoolSpec) -> None:
    conn.storagePoolLookupByName(pool.name).refresh(0)


def raw_thin(path: Path, size: int, data_at: int = 8 * MiB) -> None:
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.seek(data_at)
        fh.write(os.urandom(MiB))


def raw_full(path: Path, size: int) -> None:
    raw_thin(path, size)
    subprocess.run(["fallocate", "-l", str(size), str(path)], check=True)


def qcow2(path: Path, size: int, prealloc: str = "off", data: int = MiB) -> None:
    """A qcow2 of ``size`` holding ``data`` random bytes at 4 MiB (made from a raw file)."""
    src = path.parent.parent / f"{path.name}.src"
    raw_thin(src, size, 0)
    with open(src, "r+b") as fh:
        fh.seek(4 * MiB)
        fh.write(os.urandom(data))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o",
                    f"preallocation={prealloc}", str(src), str(path)], check=True)  # fmt: skip
    src.unlink()


def policy(tmp: Path, pool: str, kind: str) -> Path:
    p = tmp / "policy.toml"
    p.write_text(f'[pools."{pool}"]\nprovisioning = "{kind}"\n')
    return p


# ---- rules ----------------------------------------------------------------------------------


def test_provisioning_policy_and_orphans(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, tmp_path: Path
) -> None:
    folder = Path(scratch_pool.path)
    raw_thin(folder / "thin.raw", 32 * MiB)
    raw_full(folder / "full.raw", 32 * MiB)
    refresh(libvirt_conn, scratch_pool)
    code, found = findings("--pool", scratch_pool.name,
                           policy=policy(tmp_path, scratch_pool.name, "preallocated"))  # fmt: skip
    got = codes(found, scratch_pool.name)
    assert got["AUD201"] == {"thin.raw"}
    assert got["AUD301"] == {"thin.raw", "full.raw"}  # no domain uses them
    assert code == 1
    fix = next(f for f in found if f["code"] == "AUD201")["fix"]
    assert fix == {"what": "preallocate the volume", "safe": False}
    code, found = findings("--pool", scratch_pool.name, "--select", "AUD3")
    assert {f["code"] for f in found} == {"AUD301"} and code == 0  # info does not fail


def test_a_stale_pool_is_found_and_refreshed(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect
) -> None:
    raw_thin(Path(scratch_pool.path) / "new.raw", 32 * MiB)  # behind libvirt's back
    _, found = findings("--pool", scratch_pool.name)
    stale = [f for f in found if f["code"] == "AUD501"]
    assert len(stale) == 1 and "new.raw" in stale[0]["message"]
    ran = run("audit", "--pool", scratch_pool.name, "--fix")
    assert "fixed 1" in ran.stdout, ran.stdout + ran.stderr
    pool = libvirt_conn.storagePoolLookupByName(scratch_pool.name)
    assert "new.raw" in pool.listVolumes()
    _, found = findings("--pool", scratch_pool.name)
    assert "AUD501" not in codes(found, scratch_pool.name)


def test_stale_free_space_of_a_small_filesystem(
    tiny_pool: tuple[str, Path], libvirt_conn: libvirt.virConnect
) -> None:
    name, mount = tiny_pool
    libvirt_conn.storagePoolLookupByName(name).refresh(0)
    other = mount / "lost+found" / "elsewhere"  # not a volume: only the free space changes
    other.write_bytes(os.urandom(8 * MiB))
    _, found = findings("--pool", name)
    stale = [f for f in found if f["code"] == "AUD501"]
    assert len(stale) == 1 and "less free" in stale[0]["message"], found


def leaky(path: Path) -> None:
    """A qcow2 with 17 leaked clusters: 1 MiB written, then its L1 entry zeroed."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", str(path)],
                   check=True, capture_output=True)  # fmt: skip
    with open(path, "r+b") as fh:
        fh.seek(40)
        l1 = int.from_bytes(fh.read(8), "big")
        fh.seek(l1)
        fh.write(b"\0" * 8)


def test_leaks_are_found_and_repaired_and_a_broken_backing_chain_is_found(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, tmp_path: Path
) -> None:
    folder = Path(scratch_pool.path)
    leaky(folder / "leaky.qcow2")
    base = tmp_path / "gone-base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(folder / "top.qcow2")], check=True)  # fmt: skip
    base.unlink()
    refresh(libvirt_conn, scratch_pool)
    _, found = findings("--pool", scratch_pool.name)
    got = codes(found, scratch_pool.name)
    assert got["AUD701"] == {"leaky.qcow2"} and got["AUD601"] == {"top.qcow2"}
    ran = run("audit", "--pool", scratch_pool.name, "--select", "AUD701", "--fix")
    assert "fixed 1" in ran.stdout and "0 finding(s)" in ran.stdout, ran.stdout + ran.stderr
    assert ran.returncode == 1 and "skipped image" in ran.stderr  # the missing base: exit 1
    check = subprocess.run(["qemu-img", "check", "--output=json", str(folder / "leaky.qcow2")],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0 and "leaks" not in json.loads(check.stdout)


def test_an_inactive_pool_a_domain_needs_is_started(
    libvirt_conn: libvirt.virConnect, workspace: Workspace, scratch_pool: PoolSpec
) -> None:
    path = Path(scratch_pool.path) / "disk.raw"
    raw_thin(path, 16 * MiB)
    refresh(libvirt_conn, scratch_pool)
    name = f"{scratch_pool.name}-vm"
    libvirt_conn.defineXML(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><os><type "
        f"arch='x86_64'>hvm</type></os><devices><disk type='volume' device='disk'><driver "
        f"name='qemu' type='raw'/><source pool='{scratch_pool.name}' volume='disk.raw'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    try:
        libvirt_conn.lookupByName(name).setAutostart(1)
        libvirt_conn.storagePoolLookupByName(scratch_pool.name).destroy()
        _, found = findings("--pool", scratch_pool.name)
        got = {f["code"]: f for f in found if f["pool"] == scratch_pool.name}
        assert got["AUD401"]["severity"] == "crit" and "AUD402" in got
        ran = run("audit", "--pool", scratch_pool.name, "--fix")
        assert "fixed 2" in ran.stdout, ran.stdout + ran.stderr
        pool = libvirt_conn.storagePoolLookupByName(scratch_pool.name)
        assert pool.isActive() and pool.autostart()
    finally:
        testbed.remove_domain(libvirt_conn, name)


# ---- data-moving fixes -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["preallocated", "thin"])
def test_unsafe_fixes_keep_the_content_and_reach_their_effect(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, tmp_path: Path, kind: str
) -> None:
    folder = Path(scratch_pool.path)
    size = 48 * MiB
    if kind == "preallocated":
        raw_thin(folder / "v.raw", size)
        qcow2(folder / "v.qcow2", size)
    else:
        raw_full(folder / "v.raw", size)
        qcow2(folder / "v.qcow2", size, prealloc="falloc")
    for p in folder.iterdir():
        os.chown(p, 65534, 65534)
        p.chmod(0o640)
    refresh(libvirt_conn, scratch_pool)
    before = {p.name: guest_digest(p, p.suffix[1:]) for p in folder.iterdir()}
    pol = policy(tmp_path, scratch_pool.name, kind)
    held = run("audit", "--pool", scratch_pool.name, "--fix", policy=pol)
    assert "held back 2 unsafe" in held.stdout, held.stdout
    ran = run("audit", "--pool", scratch_pool.name, "--unsafe-fixes", "--fix", policy=pol)
    assert ran.returncode == 0 and "fixed 2" in ran.stdout, ran.stdout + ran.stderr
    for p in folder.iterdir():
        assert guest_digest(p, p.suffix[1:]) == before[p.name], p
        st = os.stat(p)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o640)
        argv = ["qemu-img", "info", "-U", "--output=json", str(p)]
        info = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
        assert info["format"] == p.suffix[1:]
        if kind == "preallocated":
            assert allocated(p) >= size
        else:
            assert allocated(p) < 4 * MiB
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no copy left


def test_dry_run_changes_nothing(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, tmp_path: Path
) -> None:
    folder = Path(scratch_pool.path)
    raw_thin(folder / "v.raw", 32 * MiB)
    qcow2(folder / "v.qcow2", 32 * MiB)
    refresh(libvirt_conn, scratch_pool)
    seen = {p.name: (p.stat().st_mtime_ns, allocated(p), guest_digest(p, p.suffix[1:]))
            for p in folder.iterdir()}  # fmt: skip
    pol = policy(tmp_path, scratch_pool.name, "preallocated")
    ran = run("audit", "--pool", scratch_pool.name, "--unsafe-fixes", "--fix", "--dry-run",
              policy=pol)  # fmt: skip
    assert "run: fallocate --offset 0 --length" in ran.stdout
    assert "run: qemu-img convert" in ran.stdout and "fixed 0" in ran.stdout
    now = {p.name: (p.stat().st_mtime_ns, allocated(p), guest_digest(p, p.suffix[1:]))
           for p in folder.iterdir()}  # fmt: skip
    assert now == seen


def small_fs_pool(conn: libvirt.virConnect, ws: Workspace, name: str) -> Iterator[Path]:
    """An active dir pool on a 32 MiB ext4 mounted from a loop device (in the workspace)."""
    image = ws.root / f"{name}.img"
    mount = testbed._mkdir(ws.root / name)
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = testbed._losetup(image)
    subprocess.run(["mount", device, str(mount)], check=True)
    ws.record("pool", name)
    conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{name}</name><target><path>{mount}</path></target></pool>", 0
    ).create(0)
    try:
        yield mount
    finally:
        testbed.remove_pool(conn, name)
        subprocess.run(["umount", str(mount)], check=False)
        subprocess.run(["losetup", "-d", device], check=False)


@pytest.fixture
def tiny_pool(
    libvirt_conn: libvirt.virConnect, workspace: Workspace, scratch_pool: PoolSpec
) -> Iterator[tuple[str, Path]]:
    name = f"{scratch_pool.name}-tiny"
    for mount in small_fs_pool(libvirt_conn, workspace, name):
        yield name, mount


def test_a_fix_that_needs_more_space_than_the_pool_has_is_skipped(
    tiny_pool: tuple[str, Path], libvirt_conn: libvirt.virConnect, tmp_path: Path
) -> None:
    name, mount = tiny_pool
    raw_thin(mount / "big.raw", 200 * MiB)
    libvirt_conn.storagePoolLookupByName(name).refresh(0)
    before = (allocated(mount / "big.raw"), guest_digest(mount / "big.raw", "raw"))
    ran = run("audit", "--pool", name, "--unsafe-fixes", "--fix",
              policy=policy(tmp_path, name, "preallocated"))  # fmt: skip
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "not fixed AUD201" in ran.stdout and "usable" in ran.stdout
    assert (allocated(mount / "big.raw"), guest_digest(mount / "big.raw", "raw")) == before


# ---- interrupts --------------------------------------------------------------------------------


def _wait_for_copy(folder: Path, proc: subprocess.Popen[str], timeout: float = 60) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        copies = [p for p in folder.iterdir() if ".auditor-fix-" in p.name]
        if copies and copies[0].stat().st_blocks > 0:
            return copies[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no copy appeared")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_an_interrupted_convert_leaves_the_original_and_no_copy(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, tmp_path: Path, sig: int
) -> None:
    folder = Path(scratch_pool.path)
    path = folder / "big.qcow2"
    qcow2(path, 1 << 30, data=160 * MiB)
    refresh(libvirt_conn, scratch_pool)
    before = guest_digest(path, "qcow2")
    state = tmp_path / "state"
    env = dict(os.environ, AUDITOR_STATE=str(state),
               AUDITOR_POLICY=str(policy(tmp_path, scratch_pool.name, "preallocated")))  # fmt: skip
    argv = [sys.executable, "-m", "auditor", "-c", testbed.URI, "audit", "--pool",
            scratch_pool.name, "--unsafe-fixes", "--fix"]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_copy(folder, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert guest_digest(path, "qcow2") == before
    copies = [p for p in folder.iterdir() if ".auditor-fix-" in p.name]
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig and err.strip().splitlines()[-1].startswith(
            "auditor: interrupted by"
        ), err
        assert copies == []
        return
    # killed: the journal knows; its fix removes the copy (the original stays as it was)
    code, found = findings("--pool", scratch_pool.name, "--select", "AUD801", state=state)
    assert code == 1 and [f["code"] for f in found] == ["AUD801"]
    if copies:
        assert copies[0].name in found[0]["message"]
    ran = run("audit", "--pool", scratch_pool.name, "--select", "AUD801", "--fix", state=state)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [p for p in folder.iterdir() if ".auditor-fix-" in p.name] == []
    assert guest_digest(path, "qcow2") == before
