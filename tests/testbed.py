"""Build and tear down the real libvirtd/qemu-img test bed used by `libvirtd`-marked tests.

Every libvirt object and temp folder is named with a per-run prefix `audt-<pid>-<token>-`.
A run owns what it creates by record, not by name: it holds an flock on its manifest,
STATE/<prefix>.manifest, for its whole life, and writes there each domain, pool and folder
*before* making it (and, first, its prefix: objects named with that exact prefix, e.g. a
test's guest, are its own too). The next run removes what the manifests of dead runs list
(their lock is free) and nothing else: a live run in another PID namespace, or any object no
manifest lists, is left alone whatever its name. Files are made with qemu-img, qemu-io,
truncate, fallocate and dd, never through libvirt.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import count
from pathlib import Path
from types import MappingProxyType
from typing import Literal
from xml.sax.saxutils import quoteattr

import libvirt

MiB = 1 << 20
URI = "qemu:///system"
NAME_ROOT = "audt-"
TMP_PARENT = Path("/var/tmp")
REPO = Path(__file__).resolve().parents[1]
QCOW2_MAGIC = b"QFI\xfb"

Expected = Literal["thin", "preallocated"]
Where = Literal["dir", "fs", "inactive", "unmanaged"]
Kind = Literal["prefix", "domain", "pool", "folder"]


@dataclass(frozen=True)
class PoolSpec:
    """A libvirt storage pool of the bed; `device` is the loop device of an fs pool."""

    name: str
    path: str
    device: str | None = None


@dataclass(frozen=True)
class ImageSpec:
    """One disk image and what the auditor should conclude about it."""

    path: str
    pool: str | None
    volume: str | None
    format: str
    virtual_size: int
    expected: Expected


@dataclass(frozen=True)
class Workspace:
    """The per-run name prefix, the temp folder everything lives in, and the run's manifest
    (record a domain or pool there before making it, unless it is named with the prefix)."""

    prefix: str
    root: Path
    manifest: Manifest

    def record(self, kind: Kind, name: str) -> None:
        self.manifest.record(kind, name)


@dataclass(frozen=True)
class Bed:
    """The session-wide bed; tests must not modify it (use a scratch pool instead).

    `domain_disks` maps each domain name to {target dev: key in `images`}.
    """

    uri: str
    prefix: str
    root: str
    dir_pool: PoolSpec
    fs_pool: PoolSpec
    inactive_pool: PoolSpec
    images: Mapping[str, ImageSpec]
    corrupt_image: str
    truncated_image: str
    unmanaged_file: ImageSpec
    unmanaged_block: ImageSpec
    running_domain: str
    defined_domain: str
    domain_disks: Mapping[str, Mapping[str, str]]


def _run(*args: str | Path) -> str:
    """Run a command (no shell), returning stdout; raise with its stderr on failure."""
    argv = [str(a) for a in args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# --- image makers: (path, virtual size) -> file -------------------------------------------


def _raw_sparse(path: Path, size: int) -> None:
    _run("truncate", "-s", str(size), path)


def _raw_falloc(path: Path, size: int) -> None:
    _run("fallocate", "-l", str(size), path)


def _write_urandom(path: Path, nbytes: int) -> None:
    flags = ("bs=1M", "iflag=count_bytes,fullblock", "conv=notrunc", "status=none")
    _run("dd", "if=/dev/urandom", f"of={path}", f"count={nbytes}", *flags)


def _raw_partial(path: Path, size: int) -> None:
    _raw_sparse(path, size)
    _write_urandom(path, 8 * MiB)


def _qcow2(path: Path, size: int, prealloc: str = "off") -> None:
    options = f"preallocation={prealloc}"
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-o", options, path, str(size))


_qcow2_metadata = partial(_qcow2, prealloc="metadata")
_qcow2_falloc = partial(_qcow2, prealloc="falloc")
_qcow2_full = partial(_qcow2, prealloc="full")


def _qcow2_base(path: Path, size: int) -> None:
    _qcow2(path, size)
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 0 4M", path)


def _qcow2_overlay(path: Path, size: int) -> None:
    """Overlay of base.qcow2 (relative backing name) in the same folder, 1 MiB written."""
    backing = ("-b", "base.qcow2", "-F", "qcow2")
    _run("qemu-img", "create", "-q", "-f", "qcow2", *backing, path, str(size))
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 8M 1M", path)


@dataclass(frozen=True)
class _Recipe:
    key: str
    where: Where
    filename: str
    format: str
    size: int
    expected: Expected
    make: Callable[[Path, int], None]


_RAW64 = ("raw", 64 * MiB)
_QCOW64 = ("qcow2", 64 * MiB)
# Order matters: base.qcow2 before its overlay.
RECIPES: tuple[_Recipe, ...] = (
    _Recipe("raw_sparse", "dir", "sparse.raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("raw_falloc", "dir", "falloc.raw", *_RAW64, "preallocated", _raw_falloc),
    _Recipe("raw_partial", "dir", "partial.raw", *_RAW64, "thin", _raw_partial),
    _Recipe("raw_odd", "dir", "odd.raw", "raw", 10 * MiB + 12345, "preallocated", _write_urandom),
    _Recipe("qcow2_off", "dir", "off.qcow2", *_QCOW64, "thin", _qcow2),
    _Recipe("qcow2_metadata", "dir", "metadata.qcow2", *_QCOW64, "thin", _qcow2_metadata),
    _Recipe("qcow2_falloc", "dir", "falloc.qcow2", *_QCOW64, "preallocated", _qcow2_falloc),
    _Recipe("qcow2_full", "dir", "full.qcow2", *_QCOW64, "preallocated", _qcow2_full),
    _Recipe("base", "dir", "base.qcow2", *_QCOW64, "thin", _qcow2_base),
    _Recipe("overlay", "dir", "overlay.qcow2", *_QCOW64, "thin", _qcow2_overlay),
    _Recipe("hostile_space", "dir", "with space.raw", *_RAW64, "preallocated", _raw_falloc),
    _Recipe("hostile_semicolon", "dir", "semi;colon.raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("hostile_subshell", "dir", "$(touch pwned).raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("hostile_html", "dir", "<script>alert(1)<script>.raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("hostile_formula", "dir", "=HYPERLINK(1).raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("hostile_plus", "dir", "+plus.raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("hostile_at", "dir", "@at.raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("hostile_minus", "dir", "-minus.raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("fs_raw", "fs", "sparse.raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("fs_qcow2", "fs", "disk.qcow2", "qcow2", 128 * MiB, "thin", _qcow2),
    _Recipe("fs_falloc", "fs", "falloc.raw", "raw", 32 * MiB, "preallocated", _raw_falloc),
    _Recipe("inactive_raw", "inactive", "idle.raw", *_RAW64, "thin", _raw_sparse),
    _Recipe("unmanaged_file", "unmanaged", "unmanaged.qcow2", *_QCOW64, "thin", _qcow2),
)
BLOCK_KEY = "unmanaged_block"
BLOCK_SIZE = 32 * MiB
IMAGE_KEYS: tuple[str, ...] = (*(r.key for r in RECIPES), BLOCK_KEY)
CORRUPT_NAME = "corrupt.qcow2"
TRUNCATED_NAME = "truncated.qcow2"


def _make_corrupt(path: Path) -> None:
    """A 64 MiB qcow2 whose header claims cluster_bits = 99 (qemu-img refuses to open it)."""
    _qcow2(path, 64 * MiB)
    with path.open("r+b") as f:
        f.seek(20)
        f.write((99).to_bytes(4, "big"))


def _make_truncated(path: Path) -> None:
    """A valid 64 MiB qcow2 cut to its first 100 bytes."""
    _qcow2(path, 64 * MiB)
    os.truncate(path, 100)


# --- libvirtd, leftovers and workspace ----------------------------------------------------


def _virsh_ok() -> bool:
    argv = ["virsh", "-q", "-c", URI, "version"]
    return subprocess.run(argv, capture_output=True, check=False, timeout=60).returncode == 0


def _kvm_shared() -> bool:
    """False if /dev/kvm exists but its group cannot use it (makes every define take ~40 s)."""
    kvm = Path("/dev/kvm")
    return not kvm.exists() or kvm.stat().st_mode & 0o060 == 0o060


def ensure_libvirtd() -> None:
    """Make sure libvirtd answers on URI (via scripts/testbed.sh if needed), else raise."""
    if not (_virsh_ok() and _kvm_shared()):
        subprocess.run([REPO / "scripts" / "testbed.sh"], check=False)
    if not _virsh_ok():
        raise RuntimeError(f"libvirtd does not answer on {URI}, even after scripts/testbed.sh")


def _tolerate(call: Callable[[], object], code: int) -> None:
    """Call, ignoring the libvirt error `code` (the object went away or changed state)."""
    try:
        call()
    except libvirt.libvirtError as err:
        if err.get_error_code() != code:
            raise


def remove_domain(conn: libvirt.virConnect, name: str) -> None:
    """Destroy and undefine a domain; a missing domain is fine."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return
        raise
    if dom.isActive():
        _tolerate(dom.destroy, libvirt.VIR_ERR_OPERATION_INVALID)
    if dom.isPersistent():
        _tolerate(dom.undefine, libvirt.VIR_ERR_NO_DOMAIN)


