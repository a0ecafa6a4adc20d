"""The audit: gather what the rules need besides the summary, then evaluate them.

Reads only: qemu-img check of the qcow2 images no running domain uses, the disk size of every
local file volume (``stat``), and the journal's unfinished actions.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass

from auditor.collect import FS_POOL_TYPES
from auditor.config import Config
from auditor.errors import AuditorError
from auditor.interfaces import ImageChecker, LocalFs
from auditor.journal import Journal
from auditor.models import CheckResult, DiskReport, Finding, Summary
from auditor.rules import Facts, evaluate
from auditor.rules.facts import Key


@dataclass(frozen=True)
class Readers:
    """The local readers the audit uses besides libvirt."""

    check: ImageChecker
    fs: LocalFs


def _local(summary: Summary) -> set[str]:
    return {h.host for h in summary.inventory.hosts if h.local}


def _checkable(r: DiskReport, local: set[str], running: set[tuple[str, str]]) -> bool:
    """A qcow2 on this machine that no running domain has open (its check would race QEMU)."""
    d = r.disk
    return (
        d.format == "qcow2"
        and d.host in local
        and d.path.startswith("/")
        and not any((d.host, u) in running for u in r.used_by)
    )


def _checks(summary: Summary, readers: Readers) -> dict[Key, CheckResult | str]:
    local = _local(summary)
    running = {(d.host, d.name) for d in summary.domains if d.active}
    todo = {r.disk.path: r.disk.host for r in summary.disks if _checkable(r, local, running)}
    out: dict[Key, CheckResult | str] = {}
    for path, res in readers.check([(p, "qcow2") for p in todo]):
        out[(todo[path], path)] = res.message if isinstance(res, AuditorError) else res
    return out


def _on_disk(summary: Summary, fs: LocalFs) -> dict[Key, int]:
    """What each local file volume holds, as ``stat`` says (libvirt's allocation for files)."""
    local = _local(summary)
    out: dict[Key, int] = {}
    for r in summary.disks:
        d = r.disk
        if d.pool is None or d.kind != "file" or d.host not in local or not d.path.startswith("/"):
            continue
        try:
            found = fs.regular_file(d.path)
        except AuditorError:
            continue
        if found is not None:
            out[(d.host, d.path)] = found[1]
    return out


def _unlisted(summary: Summary, fs: LocalFs) -> dict[tuple[str, str], tuple[str, ...]]:
    """Files directly in each local dir/fs/netfs pool's folder that libvirt does not list."""
    listed = {(r.disk.host, r.disk.path) for r in summary.disks}
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for h in summary.inventory.hosts:
        for p in h.pools if h.local else ():
            if not p.active or p.type not in FS_POOL_TYPES or not p.target_path:
                continue
            found, _ = fs.list_files([p.target_path])
            names = tuple(
                os.path.basename(f)
                for f in found
                if os.path.dirname(f) == p.target_path.rstrip("/") and (h.host, f) not in listed
            )
            out[(h.host, p.name)] = names
    return out


def gather(summary: Summary, config: Config, readers: Readers, journal: Journal | None) -> Facts:
    """Everything the rules judge."""
    incomplete = tuple(journal.incomplete()) if journal else ()
    ids = {r.id for r in incomplete}
    made: dict[str, list[dict[str, object]]] = {}
    for rec in journal.records() if journal and ids else ():
        if rec.phase == "made" and rec.id in ids:
            made.setdefault(rec.id, []).append(dict(rec.made))
    return Facts(
        summary=summary,
        config=config,
        checks=_checks(summary, readers),
        on_disk=_on_disk(summary, readers.fs),
        incomplete=incomplete,
        made={k: tuple(v) for k, v in made.items()},
        unlisted=_unlisted(summary, readers.fs),
    )


def audit(
    facts: Facts,
    *,
    select: Collection[str] = (),
    ignore: Collection[str] = (),
    pools: Collection[str] = (),
) -> list[Finding]:
    """The findings, worst first."""
    return evaluate(facts, select=select, ignore=ignore, pools=pools)
