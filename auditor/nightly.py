"""The nightly report and snapshot: thresholds, change since the previous snapshot, publish."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

from auditor import planning
from auditor.config import Config
from auditor.interfaces import Earlier, HistoryStore, PoolPoint, SeriesPoint
from auditor.models import Finding, PoolSummary, Summary
from auditor.report.page import Page, PoolDelta, PoolStatus, VolumeChange
from auditor.report.publish import publish, render_files
from auditor.thresholds import SEVERITY, Level, assess


def pool_key(host: str, pool: str, type_: str, filesystem: str | None) -> tuple[str, str, str]:
    """What identifies a summary row across snapshots: unmanaged rows differ by filesystem."""
    return host, pool, (filesystem or "") if type_ == "unmanaged" else ""


def _key(p: PoolSummary | PoolPoint) -> tuple[str, str, str]:
    return pool_key(p.host, p.pool, p.type, p.filesystem)


def statuses(summary: Summary, config: Config, earlier: Iterable[Earlier]) -> list[PoolStatus]:
    """Every summary row with its level and change, worst first."""
    before = {_key(point): (point, e.collected_at) for e in earlier for point in e.pools}
    out = []
    for p in summary.pools:
        limits = config.for_pool(p.pool)
        a = assess(p, limits)
        prev = before.get(_key(p))
        change = PoolDelta.between(p, prev[0], prev[1]) if prev else None
        out.append(PoolStatus(p, a.level.value, a.used_percent, a.reasons, asdict(limits), change))
    return sorted(out, key=lambda s: (SEVERITY[Level(s.level)], s.pool.host))


def volume_changes(summary: Summary, earlier: Iterable[Earlier]) -> list[VolumeChange]:
    """Volumes added or removed on each host since its previous snapshot; volumes of a pool
    that is inactive on either side, and unreadable items, are not counted as changes."""
    out = []
    unreadable = {(s.host, s.name) for s in summary.skips}
    for e in earlier:
        idle_now = {p.pool for p in summary.pools if p.host == e.host and p.state == "inactive"}
        idle_then = {point.pool for point in e.pools if point.state == "inactive"}
        now = {r.disk.path: r for r in summary.disks if r.disk.host == e.host}
        then = {v.path: v for v in e.volumes}
        out += [
            VolumeChange("added", e.host, r.disk.pool or "", r.disk.name, path, r.disk.virtual_size)
            for path, r in now.items() if path not in then and r.disk.pool not in idle_then
        ]  # fmt: skip
        out += [
            VolumeChange("removed", e.host, v.pool, v.volume, path, v.virtual_size)
            for path, v in then.items()
            if path not in now and v.pool not in idle_now and (e.host, path) not in unreadable
        ]  # fmt: skip
    return sorted(out, key=lambda c: (c.host, c.change, c.pool, c.volume))


def plan_now(summary: Summary, config: Config, history: HistoryStore) -> planning.Planning:
    """The planning section: the hosts' snapshots of the window before this run, and this run."""
    end = summary.collected_at
    before = history.series(since=end - planning.WINDOW, until=end - timedelta(microseconds=1))
    past = [s for s in before if s.point.host in summary.hosts]
    now = [SeriesPoint(end, 0, PoolPoint.of(p)) for p in summary.pools]
    return planning.plan([*past, *now], config, end=end)


def build_page(
    summary: Summary,
    config: Config,
    earlier: list[Earlier],
    sources: tuple[str, ...],
    version: str,
    plan: planning.Planning | None = None,
    findings: tuple[Finding, ...] = (),
) -> Page:
    """Everything the report shows, compared with each host's ``earlier`` snapshot."""
    thresholds = {"default": asdict(config.thresholds)} | {
        name: asdict(t) for name, t in sorted(config.pools.items())
    }
    return Page(
        summary=summary,
        pools=tuple(statuses(summary, config, earlier)),
        sources=sources,
        version=version,
        thresholds=thresholds,
        config_source=config.source,
        previous_at=max((e.collected_at for e in earlier), default=None),
        volume_changes=tuple(volume_changes(summary, earlier)),
        planning=plan,
        findings=findings,
    )


def report(
    summary: Summary,
    config: Config,
    history: HistoryStore,
    out: Path,
    sources: tuple[str, ...],
    version: str,
    findings: tuple[Finding, ...] = (),
) -> Page:
    """Compare with the history, render the five files, then record the snapshot and publish
    them in one history transaction: a failed publish records nothing."""
    earlier = history.earlier(summary.hosts, summary.collected_at)
    plan = plan_now(summary, config, history)
    page = build_page(summary, config, earlier, sources, version, plan, findings)
    files = render_files(page)
    with history.transaction():
        history.record(summary, version)
        publish(out, files)
    return page
