"""Plans for domain disks: attach a volume to a domain, detach it."""

from __future__ import annotations

import re

from auditor.errors import ConfigError, InUse, NotFound, OperationError
from auditor.models import Attach, Detach, DiskSpec, Domain
from auditor.ops.plan import Action, Change, Figure, Plan
from auditor.ops.view import Context
from auditor.ops.volumes import volume_ref
from auditor.units import iec

TARGET = re.compile(r"(vd|sd|hd|xvd)[a-z]+")
BUS = {"vd": "virtio", "sd": "scsi", "hd": "ide", "xvd": "xen"}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def next_target(used: frozenset[str], prefix: str = "vd") -> str:
    """vda, vdb, ..., vdz, vdaa, ...: the first name not in ``used``."""
    n = 0
    while True:
        k, suffix = n, ""
        while True:
            suffix = LETTERS[k % 26] + suffix
            k = k // 26 - 1
            if k < 0:
                break
        if prefix + suffix not in used:
            return prefix + suffix
        n += 1


def affect(dom: Domain, live: bool, config: bool, persistent: bool) -> tuple[bool, bool]:
    """(live, config) as virsh means them: ``persistent`` is the definition, and the running
    guest too if it runs; ``live`` needs a running domain."""
    if persistent:
        live, config = live or dom.active, True
    if live and not dom.active:
        raise OperationError(f"domain {dom.name} is not running", "drop --live")
    return live, config


def _where(dom: Domain, live: bool, config: bool) -> str:
    if live or config:
        return " and ".join(
            w for w, on in (("the running guest", live), ("its definition", config)) if on
        )
    return "the running guest" if dom.active else "its definition"


def _target(ctx: Context, domain: str, target: str | None) -> tuple[str, str, frozenset[str]]:
    """(target, bus, targets in use) for a new disk of ``domain``."""
    used = ctx.host.domain_targets(domain)
    if target is None:
        target = next_target(used)
    match = TARGET.fullmatch(target)
    if match is None:
        raise ConfigError(f"bad target {target!r}", "use a device name such as vdb, sdb or hdb")
    if target in used:
        raise OperationError(
            f"domain {domain} already has a disk {target}", "choose another --target"
        )
    return target, BUS[match.group(1)], used


def _targets(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def plan_attach(
    ctx: Context,
    domain: str,
    volume: str,
    *,
    target: str | None = None,
    live: bool = False,
    config: bool = False,
    persistent: bool = False,
) -> Plan:
    """Give ``domain`` the volume "POOL/VOLUME" as a ``<disk type='volume'>``."""
    dom = ctx.view.domain(domain)
    pool, name = volume_ref(volume)
    r = ctx.view.volume(pool, name)
    users = ctx.view.users(r)
    if domain in users.running + users.defined:
        raise OperationError(f"volume {volume} is already attached to domain {domain}")
    if users.any:
        raise InUse(
            f"attach refused: volume {volume} is used by {users.who()}: two writers corrupt a disk",
            "detach it there first",
        )
    live, config = affect(dom, live, config, persistent)
    target, bus, used = _target(ctx, domain, target)
    fmt = r.disk.format or "raw"
    request = Attach(DiskSpec(domain, pool, name, fmt, target, bus, live, config))
    summary = (
        f"attach volume {volume} ({fmt}, {iec(r.disk.virtual_size)}) to domain {domain} "
        f"as {target} ({bus}), in {_where(dom, live, config)}"
    )
    live_note = "a live attach needs a hotplug-capable bus (a pc machine's pci.0 is not)"
    return _disk_plan(ctx, dom, request, summary, (used, used | {target}), live_note)


def _disk_plan(
    ctx: Context,
    dom: Domain,
    request: Attach | Detach,
    summary: str,
    targets: tuple[frozenset[str], frozenset[str]],
    live_note: str,
) -> Plan:
    """The plan of an attach or detach: the domain's disk targets before and after, and the
    note for a change of the running guest."""
    disk = request.disk
    touches_guest = dom.active and (disk.live or not disk.config)
    return Plan(
        action=Action.VOL_ATTACH if isinstance(request, Attach) else Action.VOL_DETACH,
        subject=dom.name,
        summary=summary,
        request=request,
        calls=ctx.calls(request),
        changes=(Change(Figure.TARGETS, _targets(targets[0]), _targets(targets[1])),),
        notes=(live_note,) if touches_guest else (),
        pool=disk.pool,
        volume=disk.volume,
        domain=dom.name,
    )


def plan_detach(
    ctx: Context,
    domain: str,
    volume: str,
    *,
    live: bool = False,
    config: bool = False,
    persistent: bool = False,
) -> Plan:
    """Take the disk that is volume "POOL/VOLUME" away from ``domain``."""
    dom = ctx.view.domain(domain)
    pool, name = volume_ref(volume)
    r = ctx.view.volume(pool, name)
    live, config = affect(dom, live, config, persistent)
    matches = [
        dd for dd in dom.disks if dd.path == r.disk.path or (dd.pool, dd.volume) == (pool, name)
    ]
    if not matches:
        raise NotFound(f"domain {domain} has no disk that is volume {volume}")
    dd = matches[0]
    used = ctx.host.domain_targets(domain)
    fmt = dd.format or r.disk.format or "raw"
    request = Detach(DiskSpec(domain, pool, name, fmt, dd.target, "", live, config))
    summary = (
        f"detach disk {dd.target} (volume {volume}) from domain {domain}, in "
        f"{_where(dom, live, config)}; the volume and its data stay"
    )
    live_note = "the guest must release the disk (unmount it first); libvirt only asks it to"
    return _disk_plan(ctx, dom, request, summary, (used, used - {dd.target}), live_note)
