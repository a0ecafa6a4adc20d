"""qemu-img wrappers: argv in, frozen dataclasses out. ``-f`` whenever the format is known.

qemu-img runs with memory and CPU caps, like OpenStack does for untrusted images: a crafted
header must not make it eat the host. ``info`` never opens backing files, so probing the format
of an unknown file cannot make qemu-img read another file through a forged backing reference;
``check``, ``compare``, ``measure`` and ``convert`` do open the backing chain (a missing backing
file is an ImageError), so run ``info`` on an image before anything else.

Pure reads (info, check without repair, compare, measure) pass ``-U``: they work on an image a
running guest holds, with results that may be inconsistent. Writes (``check -r``, ``convert``)
never do: they take qemu's locks, so an image in use is refused instead of torn. ``convert``
takes the lock on its source too, so a copy is never made of a disk a guest is writing.
Every path is made absolute, so a name can never be read as an option or a protocol prefix.
"""

from __future__ import annotations

import json
import math
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from auditor.adapters.run import Limits, Result, run
from auditor.adapters.threads import in_threads
from auditor.errors import AuditorError, CommandError, ImageError
from auditor.models import CheckResult, ImageInfo, Measure, Repair

T = TypeVar("T")
Preallocation = Literal["off", "metadata", "falloc", "full"]
Compat = Literal["0.10", "1.1"]

LIMITS = Limits(address_space=1 << 30, cpu_seconds=30)
TIMEOUT = 60.0
LONG_TIMEOUT = 6 * 3600.0  # convert, check -r, compare: a multi-terabyte copy still fits
CHECKED = frozenset({0, 1, 2, 3})  # check: clean, not completed, corruptions, leaks (results)
NO_CHECK = 63  # check: the format has no consistency check (raw, ...)


def long_limits(timeout: float) -> Limits:
    """Caps for long jobs: the read caps' memory, and CPU time up to the wall-clock budget."""
    return Limits(LIMITS.address_space, max(LIMITS.cpu_seconds, math.ceil(timeout)))


def _reason(result: Result) -> str:
    """One line saying why qemu-img failed: its last own message, or the signal that killed it."""
    if result.returncode < 0:
        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = f"signal {-result.returncode}"
        cap = " (CPU cap reached)" if name == "SIGXCPU" else ""
        return f"qemu-img was killed by {name}{cap}"
    lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
    own = [ln for ln in lines if ln.startswith("qemu-img: ")]
    return (own[-1] if own else lines[0] if lines else "no output").removeprefix("qemu-img: ")


def _run(argv: list[str], image: str, *, timeout: float, limits: Limits) -> Result:
    """``run`` whose errors (timeout, missing binary) name the image."""
    try:
        return run(argv, timeout=timeout, limits=limits)
    except CommandError as exc:
        raise CommandError(f"{image}: {exc.message}", exc.hint) from exc


def _unexpected(image: str, exc: Exception) -> ImageError:
    return ImageError(f"{image}: unexpected qemu-img output ({exc})")


def _parse_info(data: dict[str, Any], path: str) -> ImageInfo:
    specific = data.get("format-specific", {}).get("data", {})
    return ImageInfo(
        filename=path,
        format=str(data["format"]),
        virtual_size=int(data["virtual-size"]),
        actual_size=int(data["actual-size"]) if "actual-size" in data else None,
        cluster_size=int(data["cluster-size"]) if "cluster-size" in data else None,
        backing_file=data.get("full-backing-filename") or data.get("backing-filename"),
        backing_format=data.get("backing-filename-format"),
        dirty=bool(data.get("dirty-flag", False)),
        corrupt=bool(specific.get("corrupt", False)),
        encrypted=bool(data.get("encrypted", False)),
        snapshots=len(data.get("snapshots", [])),
    )


def info_argv(path: str, fmt: str | None = None) -> list[str]:
    """argv of ``info``: a read, so ``-U``; ``-f`` when the format is known."""
    argv = ["qemu-img", "info", "--output=json", "-U"]
    if fmt:
        argv += ["-f", fmt]
    return [*argv, os.path.abspath(path)]


