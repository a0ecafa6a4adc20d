"""Nothing lost on any path: failures, signals, races and a killed run never take what the user
did not ask to lose.

Every check is independent of auditor's own figures: sha256 of the files, ``os.stat``
(inode, size, times), listings of the folders, and libvirt itself. The signal tests run the
real CLI as a subprocess, wait until the transfer is observably under way (the temporary
file or the new volume exists and grows) and only then send the signal; nothing is
throttled, the data is just big enough. Every test's auditor runs have a state folder
(journal, host lock) of their own (``AUDITOR_STATE``), so that each journal is read alone.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from itertools import count
from pathlib import Path
from typing import Any

import libvirt
import pytest
import test_ops
import testbed
from clirun import Ran
from test_ops import (
    PROBES,
    Guests,
    digest,
    file_disk,
    islands,
    put,
    qcow2,
    qemu_io,
    refresh,
    volume_disk,
    volumes,
)
from testbed import PoolSpec, Workspace

from auditor import ops
from auditor.adapters.libvirt import LibvirtHost
from auditor.errors import InUse, NotFound, OperationError
from auditor.journal import host_lock
from auditor.sizes import NewSize

guests, host = test_ops.guests, test_ops.host  # the fixtures of test_ops, shared

MiB = 1 << 20
BIG = 1536 * MiB  # random data an upload and a download take seconds to carry
CLONE = 256 * MiB  # random data a clone or a wipe takes a second or more to go through
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
CROWD = 6  # disks of a guest that every run reads before it plans (concurrent attaches)
ROUNDS = 3
WAIT = 60.0  # seconds any wait may take before the test fails


# ---- independent checks and data ---------------------------------------------------------------


def write_random(path: Path, size: int) -> str:
    """A file of ``size`` random bytes (no holes, nothing to compress); returns its sha256."""
    rng, h = random.Random(os.urandom(16)), sha256()
    with open(path, "wb") as fh:
        for _ in range(size // (8 * MiB)):
            chunk = rng.randbytes(8 * MiB)
            h.update(chunk)
            fh.write(chunk)
        tail = rng.randbytes(size % (8 * MiB))
        h.update(tail)
        fh.write(tail)
    path.chmod(0o644)
    return h.hexdigest()


@dataclass(frozen=True)
class Seen:
    """What a file is: its content and its identity."""

    sha: str
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Seen:
        st = os.stat(path, follow_symlinks=False)
        return cls(digest(path), st.st_ino, st.st_size, st.st_mtime_ns)


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def temps(folder: Path, name: str) -> list[Path]:
    """The download's temporary files of FILE ``name``: ``.NAME.auditor-HEX``."""
    return sorted(folder.glob(f".{name}.auditor-*"))


def all_zero(path: Path) -> bool:
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MiB):
            if chunk.count(0) != len(chunk):
                return False
    return True


def settle(conn: libvirt.virConnect, pool: str) -> None:
    """Refresh ``pool`` once libvirt's own clean-up of a stream (its async job) is over."""
    handle = conn.storagePoolLookupByName(pool)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            handle.refresh(0)
            return
        except libvirt.libvirtError as exc:
            if "asynchronous jobs" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def command(state: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """``python -m auditor ARGS`` with the state folder ``state`` (``AUDITOR_STATE``)."""
    env = os.environ | {"AUDITOR_STATE": str(state)}
    return [sys.executable, "-m", "auditor", *args], env


def run(state: Path, *args: str) -> Ran:
    """A command against the test host."""
    argv, env = command(state, "-c", testbed.URI, *args)
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=WAIT * 2)
    return Ran(p.returncode, p.stdout, p.stderr)


def journal(state: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """``auditor journal --format json``: its exit code and document."""
    argv, env = command(state, "journal", "--format", "json", *args)
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=WAIT)
    assert p.returncode in (0, 1), (p.returncode, p.stderr)
    return p.returncode, json.loads(p.stdout)


