"""What a report shows: the summary, each pool's status and change, and the totals. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from auditor.models import DiskReport, Finding, PoolSummary, Summary, overcommit_ratio
from auditor.report.chart import PlanningLike
from auditor.report.rows import finding_doc, pool_row, skip_row, volume_rows, with_labels

PROBLEM_LEVELS = ("crit", "warn")


def _minus(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


def _sum(values: Iterable[int | None]) -> int | None:
    """Σ of the known values; None when there are values and none of them is known."""
    given = list(values)
    known = [v for v in given if v is not None]
    return sum(known) if known or not given else None


class PoolFigures(Protocol):
    """The figures of a pool a delta compares (a recorded point of the history has them)."""

    @property
    def volumes(self) -> int | None: ...
    @property
    def used(self) -> int | None: ...
    @property
    def provisioned(self) -> int | None: ...
    @property
    def available(self) -> int | None: ...  # usable free space
    @property
    def exposure(self) -> int | None: ...


@dataclass(frozen=True)
class PoolDelta:
    """A pool's figures now minus those of the previous snapshot (None: unknown on a side)."""

    since: datetime
    volumes: int | None
    used: int | None
    provisioned: int | None
    usable_free: int | None
    exposure: int | None

    @classmethod
    def between(cls, now: PoolSummary, before: PoolFigures, since: datetime) -> PoolDelta:
        return cls(
            since=since,
            volumes=_minus(now.volumes, before.volumes),
            used=_minus(now.used, before.used),
            provisioned=_minus(now.provisioned, before.provisioned),
            usable_free=_minus(now.usable_free, before.available),
            exposure=_minus(now.exposure, before.exposure),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "volumes": self.volumes,
            "used": self.used,
            "provisioned": self.provisioned,
            "available": self.usable_free,
            "exposure": self.exposure,
        }


@dataclass(frozen=True)
class PoolStatus:
    """A pool (or shared-fs group, or unmanaged disks on one filesystem) as the page shows it."""

    pool: PoolSummary
    level: str  # ok, warn, crit, unknown
    used_percent: float | None
    reasons: tuple[str, ...]
    limits: Mapping[str, float]  # the thresholds that applied
    change: PoolDelta | None = None  # since the previous snapshot

    @property
    def problem(self) -> bool:
        return self.level in PROBLEM_LEVELS


@dataclass(frozen=True)
class VolumeChange:
    """A volume that appeared or disappeared since the previous snapshot of its host."""

    change: str  # added, removed
    host: str
    pool: str  # '' for an unmanaged disk
    volume: str
    path: str
    virtual_size: int | None


