"""Plans and guards of auditor.ops on libvirt's test driver (no daemon): tests/data/ops-host.xml.

The test driver reports every pool as 100 GiB; `images` holds 61 GiB of virtual size (ratio
0.61) with 22 GiB allocated. `vm-running` uses thin.qcow2, the shut-off `vm-off` thick.raw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from clirun import auditor

from auditor import models, ops
from auditor.adapters import localfs, qemu_img
from auditor.adapters.libvirt import LibvirtHost
from auditor.collect import Probes
from auditor.config import parse
from auditor.errors import ConfigError, InUse, NotFound, OperationError, PolicyError
from auditor.models import PoolDefinition, PoolOp, Skip
from auditor.ops import Figure
from auditor.sizes import NewSize

HOST = Path(__file__).parent / "data" / "ops-host.xml"
URI = f"test://{HOST}"
GiB = 1 << 30
PROBES = Probes(images=qemu_img.info_many, fs=localfs)


@pytest.fixture
def host() -> Iterator[LibvirtHost]:
    with LibvirtHost.connect(URI, write=True) as h:  # each connection: a fresh copy of the XML
        yield h


@pytest.fixture
def ctx(host: LibvirtHost) -> ops.Context:
    return ops.context(host, PROBES)


def figures(plan: ops.Plan) -> dict[str, tuple[ops.Value, ops.Value]]:
    return {c.figure: (c.before, c.after) for c in plan.changes}


def test_thin_raw_create_is_sparse_and_shows_the_ratio_before_and_after(ctx: ops.Context) -> None:
    plan = ops.plan_create(ctx, "images", "new.raw", 10 * GiB)
    assert isinstance(plan.request, models.CreateVolume)
    spec = plan.request.spec
    assert (spec.format, spec.allocation, spec.prealloc_metadata) == ("raw", 0, False)
    assert "allocation 0" in plan.call and "flags 0" in plan.call
    f = figures(plan)
    assert f[Figure.RATIO] == (0.61, 0.71)
    assert f[Figure.PROVISIONED] == (61 * GiB, 71 * GiB)
    assert f[Figure.VIRTUAL] == (None, 10 * GiB)


@pytest.mark.parametrize(
    ("fmt", "allocation", "flag"),
    [("raw", 10 * GiB, False), ("qcow2", 10 * GiB, True)],
)
def test_preallocated_create(ctx: ops.Context, fmt: str, allocation: int, flag: bool) -> None:
    plan = ops.plan_create(ctx, "images", "new", 10 * GiB, fmt=fmt, preallocated=True)
    assert isinstance(plan.request, models.CreateVolume)
    spec = plan.request.spec
    assert (spec.allocation, spec.prealloc_metadata) == (allocation, flag)
    assert ("VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA" in plan.call) is flag
    usable_before, usable_after = figures(plan)[Figure.USABLE]
    assert isinstance(usable_before, int) and isinstance(usable_after, int)
    assert usable_before - usable_after >= 10 * GiB


def test_overcommit_guard_refuses_shows_ratios_and_force_overrides(ctx: ops.Context) -> None:
    with pytest.raises(PolicyError) as err:
        ops.plan_create(ctx, "images", "big.qcow2", 150 * GiB, fmt="qcow2")
    assert "from 0.61 to 2.11" in str(err.value) and "2.00" in str(err.value)
    plan = ops.plan_create(ctx, "images", "big.qcow2", 150 * GiB, fmt="qcow2", force=True)
    assert any("--force" in n for n in plan.notes)


def test_overcommit_threshold_per_pool_from_the_policy(host: LibvirtHost) -> None:
    config = parse({"pools": {"images": {"overcommit_crit": 3.0}}})
    ctx = ops.context(host, PROBES, config)
    ops.plan_create(ctx, "images", "big.qcow2", 150 * GiB, fmt="qcow2")
    config = parse({"pools": {"images": {"overcommit_warn": 0.1, "overcommit_crit": 0.5}}})
    with pytest.raises(PolicyError, match=r"threshold 0\.50"):
        ops.plan_create(ops.context(host, PROBES, config), "images", "x.raw", GiB)


def test_free_space_guard_is_not_overridden_by_force(ctx: ops.Context) -> None:
    with pytest.raises(PolicyError, match="usable"):
        ops.plan_create(ctx, "images", "fat.raw", 90 * GiB, preallocated=True, force=True)


def test_apply_creates_and_a_plan_alone_changes_nothing(ctx: ops.Context) -> None:
    plan = ops.plan_create(ctx, "images", "new.raw", GiB)
    assert ops.context(ctx.host, PROBES).view.find("images", "new.raw") is None
    out = ops.apply(plan, ctx)
    after = {c.figure: c.after for c in out.changes}
    assert after[Figure.VIRTUAL] == GiB
    assert after[Figure.PROVISIONED] == 62 * GiB
    with pytest.raises(OperationError, match="already exists"):
        ops.plan_create(ops.context(ctx.host, PROBES), "images", "new.raw", GiB)


def test_clone_keeps_format_and_provisioning_by_default(ctx: ops.Context) -> None:
    plan = ops.plan_clone(ctx, "images", "thick.raw", "copy.raw")
    assert isinstance(plan.request, models.CreateVolume)
    spec = plan.request.spec
    assert (spec.format, spec.capacity, spec.allocation) == ("raw", 20 * GiB, 20 * GiB)
    thin = ops.plan_clone(ctx, "images", "thin.qcow2", "copy.qcow2", fmt="raw")
    assert isinstance(thin.request, models.CreateVolume)
    assert (thin.request.spec.format, thin.request.spec.allocation) == ("raw", 0)
    assert thin.call.startswith("virStorageVolCreateXMLFrom(")
    ops.apply(thin, ctx)
    assert ops.context(ctx.host, PROBES).view.find("images", "copy.qcow2") is not None


def test_reflink_is_only_for_raw(ctx: ops.Context) -> None:
    with pytest.raises(PolicyError, match="raw"):
        ops.plan_clone(ctx, "images", "thin.qcow2", "c.qcow2", reflink=True)


def test_in_use_guards(ctx: ops.Context) -> None:
    for plan in (ops.plan_delete, ops.plan_wipe):
        with pytest.raises(InUse, match="running domain\\(s\\) vm-running"):
            plan(ctx, "images", "thin.qcow2", force=True)
        with pytest.raises(InUse, match="defined domain\\(s\\) vm-off"):
            plan(ctx, "images", "thick.raw")
        forced = plan(ctx, "images", "thick.raw", force=True)
        assert any("vm-off" in n for n in forced.notes)
    with pytest.raises(InUse, match="vm-running"):
        ops.plan_resize(ctx, "images", "thin.qcow2", NewSize(GiB), shrink=True)


def test_guards_refuse_when_a_domain_could_not_be_read(ctx: ops.Context) -> None:
    summary = replace(ctx.view.summary, skips=(Skip("vm", "domain", "ghost", "gone"),))
    blind = replace(ctx, view=replace(ctx.view, summary=summary))
    with pytest.raises(OperationError, match="domain ghost could not be read"):
        ops.plan_delete(blind, "images", "spare.raw")
    with pytest.raises(OperationError, match="ghost"):
        ops.plan_attach(blind, "vm-off", "images/spare.raw")


def test_running_disk_grows_through_the_domain(ctx: ops.Context) -> None:
    plan = ops.plan_resize(ctx, "images", "thin.qcow2", NewSize(GiB, delta=True))
    assert isinstance(plan.request, models.BlockResize)
    assert (plan.request.domain, plan.request.target) == ("vm-running", "vda")
    assert plan.call.startswith("virDomainBlockResize(domain 'vm-running', disk 'vda', ")
    with pytest.raises(PolicyError, match="--allocate"):
        ops.plan_resize(ctx, "images", "thin.qcow2", NewSize(GiB, True), allocate=True)


def test_resize_refusals(ctx: ops.Context, host: LibvirtHost) -> None:
    with pytest.raises(PolicyError, match="--shrink --yes"):
        ops.plan_resize(ctx, "images", "spare.raw", NewSize(GiB // 2))
    with pytest.raises(PolicyError, match="disk size"):  # below the 10 MiB it holds
        ops.plan_resize(ctx, "images", "spare.raw", NewSize(1 << 20), shrink=True)
    ops.apply(ops.plan_create(ctx, "empty", "img.qcow2", GiB, fmt="qcow2"), ctx)
    with pytest.raises(PolicyError, match="only for raw"):
        ops.plan_resize(ops.context(host, PROBES), "empty", "img.qcow2", NewSize(GiB, True),
                        allocate=True)  # fmt: skip
    shrink = ops.plan_resize(ctx, "images", "spare.raw", NewSize(GiB // 2), shrink=True)
    assert shrink.confirm and "SHRINK" in shrink.call
    with pytest.raises(PolicyError, match="--yes"):
        ops.apply(shrink, ctx)
    same = ops.plan_resize(ctx, "images", "spare.raw", NewSize(GiB))
    assert same.request is None and "nothing to do" in same.summary


def test_wipe_of_a_qcow2_needs_destroy_format(ctx: ops.Context, host: LibvirtHost) -> None:
    ops.apply(ops.plan_create(ctx, "empty", "img.qcow2", GiB, fmt="qcow2"), ctx)
    ctx = ops.context(host, PROBES)
    with pytest.raises(PolicyError, match="header"):
        ops.plan_wipe(ctx, "empty", "img.qcow2")
    plan = ops.plan_wipe(ctx, "empty", "img.qcow2", destroy_format=True)
    assert plan.confirm and "WIPE_ALG_ZERO" in plan.call


def test_missing_objects(ctx: ops.Context) -> None:
    with pytest.raises(NotFound, match="pool nope"):
        ops.plan_create(ctx, "nope", "x", GiB)
    with pytest.raises(NotFound, match="volume nope not found in pool images"):
        ops.plan_delete(ctx, "images", "nope")
    with pytest.raises(NotFound, match="domain nope"):
        ops.plan_attach(ctx, "nope", "images/spare.raw")
    with pytest.raises(ConfigError, match="POOL/VOLUME"):
        ops.plan_attach(ctx, "vm-off", "spare.raw")


def test_pool_guards(ctx: ops.Context, host: LibvirtHost) -> None:
    with pytest.raises(OperationError, match="already exists"):
        ops.plan_pool_define(ctx, PoolDefinition("images", "dir", "/srv/other"))
    with pytest.raises(OperationError, match="already uses /srv/ops-images"):
        ops.plan_pool_define(ctx, PoolDefinition("twin", "dir", "/srv/ops-images/"))
    with pytest.raises(ConfigError, match="--source-dev"):
        ops.plan_pool_define(ctx, PoolDefinition("f", "fs", "/srv/f"))
    with pytest.raises(ConfigError, match="absolute"):
        ops.plan_pool_define(ctx, PoolDefinition("d", "dir", "relative"))
    with pytest.raises(OperationError, match="active"):
        ops.plan_pool(ctx, "images", PoolOp.DELETE)
    with pytest.raises(OperationError, match="active"):
        ops.plan_pool(ctx, "images", PoolOp.UNDEFINE)
    stop = ops.plan_pool(ctx, "images", PoolOp.STOP)
    assert "data stays intact" in stop.summary and stop.call == "virStoragePoolDestroy()"
    assert any("vm-running" in n for n in stop.notes)
    out = ops.apply(stop, ctx)
    assert {c.figure: c.after for c in out.changes}[Figure.STATE] == "inactive"
    ctx = ops.context(host, PROBES)
    assert ops.plan_pool(ctx, "images", PoolOp.STOP).request is None
    with pytest.raises(OperationError, match="not active"):
        ops.plan_create(ctx, "images", "x.raw", GiB)


def test_attach_picks_the_next_free_target(ctx: ops.Context) -> None:
    plan = ops.plan_attach(ctx, "vm-off", "images/spare.raw", config=True)
    assert isinstance(plan.request, models.Attach)
    assert (plan.request.disk.target, plan.request.disk.bus) == ("vdb", "virtio")
    assert "<disk type='volume'" in plan.call and "VIR_DOMAIN_AFFECT_CONFIG" in plan.call
    with pytest.raises(InUse, match="vm-running"):
        ops.plan_attach(ctx, "vm-off", "images/thin.qcow2")
    with pytest.raises(OperationError, match="already has a disk vda"):
        ops.plan_attach(ctx, "vm-off", "images/spare.raw", target="vda")
    assert ops.next_target(frozenset({f"vd{c}" for c in "abcdefghijklmnopqrstuvwxyz"})) == "vdaa"


def test_cli_dry_run_and_errors() -> None:
    ran = auditor("-c", URI, "vol", "create", "images", "n.raw", "5G", "--dry-run")
    assert ran.code == 0, ran.err
    assert "dry run: nothing changed" in ran.out and "0.61" in ran.out and "0.66" in ran.out
    bad = auditor("-c", URI, "vol", "create", "images", "n.raw", "5X")
    assert bad.code == 2 and "'5X'" in bad.err and "Traceback" not in bad.err
    refused = auditor("-c", URI, "vol", "delete", "images", "thin.qcow2", "--yes")
    assert refused.code == 2
    assert refused.err.strip().splitlines() == [
        "auditor: error: delete refused: volume images/thin.qcow2 is used by running domain(s) "
        "vm-running (shut them down or detach the disk first)"
    ]