def remove_pool(conn: libvirt.virConnect, name: str) -> None:
    """Destroy (an fs pool: unmount) and undefine a pool, keeping its files; missing is fine."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return
        raise
    if pool.isActive():
        _tolerate(pool.destroy, libvirt.VIR_ERR_OPERATION_INVALID)
    if pool.isPersistent():
        _tolerate(pool.undefine, libvirt.VIR_ERR_NO_STORAGE_POOL)


def purge_files(root: Path) -> None:
    """Unmount and detach loop devices under root, then delete it (idempotent)."""
    inside = f"{root}/"
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if line.split()[1].startswith(inside)]
    for mountpoint in sorted(mounts, reverse=True):
        _run("umount", "-l", mountpoint)
    listing = _run("losetup", "--list", "--json", "--output", "NAME,BACK-FILE")
    for loop in json.loads(listing)["loopdevices"] if listing.strip() else []:
        if (loop["back-file"] or "").startswith(inside):
            _run("losetup", "-d", loop["name"])
    shutil.rmtree(root, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    """mkdir with mode 0755 whatever the umask, so libvirt-qemu can reach the images."""
    path.mkdir()
    path.chmod(0o755)
    return path


# --- ownership: one locked manifest per run (see the module doc) ---------------------------

STATE = Path("/var/tmp/auditor-testbed")  # shared by all runs on this machine
REGISTRY = ".registry.lock"  # held only to create, claim or delete manifests, never to clean
MANIFEST = ".manifest"
PREFIX_RE = re.compile(rf"{NAME_ROOT}\d+-[0-9a-f]{{8}}-")


@contextmanager
def _registry(state: Path) -> Iterator[None]:
    state.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(state / REGISTRY, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Entry:
    kind: Kind
    name: str


class Manifest:
    """A run's claim: a file flock-ed (LOCK_EX) as long as the run lives, one JSON entry a line."""

    def __init__(self, path: Path, fd: int, prefix: str) -> None:
        self.path, self.prefix = path, prefix
        self._fd: int | None = fd

    @classmethod
    def create(cls, state: Path = STATE) -> Manifest:
        """A new, locked manifest under a new unique prefix (its first entry)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        with _registry(state):
            while True:
                prefix = f"{NAME_ROOT}{os.getpid()}-{secrets.token_hex(4)}-"
                path = state / (prefix.rstrip("-") + MANIFEST)
                try:
                    fd = os.open(path, flags, 0o644)
                except FileExistsError:
                    continue
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else can have it yet
                manifest = cls(path, fd, prefix)
                manifest.record("prefix", prefix)
                return manifest

    def record(self, kind: Kind, name: str) -> None:
        """Add an entry (call it before making the object: listing a missing one is fine)."""
        assert self._fd is not None, f"{self.path} is closed"
        os.write(self._fd, (json.dumps({"kind": kind, "name": name}) + "\n").encode())

    def entries(self) -> list[Entry]:
        return read_entries(self.path)

    def release(self) -> None:
        """Delete the manifest (everything it lists is gone), then drop the lock."""
        with _registry(self.path.parent):
            self.path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        """Drop the lock, keeping the file: what it lists is now a leftover for the next run."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_entries(path: Path) -> list[Entry]:
    """A manifest's entries; a line cut short by a crash is skipped."""
    entries = []
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
            entries.append(Entry(item["kind"], item["name"]))
        except (ValueError, KeyError, TypeError):
            continue
    return entries