@dataclass(frozen=True)
class Totals:
    """Headline figures. Capacity counts a shared filesystem once (its group row)."""

    hosts: int
    pools: int
    inactive_pools: int
    volumes: int
    unmanaged: int
    thin: int
    preallocated: int
    unknown: int
    capacity: int | None  # each sum: None when no row has that figure known
    provisioned: int | None
    used: int | None
    usable_free: int | None  # "available" in summary.json
    exposure: int | None
    overcommit_ratio: float | None  # over the pools and groups whose capacity is known
    over_threshold: int
    capacity_unknown: int  # active pools and groups left out of capacity and the ratio

    def as_dict(self) -> dict[str, Any]:
        return {("available" if k == "usable_free" else k): v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Page:
    """Everything one report renders, pools in display order (problems first)."""

    summary: Summary
    pools: tuple[PoolStatus, ...]
    sources: tuple[str, ...]
    version: str
    thresholds: Mapping[str, Mapping[str, float]]  # "default" and one entry per pool override
    config_source: str | None = None
    previous_at: datetime | None = None
    volume_changes: tuple[VolumeChange, ...] = ()
    planning: PlanningLike | None = None  # growth and days to full over the history
    findings: tuple[Finding, ...] = ()  # the audit's, worst first

    @property
    def disks(self) -> tuple[DiskReport, ...]:
        """Disks in the order of ``volume_rows``: host, managed first, pool, name."""

        def key(r: DiskReport) -> tuple[str, bool, str, str]:
            return r.disk.host, r.disk.pool is None, r.disk.pool or "", r.disk.name

        return tuple(sorted(self.summary.disks, key=key))

    @property
    def problems(self) -> tuple[PoolStatus, ...]:
        return tuple(s for s in self.pools if s.problem)

    @property
    def inactive(self) -> tuple[PoolStatus, ...]:
        return tuple(s for s in self.pools if s.pool.state == "inactive")

    @property
    def noted(self) -> tuple[PoolStatus, ...]:
        """Pools with a figure unknown: libvirt's figure cannot be true, or cannot be had."""
        return tuple(s for s in self.pools if s.pool.notes)

    @property
    def implausible(self) -> tuple[DiskReport, ...]:
        """Disks with a size that cannot be true (made unknown)."""
        return tuple(r for r in self.disks if r.implausible)

    @property
    def totals(self) -> Totals:
        pools = [s.pool for s in self.pools]
        grouped = {(p.host, m) for p in pools if p.type == "shared-fs" for m in p.members}
        spaces = [
            p
            for p in pools
            if p.type == "shared-fs" or (p.is_pool and (p.host, p.pool) not in grouped)
        ]
        disks = self.summary.disks
        known = [p for p in spaces if p.capacity is not None]
        capacity = _sum(p.capacity for p in spaces)
        return Totals(
            hosts=len(self.summary.hosts),
            pools=sum(p.is_pool for p in pools),
            inactive_pools=len(self.inactive),
            volumes=len(disks),
            unmanaged=sum(not r.disk.managed for r in disks),
            thin=sum(r.provisioning.value == "thin" for r in disks),
            preallocated=sum(r.provisioning.value == "preallocated" for r in disks),
            unknown=sum(r.provisioning.value == "unknown" for r in disks),
            capacity=capacity,
            provisioned=_sum(p.provisioned for p in spaces),
            used=_sum(p.used for p in spaces),
            usable_free=_sum(p.usable_free for p in spaces),
            exposure=_sum(p.exposure for p in spaces),
            overcommit_ratio=overcommit_ratio(sum(p.provisioned or 0 for p in known), capacity),
            over_threshold=len(self.problems),
            capacity_unknown=sum(p.capacity is None and p.state == "running" for p in spaces),
        )

    def _pools(self) -> list[dict[str, Any]]:
        """summary.json's pools: the pool rows (with the hosts' label columns), each with its
        level, used %, reasons, thresholds and change."""
        rows = with_labels([pool_row(st.pool) for st in self.pools], self.summary)
        return [
            row
            | {
                "level": st.level,
                "used_percent": st.used_percent,
                "reasons": list(st.reasons),
                "thresholds": dict(st.limits),
                "change": st.change.as_dict() if st.change else None,
            }
            for row, st in zip(rows, self.pools, strict=True)
        ]

    def document(self) -> dict[str, Any]:
        """``summary.json``: the figures of the page, sizes in integer bytes."""
        s = self.summary
        return {
            "format": "auditor-report",
            "version": 1,
            "generated_by": f"auditor {self.version}",
            "collected_at": s.collected_at.isoformat(),
            "hosts": list(s.hosts),
            "sources": list(self.sources),
            "previous_at": self.previous_at.isoformat() if self.previous_at else None,
            "totals": self.totals.as_dict(),
            "thresholds": {k: dict(v) for k, v in self.thresholds.items()},
            "config": self.config_source,
            "pools": self._pools(),
            "volume_changes": [dict(c.__dict__) for c in self.volume_changes],
            "volumes": volume_rows(s),
            "skipped": [skip_row(k) for k in s.skips],
            "notices": list(s.notices),
            "planning": self.planning.as_dict() if self.planning else None,
            "findings": [finding_doc(f) for f in self.findings],
        }
