"""The audit's rules: pure functions of the collected facts that yield findings.

One module per family; every finding has a stable code (``CODES``, documented in the README).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from auditor.errors import ConfigError
from auditor.models import Finding, FixKind, Severity
from auditor.rules import capacity, images, journal, pools, volumes
from auditor.rules.facts import Facts

FAMILIES = (capacity, volumes, pools, images, journal)


@dataclass(frozen=True)
class Rule:
    code: str
    severity: str  # as found: warn or crit where both occur
    title: str
    fix: FixKind | None = None


CODES = {
    r.code: r
    for r in (
        Rule("AUD101", "warn/crit", "pool used above used_warn / used_crit"),
        Rule("AUD102", "warn/crit", "overcommit ratio above overcommit_warn / overcommit_crit"),
        Rule("AUD103", "crit", "exposure above usable free (times exposure_crit)"),
        Rule(
            "AUD201", "warn", "volume provisioning violates its pool's policy", FixKind.PREALLOCATE
        ),
        Rule("AUD301", "info", "orphan volume: no domain uses it, directly or as a backing image"),
        Rule("AUD302", "warn", "unmanaged disk: a domain uses a file or device no pool holds"),
        Rule("AUD401", "warn/crit", "inactive pool that domains' disks are in", FixKind.START_POOL),
        Rule(
            "AUD402",
            "warn",
            "persistent pool without autostart that an autostart domain needs",
            FixKind.AUTOSTART_POOL,
        ),
        Rule(
            "AUD501",
            "warn",
            "stale pool figures: libvirt's cached sizes disagree with the files",
            FixKind.REFRESH_POOL,
        ),
        Rule("AUD601", "crit", "broken backing chain: a backing image cannot be read"),
        Rule("AUD602", "warn", "backing chain leaves the pools"),
        Rule("AUD701", "warn", "qcow2 image with leaked clusters", FixKind.REPAIR_LEAKS),
        Rule("AUD702", "crit", "corrupt qcow2 image"),
        Rule("AUD703", "warn", "qcow2 image with the dirty bit of lazy refcounts: needs repair"),
        Rule("AUD704", "warn", "qemu-img check could not check the image"),
        Rule(
            "AUD801",
            "warn",
            "incomplete operation: an interrupted auditor run left something",
            FixKind.REMOVE_LEFTOVER,
        ),
    )
}


def codes(text: str | None) -> frozenset[str]:
    """'AUD1,AUD201' → the codes they name (a prefix names a family); ConfigError if unknown."""
    if not text:
        return frozenset()
    out: set[str] = set()
    for part in (p.strip().upper() for p in text.split(",") if p.strip()):
        found = {c for c in CODES if c.startswith(part)}
        if not found:
            raise ConfigError(f"unknown finding code {part!r}", f"known: {', '.join(CODES)}")
        out |= found
    return frozenset(out)


def evaluate(
    facts: Facts,
    *,
    select: Collection[str] = (),
    ignore: Collection[str] = (),
    pools: Collection[str] = (),
) -> list[Finding]:
    """Every finding, worst first, limited to codes (``select``, less ``ignore``) and pools."""
    found = [f for family in FAMILIES for f in family.rules(facts)]
    kept = [
        f
        for f in found
        if (not select or f.code in select)
        and f.code not in ignore
        and (not pools or f.pool in pools or any(m in pools for m in f.pool.split("+")))
    ]
    return sorted(kept, key=lambda f: (f.severity.rank, f.host, f.code, f.pool, f.volume))


__all__ = ["CODES", "Facts", "Finding", "Severity", "codes", "evaluate"]
