"""Proof that a file is still the one libvirt described: what lets a kept description stand.

A regular file of a dir or fs pool on this machine needs no XMLDesc when it has not changed
since before this run's pool refresh began and libvirt described the very same file before:
same device, inode and size, and either the same ctime and mtime (not written since: nothing
is read) or the same bytes where libvirt probes a format (the first 0x8200); the same for its
backing file. Format, virtual size and backing come from that description; disk size and
physical size from stat, which is where libvirt takes them (st_blocks x 512, st_size) -
checked for each file described.

An entry: [key, stamp, backing key, backing stamp, kind, format, capacity, backing, backing
format]; key = [device, inode, size, bytes probed, their SHA-256], stamp = [ctime, mtime] (ns).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Any

from auditor.models import Disk

PROBED = 0x8200  # bytes libvirt reads to probe a file (VIR_STORAGE_MAX_HEADER)
SETTLED_NS = 2_000_000_000  # changed this shortly before the refresh: ask libvirt
_ZEROS = bytes(4096)

Fingerprint = tuple[list[Any], os.stat_result]  # (key, stat)


@dataclass(frozen=True)
class Reused:
    """What a kept entry says of a file still the same, with this run's stat of it."""

    kind: str
    format: str | None
    capacity: int | None
    backing: str | None
    backing_format: str | None
    stat: os.stat_result


class Files:
    """One run's look at the files: each stat and key read once, against the time the run's
    pool refresh began (``time.time_ns()``)."""

    def __init__(self, refreshed_at: int) -> None:
        self.refreshed_at = refreshed_at
        self._seen: dict[tuple[str, str], Any] = {}

    def fingerprint(self, path: str) -> Fingerprint | None:
        """(key, stat) of a regular file unchanged since ``SETTLED_NS`` before the refresh,
        reading the bytes libvirt probes; None for anything else."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_ctime_ns >= self.refreshed_at - SETTLED_NS:
                return None
            head = b""
            while len(head) < PROBED and (more := os.read(fd, PROBED - len(head))):
                head += more
        except OSError:
            return None
        finally:
            os.close(fd)
        end = len(head)  # trailing zeros (most of a header) are not hashed, only counted
        while end and head[max(0, end - 4096) : end] == _ZEROS[: min(4096, end)]:
            end = max(0, end - 4096)
        digest = hashlib.sha256(head[:end]).hexdigest()
        return [st.st_dev, st.st_ino, st.st_size, len(head), digest], st

    def _settled(self, path: str) -> os.stat_result | None:
        """The lstat of a regular file settled before the refresh (else None), once a run."""
        if ("stat", path) not in self._seen:
            try:
                st: os.stat_result | None = os.lstat(path)
            except OSError:
                st = None
            if st is not None and (
                not stat.S_ISREG(st.st_mode) or st.st_ctime_ns >= self.refreshed_at - SETTLED_NS
            ):
                st = None
            self._seen["stat", path] = st
        found: os.stat_result | None = self._seen["stat", path]
        return found

    def _still(
        self, path: str, key: list[Any], stamp: list[int]
    ) -> tuple[list[int], os.stat_result] | None:
        """(stamp, stat) if ``path`` is still the file of ``key``: settled, same device, inode
        and size, and the same stamp or (read once a run) the same probed bytes."""
        st = self._settled(path)
        if st is None or [st.st_dev, st.st_ino, st.st_size] != key[:3]:
            return None
        now = [st.st_ctime_ns, st.st_mtime_ns]
        if now != stamp:
            if ("key", path) not in self._seen:
                found = self.fingerprint(path)
                self._seen["key", path] = found[0] if found else None
            if self._seen["key", path] != key:
                return None
        return now, st

    def reused(self, path: str, entry: list[Any]) -> tuple[Reused, list[Any]] | None:
        """What the kept ``entry`` of ``path`` says, and the entry to keep, while the file
        (and its backing file) are still those it describes; None: ask libvirt."""
        try:
            key, stamp, base_key, base_stamp, kind, fmt, capacity, backing, backing_fmt = entry
            now = self._still(path, key, stamp)
            base = self._still(backing, base_key, base_stamp) if backing else ()
        except (TypeError, ValueError, IndexError):  # a damaged entry: ask libvirt
            return None
        if now is None or base is None:
            return None
        keep = [key, now[0], base_key, base[0] if base else None, *entry[4:]]
        return Reused(kind, fmt, capacity, backing, backing_fmt, now[1]), keep

    def described(self, disk: Disk | None, before: Fingerprint | None) -> list[Any] | None:
        """The entry to keep for ``disk`` as libvirt just described it: only for a file that
        did not change meanwhile, whose sizes are its stat's, with a settled backing file."""
        if disk is None or before is None or disk.kind != "file":
            return None
        key, st = before
        try:
            after = os.lstat(disk.path)
        except OSError:
            return None
        stamp = [st.st_ctime_ns, st.st_mtime_ns]
        if [after.st_ino, after.st_size, after.st_ctime_ns, after.st_mtime_ns] != [
            st.st_ino, st.st_size, *stamp
        ]:  # fmt: skip
            return None
        if (disk.disk_size, disk.physical) != (st.st_blocks * 512, st.st_size):
            return None
        base: list[Any] = [None, None]
        if disk.backing_file is not None:
            found = self.fingerprint(disk.backing_file)
            if found is None:
                return None
            base = [found[0], [found[1].st_ctime_ns, found[1].st_mtime_ns]]
        return [key, stamp, *base, disk.kind, disk.format, disk.virtual_size, disk.backing_file,
                disk.backing_format]  # fmt: skip