def info(path: str, fmt: str | None = None) -> ImageInfo:
    """``qemu-img info`` of one image; raise ImageError naming the image when it cannot be read."""
    argv = info_argv(path, fmt)
    path = argv[-1]
    result = _run(argv, path, timeout=TIMEOUT, limits=LIMITS)
    if result.returncode != 0:
        raise ImageError(f"{path}: qemu-img cannot read it: {_reason(result)}")
    try:
        return _parse_info(json.loads(result.stdout), path)
    except (ValueError, KeyError, TypeError) as exc:
        raise _unexpected(path, exc) from exc


def _many(
    fn: Callable[[str, Any], T], pairs: list[tuple[str, Any]], workers: int | None
) -> Iterator[tuple[str, T | AuditorError]]:
    """``fn`` over (path, format) pairs in parallel; errors come back as values, in order."""
    if not pairs:
        return
    workers = workers or min(16, 2 * (os.cpu_count() or 1), len(pairs))

    def one(pair: tuple[str, Any]) -> tuple[str, T | AuditorError]:
        try:
            return pair[0], fn(*pair)
        except AuditorError as exc:
            return pair[0], exc

    yield from in_threads(one, pairs, workers)


def info_many(
    items: Iterable[tuple[str, str | None]], workers: int | None = None
) -> Iterator[tuple[str, ImageInfo | AuditorError]]:
    """``info`` over many (path, format) pairs in parallel; errors come back as values, in order."""
    return _many(info, list(items), workers)


def check_many(
    items: Iterable[tuple[str, str]], workers: int | None = None
) -> Iterator[tuple[str, CheckResult | AuditorError]]:
    """``check`` (no repair) over many (path, format) pairs in parallel, errors as values."""
    return _many(check, list(items), workers)


def _parse_check(data: dict[str, Any], path: str) -> CheckResult:
    def count(key: str) -> int:
        return int(data.get(key, 0))

    end = data.get("image-end-offset")
    return CheckResult(
        filename=path,
        format=str(data["format"]),
        corruptions=count("corruptions"),
        leaks=count("leaks"),
        check_errors=count("check-errors"),
        corruptions_fixed=count("corruptions-fixed"),
        leaks_fixed=count("leaks-fixed"),
        image_end_offset=int(end) if end is not None else None,
        total_clusters=count("total-clusters"),
        allocated_clusters=count("allocated-clusters"),
        fragmented_clusters=count("fragmented-clusters"),
        compressed_clusters=count("compressed-clusters"),
    )


def check_argv(path: str, fmt: str, repair: Repair | None = None) -> list[str]:
    """argv of ``check``: ``-U`` for a plain check, ``-r MODE`` (a write, no ``-U``) to repair."""
    argv = ["qemu-img", "check", "--output=json", "-f", fmt]
    argv += ["-r", repair] if repair else ["-U"]
    return [*argv, os.path.abspath(path)]


def check(
    path: str, fmt: str, *, repair: Repair | None = None, timeout: float | None = None
) -> CheckResult:
    """``qemu-img check``: leaks, corruptions and errors are results; failing to check raises.

    A plain check is a read with the read caps (``timeout`` defaults to TIMEOUT). ``repair``
    writes the image, takes its lock (an image in use is refused) and gets the long caps
    (``timeout`` defaults to LONG_TIMEOUT). ``repair="leaks"`` fails on an image that also has
    corruptions; those need ``repair="all"``. Formats without a check (raw) raise ImageError.
    """
    argv = check_argv(path, fmt, repair)
    path = argv[-1]
    wait = timeout or (LONG_TIMEOUT if repair else TIMEOUT)
    result = _run(argv, path, timeout=wait, limits=long_limits(wait) if repair else LIMITS)
    if result.returncode == NO_CHECK:
        raise ImageError(f"{path}: qemu-img has no consistency check for {fmt} images")
    try:
        data = json.loads(result.stdout) if result.returncode in CHECKED else None
    except ValueError:
        data = None  # exit 1 without JSON: the image could not even be opened
    if not isinstance(data, dict):
        hint = "corruptions need repair='all'" if "rebuild refcount" in result.stderr else ""
        raise ImageError(f"{path}: qemu-img check failed: {_reason(result)}", hint)
    try:
        return _parse_check(data, path)
    except (ValueError, KeyError, TypeError) as exc:
        raise _unexpected(path, exc) from exc


