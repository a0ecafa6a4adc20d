"""Threshold assessment of a pool's figures: ok, warn or crit, with the reasons in words. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from auditor.config import Thresholds
from auditor.models import PoolSummary


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    CRIT = "crit"
    UNKNOWN = "unknown"  # no figures: an inactive pool, a filesystem that could not be read


SEVERITY = {Level.CRIT: 0, Level.WARN: 1, Level.UNKNOWN: 2, Level.OK: 3}


@dataclass(frozen=True)
class Assessment:
    level: Level
    used_percent: float | None
    reasons: tuple[str, ...] = ()  # why the level is not ok, in words


def used_percent(p: PoolSummary) -> float | None:
    """used_percent = (capacity - usable free) / capacity * 100."""
    if not p.capacity or p.usable_free is None:
        return None
    return round((p.capacity - p.usable_free) / p.capacity * 100, 2)


def _level(value: float | None, warn: float, crit: float) -> Level:
    if value is None or value < warn:
        return Level.OK
    return Level.CRIT if value >= crit else Level.WARN


def _unknown_why(p: PoolSummary) -> str:
    if p.state == "inactive":
        return "inactive: libvirt reports no figures"
    if not p.capacity:
        return "no capacity"
    return "usable free space unknown"


def assess(p: PoolSummary, t: Thresholds) -> Assessment:
    """The worst of: used_percent against used_warn/used_crit, overcommit_ratio against
    overcommit_warn/overcommit_crit (both inclusive). A figure that is unknown judges
    nothing: with neither known the level is unknown, and a pool whose used space is unknown
    is never ok, only as bad as its known overcommit says."""
    used, ratio = used_percent(p), p.overcommit_ratio
    if used is None and ratio is None:
        return Assessment(Level.UNKNOWN, None, (_unknown_why(p),))
    found: list[tuple[Level, str]] = []
    by_used = _level(used, t.used_warn, t.used_crit)
    if by_used is not Level.OK and used is not None:
        limit = t.used_crit if by_used is Level.CRIT else t.used_warn
        found.append((by_used, f"{used:.1f}% used ({_word(by_used)} at {limit:g}%)"))
    by_ratio = _level(ratio, t.overcommit_warn, t.overcommit_crit)
    if by_ratio is not Level.OK and ratio is not None:
        limit = t.overcommit_crit if by_ratio is Level.CRIT else t.overcommit_warn
        found.append(
            (by_ratio, f"provisioned {ratio:.2f}x capacity ({_word(by_ratio)} at {limit:g}x)")
        )
    if used is None:
        found.append((Level.UNKNOWN, _unknown_why(p)))
        by_used = Level.UNKNOWN
    found.sort(key=lambda f: SEVERITY[f[0]])  # the worst reason first
    level = min(by_used, by_ratio, key=SEVERITY.__getitem__)
    return Assessment(level, used, tuple(text for _, text in found))


def _word(level: Level) -> str:
    return "critical" if level is Level.CRIT else "warning"
