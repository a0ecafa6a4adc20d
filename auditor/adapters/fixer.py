"""Fixes made on this machine with qemu-img, util-linux ``fallocate`` and rename(2).

Like the libvirt adapter, one builder per step serves both the plan (``steps``) and the run
(``execute``). Data-moving fixes never lose the original: raw files are changed in place only
in ways that keep every byte the guest sees (allocating blocks, punching holes where the data
is zero); a qcow2 is converted to a copy beside it, verified with ``qemu-img compare``, given
the original's owner, group and mode, and renamed over it. Any failure, full disk or signal
removes the copy and leaves the original as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import stat
from collections.abc import Callable
from typing import Any

from auditor.adapters import qemu_img, signals
from auditor.adapters.run import run
from auditor.errors import CommandError, ImageError, OperationError
from auditor.models import FixKind, ImageFix

Made = Callable[[dict[str, Any]], None]
TIMEOUT = qemu_img.LONG_TIMEOUT
BLOCK = 4096  # the granularity of holes dug in a raw file
CHUNK = 1 << 20
FALLOC_PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_LIBC = ctypes.CDLL(None, use_errno=True)


def _prealloc(fix: ImageFix) -> qemu_img.Preallocation | None:
    """falloc for a preallocated copy; the default (sparse: zero clusters skipped) else."""
    return "falloc" if fix.kind is FixKind.PREALLOCATE else None


def _sparse(fix: ImageFix) -> bool:
    """Sparsify skips zero runs; preallocate writes every byte (zeros too: all allocated)."""
    return fix.kind is FixKind.SPARSIFY


def _argv(fix: ImageFix) -> list[list[str]]:
    """The commands of ``fix``, in order."""
    match fix.kind, fix.format:
        case FixKind.REPAIR_LEAKS, _:
            return [qemu_img.check_argv(fix.path, fix.format, "leaks")]
        case FixKind.PREALLOCATE, "raw":
            return [["fallocate", "--offset", "0", "--length", str(fix.size), fix.path]]
        case ((FixKind.PREALLOCATE | FixKind.SPARSIFY), "qcow2"):
            convert = qemu_img.convert_argv(fix.path, "qcow2", fix.copy, "qcow2",
                                            preallocation=_prealloc(fix))  # fmt: skip
            return [convert, qemu_img.compare_argv(fix.path, "qcow2", fix.copy, "qcow2")]
    return []


def steps(fix: ImageFix) -> tuple[str, ...]:
    """What ``execute`` will do, in words (commands exactly as they run)."""
    words = [shlex.join(a) for a in _argv(fix)]
    if fix.copy:
        words.insert(0, f"open({fix.copy}, O_CREAT|O_EXCL|O_NOFOLLOW, 0600)")
        words.append(f"chown/chmod {fix.copy} as {fix.path}; rename({fix.copy}, {fix.path})")
    if fix.kind is FixKind.REMOVE_LEFTOVER:
        words.append(f"unlink({fix.path}) if it is still inode {fix.inode}")
    if (fix.kind, fix.format) == (FixKind.SPARSIFY, "raw"):
        words.append(
            f"fallocate(PUNCH_HOLE|KEEP_SIZE) over every run of zero {BLOCK}-byte blocks of "
            f"{fix.path} (each block read and compared; nothing else written)"
        )
    return tuple(words)


def execute(fix: ImageFix, made: Made | None = None) -> None:
    """Carry out ``fix`` (see ``steps``)."""
    if fix.kind is FixKind.REMOVE_LEFTOVER:
        _remove_leftover(fix)
    elif fix.kind is FixKind.REPAIR_LEAKS:
        result = qemu_img.check(fix.path, fix.format, repair="leaks")
        if result.leaks:
            raise ImageError(f"{fix.path}: {result.leaks} leaked cluster(s) remain after repair")
    elif fix.copy:
        _convert_and_swap(fix, made or (lambda _what: None))
    elif (fix.kind, fix.format) == (FixKind.SPARSIFY, "raw"):
        dig_holes(fix.path)
    else:
        for argv in _argv(fix):
            _checked(argv, fix.path)


def _checked(argv: list[str], what: str) -> None:
    result = run(argv, timeout=TIMEOUT, limits=qemu_img.long_limits(TIMEOUT))
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        raise CommandError(f"{what}: {argv[0]} failed: {lines[-1] if lines else 'no output'}")


def _convert_and_swap(fix: ImageFix, made: Made) -> None:
    """Make the copy (a new file, on record before it fills), convert into it, verify it,
    give it the original's owner and mode, rename it over the original. The copy is removed
    on any failure or signal; after a SIGKILL the journal's record proves it is ours."""
    original = os.stat(fix.path)
    with signals.deferred():
        fd = os.open(fix.copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            st = os.fstat(fd)
            made({"file": fix.copy, "inode": [st.st_dev, st.st_ino]})
        finally:
            os.close(fd)
    try:
        qemu_img.create(fix.copy, "qcow2", fix.size, preallocation=_prealloc(fix))
        qemu_img.convert_into(fix.path, "qcow2", fix.copy, "qcow2", sparse=_sparse(fix))
        if not qemu_img.compare(fix.path, "qcow2", fix.copy, "qcow2"):
            raise OperationError(f"{fix.copy} differs from {fix.path}: not swapped")
        os.chown(fix.copy, original.st_uid, original.st_gid)
        os.chmod(fix.copy, stat.S_IMODE(original.st_mode))
        _fsync(fix.copy)
        with signals.deferred():
            os.rename(fix.copy, fix.path)
            _fsync(os.path.dirname(fix.path))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fix.copy)
        raise


def _punch(fd: int, offset: int, length: int) -> None:
    if _LIBC.fallocate(fd, FALLOC_PUNCH, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def dig_holes(path: str) -> int:
    """Punch a hole over every run of zero blocks (holes read as zeros: the content stays);
    return the bytes punched. Every block is read: ext4 reports unwritten (fallocated)
    extents as holes to SEEK_DATA, which ``fallocate --dig-holes`` relies on."""
    zero = bytes(CHUNK)
    punched = 0
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        offset = 0
        while chunk := os.pread(fd, CHUNK, offset):
            runs = (
                [(offset, len(chunk))] if chunk == zero[: len(chunk)] else _zero_runs(chunk, offset)
            )
            for start, length in runs:
                _punch(fd, start, length)
                punched += length
            offset += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return punched


def _zero_runs(chunk: bytes, base: int) -> list[tuple[int, int]]:
    """(offset, length) of the runs of whole zero blocks in ``chunk``."""
    view, zero, runs = memoryview(chunk), bytes(BLOCK), []
    start = None
    for i in range(0, len(chunk) - BLOCK + 1, BLOCK):
        if view[i : i + BLOCK] == zero:
            start = i if start is None else start
        elif start is not None:
            runs.append((base + start, i - start))
            start = None
    if start is not None:
        runs.append((base + start, (len(chunk) // BLOCK) * BLOCK - start))
    return runs


def _remove_leftover(fix: ImageFix) -> None:
    try:
        st = os.lstat(fix.path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != fix.inode:
        raise OperationError(
            f"{fix.path} is no longer the file auditor made (its inode changed): left alone"
        )
    os.unlink(fix.path)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def need(fix: ImageFix) -> int:
    """Bytes of free space ``fix`` needs while it runs."""
    if fix.kind is FixKind.PREALLOCATE and fix.format == "raw":
        return max(0, fix.size - os.stat(fix.path).st_blocks * 512)
    if fix.copy:
        return qemu_img.measure(fix.path, "qcow2", "qcow2", preallocation=_prealloc(fix)).required
    return 0