def by_phase(doc: dict[str, Any], action: str) -> dict[str, list[dict[str, Any]]]:
    """The journal's records of ``action``, by phase."""
    out: dict[str, list[dict[str, Any]]] = {"intent": [], "made": [], "outcome": []}
    for r in doc["records"]:
        if r["action"] == action:
            out[r["phase"]].append(r)
    return out


def one_line(ran: Ran) -> str:
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    return lines[0]


def interrupted(ran: Ran, sig: int) -> None:
    """Exit 128 + N and one line on stderr naming the signal."""
    assert ran.code == 128 + sig, (ran.code, ran.err)
    assert one_line(ran) == f"auditor: interrupted by {signal.Signals(sig).name}"


def growing(measure: Callable[[], int | None]) -> Callable[[], bool]:
    """True once ``measure`` gave a positive value and then a larger one."""
    first: list[int] = []

    def ready() -> bool:
        value = measure()
        if not value:
            return False
        if not first:
            first.append(value)
        return value > first[0]

    return ready


def blocks(path: Path) -> Callable[[], int | None]:
    def measure() -> int | None:
        try:
            return os.stat(path).st_blocks
        except FileNotFoundError:
            return None

    return measure


class Started:
    """``python -m auditor ...`` running in the background."""

    def __init__(self, state: Path, *args: str) -> None:
        argv, env = command(state, "-c", testbed.URI, *args)
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip

    def until(self, what: str, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()``; fail if auditor ends first or it takes too long."""
        deadline = time.monotonic() + WAIT
        while not ready():
            if self.proc.poll() is not None:
                ran = self.finish()
                pytest.fail(f"auditor ended before {what}: exit {ran.code}\n{ran.out}{ran.err}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"timed out waiting for {what}: {self.finish()}")
            time.sleep(0.005)

    def stop(self, sig: int) -> Ran:
        self.proc.send_signal(sig)
        return self.finish()

    def finish(self) -> Ran:
        out, err = self.proc.communicate(timeout=WAIT * 2)
        return Ran(self.proc.returncode, out, err)


# ---- fixtures ------------------------------------------------------------------------------------

_folders = count(1)


@pytest.fixture(scope="module")
def area(workspace: Workspace) -> Iterator[Path]:
    """This module's folder inside the workspace (whose manifest lists it: a crashed run's
    files, mounts and loop devices in it are removed by the next run)."""
    path = workspace.root / "nothing-lost"
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def folder(area: Path) -> Iterator[Path]:
    """An empty folder of one test."""
    path = area / f"t{next(_folders)}"
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def state(area: Path) -> Path:
    """A state folder (journal, host locks) of the test's own (auditor makes it)."""
    return area / f"state{next(_folders)}"


@dataclass(frozen=True)
class Big:
    file: Path  # BIG random bytes, an upload's source
    sha: str
    pool: PoolSpec  # holds it as volume big.raw (a hard link: the same inode), for downloads
    volume: str = "big.raw"


@pytest.fixture(scope="module")
def big(libvirt_conn: libvirt.virConnect, workspace: Workspace, area: Path) -> Iterator[Big]:
    file = area / "big.img"
    sha = write_random(file, BIG)
    with testbed.scratch_pool(libvirt_conn, workspace) as pool:
        put(libvirt_conn, pool, "big.raw", lambda p: os.link(file, p))
        yield Big(file, sha, pool)


@dataclass(frozen=True)
class CloneSource:
    pool: PoolSpec
    path: Path
    sha: str
    name: str = "src.raw"


@pytest.fixture(scope="module")
def clone_source(libvirt_conn: libvirt.virConnect, workspace: Workspace) -> Iterator[CloneSource]:
    """A pool holding src.raw, CLONE bytes of random data."""
    with testbed.scratch_pool(libvirt_conn, workspace) as pool:
        path = Path(pool.path) / "src.raw"
        sha = write_random(path, CLONE)
        refresh(libvirt_conn, pool)
        yield CloneSource(pool, path, sha)


