"""Planners from a hand-built Summary: no libvirt, no qemu-img, no daemon.

The host of tests/summaries.py: pool 'big' holds 100 GiB with 40 GiB usable free, and three
raw volumes of 50, 80 and 40 GiB virtual size (170 GiB provisioned: ratio 1.70).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from summaries import GiB, host

from auditor.adapters import localfs
from auditor.adapters.libvirt_calls import calls_for
from auditor.analyze import analyze
from auditor.collect import Probes
from auditor.config import Config
from auditor.errors import InUse, PolicyError
from auditor.models import (
    CreateVolume,
    Domain,
    DomainDisk,
    Inventory,
    LibvirtCall,
    PoolOp,
    Progress,
    Request,
)
from auditor.ops import Context, Figure, View, plan_create, plan_delete, plan_pool, plan_resize
from auditor.sizes import NewSize

AT = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class PlanningOnly:
    """A StorageHost that describes calls (with the adapter's pure builders) and runs none."""

    host: str = "h1"
    uri: str = "test:///h1"
    read_only: bool = False
    read_only_reason: str = ""
    local: bool = False

    def calls(self, request: Request) -> tuple[LibvirtCall, ...]:
        return calls_for(request)

    def execute(self, request: Request, progress: Progress | None = None) -> tuple[()]:
        raise AssertionError("planning only")

    def domain_targets(self, domain: str) -> frozenset[str]:
        return frozenset({"vda"})

    def read_pools(self, *, refresh: bool, names: object = None) -> tuple[list[()], list[()]]:
        raise AssertionError("planning only")

    read_volumes = read_domains = close = read_pools


def context(*domains: Domain) -> Context:
    inventory = host("h1", AT)
    inventory = replace(inventory, domains=inventory.domains + domains)
    summary = analyze(Inventory(hosts=(inventory,)))
    probes = Probes(images=lambda items, workers=None: iter(()), fs=localfs)
    return Context(PlanningOnly(), probes, Config(), View(summary, "h1"))  # type: ignore[arg-type]


def figures(plan: object) -> dict[Figure, tuple[object, object]]:
    return {c.figure: (c.before, c.after) for c in plan.changes}  # type: ignore[attr-defined]


def test_create_shows_the_ratio_a_hand_computation_gives() -> None:
    plan = plan_create(context(), "big", "n.raw", 10 * GiB)
    f = figures(plan)
    assert f[Figure.PROVISIONED] == (170 * GiB, 180 * GiB)
    assert f[Figure.RATIO] == (1.7, 1.8)
    assert isinstance(plan.request, CreateVolume)
    assert plan.calls == calls_for(plan.request)
    assert "capacity 10737418240" in plan.call and "allocation 0" in plan.call


def test_overcommit_and_free_space_guards() -> None:
    with pytest.raises(PolicyError, match=r"from 1\.70 to 2\.10"):
        plan_create(context(), "big", "n.raw", 40 * GiB)
    forced = plan_create(context(), "big", "n.raw", 40 * GiB, force=True)
    assert any(n.startswith("--force") for n in forced.notes)
    with pytest.raises(PolicyError, match="usable"):  # 41 GiB fallocated > 40 GiB usable
        plan_create(context(), "big", "n.raw", 41 * GiB, preallocated=True, force=True)


def test_delete_frees_what_the_volume_holds() -> None:
    f = figures(plan_delete(context(), "big", "b.raw"))
    assert f[Figure.PROVISIONED] == (170 * GiB, 90 * GiB)
    assert f[Figure.RATIO] == (1.7, 0.9)
    assert f[Figure.USABLE] == (40 * GiB, 45 * GiB)
    assert f[Figure.VOLUMES] == (3, 2)


def test_in_use_guards_from_the_summary() -> None:
    vm = Domain(
        "h1", "vm2", "u2", "running", True, (DomainDisk("vdb", "disk", "file", "/big/a.raw"),)
    )
    ctx = context(vm)
    for refused in (
        lambda: plan_delete(ctx, "big", "a.raw", force=True),
        lambda: plan_resize(ctx, "big", "a.raw", NewSize(GiB), shrink=True),
    ):
        with pytest.raises(InUse, match="running domain\\(s\\) vm2"):
            refused()
    grow = plan_resize(ctx, "big", "a.raw", NewSize(GiB, delta=True))
    assert grow.call.startswith("virDomainBlockResize(domain 'vm2', disk 'vdb', size ")


def test_nothing_to_do_is_a_plan_without_a_request() -> None:
    plan = plan_pool(context(), "idle", PoolOp.STOP)
    assert plan.request is None and plan.summary == "nothing to do: pool idle is already inactive"
