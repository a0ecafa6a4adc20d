"""What the rules judge: the analyzed summary, and what was read besides it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from auditor.config import Config
from auditor.journal import Record
from auditor.models import CheckResult, Figure, Finding, FixKind, Severity, Summary

Key = tuple[str, str]  # (host, path)


@dataclass(frozen=True)
class Facts:
    summary: Summary
    config: Config
    checks: Mapping[Key, CheckResult | str] = field(default_factory=dict)  # qcow2: qemu-img check
    on_disk: Mapping[Key, int] = field(default_factory=dict)  # file volumes: st_blocks * 512
    incomplete: tuple[Record, ...] = ()  # journal intents without an outcome
    made: Mapping[str, tuple[Mapping[str, object], ...]] = field(default_factory=dict)  # id →
    unlisted: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # files
    # in a local pool's folder that libvirt does not list: (host, pool) → file names


def finding(
    code: str,
    severity: Severity,
    host: str,
    message: str,
    *,
    pool: str = "",
    volume: str = "",
    fix: FixKind | None = None,
    **figures: Figure,
) -> Finding:
    return Finding(code, severity, host, pool, volume, message, tuple(figures.items()), fix)