@pytest.fixture
def small_fs(area: Path) -> Iterator[Path]:
    """A 64 MiB ext4 filesystem on a loop device, mounted in the module's folder (the
    workspace's clean-up unmounts and detaches whatever lies under its root)."""
    image, mount = area / "small-fs.img", area / "small-fs"
    image.write_bytes(b"")
    os.truncate(image, 64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    argv = ["losetup", "--find", "--show", str(image)]
    device = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    try:
        mount.mkdir()
        subprocess.run(["mount", device, str(mount)], check=True)
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(mount, ignore_errors=True)
        image.unlink()


# ---- 1. vol download: the old FILE survives every failure ---------------------------------------


def test_download_that_fills_the_disk_keeps_the_old_file(
    big: Big, small_fs: Path, state: Path
) -> None:
    old = small_fs / "old.img"
    write_random(old, 4 * MiB)
    before, free = Seen.of(old), os.statvfs(small_fs).f_bfree
    ran = run(state, "vol", "download", big.pool.name, big.volume, str(old), "--overwrite",
              "--yes")  # fmt: skip
    assert ran.code == 2, ran
    line = one_line(ran)
    assert line.startswith("auditor: error: download of") and "No space left" in line, line
    assert Seen.of(old) == before
    assert listing(small_fs) == {"lost+found", "old.img"}  # no temporary file left
    assert os.statvfs(small_fs).f_bfree == free  # and none of its blocks


def test_download_that_libvirt_fails_keeps_the_old_file(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, host: LibvirtHost, folder: Path
) -> None:
    old = folder / "old.img"
    write_random(old, MiB)
    before = Seen.of(old)
    gone = put(libvirt_conn, scratch_pool, "gone.raw", lambda p: islands(p, 64 * MiB))
    put(libvirt_conn, scratch_pool, "vol.raw", islands)
    # The volume's file vanishes between plan and apply: libvirtd cannot open it.
    ctx = ops.context(host, PROBES)
    plan = ops.plan_download(ctx, scratch_pool.name, "gone.raw", str(old), overwrite=True)
    gone.unlink()
    with pytest.raises(OperationError, match=r"download of gone\.raw"):
        ops.apply(plan, ctx, yes=True)
    assert Seen.of(old) == before and listing(folder) == {"old.img"}

    # A libvirt error midway, 100 MiB into the stream (raised where recvFlags raises one).
    carried: list[int] = []

    def fail(n: int) -> None:
        carried.append(n)
        if sum(carried) > 100 * MiB:
            raise libvirt.libvirtError("stream broke off")

    ctx = ops.context(host, PROBES)
    plan = ops.plan_download(ctx, scratch_pool.name, "vol.raw", str(old), overwrite=True)
    with pytest.raises(OperationError, match=r"download of vol\.raw.*stream broke off"):
        ops.apply(plan, ctx, yes=True, progress=fail)
    assert Seen.of(old) == before and listing(folder) == {"old.img"}


def _start_download(big: Big, state: Path, file: Path, overwrite: bool) -> tuple[Started, Path]:
    """A download of big.raw into ``file``, once its temporary file exists and grows."""
    extra = ("--overwrite", "--yes") if overwrite else ()
    started = Started(state, "vol", "download", big.pool.name, big.volume, str(file), *extra)

    def size() -> int | None:
        try:
            return next((t.stat().st_size for t in temps(file.parent, file.name)), None)
        except FileNotFoundError:
            return None

    started.until("the temporary file grows", growing(size))
    (temp,) = temps(file.parent, file.name)
    return started, temp


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "new-file"])
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_download_interrupted_keeps_the_old_file(
    big: Big, folder: Path, state: Path, sig: signal.Signals, overwrite: bool
) -> None:
    file = folder / "disk.img"
    if overwrite:
        write_random(file, 4 * MiB)
    before = Seen.of(file) if overwrite else None
    started, _temp = _start_download(big, state, file, overwrite)
    interrupted(started.stop(sig), sig)
    if overwrite:
        assert Seen.of(file) == before  # byte-identical, and the same inode
        assert listing(folder) == {"disk.img"}  # no temporary file left
    else:
        assert listing(folder) == set()  # nothing at FILE
    code, doc = journal(state)
    assert code == 0 and doc["incomplete"] == []
    assert [r["outcome"] for r in by_phase(doc, "vol download")["outcome"]] == ["interrupted"]


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "new-file"])
def test_download_killed_leaves_a_temporary_file_the_journal_names(
    big: Big, folder: Path, state: Path, overwrite: bool
) -> None:
    file = folder / "disk.img"
    if overwrite:
        write_random(file, 4 * MiB)
    before = Seen.of(file) if overwrite else None
    started, temp = _start_download(big, state, file, overwrite)
    assert started.stop(signal.SIGKILL).code == -signal.SIGKILL
    if overwrite:
        assert Seen.of(file) == before
    else:
        assert not os.path.lexists(file)
    assert listing(folder) - {"disk.img"} <= {temp.name}  # the temporary file may stay
    code, doc = journal(state)
    assert code == 1
    (intent,) = by_phase(doc, "vol download")["intent"]
    assert doc["incomplete"] == [intent["id"]] and intent["leftovers"] == [f"file {temp}"]
    table = run(state, "journal")
    assert table.code == 1 and "NOT FINISHED" in table.out and str(temp) in table.out


