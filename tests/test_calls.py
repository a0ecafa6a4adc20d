"""The libvirt calls a plan prints are the calls apply makes: one builder serves both.

For every managed operation, against the real libvirtd: the plan's calls (built by the adapter
while planning) equal the calls the adapter executed, and every flag and constant named in
them is a real libvirt constant (so the integer passed is the one the names describe).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
import testbed

from auditor import ops
from auditor.adapters import localfs, qemu_img
from auditor.adapters.libvirt import LibvirtHost
from auditor.collect import Probes
from auditor.models import Const, PoolDefinition, PoolOp
from auditor.ops import Action
from auditor.sizes import NewSize

GiB = 1 << 30
MiB = 1 << 20
PROBES = Probes(images=qemu_img.info_many, fs=localfs)


@dataclass(frozen=True)
class Bed:
    """A scratch pool holding a.raw (64 MiB) and b.raw, a shut-off domain using b.raw, an
    inactive pool ``idle`` and a local file to upload."""

    pool: str
    domain: str
    idle: str
    tmp: Path


Planner = Callable[[ops.Context, Bed], ops.Plan]
PLANS: dict[Action, Planner] = {
    Action.POOL_DEFINE: lambda c, b: ops.plan_pool_define(
        c, PoolDefinition(b.idle + "x", "dir", str(b.tmp / "x"))
    ),
    Action.POOL_BUILD: lambda c, b: ops.plan_build(c, b.idle),
    Action.POOL_START: lambda c, b: ops.plan_pool(c, b.idle, PoolOp.START),
    Action.POOL_STOP: lambda c, b: ops.plan_pool(c, b.pool, PoolOp.STOP),
    Action.POOL_REFRESH: lambda c, b: ops.plan_pool(c, b.pool, PoolOp.REFRESH),
    Action.POOL_AUTOSTART: lambda c, b: ops.plan_autostart(c, b.pool, enabled=True),
    Action.POOL_DELETE: lambda c, b: ops.plan_pool(c, b.idle, PoolOp.DELETE),
    Action.POOL_UNDEFINE: lambda c, b: ops.plan_pool(c, b.idle, PoolOp.UNDEFINE),
    Action.VOL_CREATE: lambda c, b: ops.plan_create(
        c, b.pool, "n.qcow2", MiB, fmt="qcow2", preallocated=True
    ),
    Action.VOL_CLONE: lambda c, b: ops.plan_clone(c, b.pool, "a.raw", "copy.raw"),
    Action.VOL_RESIZE: lambda c, b: ops.plan_resize(
        c, b.pool, "a.raw", NewSize(32 * MiB), shrink=True
    ),
    Action.VOL_DELETE: lambda c, b: ops.plan_delete(c, b.pool, "a.raw"),
    Action.VOL_WIPE: lambda c, b: ops.plan_wipe(c, b.pool, "a.raw"),
    Action.VOL_UPLOAD: lambda c, b: ops.plan_upload(c, b.pool, "up.raw", str(b.tmp / "up")),
    Action.VOL_DOWNLOAD: lambda c, b: ops.plan_download(c, b.pool, "a.raw", str(b.tmp / "d")),
    Action.VOL_ATTACH: lambda c, b: ops.plan_attach(c, b.domain, f"{b.pool}/a.raw", config=True),
    Action.VOL_DETACH: lambda c, b: ops.plan_detach(c, b.domain, f"{b.pool}/b.raw", config=True),
}


@pytest.fixture
def bed(
    libvirt_conn: libvirt.virConnect,
    workspace: testbed.Workspace,
    scratch_pool: testbed.PoolSpec,
    tmp_path: Path,
) -> Iterator[Bed]:
    for name in ("a.raw", "b.raw"):
        with open(Path(scratch_pool.path) / name, "wb") as fh:
            fh.truncate(64 * MiB)
    libvirt_conn.storagePoolLookupByName(scratch_pool.name).refresh(0)
    (tmp_path / "up").write_bytes(os.urandom(4096))
    domain, idle = f"{scratch_pool.name}-vm", f"{scratch_pool.name}-idle"
    disk = (
        f"<disk type='volume' device='disk'><driver name='qemu' type='raw'/><source "
        f"pool='{scratch_pool.name}' volume='b.raw'/><target dev='vda' bus='virtio'/></disk>"
    )
    libvirt_conn.defineXML(
        f"<domain type='qemu'><name>{domain}</name><memory unit='MiB'>64</memory><os>"
        f"<type arch='x86_64'>hvm</type></os><devices>{disk}</devices></domain>"
    )
    libvirt_conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{idle}</name><target><path>{tmp_path / 'idle'}</path>"
        "</target></pool>"
    )
    yield Bed(scratch_pool.name, domain, idle, tmp_path)
    for name in (idle, idle + "x"):
        testbed.remove_pool(libvirt_conn, name)
    testbed.remove_domain(libvirt_conn, domain)


def test_every_operation_has_a_case() -> None:
    assert set(PLANS) == set(Action)


def _names(call: object) -> list[str]:
    flags = list(getattr(call, "flags", None) or ())
    return flags + [v.name for _, v in getattr(call, "args", ()) if isinstance(v, Const)]


@pytest.mark.parametrize("action", list(Action))
def test_described_calls_are_the_executed_calls(action: Action, bed: Bed) -> None:
    with LibvirtHost.connect(testbed.URI, write=True) as host:
        ctx = ops.context(host, PROBES)
        if action in (Action.POOL_START, Action.POOL_DELETE):  # needs the storage built
            ops.apply(ops.plan_build(ctx, bed.idle), ctx)
        plan = PLANS[action](ctx, bed)
        assert plan.action is action and plan.request is not None and plan.calls
        for call in plan.calls:
            for name in _names(call):
                assert isinstance(getattr(libvirt, name), int), name
        outcome = ops.apply(plan, ctx, yes=True)
    assert outcome.calls == plan.calls


def test_flags_in_words() -> None:
    from auditor.adapters.libvirt_calls import calls_for
    from auditor.models import ResizeVolume

    (call,) = calls_for(ResizeVolume("p", "v", 5, allocate=True, shrink=False))
    assert str(call) == "virStorageVolResize(capacity 5, flags VIR_STORAGE_VOL_RESIZE_ALLOCATE)"
