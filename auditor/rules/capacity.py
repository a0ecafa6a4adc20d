"""Pool capacity: used space, overcommit, exposure against usable free space."""

from __future__ import annotations

from collections.abc import Iterator

from auditor.models import Finding, PoolSummary, Severity
from auditor.rules.facts import Facts, finding
from auditor.thresholds import Level, assess, used_percent
from auditor.units import iec


def _level(value: float, warn: float, crit: float) -> Severity | None:
    return Severity.CRIT if value >= crit else Severity.WARN if value >= warn else None


def _used(p: PoolSummary, facts: Facts) -> Iterator[Finding]:
    t = facts.config.for_pool(p.pool, p.host)
    used = used_percent(p)
    if used is None:
        return
    sev = _level(used, t.used_warn, t.used_crit)
    if sev is not None:
        limit = t.used_crit if sev is Severity.CRIT else t.used_warn
        yield finding(
            "AUD101", sev, p.host,
            f"pool {p.pool}: {used:.1f}% of its capacity is used (threshold {limit:g}%)",
            pool=p.pool, used_percent=used, capacity=p.capacity, usable_free=p.usable_free,
        )  # fmt: skip


def _overcommit(p: PoolSummary, facts: Facts) -> Iterator[Finding]:
    t = facts.config.for_pool(p.pool, p.host)
    r = p.overcommit_ratio
    sev = _level(r, t.overcommit_warn, t.overcommit_crit) if r is not None else None
    if sev is not None:
        limit = t.overcommit_crit if sev is Severity.CRIT else t.overcommit_warn
        yield finding(
            "AUD102", sev, p.host,
            f"pool {p.pool}: {r:.2f}x its capacity is provisioned (threshold {limit:g}x)",
            pool=p.pool, overcommit_ratio=r, provisioned=p.provisioned, capacity=p.capacity,
        )  # fmt: skip


def _exposure(p: PoolSummary, facts: Facts) -> Iterator[Finding]:
    """exposure / usable free above exposure_crit: the thin disks, filled, overflow the pool."""
    t = facts.config.for_pool(p.pool, p.host)
    if not p.exposure or p.usable_free is None:
        return
    if p.usable_free == 0 or p.exposure > t.exposure_crit * p.usable_free:
        over = p.exposure - p.usable_free
        yield finding(
            "AUD103", Severity.CRIT, p.host,
            f"pool {p.pool}: its thin disks can still grow by {iec(p.exposure)} but only "
            f"{iec(p.usable_free)} is free"
            + (f" ({iec(over)} short)" if over > 0 else f" (exposure_crit {t.exposure_crit:g})"),
            pool=p.pool, exposure=p.exposure, usable_free=p.usable_free,
        )  # fmt: skip


def rules(facts: Facts) -> Iterator[Finding]:
    for p in facts.summary.pools:
        if p.type == "unmanaged" or assess(p, facts.config.for_pool(p.pool)).level is Level.UNKNOWN:
            continue
        yield from _used(p, facts)
        yield from _overcommit(p, facts)
        yield from _exposure(p, facts)