def test_download_refuses_a_symlink_and_the_images_of_volumes_and_disks(
    scratch_pool: PoolSpec,
    libvirt_conn: libvirt.virConnect,
    host: LibvirtHost,
    guests: Guests,
    folder: Path,
    state: Path,
) -> None:
    p = scratch_pool.name
    a = put(libvirt_conn, scratch_pool, "a.raw", lambda f: islands(f, 16 * MiB))
    b = put(libvirt_conn, scratch_pool, "b.raw", lambda f: islands(f, 16 * MiB))
    disk, base, top = folder / "unmanaged.raw", folder / "base.qcow2", folder / "top.qcow2"
    islands(disk, 16 * MiB)  # a domain's disks outside every pool, one with a backing image
    qcow2(base, "16M")
    qcow2(top, "16M", "-b", str(base), "-F", "qcow2")
    guests(file_disk(disk, "raw", "vda"), file_disk(top, "qcow2", "vdb"))
    target, link = folder / "target.img", folder / "link.img"
    write_random(target, MiB)
    link.symlink_to(target)
    seen = {f: Seen.of(f) for f in (a, b, disk, base, top, target)}

    ran = run(state, "vol", "download", p, "a.raw", str(link), "--overwrite", "--yes")
    assert ran.code == 2 and "is a symbolic link" in one_line(ran), ran
    ran = run(state, "vol", "download", p, "a.raw", str(a), "--overwrite", "--yes")
    assert ran.code == 2 and "is the image of a volume or a domain disk" in one_line(ran), ran
    ctx = ops.context(host, PROBES)
    for overwrite in (False, True):
        with pytest.raises(NotFound, match="is a symbolic link"):
            ops.plan_download(ctx, p, "a.raw", str(link), overwrite=overwrite)
        for image in (a, b, disk, base, top):  # its own, another volume's, a domain's disks
            with pytest.raises(OperationError, match="is the image of a volume or a domain"):
                ops.plan_download(ctx, p, "a.raw", str(image), overwrite=overwrite)
    assert os.readlink(link) == str(target)
    assert {f: Seen.of(f) for f in seen} == seen
    assert listing(folder) == {"unmanaged.raw", "base.qcow2", "top.qcow2", "target.img",
                               "link.img"}  # fmt: skip
    assert listing(Path(scratch_pool.path)) == {"a.raw", "b.raw"}


# ---- 2. vol upload: interrupted, no volume is left ------------------------------------------


def _start_upload(big: Big, pool: PoolSpec, state: Path) -> Started:
    started = Started(state, "vol", "upload", pool.name, "up.raw", str(big.file))
    started.until("the new volume grows", growing(blocks(Path(pool.path) / "up.raw")))
    return started


