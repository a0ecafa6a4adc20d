"""One host as the operations see it: pools, volumes with their users, pool figures.

A ``View`` is built from an analyzed ``Summary`` (a fix run plans from the audit's own), and
after an operation only the affected pool and the domains are read again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from auditor.analyze import analyze
from auditor.collect import Probes, collect_host, recollect_pools
from auditor.config import Config
from auditor.errors import NotFound, OperationError
from auditor.interfaces import StorageHost
from auditor.journal import Journal
from auditor.models import (
    DiskReport,
    Domain,
    HostInventory,
    Inventory,
    LibvirtCall,
    Pool,
    PoolSummary,
    Request,
    Summary,
)
from auditor.ops.plan import Figure, Value


@dataclass(frozen=True)
class Users:
    """Who references a volume."""

    running: tuple[str, ...] = ()  # running domains (as a disk or in a backing chain)
    defined: tuple[str, ...] = ()  # domains that are not running
    attached: tuple[tuple[str, str], ...] = ()  # (running domain, target) using it as a disk
    overlays: tuple[str, ...] = ()  # images whose backing file it is

    @property
    def any(self) -> bool:
        return bool(self.running or self.defined or self.overlays)

    def who(self) -> str:
        """'running domain(s) a and defined domain(s) b and the overlay(s) backed by it: p/c'."""
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("running domain(s)", self.running),
                ("defined domain(s)", self.defined),
                ("the overlay(s) backed by it:", self.overlays),
            )
            if names
        ]
        return " and ".join(parts)


def label(r: DiskReport) -> str:
    """POOL/VOLUME of a managed disk, else its path."""
    return f"{r.disk.pool}/{r.disk.name}" if r.disk.pool else r.disk.path


@dataclass(frozen=True)
class View:
    """The host ``host`` of an analyzed summary."""

    summary: Summary
    host: str

    @property
    def inventory(self) -> HostInventory:
        for h in self.summary.inventory.hosts:
            if h.host == self.host:
                return h
        raise NotFound(f"host {self.host} is not in the collected inventory")

    def pool(self, name: str) -> Pool:
        for p in self.inventory.pools:
            if p.name == name:
                return p
        raise NotFound(f"pool {name} not found", "see `auditor pool list`")

    def active_pool(self, name: str) -> Pool:
        pool = self.pool(name)
        if not pool.active:
            raise OperationError(
                f"pool {name} is not active ({pool.state})",
                f"start it with `auditor pool start {name}`",
            )
        return pool

    def figures(self, name: str) -> PoolSummary | None:
        for s in self.summary.pools:
            if s.host == self.host and s.pool == name and s.is_pool:
                return s
        return None

    def find(self, pool: str, name: str) -> DiskReport | None:
        for r in self.summary.disks:
            if r.disk.host == self.host and r.disk.pool == pool and r.disk.name == name:
                return r
        return None

    def volume(self, pool: str, name: str) -> DiskReport:
        self.active_pool(pool)
        found = self.find(pool, name)
        if found is None:
            raise NotFound(
                f"volume {name} not found in pool {pool}",
                f"see `auditor volumes --pool {pool}`",
            )
        return found

    def domain(self, name: str) -> Domain:
        for d in self.inventory.domains:
            if d.name == name:
                return d
        raise NotFound(f"domain {name} not found", "see `virsh list --all`")

    def users(self, report: DiskReport) -> Users:
        """Who references the volume; refused when a domain could not be read (the guards
        would miss it). A domain that vanished while being read uses nothing."""
        for skip in self.summary.skips:
            if skip.kind in ("domain", "host") and not skip.vanished:
                raise OperationError(
                    f"cannot tell which domains use {label(report)}: {skip.kind} {skip.name} "
                    f"could not be read ({skip.reason})",
                    "retry; if it persists, check that domain with `virsh dumpxml`",
                )
        path = report.disk.path
        domains = {d.name: d for d in self.inventory.domains}
        running = tuple(n for n in report.used_by if n in domains and domains[n].active)
        attached = tuple(
            (n, dd.target)
            for n in running
            for dd in domains[n].disks
            if dd.path == path and not dd.readonly
        )
        overlays = tuple(
            label(r)
            for r in self.summary.disks
            if r.disk.host == self.host and r.disk.backing_file == path
        )
        defined = tuple(n for n in report.used_by if n not in running)
        return Users(running, defined, attached, overlays)

    def pool_users(self, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(running, other) domains using any volume of pool ``name``."""
        running: set[str] = set()
        other: set[str] = set()
        volumes = [r for r in self.summary.disks if r.disk.host == self.host]
        for d in self.inventory.domains:
            if any(dd.pool == name for dd in d.disks) or any(
                r.disk.pool == name and d.name in r.used_by for r in volumes
            ):
                (running if d.active else other).add(d.name)
        return tuple(sorted(running)), tuple(sorted(other))

    def chain(self, report: DiskReport) -> tuple[str, ...]:
        """The backing images of a volume, nearest first (POOL/VOLUME where managed)."""
        by_path = {d.disk.path: d for d in self.summary.disks if d.disk.host == self.host}
        chain: list[str] = []
        nxt = report.disk.backing_file
        while nxt and nxt not in chain:
            chain.append(nxt)
            base = by_path.get(nxt)
            nxt = base.disk.backing_file if base else None
        return tuple(label(by_path[p]) if p in by_path else p for p in chain)

    def now(self, pool: str | None, volume: str | None = None) -> dict[Figure, Value]:
        """The figures an operation may change, as the view has them now."""
        out: dict[Figure, Value] = {}
        p = next((p for p in self.inventory.pools if p.name == pool), None)
        if p is None:
            return out
        out[Figure.STATE] = "active" if p.active else p.state
        out[Figure.AUTOSTART] = "yes" if p.autostart else "no"
        s = self.figures(p.name)
        if s is not None:
            out[Figure.VOLUMES] = s.volumes
            out[Figure.PROVISIONED] = s.provisioned
            out[Figure.RATIO] = s.overcommit_ratio
            out[Figure.USABLE] = s.usable_free
        r = self.find(p.name, volume) if volume is not None and p.active else None
        if r is not None:
            out[Figure.VIRTUAL] = r.disk.virtual_size
            out[Figure.DISK] = r.disk.disk_size
        return out


@dataclass(frozen=True)
class Context:
    """Everything planning needs: the host, the local probes, the policy and the view."""

    host: StorageHost
    probes: Probes
    config: Config
    view: View
    journal: Journal | None = None  # where mutations are journalled (None: not at all)

    def calls(self, request: Request) -> tuple[LibvirtCall, ...]:
        """The adapter's own description of the calls ``request`` makes."""
        return self.host.calls(request)


def context(
    host: StorageHost,
    probes: Probes,
    config: Config | None = None,
    journal: Journal | None = None,
) -> Context:
    """The host as the audit sees it now (pools refreshed), with the policy."""
    inventory = collect_host(host, probes, refresh=True)
    summary = analyze(Inventory(hosts=(inventory,)))
    return Context(host, probes, config or Config(), View(summary, host.host), journal)


def remeasured(ctx: Context, pools: Collection[str]) -> Context:
    """``ctx`` with the pools ``pools`` and the domains read again (nothing else)."""
    hosts = tuple(
        recollect_pools(h, ctx.host, ctx.probes, pools) if h.host == ctx.view.host else h
        for h in ctx.view.summary.inventory.hosts
    )
    summary = analyze(replace(ctx.view.summary.inventory, hosts=hosts))
    return replace(ctx, view=View(summary, ctx.view.host))
