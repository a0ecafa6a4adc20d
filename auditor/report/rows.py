"""Flatten the Summary into rows with stable column names, shared by every output format."""

from __future__ import annotations

from typing import Any

from auditor.models import LABEL_PREFIX, DiskReport, Finding, PoolSummary, Skip, Summary

VOLUME_COLUMNS = [
    "host", "pool", "volume", "path", "format", "provisioning", "virtual_size", "disk_size",
    "growth", "managed", "used_by", "backing_file", "kind", "note", "physical",
]  # fmt: skip
POOL_COLUMNS = [
    "host", "pool", "type", "state", "capacity", "allocation", "available", "volumes", "thin",
    "preallocated", "unknown", "provisioned", "used", "overcommit_ratio", "exposure",
    "filesystem", "target", "autostart", "persistent", "note",
]  # fmt: skip
SKIP_COLUMNS = ["host", "kind", "name", "reason"]
SIZE_COLUMNS = frozenset(
    {"virtual_size", "disk_size", "growth", "capacity", "allocation", "available",
     "provisioned", "used", "exposure", "physical"}
)  # fmt: skip
COUNT_COLUMNS = frozenset({"volumes", "thin", "preallocated", "unknown"})


def volume_row(r: DiskReport) -> dict[str, Any]:
    d = r.disk
    return {
        "host": d.host,
        "pool": d.pool or "",
        "volume": d.name,
        "path": d.path,
        "format": d.format or "",
        "provisioning": r.provisioning.value,
        "virtual_size": d.virtual_size,
        "disk_size": d.disk_size,
        "growth": r.growth,
        "managed": d.managed,
        "used_by": list(r.used_by),
        "backing_file": d.backing_file or "",
        "kind": d.kind,
        "note": r.reason,
        "physical": d.physical,
    }


def pool_row(p: PoolSummary) -> dict[str, Any]:
    """The CSV/JSON row; its ``available`` column is the usable free space, its ``note``
    says why a figure is unknown (what libvirt reported, and why it cannot be true)."""
    fields = {c: getattr(p, c) for c in POOL_COLUMNS if c not in ("available", "note")}
    return {c: fields.get(c) for c in POOL_COLUMNS} | {
        "available": p.usable_free,
        "filesystem": p.filesystem or "",
        "note": "; ".join(p.notes),
    }


def skip_row(s: Skip) -> dict[str, Any]:
    return {"host": s.host, "kind": s.kind, "name": s.name, "reason": s.reason}


def label_columns(summary: Summary) -> list[str]:
    """The columns of the hosts' labels (none when no host has labels)."""
    return [LABEL_PREFIX + k for k in summary.label_keys]


def with_labels(rows: list[dict[str, Any]], summary: Summary) -> list[dict[str, Any]]:
    """``rows`` with a ``label_KEY`` column per label key of the hosts, after ``host`` (''
    where a row's host has no such label); the rows themselves when no host has labels."""
    keys = summary.label_keys
    if not keys:
        return rows
    labels = summary.host_labels
    out = []
    for row in rows:
        own = labels.get(row["host"], {})
        extra = {LABEL_PREFIX + k: own.get(k, "") for k in keys}
        items = list(row.items())
        at = [k for k, _ in items].index("host") + 1
        out.append(dict(items[:at]) | extra | dict(items[at:]))
    return out


def with_label_columns(columns: list[str], summary: Summary) -> list[str]:
    """``columns`` with the label columns after ``host``, as ``with_labels`` orders rows."""
    at = columns.index("host") + 1
    return [*columns[:at], *label_columns(summary), *columns[at:]]


def volume_rows(summary: Summary, pool: str | None = None) -> list[dict[str, Any]]:
    rows = [volume_row(r) for r in summary.disks if pool is None or r.disk.pool == pool]
    rows.sort(key=lambda r: (r["host"], r["pool"] == "", r["pool"], r["volume"]))
    return with_labels(rows, summary)


def pool_rows(summary: Summary) -> list[dict[str, Any]]:
    return with_labels([pool_row(p) for p in summary.pools], summary)


FINDING_COLUMNS = ["severity", "code", "host", "pool", "volume", "message", "fix"]


def finding_row(f: Finding) -> dict[str, Any]:
    """A finding as a CSV/table row; ``fix`` in words with its safety."""
    fix = "" if f.fix is None else f"{f.fix} ({'safe' if f.fix.safe else 'unsafe'})"
    return {"severity": f.severity.value, "code": f.code, "host": f.host, "pool": f.pool,
            "volume": f.volume, "message": f.message, "fix": fix}  # fmt: skip


def finding_doc(f: Finding) -> dict[str, Any]:
    """A finding for JSON: the row, its figures, and the fix as an object (or null)."""
    fix = None if f.fix is None else {"what": str(f.fix), "safe": f.fix.safe}
    return finding_row(f) | {"figures": dict(f.figures), "fix": fix}