def _source_unchanged(big: Big, before: os.stat_result) -> None:
    now = os.stat(big.file)
    assert (now.st_ino, now.st_size, now.st_mtime_ns, now.st_ctime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns,
    )  # fmt: skip


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_upload_interrupted_leaves_no_volume(
    big: Big,
    scratch_pool: PoolSpec,
    libvirt_conn: libvirt.virConnect,
    state: Path,
    sig: signal.Signals,
) -> None:
    source = os.stat(big.file)
    started = _start_upload(big, scratch_pool, state)
    interrupted(started.stop(sig), sig)
    settle(libvirt_conn, scratch_pool.name)
    assert volumes(libvirt_conn, scratch_pool) == set()
    assert listing(Path(scratch_pool.path)) == set()
    _source_unchanged(big, source)
    code, doc = journal(state)
    assert code == 0 and by_phase(doc, "vol upload")["outcome"][0]["outcome"] == "interrupted"


def test_upload_killed_is_in_the_journal_with_its_proof(
    big: Big, scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, state: Path
) -> None:
    source = os.stat(big.file)
    started = _start_upload(big, scratch_pool, state)
    assert started.stop(signal.SIGKILL).code == -signal.SIGKILL
    settle(libvirt_conn, scratch_pool.name)
    code, doc = journal(state)
    assert code == 1
    records = by_phase(doc, "vol upload")
    (intent,), (made,) = records["intent"], records["made"]
    assert records["outcome"] == [] and doc["incomplete"] == [intent["id"]]
    assert made["id"] == intent["id"]
    assert intent["leftovers"] == [f"volume {scratch_pool.name}/up.raw"]
    vol = libvirt_conn.storagePoolLookupByName(scratch_pool.name).storageVolLookupByName("up.raw")
    st = os.stat(vol.path())
    assert made["made"] == {"volume": f"{scratch_pool.name}/up.raw", "key": vol.key(),
                            "path": vol.path(), "inode": [st.st_dev, st.st_ino]}  # fmt: skip
    _source_unchanged(big, source)
    assert digest(big.file) == big.sha