def compare_argv(a: str, a_fmt: str, b: str, b_fmt: str, strict: bool = False) -> list[str]:
    """argv of ``compare``: a read, so ``-U``; ``-f``/``-F`` give both formats."""
    argv = ["qemu-img", "compare", "-U", "-f", a_fmt, "-F", b_fmt, *(["-s"] if strict else [])]
    return [*argv, os.path.abspath(a), os.path.abspath(b)]


def compare(
    a: str, a_fmt: str, b: str, b_fmt: str, *, strict: bool = False, timeout: float = LONG_TIMEOUT
) -> bool:
    """True when both images show the guest the same bytes (a longer one must end in zeros).

    ``strict`` (``-s``) also fails on a size difference and on a different allocation status
    of the same bytes, so a raw file and a qcow2 copy of it are not strictly identical.
    Compare reads every byte of both images, so it gets the long caps, as convert does.
    """
    argv = compare_argv(a, a_fmt, b, b_fmt, strict)
    pair = f"{argv[-2]} vs {argv[-1]}"
    result = _run(argv, pair, timeout=timeout, limits=long_limits(timeout))
    if result.returncode in (0, 1):
        return result.returncode == 0
    raise ImageError(f"{pair}: qemu-img compare failed: {_reason(result)}")


def convert_argv(
    src: str,
    src_fmt: str,
    dst: str,
    dst_fmt: str,
    *,
    preallocation: Preallocation | None = None,
    sparse: bool = True,
    compat: Compat = "1.1",
) -> list[str]:
    """argv of ``convert``: no ``-U`` (it locks its source), ``-S 4k`` or ``-S 0``, ``-o``."""
    opts = [f"compat={compat}"] if dst_fmt == "qcow2" else []
    if preallocation:
        opts.append(f"preallocation={preallocation}")
    argv = [
        "qemu-img",
        "convert",
        "-q",
        "-f",
        src_fmt,
        "-O",
        dst_fmt,
        "-S",
        "4k" if sparse else "0",
    ]
    if opts:
        argv += ["-o", ",".join(opts)]
    return [*argv, os.path.abspath(src), os.path.abspath(dst)]


def convert(
    src: str,
    src_fmt: str,
    dst: str,
    dst_fmt: str,
    *,
    preallocation: Preallocation | None = None,
    sparse: bool = True,
    compat: Compat = "1.1",
    timeout: float = LONG_TIMEOUT,
) -> None:
    """Copy ``src`` into a new image ``dst`` (flattening any backing chain); refuse if it exists.

    ``sparse`` is qemu-img's default ``-S 4k``: every run of 4 KiB of zeros, allocated in the
    source or not, becomes a hole (raw) or an unallocated cluster (qcow2), so a sparse copy
    is also a sparsified one; ``sparse=False`` (``-S 0``) writes every byte. ``preallocation``
    then reserves space in the copy ("metadata" is qcow2-only). ``compat`` applies to qcow2.
    The default cache mode flushes ``dst`` before qemu-img exits; no ``-W``, which only suits
    block devices. Callers convert to a fresh private path and rename it themselves: on
    failure, a partial ``dst`` may remain and is the caller's to remove — nothing is deleted.
    """
    argv = convert_argv(
        src, src_fmt, dst, dst_fmt, preallocation=preallocation, sparse=sparse, compat=compat
    )
    src, dst = argv[-2], argv[-1]
    if os.path.lexists(dst):
        raise ImageError(f"{dst}: already exists; convert writes only to a new path")
    if preallocation == "metadata" and dst_fmt == "raw":
        raise ImageError(f"{dst}: preallocation=metadata needs a qcow2 output, not raw")
    pair = f"{src} -> {dst}"
    result = _run(argv, pair, timeout=timeout, limits=long_limits(timeout))
    if result.returncode != 0:
        raise ImageError(f"{pair}: qemu-img convert failed: {_reason(result)}")