def remove_entries(conn: libvirt.virConnect, entries: Sequence[Entry]) -> None:
    """Remove what a manifest lists: domains, then pools (each listed by name, or named with
    a listed prefix), then folders (directly under TMP_PARENT only, with their mounts and loop
    devices). Idempotent: objects already gone are fine."""
    prefixes = tuple(e.name for e in entries if e.kind == "prefix" and PREFIX_RE.fullmatch(e.name))

    def owned(kind: Kind, found: Iterator[str]) -> list[str]:
        listed = [e.name for e in entries if e.kind == kind]
        return listed + [n for n in found if prefixes and n.startswith(prefixes)]

    for name in owned("domain", (d.name() for d in conn.listAllDomains(0))):
        remove_domain(conn, name)
    for name in owned("pool", (p.name() for p in conn.listAllStoragePools(0))):
        remove_pool(conn, name)
    for entry in entries:
        folder = Path(entry.name)
        ours = folder.parent == TMP_PARENT and folder.name.startswith(NAME_ROOT)
        if entry.kind == "folder" and ours:
            purge_files(folder)


def cleanup_leftovers(conn: libvirt.virConnect, state: Path = STATE) -> list[Path]:
    """Remove what the manifests of dead runs (lock free) list, then those manifests; return
    them. A manifest still locked belongs to a live run (or one being cleaned): left alone."""
    claimed: list[tuple[Path, int]] = []
    with _registry(state):
        for path in sorted(state.glob(f"*{MANIFEST}")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            claimed.append((path, fd))
    done = []
    for path, fd in claimed:
        try:
            remove_entries(conn, read_entries(path))
            with _registry(state):
                path.unlink(missing_ok=True)
            done.append(path)
        except (libvirt.libvirtError, OSError, RuntimeError) as err:
            warnings.warn(f"test bed: leftovers of {path} stay: {err}", stacklevel=2)
        finally:
            os.close(fd)
    return done


@contextmanager
def open_workspace(conn: libvirt.virConnect, state: Path = STATE) -> Iterator[Workspace]:
    """Claim a prefix (a locked manifest), clean dead runs' leftovers, yield a fresh workspace.

    Afterwards remove whatever the manifest lists (teardown may have left some), then delete
    it; if that fails the manifest stays, unlocked, for the next run to clean.
    """
    manifest = Manifest.create(state)
    try:
        cleanup_leftovers(conn, state)
        root = TMP_PARENT / manifest.prefix.rstrip("-")
        manifest.record("folder", str(root))
        _mkdir(root)
        try:
            yield Workspace(manifest.prefix, root, manifest)
        finally:
            remove_entries(conn, manifest.entries())
        manifest.release()
    finally:
        manifest.close()


# --- pools and domains --------------------------------------------------------------------


def _define_pool(
    conn: libvirt.virConnect,
    ws: Workspace,
    stack: ExitStack,
    name: str,
    path: Path,
    *,
    device: str | None = None,
    start: bool = True,
) -> libvirt.virStoragePool:
    """Define a persistent dir pool (fs pool if `device`), recorded in the workspace's
    manifest and undone on `stack`; start it."""
    if device is None:
        xml = f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
    else:
        xml = (
            f"<pool type='fs'><name>{name}</name><source><device path={quoteattr(device)}/>"
            f"<format type='ext4'/></source><target><path>{path}</path></target></pool>"
        )
    ws.record("pool", name)
    pool = conn.storagePoolDefineXML(xml, 0)
    stack.callback(remove_pool, conn, name)
    if start:
        pool.create(0)
    return pool


def _disk_xml(dev: str, kind: str, image: ImageSpec) -> str:
    if kind == "volume":
        pool, volume = quoteattr(image.pool or ""), quoteattr(image.volume or "")
        source = f"<source pool={pool} volume={volume}/>"
    elif kind == "block":
        source = f"<source dev={quoteattr(image.path)}/>"
    else:
        source = f"<source file={quoteattr(image.path)}/>"
    return (
        f"<disk type='{kind}' device='disk'><driver name='qemu' type='{image.format}'/>"
        f"{source}<target dev='{dev}' bus='virtio'/></disk>"
    )


def _define_domain(
    conn: libvirt.virConnect,
    ws: Workspace,
    stack: ExitStack,
    name: str,
    disks: Sequence[tuple[str, str, ImageSpec]],
) -> libvirt.virDomain:
    """Define a persistent diskless-OS TCG guest (SeaBIOS just spins), recorded in the
    workspace's manifest and undone on `stack`."""
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        + "".join(_disk_xml(*disk) for disk in disks)
        + "<memballoon model='none'/></devices></domain>"
    )
    ws.record("domain", name)
    dom = conn.defineXML(xml)
    stack.callback(remove_domain, conn, name)
    return dom


