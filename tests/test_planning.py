"""Capacity planning without a daemon: the fit on synthetic points, days to full, the worst
case, the capacity needed, what-if, the chart's geometry, and `auditor plan` on histories
recorded from libvirt's test driver."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import pytest
from clirun import auditor
from summaries import GiB

from auditor import planning
from auditor.config import Config, Thresholds
from auditor.errors import NotFound, PolicyError
from auditor.interfaces import PoolPoint, SeriesPoint, VolumePoint
from auditor.planning import (
    PLAN_COLUMNS,
    Change,
    Fit,
    delta,
    parse_add,
    parse_span,
    plan,
    plan_pool,
    theil_sen,
    thinned,
    what_if,
)
from auditor.report.chart import chart, in_days, nice_step

T0 = datetime(2025, 6, 1, tzinfo=UTC)  # long ago: planning counts from the newest snapshot
MiB = 1 << 20
DAY = timedelta(days=1)


def point(
    pool: str = "images",
    capacity: int | None = 100 * GiB,
    used: int = 0,
    provisioned: int = 0,
    exposure: int = 0,
    **kw: object,
) -> PoolPoint:
    """A pool point whose used space (capacity - available) is ``used``."""
    active = capacity is not None
    base = PoolPoint(
        host="h1", pool=pool, type="dir", state="running" if active else "inactive",
        capacity=capacity, allocation=used if active else None,
        available=capacity - used if capacity is not None else None, volumes=3, thin=2,
        preallocated=1, unknown=0, provisioned=provisioned if active else None,
        used=used if active else None,
        overcommit_ratio=round(provisioned / capacity, 4) if capacity else None,
        exposure=exposure if active else None, filesystem="", target=f"/{pool}",
        autostart=True, persistent=True, members=(),
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def series(
    used: list[int], *, at: list[float] | None = None, start: datetime = T0, **kw: object
) -> list[SeriesPoint]:
    """Snapshots of one pool, at day offsets ``at`` (default 0, 1, 2 …)."""
    offsets = at if at is not None else list(range(len(used)))
    return [
        SeriesPoint(start + timedelta(days=d), i + 1, point(used=u, **kw))  # type: ignore[arg-type]
        for i, (d, u) in enumerate(zip(offsets, used, strict=True))
    ]


def one(points: list[SeriesPoint], limits: Thresholds = Thresholds()) -> planning.PoolPlan:
    found = plan_pool(points, limits)
    assert found is not None
    return found


def least_squares(xs: list[float], ys: list[float]) -> float:
    return statistics.linear_regression(xs, ys).slope


# ---- the fit ---------------------------------------------------------------------------------


def test_exact_line_gives_its_slope_and_level_exactly() -> None:
    pts = [(T0 + timedelta(days=d), 10 * GiB + d * 3 * GiB) for d in range(8)]
    fit = theil_sen(pts)
    assert fit is not None
    assert fit.slope == 3 * GiB and fit.level == 10 * GiB + 7 * 3 * GiB
    assert fit.at == T0 + 7 * DAY and fit.points == 8
    assert fit.r2 == 1.0 and fit.error == 0
    assert fit.value(T0 + 17 * DAY) == 10 * GiB + 17 * 3 * GiB


def test_one_odd_snapshot_does_not_swing_the_fit() -> None:
    """Least squares follows a single outlier; the Theil-Sen slope does not move."""
    ys = [50 * GiB + d * GiB for d in range(10)]
    ys[6] += 40 * GiB  # one odd snapshot: a temporary dump
    pts = [(T0 + timedelta(days=d), y) for d, y in enumerate(ys)]
    fit = theil_sen(pts)
    assert fit is not None and fit.slope == GiB and fit.level == 59 * GiB
    lsq = least_squares(list(range(10)), [float(y) for y in ys])
    assert abs(lsq - GiB) / GiB > 0.1  # least squares is more than 10 % off
    assert fit.error == 0 and fit.r2 is not None and fit.r2 < 0.9  # R² sees the odd point


def test_fractional_days_and_a_gap() -> None:
    """Times are exact to the microsecond; a week without snapshots changes nothing."""
    at = [0, 0.5, 1, 2, 9, 9.25, 10]
    pts = [(T0 + timedelta(days=d), round(d * 4 * MiB) + GiB) for d in at]
    fit = theil_sen(pts)
    assert fit is not None and fit.slope == 4 * MiB
    assert fit.value(T0 + 20 * DAY) == GiB + 80 * MiB


def test_even_number_of_slopes_takes_the_middle_two() -> None:
    pts = [(T0, 0), (T0 + DAY, 10), (T0 + 2 * DAY, 30)]  # slopes 10, 20, 15 → median 15
    fit = theil_sen(pts)
    assert fit is not None and fit.slope == 15
    pts4 = [*pts, (T0 + 3 * DAY, 30)]  # slopes 10, 15, 10, 20, 10, 0 → (10 + 10) / 2
    fit4 = theil_sen(pts4)
    assert fit4 is not None and fit4.slope == 10


def test_no_fit_without_two_distinct_times() -> None:
    assert theil_sen([(T0, 1), (T0, 5)]) is None


def test_long_series_are_thinned_keeping_the_newest() -> None:
    pts = [(T0 + timedelta(hours=h), h) for h in range(1000)]
    kept = thinned(pts, 250)
    assert len(kept) <= 250 and kept[-1] == pts[-1] and kept == sorted(kept)
    fit = theil_sen(pts)
    assert fit is not None and fit.slope == 24 and fit.points == len(kept)


# ---- a pool's plan ---------------------------------------------------------------------------


def test_days_to_full_and_to_critical_match_a_hand_computation() -> None:
    used = [40 * GiB + d * 2 * GiB for d in range(6)]  # 50 GiB on day 5, +2 GiB a day
    p = one(series(used, provisioned=120 * GiB, exposure=30 * GiB))
    assert p.status == "growing" and p.used is not None and p.used.per_day == 2 * GiB
    assert p.days_to_full == Fraction(100 - 50, 2)
    assert p.days_to_crit == Fraction(90 - 50, 2)
    assert p.full_at == T0 + 5 * DAY + 25 * DAY and p.crit_at == T0 + 25 * DAY
    assert p.outlook == "full" and p.level == "crit"
    row = p.row()
    assert list(row) == PLAN_COLUMNS
    assert (row["days_to_full"], row["full_date"]) == (25.0, "2025-07-01")
    assert (row["days_to_crit"], row["crit_date"]) == (20.0, "2025-06-26")
    assert row["used_space_per_day"] == 2 * GiB and row["provisioned_per_day"] == 0
    assert row["crit_space"] == 90 * GiB and row["snapshots"] == 6


def test_worst_case_and_capacity_needed() -> None:
    used = [40 * GiB + d * GiB for d in range(6)]  # 45 GiB now, +1 GiB a day
    prov = [150 * GiB + d * 2 * GiB for d in range(6)]  # 160 GiB now, +2 GiB a day
    points = [
        SeriesPoint(T0 + d * DAY, d, point(used=u, provisioned=v, exposure=70 * GiB))
        for d, (u, v) in enumerate(zip(used, prov, strict=True))
    ]
    p = one(points)
    r = p.row()
    assert r["worst_used_space"] == 115 * GiB and r["worst_overflow"] == 15 * GiB
    assert r["horizon_used_space"] == 45 * GiB + 90 * GiB
    assert r["horizon_provisioned"] == 160 * GiB + 180 * GiB
    # every thin disk filled now, and the provisioning of the next 90 days written in full
    assert r["horizon_worst_used_space"] == 45 * GiB + 70 * GiB + 180 * GiB
    # the smallest capacity with used space below 90 % and provisioned below 2 x capacity
    by_used = math.floor(Fraction(135 * GiB * 100, 90)) + 1
    assert r["needed_capacity"] == max(by_used, 170 * GiB + 1)
    assert r["needed_capacity_worst"] == math.floor(Fraction(295 * GiB * 100, 90)) + 1
    assert r["to_buy"] == r["needed_capacity"] - 100 * GiB
    assert r["to_buy_worst"] == r["needed_capacity_worst"] - 100 * GiB
    for key in planning.BYTE_COLUMNS:
        assert isinstance(r[key], int), key


def test_needed_capacity_is_the_smallest_that_stays_below_critical() -> None:
    p = one(series([1000, 1001, 1002, 1003], capacity=2000))
    need = p.needed(1000)
    assert need is not None
    assert 1000 * 100 / need < 90 <= 1000 * 100 / (need - 1)


def test_flat_history_has_no_full_date() -> None:
    p = one(series([30 * GiB] * 5))
    assert p.status == "flat" and p.days_to_full is None and p.full_at is None
    assert p.row()["full_date"] is None and p.row()["days_to_crit"] is None
    assert p.outlook == "" and p.level == "ok"
    assert p.row()["horizon_used_space"] == 30 * GiB


def test_a_shrinking_pool_never_fills_and_plans_no_shrink() -> None:
    p = one(series([80 * GiB - d * GiB for d in range(5)]))
    assert p.status == "shrinking" and p.used is not None and p.used.per_day == -GiB
    assert p.days_to_full is None and p.days_to_crit is None
    assert p.row()["horizon_used_space"] == 76 * GiB  # growth below 0 counted as 0


def test_already_over_critical_and_full() -> None:
    over = one(series([92 * GiB] * 4))
    assert over.days_to_crit == 0 and over.crit_at == over.at and over.outlook == "critical"
    full = one(series([100 * GiB] * 3 + [100 * GiB]))
    assert full.days_to_full == 0 and full.outlook == "full"


@pytest.mark.parametrize(
    ("used", "at", "why"),
    [
        ([GiB], [0], "1 snapshot(s), 3 needed"),
        ([GiB, 2 * GiB], [0, 1], "2 snapshot(s), 3 needed"),
        ([GiB, 2 * GiB, 3 * GiB], [0, 0.2, 0.5], "less than a day"),
    ],
)
def test_not_enough_history_is_said_never_made_up(
    used: list[int], at: list[float], why: str
) -> None:
    p = one(series(used, at=at))
    assert p.status == "not enough history" and why in p.note
    assert p.used is None and p.provisioned is None and p.outlook == "" and p.level == "unknown"
    row = p.row()
    for key in ("used_space_per_day", "days_to_full", "full_date", "needed_capacity", "to_buy"):
        assert row[key] is None, key
    assert row["used_space"] == used[-1]  # the figures of now are facts, still shown


def test_points_without_figures_are_left_out() -> None:
    pts = series([GiB, 2 * GiB, 3 * GiB, 0])
    pts[-1] = replace(pts[-1], point=point(capacity=None))  # stopped in the newest snapshot
    p = one(pts)
    assert len(p.samples) == 3 and p.used is not None and p.used.per_day == GiB
    assert "no figures at" in p.note and "inactive" in p.note
    assert plan_pool([replace(pts[-1])], Thresholds()) is None


def test_a_long_gap_in_the_history() -> None:
    at = [0, 1, 2, 30, 31]
    p = one(series([GiB + round(d * 512 * MiB) for d in at], at=at))
    assert p.used is not None and p.used.slope == 512 * MiB


def test_the_window_counts_back_from_the_newest_snapshot_not_today() -> None:
    old = series([GiB + d * MiB for d in range(40)])  # 2025: long before today
    end = old[-1].collected_at
    got = plan(old, Config(), end=end, window=timedelta(days=10))
    (p,) = got.pools
    assert len(p.samples) == 11 and p.samples[0].at == end - timedelta(days=10)
    assert p.used is not None and p.used.per_day == MiB
    assert got.as_dict()["newest_at"] == end.isoformat()


def test_policy_thresholds_apply_per_pool() -> None:
    pts = series([40 * GiB + d * 2 * GiB for d in range(6)])
    cfg = Config(pools={"images": Thresholds(used_crit=70.0)})
    (p,) = plan(pts, cfg, end=pts[-1].collected_at).pools
    assert p.days_to_crit == Fraction(70 - 50, 2) and p.row()["used_crit"] == 70.0


def test_pools_running_out_come_first() -> None:
    def named(name: str, used: list[int]) -> list[SeriesPoint]:
        return [replace(s, point=replace(s.point, pool=name)) for s in series(used)]

    pts = (
        named("flat", [10 * GiB] * 4)
        + named("crit-soon", [70 * GiB + d * GiB for d in range(4)])  # 90 % in 17 days
        + named("full-late", [50 * GiB + d * GiB for d in range(4)])  # 90 % in 37, full in 47
        + named("full-soon", [80 * GiB + d * GiB for d in range(4)])  # full in 17
        + named("short", [GiB])
    )
    got = plan(pts, Config(), end=T0 + 3 * DAY, horizon=timedelta(days=30))
    assert [p.newest.pool for p in got.pools] == [
        "full-soon",
        "crit-soon",
        "full-late",
        "flat",
        "short",
    ]  # fmt: skip  (the rest: soonest to reach critical first)
    assert [p.newest.pool for p in got.running_out] == ["full-soon", "crit-soon"]
    assert [p.newest.pool for p in got.short] == ["short"]


def test_unmanaged_rows_are_not_planned_and_groups_are() -> None:
    pts = series([GiB, 2 * GiB, 3 * GiB])
    group = [replace(s, point=replace(s.point, pool="a+b", type="shared-fs")) for s in pts]
    loose = [replace(s, point=replace(s.point, pool="(unmanaged)", type="unmanaged")) for s in pts]
    got = plan(pts + group + loose, Config(), end=pts[-1].collected_at)
    assert sorted(p.newest.pool for p in got.pools) == ["a+b", "images"]


# ---- what-if ---------------------------------------------------------------------------------


def vol(name: str, virtual: int, size: int, prov: str, backing: str = "") -> VolumePoint:
    growth = max(0, virtual - size)
    return VolumePoint("h1", "images", name, f"/images/{name}", "raw", prov, virtual, size,
                       growth, True, (), backing, "file", "", None)  # fmt: skip


def test_parse_add_and_span() -> None:
    assert parse_add("20x40G") == (20, 20 * 40 * GiB // 20)
    assert parse_add("1X512M") == (1, 512 * MiB) and parse_add("5GB") == (1, 5 * 10**9)
    for bad in ("0x4G", "x4G", "ax4G"):
        with pytest.raises(ValueError, match="COUNTxSIZE"):
            parse_add(bad)
    assert parse_span("30d") == timedelta(days=30) and parse_span(" 12h ") == timedelta(hours=12)
    assert parse_span("2w") == timedelta(weeks=2)
    for bad in ("0d", "30", "1y", "-3d"):
        with pytest.raises(ValueError, match="duration"):
            parse_span(bad)


def test_what_if_equals_a_hand_computation() -> None:
    vols = [vol("a.raw", 40 * GiB, 40 * GiB, "preallocated"),
            vol("b.raw", 60 * GiB, 5 * GiB, "thin"),
            vol("c.raw", 20 * GiB, 2 * GiB, "thin")]  # fmt: skip
    used = [40 * GiB + d * GiB for d in range(4)]  # 43 GiB now, +1 GiB a day
    p = one(series(used, provisioned=120 * GiB, exposure=73 * GiB))
    thin = delta(Change(((20, 4 * GiB),), remove=("b.raw",)), "images", vols)
    assert (thin.provisioned, thin.used, thin.exposure) == (80 * GiB - 60 * GiB, -5 * GiB,
                                                            80 * GiB - 55 * GiB)  # fmt: skip
    assert (thin.volumes, thin.thin, thin.preallocated) == (19, 19, 0)
    after = what_if(p, thin).row()
    assert after["provisioned"] == 140 * GiB and after["exposure"] == 98 * GiB
    assert after["available"] == 100 * GiB - 43 * GiB + 5 * GiB
    assert after["used_space"] == 38 * GiB and after["overcommit_ratio"] == 1.4
    assert after["worst_used_space"] == 38 * GiB + 98 * GiB and after["worst_overflow"] == 36 * GiB
    assert after["days_to_full"] == 62.0 and after["days_to_crit"] == 52.0  # (90 - 38) / 1
    assert after["used_space_per_day"] == GiB  # growth is not changed by a what-if

    pre = delta(Change(((2, 10 * GiB),), preallocated=True), "images", vols)
    assert (pre.provisioned, pre.used, pre.exposure) == (20 * GiB, 20 * GiB, 0)
    after = what_if(p, pre).row()
    assert after["used_space"] == 63 * GiB and after["available"] == 37 * GiB
    assert after["days_to_full"] == 37.0 and after["provisioned"] == 140 * GiB


def test_what_if_refuses_unknown_volumes_and_backing_files() -> None:
    vols = [vol("base.qcow2", 10 * GiB, GiB, "thin"),
            vol("top.qcow2", 10 * GiB, GiB, "thin", backing="/images/base.qcow2")]  # fmt: skip
    with pytest.raises(NotFound, match="not in pool"):
        delta(Change(remove=("nope",)), "images", vols)
    with pytest.raises(PolicyError, match=r"backing file of top\.qcow2"):
        delta(Change(remove=("base.qcow2",)), "images", vols)


# ---- the chart -------------------------------------------------------------------------------


def test_nice_steps_and_day_text() -> None:
    assert nice_step(100 * GiB) == 50 * GiB and nice_step(4 * GiB) == GiB
    assert nice_step(3 * 1024**4) == 1024**4 and nice_step(10) == 5
    assert in_days(Fraction(1)) == "1 day" and in_days(timedelta(days=30)) == "30 days"
    assert in_days(Fraction(3, 2)) == "1.5 days" and in_days(None) == ""


def test_chart_geometry() -> None:
    used = [40 * GiB + d * 2 * GiB for d in range(6)]
    p = one(series(used, provisioned=150 * GiB))
    c = chart(p)
    assert c is not None
    ys = [y for _, y in c.used.dots]
    assert ys == sorted(ys, reverse=True)  # growing: SVG y goes down
    xs = [x for x, _ in c.used.dots]
    assert xs[0] == c.left and all(c.left <= x <= c.right for x in xs)
    assert c.top <= c.capacity_y < c.crit_y < c.bottom
    # the fitted line starts at the first snapshot and ends at the horizon (plot's right edge)
    (x0, y0), (x1, y1) = (tuple(map(float, xy.split(","))) for xy in c.used_fit.split())
    assert (x0, x1) == (c.left, c.right) and y0 == pytest.approx(ys[0], abs=0.2)
    assert y1 < c.top  # 230 GiB at the horizon: cut, the axis stops at 1.5 x capacity (+8 %)
    assert c.yticks[-1].label == "150 GiB"
    kinds = [m.kind for m in c.markers]
    assert kinds == ["now", "crit", "full"] and c.now_x == xs[-1]
    assert [m.label for m in c.markers][1:] == ["critical Jun 26 (in 20 days)",
                                                "full Jul 1 (in 25 days)"]  # fmt: skip
    assert c.yticks[0].label == "0 B" and not c.clipped


def test_chart_cuts_provisioned_far_beyond_capacity() -> None:
    p = one(series([GiB, 2 * GiB, 3 * GiB], provisioned=900 * GiB))
    c = chart(p)
    assert c is not None and c.clipped
    assert float(c.yticks[-1].label.split()[0]) <= 2 * 100 * 1.08


class Attributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_planning_section_on_the_page_obeys_the_csp(tmp_path: Path) -> None:
    """No style attribute, no script, no external reference: colours are SVG attributes."""
    from summaries import summary

    from auditor.history import open_history
    from auditor.nightly import build_page, plan_now
    from auditor.report import html

    with open_history(tmp_path / "h.sqlite") as h:
        for d in range(4):
            h.record(summary(T0 + d * DAY, "h1", extra=d == 3), "x")
        now = summary(T0 + 4 * DAY, "h1", extra=True)
        page = build_page(now, Config(), [], ("x",), "9.9", plan_now(now, Config(), h))
    text = html.render(page)
    start, end = text.index('<section id="planning">'), text.index('<section id="pools">')
    parser = Attributes()
    parser.feed(text[start:end])
    assert sum(t == "svg" for t, _ in parser.tags) == 2 * len(page.planning.pools)  # type: ignore[union-attr]
    for tag, attrs in parser.tags:
        assert "style" not in attrs and tag not in ("script", "style", "img", "image"), tag
        assert not {"src", "href", "xlink:href"} & set(attrs) or attrs["href"].startswith("#")
    assert "<strong>big</strong>" in text[start:end] and "1 pool fills up" in text[start:end]
    doc = page.document()["planning"]
    assert doc["pools"] == [p.row() for p in page.planning.pools]  # type: ignore[union-attr]
    assert doc["newest_at"] == now.collected_at.isoformat() and doc["horizon_days"] == 90.0


def test_a_page_without_planning_has_no_section() -> None:
    from summaries import summary

    from auditor.nightly import build_page
    from auditor.report import html

    page = build_page(summary(T0, "h1"), Config(), [], ("x",), "9.9")
    assert 'id="planning"' not in html.render(page) and page.document()["planning"] is None


# ---- auditor plan on histories of the test driver ------------------------------------------

POOL_XML = """<pool type="dir"><name>{name}</name><target><path>/srv/{name}</path></target>
{volumes}</pool>"""
VOL_XML = """<volume type="file"><name>{name}</name><capacity unit="bytes">{virtual}</capacity>
<allocation unit="bytes">{size}</allocation><target><format type="raw"/></target></volume>"""
TEST_CAPACITY = 100 * GiB  # every pool of the test driver


def host_xml(path: Path, pools: dict[str, list[tuple[str, int, int]]]) -> str:
    """A test-driver host: pools of (volume, virtual size, disk size)."""
    body = "".join(
        POOL_XML.format(name=name, volumes="".join(
            VOL_XML.format(name=v, virtual=virtual, size=size) for v, virtual, size in vols))
        for name, vols in pools.items()
    )  # fmt: skip
    path.write_text(f"<node>{body}</node>")
    return f"test://{path}"


def record(tmp: Path, days: list[float], pools_at: object, report_last: bool = False) -> str:
    """Snapshots at T0 + each day offset of the host ``pools_at(day)`` describes; with
    ``report_last`` the last one is recorded by ``auditor report --out tmp/out``."""
    h = str(tmp / "h.sqlite")
    for i, d in enumerate(days):
        uri = host_xml(tmp / f"host-{d}.xml", pools_at(d))  # type: ignore[operator]
        at = ("--at", (T0 + timedelta(days=d)).isoformat())
        if report_last and i == len(days) - 1:
            r = auditor("-c", uri, "report", "--history", h, "--out", str(tmp / "out"), *at)
        else:
            r = auditor("-c", uri, "snapshot", "--history", h, *at)
        assert r.code == 0, r.err
    return h


def growing(d: float) -> dict[str, list[tuple[str, int, int]]]:
    """images: +2 GiB a day on data.raw (50 GiB used on day 0); flat: constant."""
    return {
        "images": [("data.raw", 80 * GiB, 40 * GiB + round(d * 2 * GiB)),
                   ("fixed.raw", 10 * GiB, 10 * GiB), ("sparse.raw", 30 * GiB, 0)],
        "flat": [("x.raw", 20 * GiB, 5 * GiB)],
    }  # fmt: skip


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five daily snapshots of ``growing`` (the last one by ``auditor report``): the folder
    holding h.sqlite and the report in out/. Read-only for the tests."""
    tmp = tmp_path_factory.mktemp("grown")
    record(tmp, [0, 1, 2, 3, 4], growing, report_last=True)
    return tmp