# ---- 3. vol clone and vol wipe: libvirt finishes the call, the signal then takes effect ---------


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_clone_interrupted_leaves_no_clone_and_the_source_intact(
    clone_source: CloneSource, libvirt_conn: libvirt.virConnect, state: Path, sig: signal.Signals
) -> None:
    pool, name = clone_source.pool, f"copy-{sig.name}.raw"
    before = os.stat(clone_source.path)
    started = Started(state, "vol", "clone", pool.name, clone_source.name, name, "--thin")
    started.until("the clone grows", growing(blocks(Path(pool.path) / name)))
    interrupted(started.stop(sig), sig)
    settle(libvirt_conn, pool.name)
    assert volumes(libvirt_conn, pool) == {clone_source.name}
    assert listing(Path(pool.path)) == {clone_source.name}
    after = os.stat(clone_source.path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert digest(clone_source.path) == clone_source.sha
    code, doc = journal(state)
    assert code == 0
    records = by_phase(doc, "vol clone")
    assert [r["outcome"] for r in records["outcome"]] == ["interrupted"]
    assert records["made"][0]["made"]["volume"] == f"{pool.name}/{name}"  # made, then removed


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_wipe_interrupted_runs_to_its_end_and_keeps_the_volume(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, state: Path, sig: signal.Signals
) -> None:
    def make(path: Path) -> None:  # allocated in full: libvirt writes every block
        subprocess.run(["fallocate", "-l", str(CLONE), str(path)], check=True)
        with open(path, "r+b") as fh:
            fh.write(os.urandom(4 * MiB))

    path = put(libvirt_conn, scratch_pool, "wipe.raw", make)

    def wiping() -> bool:
        with open(path, "rb") as fh:
            return fh.read(4096).count(0) == 4096

    started = Started(state, "vol", "wipe", scratch_pool.name, "wipe.raw", "--yes")
    started.until("the wipe begins", wiping)
    sent = time.time_ns()
    interrupted(started.stop(sig), sig)
    assert volumes(libvirt_conn, scratch_pool) == {"wipe.raw"}
    st = os.stat(path)
    assert st.st_mtime_ns > sent  # libvirt went on writing after the signal: it was midway
    assert st.st_size >= CLONE and all_zero(path)  # and it cannot stop midway: it finished
    code, doc = journal(state)
    assert code == 0 and by_phase(doc, "vol wipe")["outcome"][0]["outcome"] == "interrupted"


# ---- 4. a volume someone else made under our volume's name is never deleted ---------------------


def test_a_volume_made_meanwhile_under_the_same_name_is_never_removed(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, host: LibvirtHost, folder: Path
) -> None:
    source = folder / "source.img"
    write_random(source, 64 * MiB)
    handle = libvirt_conn.storagePoolLookupByName(scratch_pool.name)
    theirs: list[Seen] = []

    def meanwhile(_n: int) -> None:
        """Our new volume vanishes, someone else makes one by that name; then we fail."""
        if not theirs:
            handle.storageVolLookupByName("up.raw").delete(0)
            xml = "<volume><name>up.raw</name><capacity unit='M'>16</capacity></volume>"
            made = handle.createXML(xml, 0)
            with open(made.path(), "r+b") as fh:
                fh.write(os.urandom(MiB))
            theirs.append(Seen.of(Path(made.path())))
        raise OSError(5, "Input/output error")

    ctx = ops.context(host, PROBES)
    plan = ops.plan_upload(ctx, scratch_pool.name, "up.raw", str(source))
    with pytest.raises(OperationError, match="Input/output error"):
        ops.apply(plan, ctx, progress=meanwhile)
    settle(libvirt_conn, scratch_pool.name)
    assert volumes(libvirt_conn, scratch_pool) == {"up.raw"}
    assert Seen.of(Path(scratch_pool.path) / "up.raw") == theirs[0]


def test_remove_deletes_only_the_volume_whose_inode_it_recorded(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, host: LibvirtHost
) -> None:
    path = put(libvirt_conn, scratch_pool, "v.raw", lambda f: islands(f, 16 * MiB))
    before = Seen.of(path)
    vol = libvirt_conn.storagePoolLookupByName(scratch_pool.name).storageVolLookupByName("v.raw")
    ours = host._ours(scratch_pool.name, vol)
    assert ours.inode == (os.stat(path).st_dev, os.stat(path).st_ino)
    assert ours.key == vol.key() and ours.path == vol.path()
    dev, ino = ours.inode
    for other in (replace(ours, inode=(dev, ino + 1)), replace(ours, key=ours.key + "x"),
                  replace(ours, path=ours.path + "x")):  # fmt: skip
        host._remove(other)
        assert volumes(libvirt_conn, scratch_pool) == {"v.raw"} and Seen.of(path) == before
    host._remove(ours)  # the proof matches: ours, deleted
    refresh(libvirt_conn, scratch_pool)
    assert volumes(libvirt_conn, scratch_pool) == set() and not path.exists()


# ---- 5. a domain started between plan and apply ---------------------------------------------


def test_a_domain_started_after_the_plan_stops_delete_wipe_and_shrink(
    scratch_pool: PoolSpec,
    libvirt_conn: libvirt.virConnect,
    host: LibvirtHost,
    guests: Guests,
) -> None:
    p = scratch_pool.name
    path = put(libvirt_conn, scratch_pool, "disk.raw", lambda f: islands(f, 64 * MiB))
    vm = guests(volume_disk(p, "disk.raw", "raw", "vda"))  # defined, shut off: --force may
    ctx = ops.context(host, PROBES)
    plans = [
        ops.plan_delete(ctx, p, "disk.raw", force=True),
        ops.plan_wipe(ctx, p, "disk.raw", force=True),
        ops.plan_resize(ctx, p, "disk.raw", NewSize(32 * MiB), shrink=True, force=True),
    ]
    before = Seen.of(path)
    libvirt_conn.lookupByName(vm).create()
    for plan in plans:
        with pytest.raises(InUse, match=rf"used by running domain\(s\) {vm}"):
            ops.apply(plan, ctx, yes=True)
        assert Seen.of(path) == before, plan.action
    assert volumes(libvirt_conn, scratch_pool) == {"disk.raw"}


# ---- 6. two attaches of one volume at once -------------------------------------------------


def _attach_together(state: Path, volume: str, vms: list[str]) -> list[Ran]:
    """``vol attach VM VOLUME --config`` for each of ``vms`` at once: each process loads
    python and auditor, says so and waits at the CLI's entry point; one line from here then
    starts them all, so that the runs plan at the same time."""
    ready = "import sys; from auditor.cli import main; print('ready', flush=True); "
    ready += "sys.stdin.readline(); main(sys.argv[1:])"
    env = os.environ | {"AUDITOR_STATE": str(state)}
    runs = [
        subprocess.Popen([sys.executable, "-c", ready, "-c", testbed.URI, "vol", "attach", vm,
                          volume, "--config"], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for vm in vms
    ]  # fmt: skip
    for r in runs:
        assert r.stdout is not None and r.stdout.readline() == "ready\n"
    for r in runs:
        assert r.stdin is not None
        r.stdin.write("go\n")
        r.stdin.flush()
    ran = []
    for r in runs:
        out, err = r.communicate(timeout=WAIT)
        ran.append(Ran(r.returncode, out, err))
    return ran


def test_concurrent_attaches_of_one_volume_one_wins(
    scratch_pool: PoolSpec,
    libvirt_conn: libvirt.virConnect,
    guests: Guests,
    folder: Path,
    state: Path,
) -> None:
    p = scratch_pool.name
    vms = [guests(), guests()]
    # A guest with disks outside every pool: a run reads each (qemu-img) after the domains,
    # which leaves time between a run's look at the domains and its attach. Without the
    # host lock, two runs then often both attach; a few rounds make it near certain.
    crowd = [folder / f"other{i}.qcow2" for i in range(CROWD)]
    for path in crowd:
        qcow2(path, "1M")
    guests(*(file_disk(path, "qcow2", f"vd{chr(ord('a') + i)}") for i, path in enumerate(crowd)))
    for k in range(ROUNDS):
        name = f"shared{k}.raw"
        put(libvirt_conn, scratch_pool, name, lambda f: islands(f, 16 * MiB))
        ran = _attach_together(state, f"{p}/{name}", vms)
        assert sorted(r.code for r in ran) == [0, 2], ran
        winner = vms[[r.code for r in ran].index(0)]
        loser = ran[[r.code for r in ran].index(2)]
        last = loser.err.strip().splitlines()[-1]  # may follow "waiting for another ... run"
        assert last.startswith("auditor: error: attach refused") and winner in last, loser.err
        xml = {vm: libvirt_conn.lookupByName(vm).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
               for vm in vms}  # fmt: skip
        assert [vm for vm in vms if f"volume='{name}'" in xml[vm]] == [winner]


def test_one_lock_however_the_uri_is_spelled(scratch_pool: PoolSpec, state: Path) -> None:
    """``qemu+unix:///system?socket=…`` reaches the daemon of ``qemu:///system``: a run by
    that spelling waits for the lock held under the other, then does its work."""
    spelled = "qemu+unix:///system?socket=/var/run/libvirt/libvirt-sock"
    with LibvirtHost.connect(testbed.URI) as a, LibvirtHost.connect(spelled) as b:
        assert a.identity() == b.identity() != a.uri
        with LibvirtHost.connect("test:///default") as t:
            assert t.identity() == "test:///default"
        with host_lock(state, a.identity(), a.uri):
            run = subprocess.Popen(
                [sys.executable, "-m", "auditor", "-c", spelled, "vol", "create",
                 scratch_pool.name, "locked.raw", "1M"],
                env=os.environ | {"AUDITOR_STATE": str(state)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert run.stderr is not None
            assert "waiting for another auditor run on this host" in run.stderr.readline()
            assert run.poll() is None
    _, err = run.communicate(timeout=WAIT)
    assert run.returncode == 0, err
    assert (Path(scratch_pool.path) / "locked.raw").exists()


# ---- 7. shrinking an image others depend on needs --force ------------------------------------


def content(path: Path, tmp: Path) -> str:
    """sha256 of what a guest sees through ``path`` (its backing chain included)."""
    out = tmp / f"{path.name}.content"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(out)], check=True)
    try:
        return digest(out)
    finally:
        out.unlink()


def test_shrink_of_a_backing_image_or_a_defined_domains_disk_needs_force(
    scratch_pool: PoolSpec,
    libvirt_conn: libvirt.virConnect,
    guests: Guests,
    folder: Path,
    state: Path,
) -> None:
    p = scratch_pool.name
    base = put(libvirt_conn, scratch_pool, "base.qcow2", qcow2)
    qemu_io(base, "write -P 0x33 40M 1M")  # beyond the 32 MiB a shrink would keep
    top = put(libvirt_conn, scratch_pool, "top.qcow2",
              lambda f: qcow2(f, "64M", "-b", str(base), "-F", "qcow2"))  # fmt: skip
    seen = content(top, folder)
    ran = run(state, "vol", "resize", p, "base.qcow2", "32M", "--shrink", "--yes")
    assert ran.code == 2
    line = one_line(ran)
    assert f"overlay(s) backed by it: {p}/top.qcow2" in line and "--force" in line, line
    assert content(top, folder) == seen

    disk = put(libvirt_conn, scratch_pool, "disk.raw", lambda f: islands(f, 64 * MiB))
    vm = guests(volume_disk(p, "disk.raw", "raw", "vda"))
    before = Seen.of(disk)
    ran = run(state, "vol", "resize", p, "disk.raw", "32M", "--shrink", "--yes")
    assert ran.code == 2
    assert f"defined domain(s) {vm}" in one_line(ran) and "--force" in one_line(ran)
    assert Seen.of(disk) == before
    ran = run(state, "vol", "resize", p, "disk.raw", "32M", "--shrink", "--yes", "--force")
    assert ran.code == 0, ran
    assert os.stat(disk).st_size == 32 * MiB  # asked for: done


# ---- 8. the journal ---------------------------------------------------------------------------


def test_journal_of_a_create_and_since(
    scratch_pool: PoolSpec, libvirt_conn: libvirt.virConnect, state: Path
) -> None:
    p = scratch_pool.name
    assert run(state, "vol", "create", p, "one.raw", "1M").code == 0
    between = datetime.now(UTC)
    time.sleep(0.01)
    assert run(state, "vol", "create", p, "two.raw", "1M").code == 0
    code, doc = journal(state)
    assert code == 0 and doc["incomplete"] == []
    records = [r for r in doc["records"] if r["subject"] == f"{p}/one.raw"]
    assert [r["phase"] for r in records] == ["intent", "made", "outcome"]
    assert len({r["id"] for r in records}) == 1 and records[2]["outcome"] == "done"
    assert all(r["action"] == "vol create" for r in records)
    vol = libvirt_conn.storagePoolLookupByName(p).storageVolLookupByName("one.raw")
    st = os.stat(vol.path())
    assert records[1]["made"] == {"volume": f"{p}/one.raw", "key": vol.key(), "path": vol.path(),
                                  "inode": [st.st_dev, st.st_ino]}  # fmt: skip

    _, later = journal(state, "--since", between.isoformat())
    assert [(r["subject"], r["phase"]) for r in later["records"]] == [
        (f"{p}/two.raw", phase) for phase in ("intent", "made", "outcome")
    ]
    _, hour = journal(state, "--since", "1h")
    assert len(hour["records"]) == 6
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert journal(state, "--since", future)[1]["records"] == []
