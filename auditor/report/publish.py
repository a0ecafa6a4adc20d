"""The four files of a report, and publishing them so that ``out`` always holds a whole report.

A publish runs these phases; the optional ``step`` hook is called with each name once the
phase is done (tests inject faults there):

``recovered``
    Under an exclusive ``flock`` of the parent folder (publishes into it run one at a time; a
    lock dies with its process, so anything named like ours is then a leftover), leftovers of
    an interrupted publish are dealt with. If ``out`` is missing and a ``.<name>.old-<hex>``
    folder holds a complete report (the four files), the newest is renamed back to ``out``
    without replacing anything. Every other leftover (``.<name>.new-<hex>``, other ``.old-``
    folders) is discarded. A ``.new-`` leftover is never restored: it holds either a report
    that was never published or the old report that ``out`` already replaced.
``checked``
    ``out`` is refused if it is a symbolic link (never followed: pass the real folder), is not
    a folder, or holds files that are not report files.
``wrote <file>``, ``staged``
    The files are written into a fresh ``.<name>.new-<hex>`` beside ``out``, each fsynced,
    then that folder.
``swapped``
    ``renameat2(RENAME_EXCHANGE)`` swaps the staging folder and ``out`` in one step
    (``RENAME_NOREPLACE`` when there is no ``out``), then the parent is fsynced. Up to this
    step ``out`` is the old report, from it on the new one: at no moment is there neither.
``discarded``
    The staging path, which now holds the old report, is discarded.

Discarding a folder removes the four report files, then the folder if it is empty, and never
anything else: a folder that still holds other files (say one dropped into ``out`` after the
check) is left in place and named in :attr:`Published.notes`.

Fallback, where the filesystem cannot exchange (EINVAL/ENOSYS, e.g. NFS, or a libc without
``renameat2``): ``out`` is renamed to ``.<name>.old-<hex>`` and the staging folder to ``out``
with SIGINT, SIGTERM, SIGHUP and the other terminating signals held until both are done
(masked with ``pthread_sigmask`` and, from the main thread, deferred by Python handlers), the
old folder renamed back if the second rename fails. Only SIGKILL or a power cut between the
two renames can then leave no ``out``; the old report is kept in the ``.old-`` folder and the
next publish restores it. Refusing instead would stop reports on such filesystems, which the
old publish served with a far wider window.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.errors import PublishError
from auditor.report import html
from auditor.report.page import Page
from auditor.report.rows import (
    FINDING_COLUMNS,
    POOL_COLUMNS,
    VOLUME_COLUMNS,
    finding_row,
    pool_rows,
    volume_rows,
    with_label_columns,
)
from auditor.report.tables import to_csv

FILES = ("report.html", "pools.csv", "volumes.csv", "findings.csv", "summary.json")
PHASES = ("recovered", "checked", *(f"wrote {f}" for f in FILES), "staged", "swapped", "discarded")
"""The names passed to ``step``, in order; the fallback adds ``moved-aside`` inside ``swapped``."""

Step = Callable[[str], None]
_Ident = tuple[int, int]

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS)
_NO_LOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP)
_HELD = {
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2,
}  # fmt: skip
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    _renameat2.argtypes += [ctypes.c_uint]
    _renameat2.restype = ctypes.c_int


@dataclass(frozen=True)
class Published:
    """Where the report now is, and what the publish restored or had to leave in place."""

    path: Path
    notes: tuple[str, ...] = ()


def render_files(page: Page) -> dict[str, bytes]:
    """``report.html``, ``pools.csv``, ``volumes.csv``, ``findings.csv`` and ``summary.json``
    of a page."""
    s = page.summary
    return {
        "report.html": html.render(page).encode(),
        "pools.csv": to_csv(pool_rows(s), with_label_columns(POOL_COLUMNS, s)).encode(),
        "volumes.csv": to_csv(volume_rows(s), with_label_columns(VOLUME_COLUMNS, s)).encode(),
        "findings.csv": to_csv([finding_row(f) for f in page.findings], FINDING_COLUMNS).encode(),
        "summary.json": (json.dumps(page.document(), indent=2) + "\n").encode(),
    }


def publish(out: Path, files: Mapping[str, bytes], *, step: Step | None = None) -> Published:
    """Make ``out`` hold exactly ``files`` (the four report files), replacing any previous
    report in one atomic step; refuse a symlink, a non-folder or a folder holding anything
    else. ``step`` is called with the name of each phase (see the module's docstring)."""
    _check_names(out, files)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        dfd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise PublishError(
            f"cannot write the report to {out}: {exc.strerror or exc}", "nothing was published"
        ) from exc
    run = _Publish(out, dfd, step or _no_step)
    try:
        return run.run(files)
    except OSError as exc:
        raise PublishError(
            f"cannot write the report to {out}: {exc.strerror or exc}", run.state()
        ) from exc
    finally:
        run.close()


def _no_step(phase: str) -> None:
    """The default hook: nothing."""


def _check_names(out: Path, files: Mapping[str, bytes]) -> None:
    """Refuse a path naming no folder, and anything but the four report files (discarding
    removes only those)."""
    if out.name in ("", ".", ".."):
        raise PublishError(f"{out} names no folder to publish into", "pass the report folder")
    unexpected = sorted(set(files) - set(FILES))
    missing = [f for f in FILES if f not in files]
    if unexpected or missing:
        odd = ", ".join([*(f"unexpected {f}" for f in unexpected), *(f"no {f}" for f in missing)])
        raise PublishError(
            f"cannot write the report to {out}: a report is {', '.join(FILES)} ({odd})",
            "nothing was changed",
        )


class _Publish:
    """One publish into an open parent folder ``dfd``; names below are relative to it."""

    def __init__(self, out: Path, dfd: int, step: Step) -> None:
        self.out, self.dfd, self.step = out, dfd, step
        token = secrets.token_hex(4)
        self.stage = f".{out.name}.new-{token}"
        self.old = f".{out.name}.old-{token}"
        self.started = False
        self.before: _Ident | None = None
        self.staged: _Ident | None = None
        self.notes: list[str] = []

    def run(self, files: Mapping[str, bytes]) -> Published:
        """The phases in order; see the module's docstring."""
        _lock(self.dfd)
        self.before, self.started = _ident(self.dfd, self.out.name), True
        self._recover()
        self.step("recovered")
        self._check()
        self.step("checked")
        self._write(files)
        self.step("staged")
        gone = self._swap()
        os.fsync(self.dfd)
        self.step("swapped")
        self._discard(gone)
        self.step("discarded")
        return Published(self.out, tuple(self.notes))

    def close(self) -> None:
        """Discard what this run leaves (right in any state: the staging path holds either the
        unpublished or the replaced report; ``old`` only while ``out`` is there), unlock."""
        try:
            self._discard(self.stage)
            with contextlib.suppress(OSError):
                if _ident(self.dfd, self.out.name) is not None:
                    self._discard(self.old)
        finally:
            os.close(self.dfd)

    def _leftovers(self) -> dict[str, str]:
        """Folders named like an interrupted publish into ``out``: name -> ``new``/``old``."""
        pattern = re.compile(rf"\.{re.escape(self.out.name)}\.(new|old)-[0-9a-f]{{8}}")
        found = {}
        with os.scandir(self.dfd) as entries:
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if match and entry.is_dir(follow_symlinks=False):
                    found[entry.name] = match.group(1)
        return found

    def _restorable(self) -> list[str]:
        """``.old-`` leftovers holding a complete report, newest first."""
        olds = [n for n, kind in self._leftovers().items() if kind == "old"]
        complete = [n for n in olds if _complete(self.dfd, n)]
        return sorted(complete, key=lambda n: _mtime(self.dfd, n), reverse=True)

    def _recover(self) -> None:
        """Restore the previous report if an interrupted publish left ``out`` missing; discard
        every other leftover."""
        if self.before is None and (restorable := self._restorable()):
            _move(self.dfd, restorable[0], self.out.name)
            os.fsync(self.dfd)
            self.before = _ident(self.dfd, self.out.name)
            self.notes.append(
                f"restored the previous report from {self.out.parent / restorable[0]}, "
                "left there by an interrupted publish"
            )
        for name in self._leftovers():
            self._discard(name)

    def _check(self) -> None:
        """Refuse a symlinked ``out``, one that is not a folder, or one holding other files."""
        try:
            mode = os.lstat(self.out.name, dir_fd=self.dfd).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            target = os.readlink(self.out.name, dir_fd=self.dfd)
            raise PublishError(
                f"{self.out} is a symbolic link to {target}; it is not followed",
                f"pass the real folder: --out {self.out.resolve()}",
            )
        if not stat.S_ISDIR(mode):
            raise PublishError(f"{self.out} exists and is not a folder")
        foreign = sorted(p.name for p in self.out.iterdir() if p.name not in FILES)
        if foreign:
            raise PublishError(
                f"{self.out} holds files that are not a report ({', '.join(foreign[:3])}); "
                "pick an empty folder for --out"
            )

    def _write(self, files: Mapping[str, bytes]) -> None:
        """Write the files into a fresh staging folder, each fsynced, then the folder."""
        os.mkdir(self.stage, dir_fd=self.dfd)
        self.staged = _ident(self.dfd, self.stage)
        fd = os.open(self.stage, _DIR, dir_fd=self.dfd)
        try:
            for name in FILES:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                with open(os.open(name, flags, 0o666, dir_fd=fd), "wb") as f:
                    f.write(files[name])
                    f.flush()
                    os.fsync(f.fileno())
                self.step(f"wrote {name}")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _swap(self) -> str:
        """Put the staging folder at ``out``; returns the name of the folder to discard now."""
        if _ident(self.dfd, self.out.name) is None:
            _move(self.dfd, self.stage, self.out.name)
            return self.stage  # gone: discarding it does nothing
        try:
            _rename(self.dfd, self.stage, self.out.name, _RENAME_EXCHANGE)
            return self.stage
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
        swap_in_two_steps(self.dfd, self.stage, self.out.name, self.old, self.step)
        return self.old

    def _discard(self, name: str) -> None:
        """Discard folder ``name`` (see :func:`discard`), noting it if it is kept."""
        if (why := discard(self.dfd, name)) is not None:
            self.notes.append(f"kept {self.out.parent / name}: {why}")

    def state(self) -> str:
        """Where the reports are now, found on the filesystem (for a failure's message)."""
        if not self.started:
            return "nothing was changed"
        try:
            now = _ident(self.dfd, self.out.name)
            kept = self._restorable() if now is None else []
        except OSError as exc:
            return f"what {self.out} holds now is unknown: {exc.strerror}"
        if now is not None and now == self.staged:
            return f"the new report is in place at {self.out}"
        if now is not None and now == self.before:
            return "the previous report is unchanged"
        if kept:
            where = self.out.parent / kept[0]
            return (
                f"no report is at {self.out}: the previous one is kept in {where}, and the "
                "next publish restores it"
            )
        if now is None:
            return "no report was there before, none was published"
        return f"{self.out} was replaced by something else during the publish"


def swap_in_two_steps(dfd: int, stage: str, out: str, old: str, step: Step = _no_step) -> None:
    """The fallback where folders cannot be exchanged: ``out`` -> ``old``, then ``stage`` ->
    ``out``, with terminating signals held in between; ``old`` goes back if the second fails.
    Names are relative to the folder ``dfd``; ``step`` is called with ``moved-aside``."""
    with _signals_held():
        os.rename(out, old, src_dir_fd=dfd, dst_dir_fd=dfd)
        try:
            step("moved-aside")
            os.rename(stage, out, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            os.rename(old, out, src_dir_fd=dfd, dst_dir_fd=dfd)
            raise
        os.fsync(dfd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold the terminating signals, then deliver them as they would have been.

    They are masked in this thread; in the main thread (the only one where Python runs
    handlers) they are also recorded instead of acted on, since a process-directed signal
    can land on any other thread (pandas starts some) that does not mask it."""
    caught: list[int] = []
    saved: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _HELD:
            saved[sig] = signal.signal(sig, lambda s, _frame: caught.append(s))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for number in caught:
            signal.raise_signal(number)


def discard(dfd: int, name: str) -> str | None:
    """Remove the four report files from folder ``name`` (relative to ``dfd``), then the folder
    if it is empty; never anything else. Returns why it was kept, None if it is gone."""
    try:
        fd = os.open(name, _DIR, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot open it ({exc.strerror})"
    try:
        for file in FILES:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(file, dir_fd=fd)
        os.rmdir(name, dir_fd=dfd)
        return None
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            return f"cannot remove it ({exc.strerror})"
        with contextlib.suppress(OSError):
            others = sorted(os.listdir(fd))
            return f"it holds files that are not a report ({', '.join(others[:3])})"
        return "it holds files that are not a report"
    finally:
        os.close(fd)


def _rename(dfd: int, src: str, dst: str, flags: int) -> None:
    """``renameat2`` within the folder ``dfd``; OSError(ENOSYS) where libc has none."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), src)
    if _renameat2(dfd, os.fsencode(src), dfd, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), src, None, dst)


def _move(dfd: int, src: str, dst: str) -> None:
    """Rename ``src`` to a ``dst`` that does not exist, never replacing one that appeared."""
    try:
        _rename(dfd, src, dst, _RENAME_NOREPLACE)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        os.rename(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd)  # under the lock: no other publish


def _lock(dfd: int) -> None:
    """Wait for an exclusive lock of the parent folder (none where the filesystem has none)."""
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno not in _NO_LOCK:
            raise


def _ident(dfd: int, name: str) -> _Ident | None:
    """Device and inode of ``name`` (not followed), None if it does not exist."""
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _complete(dfd: int, name: str) -> bool:
    """Whether folder ``name`` holds the four report files as regular files."""
    try:
        return all(stat.S_ISREG(os.lstat(f"{name}/{f}", dir_fd=dfd).st_mode) for f in FILES)
    except OSError:
        return False


def _mtime(dfd: int, name: str) -> float:
    """When the report in folder ``name`` was written (its ``summary.json``)."""
    return os.lstat(f"{name}/summary.json", dir_fd=dfd).st_mtime
