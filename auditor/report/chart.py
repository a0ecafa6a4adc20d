"""The geometry of a planning chart (inline SVG, drawn by templates/_planning.html.j2).

Time runs left to right from the first snapshot of the window to the horizon's end; bytes
run bottom to top from 0. The chart shows used space and provisioned size per snapshot, their
fitted lines continued to the horizon, the capacity and critical lines and the days to full.
Pure: the plan arrives as any object with the attributes of the protocols below
(``auditor.planning.PoolPlan`` has them; this layer does not import the services).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, Protocol

from auditor.units import iec

WIDTH, HEIGHT = 400, 220  # SVG user units: about the pixels of a card
LEFT, RIGHT, TOP, BOTTOM = 62, 8, 36, 22  # the plot's margins
PROVISIONED_CAP = 2  # the y axis stops at this many capacities; provisioned beyond is cut
USED_CAP = 1.5  # and the fitted used space at this many
NICE = (1, 2, 5, 10, 20, 50, 100, 200, 500)
DAY_STEPS = (1, 2, 7, 14, 30, 61, 91, 182, 365, 730)


class FitLike(Protocol):
    def value(self, when: datetime) -> int: ...


class SampleLike(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def used_space(self) -> int: ...
    @property
    def provisioned(self) -> int | None: ...


class PlanLike(Protocol):
    """What a chart needs of a pool's plan."""

    @property
    def samples(self) -> Sequence[SampleLike]: ...
    @property
    def at(self) -> datetime: ...
    @property
    def horizon_end(self) -> datetime: ...
    @property
    def capacity(self) -> int: ...
    @property
    def crit_space(self) -> Fraction: ...
    @property
    def used(self) -> FitLike | None: ...
    @property
    def provisioned(self) -> FitLike | None: ...
    @property
    def crit_at(self) -> datetime | None: ...
    @property
    def full_at(self) -> datetime | None: ...


class PlanningLike(Protocol):
    """What the page needs of the planning section: its ``summary.json`` figures."""

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Tick:
    pos: float  # x or y in SVG units
    label: str


@dataclass(frozen=True)
class Marker:
    """A vertical line at a moment (now, critical, full) with its label."""

    x: float
    label: str
    kind: str  # now, crit, full
    anchor: str  # text-anchor of the label: start or end
    y: float  # baseline of the label


@dataclass(frozen=True)
class Line:
    """A polyline (``points``, 'x,y x,y …') and its dots."""

    points: str
    dots: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: float  # the plot area
    top: float
    right: float
    bottom: float
    xticks: tuple[Tick, ...]
    yticks: tuple[Tick, ...]
    used: Line
    provisioned: Line
    used_fit: str  # 'x,y x,y' or ''
    provisioned_fit: str
    capacity_y: float
    crit_y: float
    now_x: float
    markers: tuple[Marker, ...]
    clipped: bool  # provisioned goes beyond the top of the chart


def iso_date(at: datetime) -> str:
    """The UTC date: '2026-03-04'."""
    return at.astimezone(UTC).date().isoformat()


def day(at: datetime) -> str:
    """'Mar 4'."""
    return f"{at:%b} {at.day}"


def in_days(n: timedelta | Fraction | None) -> str:
    """'12 days', '1 day', '0.4 days'; '' for None."""
    if n is None:
        return ""
    value = float(n / timedelta(days=1)) if isinstance(n, timedelta) else float(n)
    text = f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")
    return f"{text} day{'' if text == '1' else 's'}"


def nice_step(span: float, ticks: int = 4) -> int:
    """A step of 1, 2 or 5 times 10^k of an IEC unit, giving about ``ticks`` steps over ``span``."""
    raw = max(span / ticks, 1.0)
    unit = 1
    while unit * 1024 <= raw:
        unit *= 1024
    return unit * next((n for n in NICE if n * unit >= raw), 1024)


