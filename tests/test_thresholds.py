"""Threshold assessment: used_percent, inclusive limits, the worst level wins, per-pool limits."""

from __future__ import annotations

import pytest

from auditor.config import Thresholds, parse
from auditor.models import PoolSummary
from auditor.thresholds import Level, assess, used_percent

GiB = 1 << 30


def summary(capacity: int | None, available: int | None, ratio: float | None) -> PoolSummary:
    return PoolSummary(
        host="h", pool="p", type="dir", state="running" if capacity else "inactive",
        capacity=capacity, allocation=None, usable_free=available, volumes=1, thin=1,
        preallocated=0, unknown=0, provisioned=None, used=None, overcommit_ratio=ratio,
        exposure=None,
    )  # fmt: skip


def test_used_percent_counts_everything_but_usable_free() -> None:
    assert used_percent(summary(100 * GiB, 15 * GiB, 1.0)) == 85.0
    assert used_percent(summary(3 * GiB, 2 * GiB, 1.0)) == 33.33
    assert used_percent(summary(None, None, None)) is None
    assert used_percent(summary(0, 0, None)) is None


@pytest.mark.parametrize(
    ("free_gib", "ratio", "level"),
    [
        (21, 1.49, Level.OK),
        (20, 1.0, Level.WARN),  # 80% used: the limit itself counts
        (11, 1.0, Level.WARN),
        (10, 1.0, Level.CRIT),  # 90%
        (50, 1.5, Level.WARN),
        (50, 2.0, Level.CRIT),
        (15, 2.2, Level.CRIT),  # warn by space, crit by overcommit: the worst wins
        (5, 1.6, Level.CRIT),
    ],
)
def test_levels(free_gib: int, ratio: float, level: Level) -> None:
    assert assess(summary(100 * GiB, free_gib * GiB, ratio), Thresholds()).level is level


def test_reasons_in_words_worst_first() -> None:
    a = assess(summary(100 * GiB, 15 * GiB, 2.2), Thresholds())
    assert a.reasons == (
        "provisioned 2.20x capacity (critical at 2x)",
        "85.0% used (warning at 80%)",
    )
    assert a.used_percent == 85.0
    assert assess(summary(100 * GiB, 50 * GiB, 1.0), Thresholds()).reasons == ()


def test_no_capacity_is_unknown() -> None:
    a = assess(summary(None, None, None), Thresholds())
    assert (a.level, a.used_percent, a.reasons) == (
        Level.UNKNOWN, None, ("inactive: libvirt reports no figures",)
    )  # fmt: skip


def test_per_pool_thresholds_from_the_policy() -> None:
    cfg = parse({"thresholds": {"used_warn": 70}, "pools": {"p": {"overcommit_crit": 3}}})
    s = summary(100 * GiB, 25 * GiB, 2.5)
    assert assess(s, cfg.for_pool("other")).level is Level.CRIT
    a = assess(s, cfg.for_pool("p"))
    assert a.level is Level.WARN  # 75% ≥ 70 inherited; 2.5 < 3
    assert a.reasons == (
        "75.0% used (warning at 70%)",
        "provisioned 2.50x capacity (warning at 1.5x)",
    )
