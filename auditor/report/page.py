"""What a report shows: the summary, each pool's status and change, and the totals. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol, TypeVar

from auditor.models import DiskReport, Finding, PoolSummary, Summary, overcommit_ratio
from auditor.report.chart import PlanningLike
from auditor.report.rows import finding_doc, pool_row, skip_row, volume_rows, with_labels

PROBLEM_LEVELS = ("crit", "warn")
T = TypeVar("T")


def _minus(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


def _by_host(items: Iterable[T], host: Callable[[T], str]) -> dict[str, list[T]]:
    out: dict[str, list[T]] = {}
    for item in items:
        out.setdefault(host(item), []).append(item)
    return out


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

    @classmethod
    def of(cls, statuses: Sequence[PoolStatus], disks: Sequence[DiskReport], hosts: int) -> Totals:
        """The totals of these pools and disks (of ``hosts`` hosts)."""
        pools = [s.pool for s in statuses]
        grouped = {(p.host, m) for p in pools if p.type == "shared-fs" for m in p.members}
        spaces = [
            p
            for p in pools
            if p.type == "shared-fs" or (p.is_pool and (p.host, p.pool) not in grouped)
        ]
        known = [p for p in spaces if p.capacity is not None]
        capacity = _sum(p.capacity for p in spaces)
        return cls(
            hosts=hosts,
            pools=sum(p.is_pool for p in pools),
            inactive_pools=sum(p.state == "inactive" for p in pools),
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
            over_threshold=sum(s.problem for s in statuses),
            capacity_unknown=sum(p.capacity is None and p.state == "running" for p in spaces),
        )


DOWN = "down"  # the level of a host that could not be reached
HOST_ORDER = {"crit": 0, DOWN: 1, "warn": 2, "unknown": 3, "ok": 4}  # worst first
GROUP_KEYS = 2  # hosts are grouped by their first two label keys' values (site, then cluster)
VOLUME_CAP = 2000  # rows of a fleet page's volumes table (every volume is in volumes.csv)
LIST_CAP = 1000  # rows of a fleet page's findings, changes, unmanaged disks (all in the files)


@dataclass(frozen=True)
class HostStatus:
    """One host of a fleet page: its worst level, pools (worst first) and figures."""

    host: str
    labels: Mapping[str, str]
    level: str  # crit, down (unreachable), warn, ok, unknown (no pool with figures)
    pools: tuple[PoolStatus, ...] = ()
    totals: Totals | None = None  # None for an unreachable host
    skipped: int = 0  # its items that could not be read
    reason: str = ""  # why it could not be reached

    @property
    def problem(self) -> bool:
        """Crit, warn, unreachable, or with items that could not be read."""
        return self.level in ("crit", "warn", DOWN) or self.skipped > 0

    @property
    def over(self) -> int:
        """Its pools (and groups) over a threshold."""
        return sum(st.problem for st in self.pools)

    @property
    def text(self) -> str:
        """What the page's text filter matches: host, labels (key=value) and pool names."""
        words = [self.host, *(f"{k}={v}" for k, v in self.labels.items())]
        return " ".join(words + [st.pool.pool for st in self.pools]).lower()

    def order(self) -> tuple[bool, int, int, str]:
        return not self.problem, HOST_ORDER[self.level], -self.skipped, self.host


@dataclass(frozen=True)
class HostGroup:
    """The hosts sharing the values of the grouping labels, worst first."""

    labels: tuple[tuple[str, str], ...]  # () for hosts without any of those labels
    hosts: tuple[HostStatus, ...]

    @property
    def name(self) -> str:
        return " · ".join(f"{k}={v}" for k, v in self.labels) or "unlabelled"

    @property
    def level(self) -> str:
        return self.hosts[0].level

    @property
    def problems(self) -> tuple[HostStatus, ...]:
        return tuple(h for h in self.hosts if h.problem)

    def order(self) -> tuple[bool, int, int, int, str]:
        """Worst first: its worst host's problem, level and skipped items, then its problem
        hosts, then its name."""
        worst, level, skipped, _ = self.hosts[0].order()
        return worst, level, skipped, -len(self.problems), self.name