class _Scale:
    """Time and bytes to SVG units."""

    def __init__(self, start: datetime, end: datetime, top: float) -> None:
        self.start, self.span = start, max((end - start).total_seconds(), 1.0)
        self.top = top

    def x(self, at: datetime) -> float:
        return round(
            LEFT + (at - self.start).total_seconds() / self.span * (WIDTH - LEFT - RIGHT), 1
        )

    def y(self, n: float) -> float:
        return round(HEIGHT - BOTTOM - n / self.top * (HEIGHT - TOP - BOTTOM), 1)


def _line(s: _Scale, points: Sequence[tuple[datetime, int]]) -> Line:
    dots = tuple((s.x(at), s.y(n)) for at, n in points)
    return Line(" ".join(f"{x},{y}" for x, y in dots), dots)


def _fit(s: _Scale, fit: FitLike | None, start: datetime, end: datetime) -> str:
    if fit is None:
        return ""
    return f"{s.x(start)},{s.y(fit.value(start))} {s.x(end)},{s.y(fit.value(end))}"


def _top(plan: PlanLike) -> tuple[float, bool]:
    """The y axis' top: every snapshot's used space, the capacity, the fitted used space at
    the horizon up to USED_CAP capacities and provisioned up to PROVISIONED_CAP capacities
    (lines beyond are cut at the top); whether provisioned goes beyond it."""
    end = plan.horizon_end
    used = [s.used_space for s in plan.samples] + [plan.capacity]
    prov = [s.provisioned for s in plan.samples if s.provisioned is not None]
    if plan.used:
        used.append(min(plan.used.value(end), round(plan.capacity * USED_CAP)))
    if plan.provisioned:
        prov.append(plan.provisioned.value(end))
    cap = plan.capacity * PROVISIONED_CAP
    top = max([*used, *(min(p, cap) for p in prov)]) * 1.08
    return top, any(p > top for p in prov)


def _xticks(s: _Scale, start: datetime, end: datetime) -> tuple[Tick, ...]:
    """Midnights (UTC) every 1, 2, 7 … days, about five of them."""
    step = next((d for d in DAY_STEPS if (end - start) / timedelta(days=d) <= 6), 730)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    at = midnight if midnight == start else midnight + timedelta(days=1)
    ticks = []
    while at <= end:
        ticks.append(Tick(s.x(at), day(at)))
        at += timedelta(days=step)
    return tuple(ticks)


def _markers(s: _Scale, plan: PlanLike) -> tuple[Marker, ...]:
    """Now, and the critical and full dates within the chart."""
    out = [Marker(s.x(plan.at), "now", "now", "end", TOP - 24)]
    for kind, at, y in (("crit", plan.crit_at, TOP - 13), ("full", plan.full_at, TOP - 2)):
        if at is not None and plan.at < at <= plan.horizon_end:
            x = s.x(at)
            anchor = "end" if x > WIDTH - RIGHT - 75 else "start" if x < LEFT + 75 else "middle"
            word = "critical" if kind == "crit" else "full"
            out.append(Marker(x, f"{word} {day(at)} (in {in_days(at - plan.at)})", kind, anchor, y))
    return tuple(out)


def chart(plan: PlanLike) -> Chart | None:
    """The chart of a plan; None without a sample."""
    if not plan.samples:
        return None
    start, end = plan.samples[0].at, plan.horizon_end
    top, clipped = _top(plan)
    s = _Scale(start, end, top)
    step = nice_step(top)
    yticks = tuple(Tick(s.y(n), iec(n).replace(".0 ", " ")) for n in range(0, int(top) + 1, step))
    prov = [(p.at, p.provisioned) for p in plan.samples if p.provisioned is not None]
    return Chart(
        WIDTH, HEIGHT, LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM,
        _xticks(s, start, end), yticks,
        _line(s, [(p.at, p.used_space) for p in plan.samples]), _line(s, prov),
        _fit(s, plan.used, start, end), _fit(s, plan.provisioned, start, end),
        s.y(plan.capacity), s.y(float(plan.crit_space)), s.x(plan.at), _markers(s, plan), clipped,
    )  # fmt: skip
