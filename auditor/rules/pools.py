"""Pools: inactive or not autostarted while domains need them; figures libvirt has cached."""

from __future__ import annotations

from collections.abc import Iterator

from auditor.models import Domain, Finding, FixKind, Pool, Severity
from auditor.rules.facts import Facts, finding
from auditor.units import iec

STALE_SLACK = 1 << 20  # a filesystem in use drifts between a refresh and a read: 1 MiB or 1 %


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


def _stale_pool(pool: Pool) -> Iterator[Finding]:
    """libvirt's free space of a local pool, as of its last refresh, against statvfs now."""
    if not pool.active or pool.fs is None or pool.available is None:
        return
    drift = pool.fs.free - pool.available
    if abs(drift) <= max(STALE_SLACK, pool.fs.capacity // 100):
        return
    yield finding(
        "AUD501", Severity.WARN, pool.host,
        f"pool {pool.name}: libvirt's figures are stale: its filesystem has {iec(abs(drift))} "
        f"{'more' if drift > 0 else 'less'} free than libvirt last read",
        pool=pool.name, fix=FixKind.REFRESH_POOL, libvirt_free=pool.available,
        statvfs_free=pool.fs.free,
    )  # fmt: skip


def _unlisted(facts: Facts, fresh: set[tuple[str, str]]) -> Iterator[Finding]:
    """Files in a pool's folder that libvirt does not list: made since its last refresh."""
    for (host, pool), names in sorted(facts.unlisted.items()):
        if not names or (host, pool) in fresh:
            continue
        fresh.add((host, pool))
        yield finding(
            "AUD501", Severity.WARN, host,
            f"pool {pool}: libvirt's figures are stale: it does not list {len(names)} file(s) "
            f"in its folder ({', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''})",
            pool=pool, fix=FixKind.REFRESH_POOL, unlisted=len(names),
        )  # fmt: skip


def _stale_volumes(facts: Facts, fresh: set[tuple[str, str]]) -> Iterator[Finding]:
    """File volumes whose disk size libvirt has cached differs from what the file holds."""
    by_pool: dict[tuple[str, str], list[int]] = {}
    for r in facts.summary.disks:
        d = r.disk
        held = facts.on_disk.get((d.host, d.path))
        if d.pool is None or held is None or d.disk_size is None or held == d.disk_size:
            continue
        by_pool.setdefault((d.host, d.pool), []).append(held - d.disk_size)
    for (host, pool), deltas in sorted(by_pool.items()):
        if (host, pool) in fresh:
            continue
        yield finding(
            "AUD501", Severity.WARN, host,
            f"pool {pool}: libvirt's figures are stale: {len(deltas)} volume(s) hold "
            f"{iec(abs(sum(deltas)))} {'more' if sum(deltas) > 0 else 'less'} than libvirt "
            "last read",
            pool=pool, fix=FixKind.REFRESH_POOL, volumes=len(deltas), difference=sum(deltas),
        )  # fmt: skip


def rules(facts: Facts) -> Iterator[Finding]:
    stale: set[tuple[str, str]] = set()
    for h in facts.summary.inventory.hosts:
        for pool in h.pools:
            yield from _pool_rules(pool, h.domains)
            for f in _stale_pool(pool):
                stale.add((f.host, f.pool))
                yield f
    yield from _unlisted(facts, stale)
    yield from _stale_volumes(facts, stale)