def create_argv(
    path: str,
    fmt: str,
    size: int,
    *,
    preallocation: Preallocation | None = None,
    compat: Compat = "1.1",
) -> list[str]:
    """argv of ``create``; over an existing file qemu-img truncates it (same inode)."""
    opts = [f"compat={compat}"] if fmt == "qcow2" else []
    if preallocation:
        opts.append(f"preallocation={preallocation}")
    argv = ["qemu-img", "create", "-q", "-f", fmt]
    if opts:
        argv += ["-o", ",".join(opts)]
    return [*argv, os.path.abspath(path), str(size)]


def create(path: str, fmt: str, size: int, *, preallocation: Preallocation | None = None) -> None:
    """A new empty image of ``size`` bytes at ``path`` (an empty file there is reused)."""
    argv = create_argv(path, fmt, size, preallocation=preallocation)
    result = _run(argv, argv[-2], timeout=LONG_TIMEOUT, limits=long_limits(LONG_TIMEOUT))
    if result.returncode != 0:
        raise ImageError(f"{argv[-2]}: qemu-img create failed: {_reason(result)}")


def convert_into_argv(
    src: str, src_fmt: str, dst: str, dst_fmt: str, *, sparse: bool = True
) -> list[str]:
    """argv of ``convert_into``: ``-n`` (the target exists); ``sparse``: runs of 4 KiB of
    zeros become holes (``-S 4k``), else every byte is written (``-S 0``), which keeps the
    target's preallocation."""
    return ["qemu-img", "convert", "-q", "-n", "-f", src_fmt, "-O", dst_fmt, "-S",
            "4k" if sparse else "0", os.path.abspath(src), os.path.abspath(dst)]  # fmt: skip


def convert_into(
    src: str,
    src_fmt: str,
    dst: str,
    dst_fmt: str,
    *,
    sparse: bool = True,
    timeout: float = LONG_TIMEOUT,
) -> None:
    """Copy ``src`` into the image ``dst`` that ``create`` made (same virtual size); no ``-U``,
    so a source a guest is writing is refused."""
    argv = convert_into_argv(src, src_fmt, dst, dst_fmt, sparse=sparse)
    pair = f"{argv[-2]} -> {argv[-1]}"
    result = _run(argv, pair, timeout=timeout, limits=long_limits(timeout))
    if result.returncode != 0:
        raise ImageError(f"{pair}: qemu-img convert failed: {_reason(result)}")


def measure_argv(
    path: str, fmt: str, out_fmt: str, preallocation: Preallocation | None = None
) -> list[str]:
    """argv of ``measure``: a read, so ``-U``; ``-f`` the image's format, ``-O`` the copy's."""
    argv = ["qemu-img", "measure", "--output=json", "-U", "-f", fmt, "-O", out_fmt]
    if preallocation:
        argv += ["-o", f"preallocation={preallocation}"]
    return [*argv, os.path.abspath(path)]


def measure(
    path: str, fmt: str, out_fmt: str, *, preallocation: Preallocation | None = None
) -> Measure:
    """Bytes a copy of ``path`` converted to ``out_fmt`` needs (its whole backing chain)."""
    argv = measure_argv(path, fmt, out_fmt, preallocation)
    path = argv[-1]
    result = _run(argv, path, timeout=TIMEOUT, limits=LIMITS)
    if result.returncode != 0:
        raise ImageError(f"{path}: qemu-img measure failed: {_reason(result)}")
    try:
        data = json.loads(result.stdout)
        bitmaps = int(data["bitmaps"]) if "bitmaps" in data else None
        return Measure(int(data["required"]), int(data["fully-allocated"]), bitmaps)
    except (ValueError, KeyError, TypeError) as exc:
        raise _unexpected(path, exc) from exc
