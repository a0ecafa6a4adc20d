"""Carry out a plan, then measure the same figures again (only the affected pool is read)."""

from __future__ import annotations

from auditor.models import Detach, Download, Progress
from auditor.ops.guards import check_confirmed
from auditor.ops.plan import Change, Figure, Outcome, Plan, Value
from auditor.ops.view import Context, remeasured


def apply(
    plan: Plan, ctx: Context, *, yes: bool = False, progress: Progress | None = None
) -> Outcome:
    """Do what ``plan`` says, then measure its figures again. A plan with ``confirm`` needs
    ``yes``."""
    if plan.request is None:
        return Outcome(plan, plan.summary, (), ())
    check_confirmed(plan, yes)
    calls = ctx.host.execute(plan.request, progress)
    after = remeasured(ctx, [plan.pool] if plan.pool else [])
    now, notes = _measure(plan, after)
    changes = tuple(Change(c.figure, c.before, now.get(c.figure)) for c in plan.changes)
    return Outcome(plan, plan.summary, calls, changes, notes)


def _measure(plan: Plan, ctx: Context) -> tuple[dict[Figure, Value], tuple[str, ...]]:
    now = ctx.view.now(plan.pool, plan.volume)
    notes: list[str] = []
    if isinstance(plan.request, Download):
        found = ctx.probes.fs.regular_file(plan.request.file, follow=False)
        now[Figure.FILE_SIZE], now[Figure.FILE_DATA] = found if found else (None, None)
    if plan.domain is not None:
        now[Figure.TARGETS] = ", ".join(sorted(ctx.host.domain_targets(plan.domain))) or "none"
        wanted = next((c.after for c in plan.changes if c.figure is Figure.TARGETS), None)
        if isinstance(plan.request, Detach) and now[Figure.TARGETS] != wanted:
            notes.append(
                "the guest has not released the disk yet: libvirt detaches it once it does"
            )
    return now, tuple(notes)
