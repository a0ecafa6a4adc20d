"""Managed pool and volume operations: first a plan, then ``apply``.

A ``Plan`` says what will be done, the libvirt calls (built by the adapter: what runs is what
is printed) and the figures before and after; a dry run prints it and stops there. ``apply``
does it and measures the same figures again, reading only the affected pool.

Modules: ``plan`` (Plan, Outcome, typed figures), ``view`` (a host as the operations see it,
from a Summary), ``guards`` (in use, overcommit, free space, confirmation), ``pools``,
``volumes``, ``transfer`` (upload, download), ``domain`` (attach, detach), ``apply``.
"""

from auditor.ops.apply import apply
from auditor.ops.domain import next_target, plan_attach, plan_detach
from auditor.ops.plan import Action, Change, Figure, Outcome, Plan, Unit, Value
from auditor.ops.pools import POOL_TYPES, plan_autostart, plan_build, plan_pool, plan_pool_define
from auditor.ops.transfer import plan_download, plan_upload
from auditor.ops.view import Context, Users, View, context, remeasured
from auditor.ops.volumes import (
    VOLUME_FORMATS,
    VolumeInfo,
    plan_clone,
    plan_create,
    plan_delete,
    plan_resize,
    plan_wipe,
    volume_info,
)

__all__ = [
    "POOL_TYPES",
    "VOLUME_FORMATS",
    "Action",
    "Change",
    "Context",
    "Figure",
    "Outcome",
    "Plan",
    "Unit",
    "Users",
    "Value",
    "View",
    "VolumeInfo",
    "apply",
    "context",
    "next_target",
    "plan_attach",
    "plan_autostart",
    "plan_build",
    "plan_clone",
    "plan_create",
    "plan_delete",
    "plan_detach",
    "plan_download",
    "plan_pool",
    "plan_pool_define",
    "plan_resize",
    "plan_upload",
    "plan_wipe",
    "remeasured",
    "volume_info",
]