def test_plan_json_csv_and_table(grown: Path) -> None:
    h = str(grown / "h.sqlite")
    doc = auditor("plan", "--history", h, "-f", "json").json()
    rows = {r["pool"]: r for r in doc["pools"]}
    assert doc["newest_at"] == (T0 + 4 * DAY).isoformat() and doc["window_days"] == 30.0
    images = rows["images"]
    assert images["used_space"] == 58 * GiB and images["used_space_per_day"] == 2 * GiB
    assert images["days_to_full"] == 21.0 and images["full_date"] == "2025-06-26"
    assert images["days_to_crit"] == 16.0 and images["exposure"] == (80 - 48 + 30) * GiB
    assert images["worst_overflow"] == 20 * GiB and images["status"] == "growing"
    assert rows["flat"]["status"] == "flat" and rows["flat"]["full_date"] is None
    assert doc["pools"][0]["pool"] == "images"

    text = auditor("plan", "--history", h, "-f", "csv").out
    back = list(csv.DictReader(io.StringIO(text)))
    assert list(back[0]) == PLAN_COLUMNS and len(back) == len(doc["pools"])
    by_pool = {r["pool"]: r for r in back}
    for key in planning.BYTE_COLUMNS:
        want = images[key]
        assert by_pool["images"][key] == ("" if want is None else str(want)), key

    table = auditor("plan", "--history", h, "--pool", "images")
    assert table.code == 0 and "+2.0 GiB" in table.out and "2025-06-26 (21 d)" in table.out
    assert "flat" not in table.out.split("\n", 2)[2]
    assert "back from the newest snapshot (2025-06-05T00:00+00:00)" in table.out


