"""Volumes: provisioning against the pool's policy, orphans, unmanaged disks, backing chains."""

from __future__ import annotations

import os
from collections.abc import Iterator

from auditor.models import DiskReport, Finding, FixKind, Provisioning, Severity
from auditor.rules.facts import Facts, finding
from auditor.units import iec


def _policy(r: DiskReport, facts: Facts) -> Iterator[Finding]:
    d = r.disk
    if d.pool is None or r.provisioning is Provisioning.UNKNOWN:
        return
    want = facts.config.provisioning_of(d.pool, d.host)
    if want == "any" or want == r.provisioning.value:
        return
    fix = FixKind.PREALLOCATE if want == "preallocated" else FixKind.SPARSIFY
    yield finding(
        "AUD201", Severity.WARN, d.host,
        f"volume {d.pool}/{d.name} is {r.provisioning.value} ({iec(d.disk_size)} of "
        f"{iec(d.virtual_size)}), but pool {d.pool} must be {want}",
        pool=d.pool, volume=d.name, fix=fix, provisioning=r.provisioning.value,
        virtual_size=d.virtual_size, disk_size=d.disk_size,
    )  # fmt: skip


def _orphan(r: DiskReport, facts: Facts, backing: set[tuple[str, str]]) -> Iterator[Finding]:
    d = r.disk
    if d.pool is None or r.used_by or (d.host, d.path) in backing:
        return
    yield finding(
        "AUD301", Severity.INFO, d.host,
        f"volume {d.pool}/{d.name} is used by no domain (directly or as a backing image) and "
        f"holds {iec(d.disk_size)}",
        pool=d.pool, volume=d.name, disk_size=d.disk_size, virtual_size=d.virtual_size,
    )  # fmt: skip


def _unmanaged(r: DiskReport) -> Iterator[Finding]:
    d = r.disk
    if d.pool is not None or not r.used_by:
        return
    yield finding(
        "AUD302", Severity.WARN, d.host,
        f"{d.path} is a disk of {', '.join(r.used_by)} that no storage pool holds: libvirt "
        "cannot account for it",
        volume=d.path, virtual_size=d.virtual_size, disk_size=d.disk_size,
    )  # fmt: skip


def _backing(
    r: DiskReport, known: set[tuple[str, str]], managed: set[tuple[str, str]]
) -> Iterator[Finding]:
    d = r.disk
    if d.pool is None or not d.backing_file:
        return
    where = f"volume {d.pool}/{d.name}"
    if (d.host, d.backing_file) not in known and not os.path.isabs(d.backing_file):
        return  # a network backing image: nothing to tell
    if (d.host, d.backing_file) not in known:
        yield finding(
            "AUD601", Severity.CRIT, d.host,
            f"{where}: its backing image {d.backing_file} cannot be read: the volume is unusable",
            pool=d.pool, volume=d.name, backing_file=d.backing_file,
        )  # fmt: skip
    elif (d.host, d.backing_file) not in managed:
        yield finding(
            "AUD602", Severity.WARN, d.host,
            f"{where}: its backing image {d.backing_file} is in no storage pool: deleting or "
            "moving it breaks the volume and no pool shows it",
            pool=d.pool, volume=d.name, backing_file=d.backing_file,
        )  # fmt: skip


def rules(facts: Facts) -> Iterator[Finding]:
    disks = facts.summary.disks
    known = {(r.disk.host, r.disk.path) for r in disks}
    managed = {(r.disk.host, r.disk.path) for r in disks if r.disk.pool is not None}
    backing = {(r.disk.host, r.disk.backing_file) for r in disks if r.disk.backing_file}
    for r in disks:
        yield from _policy(r, facts)
        yield from _orphan(r, facts, backing)
        yield from _unmanaged(r)
        yield from _backing(r, known, managed)
