"""Images: qcow2 leaks and corruption (qemu-img check), the dirty bit of lazy refcounts."""

from __future__ import annotations

from collections.abc import Iterator

from auditor.models import CheckResult, DiskReport, Finding, FixKind, Severity
from auditor.rules.facts import Facts, finding


def _label(r: DiskReport) -> tuple[str, str, str]:
    d = r.disk
    return (d.pool or "", d.name if d.pool else d.path,
            f"volume {d.pool}/{d.name}" if d.pool else f"image {d.path}")  # fmt: skip


def _judge(r: DiskReport, result: CheckResult | str) -> Iterator[Finding]:
    pool, volume, what = _label(r)
    host = r.disk.host
    if isinstance(result, str):
        yield finding("AUD704", Severity.WARN, host, f"{what}: qemu-img check failed: {result}",
                      pool=pool, volume=volume)  # fmt: skip
    elif result.corruptions and "dirty" in r.reason:
        yield finding(
            "AUD703", Severity.WARN, host,
            f"{what} has the dirty bit of lazy refcounts ({result.corruptions} refcount "
            "errors): it needs repair (qemu repairs it when it next opens it read-write)",
            pool=pool, volume=volume, corruptions=result.corruptions,
        )  # fmt: skip
    elif result.corruptions:
        yield finding(
            "AUD702", Severity.CRIT, host,
            f"{what} is corrupt: qemu-img check finds {result.corruptions} corruption(s)",
            pool=pool, volume=volume, corruptions=result.corruptions, leaks=result.leaks,
        )  # fmt: skip
    elif result.leaks:
        yield finding(
            "AUD701", Severity.WARN, host,
            f"{what} has {result.leaks} leaked cluster(s): space is lost, data is not",
            pool=pool, volume=volume, fix=FixKind.REPAIR_LEAKS, leaks=result.leaks,
        )  # fmt: skip


def rules(facts: Facts) -> Iterator[Finding]:
    for r in facts.summary.disks:
        result = facts.checks.get((r.disk.host, r.disk.path))
        if result is not None:
            yield from _judge(r, result)
