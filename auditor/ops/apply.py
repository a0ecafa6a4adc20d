"""Carry out a plan: re-check its guards, journal it, run it, measure the same figures again
(only the affected pool and the domains are read)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from auditor.journal import journalled
from auditor.models import CreateVolume, Detach, Download, Progress, Upload
from auditor.ops.guards import RECHECKED, check_confirmed, recheck
from auditor.ops.plan import Change, Figure, Outcome, Plan, Value
from auditor.ops.view import Context, remeasured


def apply(
    plan: Plan, ctx: Context, *, yes: bool = False, progress: Progress | None = None
) -> Outcome:
    """Do what ``plan`` says, then measure its figures again. A plan with ``confirm`` needs
    ``yes``; delete, wipe, resize and attach are checked again against the domains as they
    are right before the call."""
    if plan.request is None:
        return Outcome(plan, plan.summary, (), ())
    check_confirmed(plan, yes)
    pools = [plan.pool] if plan.pool else []
    if isinstance(plan.request, RECHECKED):
        recheck(plan, remeasured(ctx, pools).view)
    with _journalled(ctx, plan) as (made, finish):
        calls = ctx.host.execute(plan.request, progress, made)
        now, notes = _measure(plan, remeasured(ctx, pools))
        changes = tuple(Change(c.figure, c.before, now.get(c.figure)) for c in plan.changes)
        finish({str(c.figure): c.after for c in changes})
    return Outcome(plan, plan.summary, calls, changes, notes)


Made = Callable[[dict[str, Any]], None]
Finish = Callable[[dict[str, Value]], None]


@contextmanager
def _journalled(ctx: Context, plan: Plan) -> Iterator[tuple[Made | None, Finish]]:
    """The journal's intent and outcome records around an action (nothing without one)."""
    if ctx.journal is None:
        yield None, lambda _after: None
        return
    with journalled(
        ctx.journal,
        host=ctx.view.host,
        action=str(plan.action),
        subject=plan.subject,
        before={str(c.figure): c.before for c in plan.changes},
        after={str(c.figure): c.after for c in plan.changes},
        leftovers=leftovers(plan),
    ) as entry:
        yield entry.made, lambda after: entry.finish("done", after)


def leftovers(plan: Plan) -> tuple[str, ...]:
    """What the action may leave if it is killed: a temporary file, a new volume."""
    match plan.request:
        case Download(temp=temp):
            return (f"file {temp}",)
        case CreateVolume(spec) | Upload(spec):
            return (f"volume {spec.pool}/{spec.name}",)
    return ()


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
