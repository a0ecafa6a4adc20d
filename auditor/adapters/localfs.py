"""Local filesystem facts (stat, statvfs, mount points) for pools and disks on this host."""

from __future__ import annotations

import os
import stat

from auditor.errors import NotFound
from auditor.models import FsInfo


def mount_point(path: str) -> str:
    """The mount point of the filesystem holding ``path``."""
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def filesystem(path: str) -> FsInfo | None:
    """Figures of the filesystem holding ``path``; None if it cannot be examined."""
    try:
        st = os.stat(path)
        vfs = os.statvfs(path)
        mount = mount_point(path)
    except OSError:
        return None
    return FsInfo(
        device=st.st_dev,
        mount_point=mount,
        capacity=vfs.f_blocks * vfs.f_frsize,
        free=vfs.f_bfree * vfs.f_frsize,
        usable=vfs.f_bavail * vfs.f_frsize,
    )


def realpath(path: str) -> str:
    return os.path.realpath(path)


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def list_files(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Regular files and block devices under ``paths`` (folders recursively); unreadable ones."""
    found: list[str] = []
    errors: list[tuple[str, str]] = []

    def onerror(exc: OSError) -> None:
        errors.append((str(exc.filename), exc.strerror or str(exc)))

    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            errors.append((path, exc.strerror or str(exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            for root, dirs, files in os.walk(path, onerror=onerror):
                dirs.sort()
                for name in sorted(files):
                    full = os.path.join(root, name)
                    if os.path.isfile(full) and not os.path.islink(full):
                        found.append(full)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode):
            found.append(os.path.abspath(path))
        else:
            errors.append((path, "not a regular file, block device or folder"))
    return found, errors


def regular_file(path: str, *, follow: bool = True) -> tuple[int, int] | None:
    """(size, disk size) of a regular file; None when nothing is at ``path``. NotFound for
    anything else at ``path`` (a folder, a device; a symbolic link unless ``follow``)."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NotFound(f"{path}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise NotFound(f"{path} is a symbolic link", "give the path of the file itself")
    if not stat.S_ISREG(st.st_mode):
        raise NotFound(f"{path} is not a regular file")
    return st.st_size, st.st_blocks * 512
