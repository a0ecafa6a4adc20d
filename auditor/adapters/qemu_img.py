"""qemu-img wrappers: JSON in, ImageInfo out. Always ``-U``; ``-f`` when the format is known.

qemu-img runs with memory and CPU caps, like OpenStack does for untrusted images: a crafted
header must not make it eat the host. ``info`` never opens backing files, so probing the format
of an unknown file cannot make qemu-img read another file through a forged backing reference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from auditor.adapters.run import Limits, run
from auditor.errors import AuditorError, ImageError
from auditor.models import ImageInfo

LIMITS = Limits(address_space=1 << 30, cpu_seconds=30)
TIMEOUT = 60.0


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0].removeprefix("qemu-img: ") if lines else "no output"


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


def info(path: str, fmt: str | None = None) -> ImageInfo:
    """``qemu-img info`` of one image; raise ImageError naming the image when it cannot be read."""
    path = os.path.abspath(path)  # never starts with "-", so never read as an option
    argv = ["qemu-img", "info", "--output=json", "-U"]
    if fmt:
        argv += ["-f", fmt]
    result = run([*argv, path], timeout=TIMEOUT, limits=LIMITS)
    if result.returncode != 0:
        raise ImageError(f"{path}: qemu-img cannot read it: {_first_line(result.stderr)}")
    try:
        return _parse_info(json.loads(result.stdout), path)
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{path}: unexpected qemu-img output ({exc})") from exc


def info_many(
    items: Iterable[tuple[str, str | None]], workers: int | None = None
) -> Iterator[tuple[str, ImageInfo | AuditorError]]:
    """``info`` over many (path, format) pairs in parallel; errors come back as values, in order."""
    pairs = list(items)
    if not pairs:
        return
    workers = workers or min(16, 2 * (os.cpu_count() or 1), len(pairs))

    def one(pair: tuple[str, str | None]) -> tuple[str, ImageInfo | AuditorError]:
        try:
            return pair[0], info(*pair)
        except AuditorError as exc:
            return pair[0], exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(one, pairs)
