"""The guards libvirt lacks, as public functions the operations and the fix engine share.

- in use: refuse a volume a running domain references (as a disk, by pool and volume, or in
  a backing chain); optionally also one a defined domain or an overlay uses, unless forced;
- overcommit: refuse when a pool's overcommit ratio would exceed its ``overcommit_crit``
  (``force`` overrides, with a note);
- free space: refuse what needs more than the usable free space (nothing overrides that);
- confirmation: a plan that destroys data needs ``yes``;
- re-checked: right before delete, wipe, resize and attach run, the in-use guards are
  evaluated again against a fresh read of the domains.
"""

from __future__ import annotations

from auditor.config import Config
from auditor.errors import InUse, OperationError, PolicyError
from auditor.models import (
    Attach,
    DeleteVolume,
    DiskReport,
    ResizeVolume,
    WipeVolume,
    overcommit_ratio,
)
from auditor.ops.plan import Plan
from auditor.ops.view import Users, View, label
from auditor.units import human, ratio_text


def names(items: tuple[str, ...]) -> str:
    return ", ".join(items)


def check_in_use(view: View, r: DiskReport, op: str, *, force: bool, defined_too: bool) -> Users:
    """Refuse ``op`` on a volume a running domain references; with ``defined_too`` also one
    a defined domain references or another image uses as its backing file, unless ``force``.
    Returns who uses it."""
    users = view.users(r)
    if users.running:
        raise InUse(
            f"{op} refused: volume {label(r)} is used by running domain(s) {names(users.running)}",
            "shut them down or detach the disk first",
        )
    if defined_too and not force and (users.defined or users.overlays):
        raise InUse(
            f"{op} refused: volume {label(r)} is used by {users.who()}",
            "detach it first, or pass --force",
        )
    return users


def check_overcommit(
    view: View, config: Config, pool: str, added: int, *, force: bool, notes: list[str]
) -> tuple[int | None, float | None]:
    """(provisioned, ratio) after adding ``added`` bytes of virtual size to ``pool``; refuse
    above the pool's critical ratio unless ``force`` (then a note says so)."""
    s = view.figures(pool)
    if s is None or s.provisioned is None:
        return None, None
    after = s.provisioned + added
    new_ratio = overcommit_ratio(after, s.capacity)
    crit = config.for_pool(pool).overcommit_crit
    if added > 0 and new_ratio is not None and new_ratio > crit:
        msg = (
            f"pool {pool}: overcommit ratio would go from {ratio_text(s.overcommit_ratio)} to "
            f"{ratio_text(new_ratio)}, above its critical threshold {ratio_text(crit)}"
        )
        if not force:
            raise PolicyError(
                msg,
                f'raise overcommit_crit under [pools."{pool}"] in the --policy file, '
                "or pass --force",
            )
        notes.append(f"--force: {msg}")
    if s.capacity is None:
        notes.append(f"pool {pool} reports no capacity: the overcommit ratio is not known")
    return after, new_ratio


def check_free_space(view: View, pool: str, need: int, what: str) -> int | None:
    """Usable free space of ``pool`` after using ``need`` bytes; refuse if there is not
    enough. None when the pool's free space is not known."""
    s = view.figures(pool)
    usable = s.usable_free if s is not None else None
    if usable is None:
        return None
    if need > usable:
        raise PolicyError(
            f"pool {pool}: {what} needs {human(need)} but only {human(usable)} is usable "
            "(statvfs f_bavail: blocks reserved for root do not count)",
            "free space in the pool or choose a thin volume; --force does not override this",
        )
    return usable - need


def check_fresh_name(view: View, pool: str, name: str) -> None:
    if view.find(pool, name) is not None:
        raise OperationError(f"volume {name} already exists in pool {pool}", "choose another name")


def recheck(plan: Plan, view: View) -> None:
    """The in-use guards of a destructive plan once more, against a fresh read of the
    domains (``view``), right before it runs: a guest started since the plan stops it."""
    match plan.request:
        case DeleteVolume(pool, name) | WipeVolume(pool, name):
            op = "delete" if isinstance(plan.request, DeleteVolume) else "wipe"
            check_in_use(view, view.volume(pool, name), op, force=plan.force, defined_too=True)
        case ResizeVolume(pool, name, shrink=shrink):
            op = "shrink" if shrink else "resize"
            check_in_use(view, view.volume(pool, name), op, force=plan.force, defined_too=shrink)
        case Attach(disk):
            users = view.users(view.volume(disk.pool, disk.volume))
            if users.any:
                raise InUse(
                    f"attach refused: volume {disk.pool}/{disk.volume} is now used by "
                    f"{users.who()}: two writers corrupt a disk",
                    "detach it there first",
                )


RECHECKED = (DeleteVolume, WipeVolume, ResizeVolume, Attach)


def check_confirmed(plan: Plan, yes: bool) -> None:
    """A plan that destroys data runs only with ``yes``."""
    if plan.confirm and not yes:
        raise PolicyError(
            f"{plan.action} {plan.subject} destroys {plan.confirm}", "pass --yes to confirm"
        )