def test_plan_window_horizon_and_policy(grown: Path, tmp_path: Path) -> None:
    h = str(grown / "h.sqlite")
    short = auditor("plan", "--history", h, "--window", "36h", "-f", "json").json()
    (images,) = [r for r in short["pools"] if r["pool"] == "images"]
    assert images["status"] == "not enough history" and images["snapshots"] == 2
    policy = tmp_path / "policy.toml"
    policy.write_text('[pools."images"]\nused_warn = 60\nused_crit = 70\n')
    doc = auditor("plan", "--history", h, "--policy", str(policy), "--horizon", "2w",
                  "--pool", "images", "-f", "json").json()  # fmt: skip
    (r,) = doc["pools"]
    assert r["days_to_crit"] == 6.0 and r["used_crit"] == 70.0 and r["horizon_days"] == 14.0
    assert r["horizon_used_space"] == 58 * GiB + 28 * GiB


def test_plan_what_if_equals_a_hand_computation_from_the_snapshot(grown: Path) -> None:
    h = str(grown / "h.sqlite")
    db = sqlite3.connect(h)
    (sid,) = db.execute("SELECT max(id) FROM snapshots").fetchone()
    cap, avail, prov, exposure = db.execute(
        "SELECT capacity, available, provisioned, exposure FROM pools "
        "WHERE snapshot_id = ? AND pool = 'images'", (sid,),
    ).fetchone()  # fmt: skip
    gone = db.execute(
        "SELECT virtual_size, disk_size, growth FROM volumes WHERE snapshot_id = ? "
        "AND pool = 'images' AND volume = 'fixed.raw'", (sid,),
    ).fetchone()  # fmt: skip
    added = 20 * 4 * GiB
    r = auditor("plan", "--history", h, "--pool", "images", "--add", "20x4G",
                "--remove", "fixed.raw", "-f", "json")  # fmt: skip
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["change"] == {"add": [{"count": 20, "virtual_size": 4 * GiB}],
                             "provisioning": "thin", "remove": ["fixed.raw"]}  # fmt: skip
    now, after = doc["pools"]
    assert (now["scenario"], after["scenario"]) == ("now", "after")
    assert now["provisioned"] == prov and now["available"] == avail
    assert after["provisioned"] == prov + added - gone[0]
    assert after["available"] == avail + gone[1]
    assert after["used_space"] == cap - avail - gone[1]
    assert after["exposure"] == exposure + added - gone[2]
    assert after["overcommit_ratio"] == round((prov + added - gone[0]) / cap, 4)
    assert after["worst_used_space"] == cap - avail - gone[1] + exposure + added - gone[2]
    per_day = now["used_space_per_day"]
    assert after["days_to_full"] == round((avail + gone[1]) / per_day, 1)

    pre = auditor("plan", "--history", h, "--pool", "images", "--add", "3x2G",
                  "--preallocated", "-f", "json").json()["pools"][1]  # fmt: skip
    assert pre["available"] == avail - 6 * GiB and pre["exposure"] == exposure
    assert pre["days_to_full"] == round((avail - 6 * GiB) / per_day, 1)

    table = auditor("plan", "--history", h, "--pool", "images", "--add", "20x4G")
    assert table.code == 0 and "what-if: add 20 x 4.0 GiB thin raw" in table.out
    assert "+80.0 GiB" in table.out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--window", "soon"), "not a duration"),
        (("--add", "4G"), "need --pool"),
        (("--pool", "images", "--add", "ax4G"), "COUNTxSIZE"),
        (("--pool", "images", "--add", "4Q"), "unknown unit"),
        (("--pool", "nope"), "pool 'nope' has no figures"),
        (("--pool", "images", "--remove", "nope.raw"), "not in pool 'images'"),
    ],
)
def test_plan_errors_exit_2(grown: Path, args: tuple[str, ...], needle: str) -> None:
    r = auditor("plan", "--history", str(grown / "h.sqlite"), *args)
    assert r.code == 2 and needle in r.err and "Traceback" not in r.err


def test_plan_needs_a_history_with_a_snapshot(tmp_path: Path) -> None:
    missing = auditor("plan", "--history", str(tmp_path / "none.sqlite"))
    assert missing.code == 2 and "no history" in missing.err
    from auditor.history import open_history

    with open_history(tmp_path / "empty.sqlite"):
        pass
    empty = auditor("plan", "--history", str(tmp_path / "empty.sqlite"))
    assert empty.code == 2 and "holds no snapshot" in empty.err


def test_summary_json_carries_the_plan_figures(grown: Path) -> None:
    doc = json.loads((grown / "out" / "summary.json").read_text())["planning"]
    cli = auditor("plan", "--history", str(grown / "h.sqlite"), "-f", "json").json()
    assert doc["pools"] == cli["pools"] and doc["newest_at"] == cli["newest_at"]
    page = (grown / "out" / "report.html").read_text()
    assert "Within 90 days: 1 pool fills up</h3>" in page
    assert "full on 2025-06-26 (in 21 days)" in page


def test_fit_has_the_documented_fields() -> None:
    assert [f for f in Fit.__dataclass_fields__] == ["slope", "level", "at", "points", "r2",
                                                      "error"]  # fmt: skip
