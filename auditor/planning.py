"""Capacity planning over the history: robust growth fits, days to full, what-if. Pure.

Every figure is documented in the README ("Capacity planning") under the name used here.
Byte figures are integers: the fitted lines are exact fractions (bytes a day, bytes at the
newest snapshot) and a projected byte figure is rounded to the nearest byte where it is made.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from auditor.config import Config, Thresholds
from auditor.errors import NotFound, PolicyError
from auditor.interfaces import PoolPoint, SeriesPoint, VolumePoint
from auditor.models import overcommit_ratio
from auditor.sizes import parse_size

DAY = timedelta(days=1)
MICROS_PER_DAY = 86_400_000_000
WINDOW = timedelta(days=30)  # of history the fits use, back from the newest snapshot
HORIZON = timedelta(days=90)  # how far ahead the capacity needed is worked out
MIN_SNAPSHOTS = 3
MIN_SPAN = DAY
MAX_POINTS = 250  # per fit: a longer series is thinned evenly in time (the newest kept)
MAX_DAYS = 36_525  # beyond a century no date is given
NOT_ENOUGH = "not enough history"
PLAN_COLUMNS = [
    "host", "pool", "type", "status", "snapshots", "first_at", "last_at",
    "capacity", "used_space", "available", "provisioned", "overcommit_ratio", "exposure",
    "used_space_per_day", "provisioned_per_day", "fit_r2", "fit_error",
    "used_crit", "crit_space", "days_to_crit", "crit_date", "days_to_full", "full_date",
    "worst_used_space", "worst_overflow", "horizon_days", "horizon_used_space",
    "horizon_provisioned", "horizon_worst_used_space", "needed_capacity",
    "needed_capacity_worst", "to_buy", "to_buy_worst", "note",
]  # fmt: skip
BYTE_COLUMNS = frozenset(
    {"capacity", "used_space", "available", "provisioned", "exposure", "used_space_per_day",
     "provisioned_per_day", "fit_error", "crit_space", "worst_used_space", "worst_overflow",
     "horizon_used_space", "horizon_provisioned", "horizon_worst_used_space",
     "needed_capacity", "needed_capacity_worst", "to_buy", "to_buy_worst"}
)  # fmt: skip
_SPAN = re.compile(r"(\d+)([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_span(text: str) -> timedelta:
    """``12h``, ``30d``, ``4w`` as a positive duration; ValueError otherwise."""
    m = _SPAN.fullmatch(text.strip())
    span = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))}) if m else None
    if not span:
        raise ValueError(f"{text!r} is not a duration such as 12h, 30d or 4w")
    return span


def days(span: timedelta) -> Fraction:
    """A duration in days, exactly."""
    return Fraction(span // timedelta(microseconds=1), MICROS_PER_DAY)


# ---- the fit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """A Theil-Sen line through (time, bytes): ``level`` bytes at ``at``, ``slope`` a day."""

    slope: Fraction  # bytes a day: the median of the slopes between every two snapshots
    level: Fraction  # bytes at ``at``: the median of y - slope * (t - at)
    at: datetime  # the newest snapshot fitted
    points: int
    r2: float | None  # 1 - Σ residual² / Σ (y - mean)²; None when every y is equal
    error: int  # median |residual|, bytes

    def value(self, when: datetime) -> int:
        """The line at ``when``, rounded to a byte."""
        return round(self.level + self.slope * days(when - self.at))

    @property
    def per_day(self) -> int:
        return round(self.slope)

    def shifted(self, delta: int) -> Fit:
        """The same line ``delta`` bytes higher (a what-if's immediate change)."""
        return replace(self, level=self.level + delta)


def thinned(
    points: Sequence[tuple[datetime, int]], limit: int = MAX_POINTS
) -> list[tuple[datetime, int]]:
    """At most ``limit`` points, every k-th counted back from the newest (time order kept)."""
    if len(points) <= limit:
        return list(points)
    step = math.ceil(len(points) / limit)
    return list(points[::-1][::step][::-1])


def _median_slope(xs: Sequence[int], ys: Sequence[int]) -> Fraction | None:
    """The median of (yj - yi) / (xj - xi) over pairs with xi < xj (exact for the median)."""
    pairs = [
        (ys[j] - ys[i], xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    if not pairs:
        return None
    pairs = [(dy, dx) if dx > 0 else (-dy, -dx) for dy, dx in pairs]
    pairs.sort(key=lambda p: p[0] / p[1])
    mid = len(pairs) // 2
    upper = Fraction(*pairs[mid])
    return upper if len(pairs) % 2 else (Fraction(*pairs[mid - 1]) + upper) / 2


def theil_sen(points: Sequence[tuple[datetime, int]]) -> Fit | None:
    """The Theil-Sen line of ``points`` (time, bytes); None without two distinct times."""
    pts = thinned(sorted(points))
    at = pts[-1][0]
    xs = [(t - at) // timedelta(microseconds=1) for t, _ in pts]
    ys = [y for _, y in pts]
    per_micro = _median_slope(xs, ys)
    if per_micro is None:
        return None
    level = Fraction(statistics.median([y - per_micro * x for x, y in zip(xs, ys, strict=True)]))
    residuals = [float(y - level - per_micro * x) for x, y in zip(xs, ys, strict=True)]
    mean = sum(ys) / len(ys)
    total = sum((y - mean) ** 2 for y in ys)
    r2 = round(1 - sum(r * r for r in residuals) / total, 4) if total else None
    error = round(statistics.median(abs(r) for r in residuals))
    return Fit(per_micro * MICROS_PER_DAY, level, at, len(pts), r2, error)


# ---- one pool's plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A snapshot of a pool as the plan uses it; used_space = capacity - available."""

    at: datetime
    capacity: int
    used_space: int
    provisioned: int | None


def sample(s: SeriesPoint) -> Sample | None:
    """The sample of a series point; None without capacity and usable free space."""
    p = s.point
    if not p.capacity or p.available is None:
        return None
    return Sample(s.collected_at, p.capacity, p.capacity - p.available, p.provisioned)


def _until(fit: Fit | None, target: Fraction) -> Fraction | None:
    """Days until the line reaches ``target``: 0 if it is there, None if it never will."""
    if fit is None:
        return None
    if fit.level >= target:
        return Fraction(0)
    return (target - fit.level) / fit.slope if fit.slope > 0 else None


def _above(n: Fraction) -> int:
    """The smallest integer strictly greater than ``n``."""
    return math.floor(n) + 1


@dataclass(frozen=True)
class PoolPlan:
    """A pool's (or shared-fs group's) growth, days to full and capacity needed."""

    newest: PoolPoint  # the most recent point with figures
    at: datetime  # when it was collected
    samples: tuple[Sample, ...]  # of the window, oldest first
    limits: Thresholds
    horizon: timedelta
    used: Fit | None  # of used_space; None: not enough history
    provisioned: Fit | None
    note: str = ""

    @property
    def capacity(self) -> int:
        assert self.newest.capacity is not None
        return self.newest.capacity

    @property
    def used_space(self) -> int:
        assert self.newest.available is not None
        return self.capacity - self.newest.available

    @property
    def crit_space(self) -> Fraction:
        """used_crit % of the capacity, in bytes."""
        return self.capacity * Fraction(self.limits.used_crit) / 100

    @property
    def status(self) -> str:
        if self.used is None:
            return NOT_ENOUGH
        return "growing" if self.used.slope > 0 else "shrinking" if self.used.slope else "flat"

    @property
    def days_to_crit(self) -> Fraction | None:
        return _until(self.used, self.crit_space)

    @property
    def days_to_full(self) -> Fraction | None:
        return _until(self.used, Fraction(self.capacity))

    @property
    def crit_at(self) -> datetime | None:
        return self._date(self.days_to_crit)

    @property
    def full_at(self) -> datetime | None:
        return self._date(self.days_to_full)

    def _date(self, n: Fraction | None) -> datetime | None:
        return None if n is None or n > MAX_DAYS else self.at + timedelta(days=float(n))

    @property
    def horizon_end(self) -> datetime:
        return self.at + self.horizon

    @property
    def outlook(self) -> str:
        """'full' if used space reaches capacity within the horizon, 'critical' if it reaches
        used_crit, else ''."""
        limit = days(self.horizon)
        full, crit = self.days_to_full, self.days_to_crit
        if full is not None and full <= limit:
            return "full"
        return "critical" if crit is not None and crit <= limit else ""

    @property
    def level(self) -> str:
        """The card's level: crit (full within the horizon), warn (critical within it)."""
        if self.used is None:
            return "unknown"
        return {"full": "crit", "critical": "warn"}.get(self.outlook, "ok")

    @property
    def worst_used_space(self) -> int | None:
        """Used space if every thin disk filled now: used_space + exposure."""
        e = self.newest.exposure
        return None if e is None else self.used_space + e

    @property
    def worst_overflow(self) -> int | None:
        w = self.worst_used_space
        return None if w is None else max(0, w - self.capacity)

    def _ahead(self, fit: Fit | None) -> int | None:
        """The line at the horizon's end, growth below 0 counted as 0."""
        if fit is None:
            return None
        return round(fit.level + max(fit.slope, Fraction(0)) * days(self.horizon))

    @property
    def horizon_used_space(self) -> int | None:
        return self._ahead(self.used)

    @property
    def horizon_provisioned(self) -> int | None:
        return self._ahead(self.provisioned)

    @property
    def horizon_worst_used_space(self) -> int | None:
        """Every thin disk filled now, and what is provisioned until the horizon written."""
        expected, w = self.horizon_used_space, self.worst_used_space
        if expected is None or w is None:
            return None
        fit = self.provisioned
        growth = round(max(fit.slope, Fraction(0)) * days(self.horizon)) if fit else 0
        return max(expected, w + growth)

    def needed(self, space: int | None) -> int | None:
        """The smallest capacity keeping ``space`` below used_crit % and the horizon's
        provisioned below overcommit_crit * capacity."""
        if space is None:
            return None
        by_used = _above(Fraction(space) * 100 / Fraction(self.limits.used_crit))
        prov = self.horizon_provisioned
        by_ratio = _above(Fraction(prov) / Fraction(self.limits.overcommit_crit)) if prov else 0
        return max(by_used, by_ratio)

    def row(self) -> dict[str, Any]:
        """The ``PLAN_COLUMNS`` of this plan: integer bytes, days to 1 decimal, ISO dates."""
        return plan_row(self)


def _days_out(n: Fraction | None) -> float | None:
    return None if n is None else round(float(n), 1)


def _date_out(at: datetime | None) -> str | None:
    return None if at is None else at.date().isoformat()


def plan_row(p: PoolPlan) -> dict[str, Any]:
    """A plan as a row of ``PLAN_COLUMNS``."""
    pt, fit = p.newest, p.used
    needed, worst = p.needed(p.horizon_used_space), p.needed(p.horizon_worst_used_space)
    return {
        "host": pt.host, "pool": pt.pool, "type": pt.type, "status": p.status,
        "snapshots": len(p.samples), "first_at": p.samples[0].at.isoformat(),
        "last_at": p.at.isoformat(), "capacity": p.capacity, "used_space": p.used_space,
        "available": pt.available, "provisioned": pt.provisioned,
        "overcommit_ratio": pt.overcommit_ratio, "exposure": pt.exposure,
        "used_space_per_day": fit.per_day if fit else None,
        "provisioned_per_day": p.provisioned.per_day if p.provisioned else None,
        "fit_r2": fit.r2 if fit else None, "fit_error": fit.error if fit else None,
        "used_crit": p.limits.used_crit, "crit_space": round(p.crit_space),
        "days_to_crit": _days_out(p.days_to_crit), "crit_date": _date_out(p.crit_at),
        "days_to_full": _days_out(p.days_to_full), "full_date": _date_out(p.full_at),
        "worst_used_space": p.worst_used_space, "worst_overflow": p.worst_overflow,
        "horizon_days": _days_out(days(p.horizon)),
        "horizon_used_space": p.horizon_used_space,
        "horizon_provisioned": p.horizon_provisioned,
        "horizon_worst_used_space": p.horizon_worst_used_space,
        "needed_capacity": needed, "needed_capacity_worst": worst,
        "to_buy": None if needed is None else max(0, needed - p.capacity),
        "to_buy_worst": None if worst is None else max(0, worst - p.capacity),
        "note": p.note,
    }  # fmt: skip


def _explain(samples: Sequence[Sample], fit: Fit | None) -> str:
    """Why a series gives no fit ('' if it does)."""
    if len(samples) < MIN_SNAPSHOTS:
        return f"{NOT_ENOUGH}: {len(samples)} snapshot(s), {MIN_SNAPSHOTS} needed"
    if samples[-1].at - samples[0].at < MIN_SPAN:
        return f"{NOT_ENOUGH}: the snapshots span less than a day"
    return "" if fit else f"{NOT_ENOUGH}: no two snapshots at different times"


def plan_pool(
    series: Sequence[SeriesPoint], limits: Thresholds, horizon: timedelta = HORIZON
) -> PoolPlan | None:
    """The plan of one pool's series (oldest first); None if no point has figures."""
    samples = tuple(s for s in map(sample, series) if s is not None)
    if not samples:
        return None
    newest = next(s for s in reversed(series) if sample(s) is not None)
    used = theil_sen([(s.at, s.used_space) for s in samples])
    prov = [(s.at, s.provisioned) for s in samples if s.provisioned is not None]
    provisioned = theil_sen(prov) if len(prov) >= MIN_SNAPSHOTS else None
    why = _explain(samples, used)
    notes = [why] if why else []
    if series[-1].point.capacity is None:
        notes.append(
            f"no figures at {series[-1].collected_at.isoformat()} ({series[-1].point.state})"
        )
    ok = not why
    return PoolPlan(
        newest.point, newest.collected_at, samples, limits, horizon,
        used if ok else None, provisioned if ok else None, "; ".join(notes),
    )  # fmt: skip


# ---- every pool of a history -----------------------------------------------------------------


def _rank(p: PoolPlan) -> tuple[int, float, int, str, str]:
    """Verdict order: full within the horizon (soonest first), then critical within it, then
    the rest (soonest to reach critical, then the largest worst-case overflow); not enough
    history last."""
    rank = {"full": 0, "critical": 1}.get(p.outlook, 2 if p.used else 3)
    soon = p.days_to_full if rank == 0 else p.days_to_crit
    return (
        rank,
        math.inf if soon is None else float(soon),
        -(p.worst_overflow or 0),
        p.newest.host,
        p.newest.pool,
    )


@dataclass(frozen=True)
class Planning:
    """The plans of every pool and shared-fs group over a window of the history."""

    end: datetime  # the newest snapshot: the window counts back from it
    window: timedelta
    horizon: timedelta
    pools: tuple[PoolPlan, ...]  # in verdict order

    @property
    def running_out(self) -> tuple[PoolPlan, ...]:
        """Pools reaching capacity or used_crit within the horizon, soonest first."""
        return tuple(p for p in self.pools if p.outlook)

    @property
    def overflowing(self) -> tuple[PoolPlan, ...]:
        """Pools that overflow if every thin disk fills now."""
        return tuple(p for p in self.pools if p.worst_overflow)

    @property
    def short(self) -> tuple[PoolPlan, ...]:
        """Pools with not enough history."""
        return tuple(p for p in self.pools if p.used is None)

    def as_dict(self) -> dict[str, Any]:
        """The ``planning`` key of summary.json."""
        return {
            "newest_at": self.end.isoformat(),
            "window_days": _days_out(days(self.window)),
            "horizon_days": _days_out(days(self.horizon)),
            "pools": [p.row() for p in self.pools],
        }


def plan(
    series: Iterable[SeriesPoint],
    config: Config,
    *,
    end: datetime,
    window: timedelta = WINDOW,
    horizon: timedelta = HORIZON,
) -> Planning:
    """Plans of every pool and shared-fs group (unmanaged rows left out) from the series
    points collected in [end - window, end]."""
    start = end - window
    by_key: dict[tuple[str, str, str], list[SeriesPoint]] = defaultdict(list)
    for s in sorted(series, key=lambda s: (s.collected_at, s.snapshot_id)):
        if start <= s.collected_at <= end and s.point.type != "unmanaged":
            by_key[(s.point.host, s.point.pool, s.point.type)].append(s)
    plans = [
        plan_pool(points, config.for_pool(key[1], key[0]), horizon)
        for key, points in by_key.items()
    ]
    found = sorted((p for p in plans if p is not None), key=_rank)
    return Planning(end, window, horizon, tuple(found))


# ---- what-if ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """New raw disks (count, virtual size), thin (sparse) or preallocated, and volumes removed."""

    add: tuple[tuple[int, int], ...] = ()
    preallocated: bool = False
    remove: tuple[str, ...] = ()

    @property
    def added(self) -> int:
        return sum(n * size for n, size in self.add)

    @property
    def disks(self) -> int:
        return sum(n for n, _ in self.add)


def parse_add(text: str) -> tuple[int, int]:
    """``20x40G`` → (20, 42949672960); ``40G`` → (1, …). Sizes as ``parse_size`` reads them."""
    count, sep, size = text.strip().lower().partition("x")
    if not sep:
        count, size = "1", count
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{text!r}: expected COUNTxSIZE such as 20x40G")
    return int(count), parse_size(size)


@dataclass(frozen=True)
class Delta:
    """What a change does to a pool's figures at once."""

    volumes: int
    thin: int
    preallocated: int
    provisioned: int
    used: int  # Σ disk size, and so used space (usable free goes down by as much)
    exposure: int


def delta(change: Change, pool: str, volumes: Sequence[VolumePoint]) -> Delta:
    """The change's effect on ``pool``, whose volumes (and all others of the snapshot, for
    the backing-file check) are ``volumes``: a thin new raw disk holds 0 bytes and may grow
    by its virtual size; a preallocated one holds its virtual size and cannot grow."""
    mine = {v.volume: v for v in volumes if v.pool == pool}
    gone = []
    for name in change.remove:
        v = mine.get(name)
        if v is None:
            raise NotFound(f"volume {name!r} is not in pool {pool!r} in the newest snapshot")
        users = [o.volume for o in volumes if o.backing_file and o.backing_file == v.path]
        if users:
            raise PolicyError(f"{name} is the backing file of {', '.join(users)}")
        gone.append(v)
    n, size = change.disks, change.added
    return Delta(
        volumes=n - len(gone),
        thin=(0 if change.preallocated else n) - sum(v.provisioning == "thin" for v in gone),
        preallocated=(n if change.preallocated else 0)
        - sum(v.provisioning == "preallocated" for v in gone),
        provisioned=size - sum(v.virtual_size or 0 for v in gone),
        used=(size if change.preallocated else 0) - sum(v.disk_size or 0 for v in gone),
        exposure=(0 if change.preallocated else size) - sum(v.growth or 0 for v in gone),
    )


def _plus(a: int | None, b: int) -> int | None:
    return None if a is None else a + b


def what_if(p: PoolPlan, d: Delta) -> PoolPlan:
    """The plan after the change: the newest figures moved by ``d``, the fitted lines moved
    by the immediate change of used space and provisioned size, their growth unchanged."""
    pt = p.newest
    provisioned = _plus(pt.provisioned, d.provisioned)
    after = replace(
        pt, volumes=_plus(pt.volumes, d.volumes), thin=_plus(pt.thin, d.thin),
        preallocated=_plus(pt.preallocated, d.preallocated), provisioned=provisioned,
        used=_plus(pt.used, d.used), available=_plus(pt.available, -d.used),
        allocation=_plus(pt.allocation, d.used), exposure=_plus(pt.exposure, d.exposure),
        overcommit_ratio=overcommit_ratio(provisioned, pt.capacity) if provisioned is not None
        else None,
    )  # fmt: skip
    return replace(
        p, newest=after,
        used=p.used.shifted(d.used) if p.used else None,
        provisioned=p.provisioned.shifted(d.provisioned) if p.provisioned else None,
    )  # fmt: skip


def affected(planning: Planning, host: str, pool: str) -> list[PoolPlan]:
    """The plans a change of ``pool`` on ``host`` touches: the pool and its shared-fs group."""
    return [
        p for p in planning.pools
        if p.newest.host == host and (p.newest.pool == pool or pool in p.newest.members)
    ]  # fmt: skip