def host_level(statuses: Iterable[PoolStatus]) -> str:
    """The worst known level of a host's pools; unknown when none has figures."""
    levels = {st.level for st in statuses}
    return next((lv for lv in ("crit", "warn", "ok") if lv in levels), "unknown")


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
        return Totals.of(self.pools, self.summary.disks, len(self.summary.hosts))

    @cached_property
    def hosts(self) -> tuple[HostStatus, ...]:
        """Every host, reached or not, problems first (then worst level, then name)."""
        s = self.summary
        pools = _by_host(self.pools, lambda st: st.pool.host)
        disks = _by_host(s.disks, lambda r: r.disk.host)
        skipped = Counter(k.host for k in s.skips if k.kind != "host")
        labels = s.host_labels

        def reached(h: str) -> HostStatus:
            own = tuple(pools.get(h, ()))
            totals = Totals.of(own, disks.get(h, []), 1)
            return HostStatus(h, labels.get(h, {}), host_level(own), own, totals, skipped[h])

        down = [
            HostStatus(k.host, labels.get(k.host, {}), DOWN, reason=k.reason)
            for k in s.skips
            if k.kind == "host"
        ]
        return tuple(sorted([*map(reached, s.hosts), *down], key=HostStatus.order))

    @property
    def fleet(self) -> bool:
        """More than one host: the page adds the Hosts section and trims the long lists."""
        return len(self.hosts) > 1

    @property
    def group_keys(self) -> tuple[str, ...]:
        """The label keys hosts are grouped by: the first GROUP_KEYS, in the hosts' order."""
        return self.summary.label_keys[:GROUP_KEYS]

    @cached_property
    def host_groups(self) -> tuple[HostGroup, ...]:
        """The hosts by the values of the first GROUP_KEYS label keys, worst group first."""
        keys = self.group_keys
        groups: dict[tuple[tuple[str, str], ...], list[HostStatus]] = {}
        for h in self.hosts:
            groups.setdefault(tuple((k, h.labels[k]) for k in keys if k in h.labels), []).append(h)
        return tuple(
            sorted((HostGroup(k, tuple(v)) for k, v in groups.items()), key=HostGroup.order)
        )

    def _carded(self, unmanaged: bool) -> tuple[PoolStatus, ...]:
        """Pools (or the unmanaged disks' filesystems of a known size) with a card: all; on a
        fleet page those over a threshold."""
        return tuple(
            st
            for st in self.pools
            if (st.pool.type == "unmanaged") == unmanaged
            and (st.pool.capacity or not unmanaged)
            and (st.problem or not self.fleet)
        )

    @property
    def cards(self) -> tuple[PoolStatus, ...]:
        """The pool cards: every pool and group; on a fleet page those over a threshold."""
        return self._carded(unmanaged=False)

    @property
    def unmanaged_cards(self) -> tuple[PoolStatus, ...]:
        """The cards of the unmanaged disks' filesystems (see _carded)."""
        return self._carded(unmanaged=True)

    @cached_property
    def unmanaged(self) -> tuple[DiskReport, ...]:
        """Every disk no active pool holds."""
        return tuple(r for r in self.summary.disks if not r.disk.managed)

    @property
    def shown_unmanaged(self) -> tuple[DiskReport, ...]:
        """The unmanaged disks table: all; on a fleet page the first LIST_CAP (all are in
        volumes.csv)."""
        return self._capped(self.unmanaged)

    def _capped(self, items: tuple[T, ...]) -> tuple[T, ...]:
        """A list as a table shows it: whole; on a fleet page the first LIST_CAP."""
        return items[:LIST_CAP] if self.fleet else items

    @property
    def shown_findings(self) -> tuple[Finding, ...]:
        """The findings table: every finding; on a fleet page the first LIST_CAP (worst
        first; all are in findings.csv)."""
        return self._capped(self.findings)

    @property
    def shown_changes(self) -> tuple[VolumeChange, ...]:
        """Volumes added or removed: all; on a fleet page the first LIST_CAP (all are in
        summary.json)."""
        return self._capped(self.volume_changes)

    @cached_property
    def shown_disks(self) -> tuple[DiskReport, ...]:
        """The volumes table: every disk; on a fleet page the disks of the pools over a
        threshold, worst pool first, at most VOLUME_CAP."""
        if not self.fleet:
            return self.disks
        rank: dict[tuple[str, str], int] = {}
        for i, st in enumerate(self.problems):
            for name in (st.pool.pool, *st.pool.members):
                rank.setdefault((st.pool.host, name), i)
        picked = [r for r in self.summary.disks if (r.disk.host, r.disk.pool or "") in rank]
        picked.sort(key=lambda r: (rank[r.disk.host, r.disk.pool or ""], r.disk.name))
        return tuple(picked[:VOLUME_CAP])

    @cached_property
    def _anchors(self) -> dict[int, int]:
        return {id(st): i for i, st in enumerate(self.pools)}

    def anchor(self, status: PoolStatus) -> str:
        """The id of a pool's card (and of the unmanaged disks' cards)."""
        return f"pool-{self._anchors[id(status)]}"

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
