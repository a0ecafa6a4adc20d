"""Pools: inactive or not autostarted while domains need them; figures libvirt has cached."""

from __future__ import annotations

from collections.abc import Iterator

from auditor.models import Domain, Finding, FixKind, Pool, Severity
from auditor.rules.facts import Facts, finding
from auditor.units import iec


def _needs(dom: Domain, pool: Pool) -> bool:
    """Whether a disk of ``dom`` lives in ``pool`` (by pool name, or under its target)."""
    root = pool.target_path.rstrip("/") + "/"
    return (
        any(dd.pool == pool.name or (dd.path or "").startswith(root) for dd in dom.disks)
        if pool.target_path
        else any(dd.pool == pool.name for dd in dom.disks)
    )


def _pool_rules(pool: Pool, domains: tuple[Domain, ...]) -> Iterator[Finding]:
    users = [d for d in domains if _needs(d, pool)]
    if not users:
        return
    names = ", ".join(sorted(d.name for d in users))
    boot = sorted(d.name for d in users if d.autostart)
    if not pool.active:
        yield finding(
            "AUD401", Severity.CRIT if boot else Severity.WARN, pool.host,
            f"pool {pool.name} is {pool.state} but domain(s) {names} have disks in it: they "
            "cannot start",
            pool=pool.name, fix=FixKind.START_POOL, domains=names,
        )  # fmt: skip
    if pool.persistent and not pool.autostart and boot:
        yield finding(
            "AUD402", Severity.WARN, pool.host,
            f"pool {pool.name} does not autostart but autostart domain(s) {', '.join(boot)} "
            "need it: after a reboot of the host they fail to start",
            pool=pool.name, fix=FixKind.AUTOSTART_POOL, domains=", ".join(boot),
        )  # fmt: skip


def _stale(facts: Facts) -> Iterator[Finding]:
    """File volumes whose disk size libvirt has cached differs from what the file holds."""
    by_pool: dict[tuple[str, str], list[int]] = {}
    for r in facts.summary.disks:
        d = r.disk
        held = facts.on_disk.get((d.host, d.path))
        if d.pool is None or held is None or d.disk_size is None or held == d.disk_size:
            continue
        by_pool.setdefault((d.host, d.pool), []).append(held - d.disk_size)
    for (host, pool), deltas in sorted(by_pool.items()):
        yield finding(
            "AUD501", Severity.WARN, host,
            f"pool {pool}: libvirt's figures are stale: {len(deltas)} volume(s) hold "
            f"{iec(abs(sum(deltas)))} {'more' if sum(deltas) > 0 else 'less'} than libvirt "
            "last read",
            pool=pool, fix=FixKind.REFRESH_POOL, volumes=len(deltas), difference=sum(deltas),
        )  # fmt: skip


def rules(facts: Facts) -> Iterator[Finding]:
    for h in facts.summary.inventory.hosts:
        for pool in h.pools:
            yield from _pool_rules(pool, h.domains)
    yield from _stale(facts)