def _losetup(backing: Path) -> str:
    return _run("losetup", "--find", "--show", backing).strip()


@contextmanager
def build_bed(conn: libvirt.virConnect, ws: Workspace) -> Iterator[Bed]:
    """Build the whole bed in `ws`; undo its pools and domains on exit, even after errors.

    Files, mounts and loop devices are removed with the workspace.
    """
    with ExitStack() as stack:
        yield _build(conn, ws, stack)


def _build(conn: libvirt.virConnect, ws: Workspace, stack: ExitStack) -> Bed:
    names = {w: f"{ws.prefix}{w}" for w in ("dir", "fs", "inactive")}
    folders = {w: _mkdir(ws.root / f"{w}-pool") for w in ("dir", "fs", "inactive")}
    folders["unmanaged"] = _mkdir(ws.root / "unmanaged")
    devices = _mkdir(ws.root / "devices")

    fs_image = devices / "ext4.img"
    _raw_sparse(fs_image, 256 * MiB)
    _run("mkfs.ext4", "-q", "-F", "-m", "0", fs_image)
    fs_device = _losetup(fs_image)
    block_file = devices / "block.img"
    _raw_falloc(block_file, BLOCK_SIZE)
    block_device = _losetup(block_file)

    pools = {
        "dir": _define_pool(conn, ws, stack, names["dir"], folders["dir"]),
        "fs": _define_pool(conn, ws, stack, names["fs"], folders["fs"], device=fs_device),
    }
    _define_pool(conn, ws, stack, names["inactive"], folders["inactive"], start=False)

    images: dict[str, ImageSpec] = {}
    for r in RECIPES:
        path = folders[r.where] / r.filename
        r.make(path, r.size)
        path.chmod(0o644)
        in_pool = r.where != "unmanaged"
        images[r.key] = ImageSpec(
            path=str(path),
            pool=names[r.where] if in_pool else None,
            volume=r.filename if in_pool else None,
            format=r.format,
            virtual_size=r.size,
            expected=r.expected,
        )
    images[BLOCK_KEY] = ImageSpec(block_device, None, None, "raw", BLOCK_SIZE, "preallocated")
    corrupt, truncated = folders["dir"] / CORRUPT_NAME, folders["dir"] / TRUNCATED_NAME
    _make_corrupt(corrupt)
    _make_truncated(truncated)
    for pool in pools.values():
        pool.refresh(0)

    prefix = ws.prefix
    layouts = {
        f"{prefix}running": (
            ("vda", "volume", "overlay"),
            ("vdb", "file", "unmanaged_file"),
            ("vdc", "block", BLOCK_KEY),
            ("vdd", "file", "raw_partial"),
        ),
        f"{prefix}defined": (
            ("vda", "volume", "fs_qcow2"),
            ("vdb", "file", "raw_sparse"),
            ("vdc", "file", "qcow2_falloc"),
        ),
    }
    domains = {
        name: _define_domain(
            conn, ws, stack, name, [(dev, kind, images[key]) for dev, kind, key in layout]
        )
        for name, layout in layouts.items()
    }
    domains[f"{prefix}running"].create()

    return Bed(
        uri=URI,
        prefix=prefix,
        root=str(ws.root),
        dir_pool=PoolSpec(names["dir"], str(folders["dir"])),
        fs_pool=PoolSpec(names["fs"], str(folders["fs"]), fs_device),
        inactive_pool=PoolSpec(names["inactive"], str(folders["inactive"])),
        images=MappingProxyType(images),
        corrupt_image=str(corrupt),
        truncated_image=str(truncated),
        unmanaged_file=images["unmanaged_file"],
        unmanaged_block=images[BLOCK_KEY],
        running_domain=f"{prefix}running",
        defined_domain=f"{prefix}defined",
        domain_disks=MappingProxyType(
            {
                name: MappingProxyType({dev: key for dev, _, key in layout})
                for name, layout in layouts.items()
            }
        ),
    )


_scratch_numbers = count(1)


@contextmanager
def scratch_pool(conn: libvirt.virConnect, ws: Workspace) -> Iterator[PoolSpec]:
    """Yield a fresh, empty, active dir pool; remove it and its files afterwards."""
    name = f"{ws.prefix}scratch{next(_scratch_numbers)}"
    path = _mkdir(ws.root / name)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, path, ignore_errors=True)
        _define_pool(conn, ws, stack, name, path)
        yield PoolSpec(name, str(path))
