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


def _prealloc(fix: ImageFix) -> qemu_img.Preallocation | None:
    """falloc for a preallocated copy; the default (sparse: zero clusters skipped) else."""
    return "falloc" if fix.kind is FixKind.PREALLOCATE else None


def _argv(fix: ImageFix) -> list[list[str]]:
    """The commands of ``fix``, in order."""
    match fix.kind, fix.format:
        case FixKind.REPAIR_LEAKS, _:
            return [qemu_img.check_argv(fix.path, fix.format, "leaks")]
        case FixKind.PREALLOCATE, "raw":
            return [["fallocate", "--offset", "0", "--length", str(fix.size), fix.path]]
        case FixKind.SPARSIFY, "raw":
            return [["fallocate", "--dig-holes", fix.path]]
        case ((FixKind.PREALLOCATE | FixKind.SPARSIFY), "qcow2"):
            convert = qemu_img.convert_argv(fix.path, "qcow2", fix.copy, "qcow2",
                                            preallocation=_prealloc(fix))  # fmt: skip
            return [convert, qemu_img.compare_argv(fix.path, "qcow2", fix.copy, "qcow2")]
    return []


def steps(fix: ImageFix) -> tuple[str, ...]:
    """What ``execute`` will do, in words (commands exactly as they run)."""
    words = [shlex.join(a) for a in _argv(fix)]
    if fix.copy:
        words.append(f"chown/chmod {fix.copy} as {fix.path}; rename({fix.copy}, {fix.path})")
    if fix.kind is FixKind.REMOVE_LEFTOVER:
        words.append(f"unlink({fix.path}) if it is still inode {fix.inode}")
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
    else:
        for argv in _argv(fix):
            _checked(argv, fix.path)


def _checked(argv: list[str], what: str) -> None:
    result = run(argv, timeout=TIMEOUT, limits=qemu_img.long_limits(TIMEOUT))
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        raise CommandError(f"{what}: {argv[0]} failed: {lines[-1] if lines else 'no output'}")


def _convert_and_swap(fix: ImageFix, made: Made) -> None:
    """Convert to the copy, verify it, give it the original's owner and mode, rename it over
    the original. The copy is removed on any failure or signal."""
    original = os.stat(fix.path)
    try:
        qemu_img.convert(fix.path, "qcow2", fix.copy, "qcow2", preallocation=_prealloc(fix))
        copy = os.stat(fix.copy)
        made({"file": fix.copy, "inode": [copy.st_dev, copy.st_ino]})
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
