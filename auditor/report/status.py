"""The status screen (`auditor status`): is each host fine, in one screen. Pure: text in,
text out; colours are ANSI codes only when asked for.

Per host: the verdict (the pools over a threshold, worst first, with the reason in words),
one line per pool and shared-filesystem group with a bar of the space used and provisioned
against its capacity, the unmanaged disks, skipped items and notices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from auditor.config import Config, Thresholds
from auditor.models import DiskReport, PoolSummary, Skip, Summary
from auditor.report.table import shorten, width_of
from auditor.thresholds import SEVERITY, Assessment, Level, assess
from auditor.units import iec

ANSI = {Level.CRIT: "31", Level.WARN: "33", Level.OK: "32", Level.UNKNOWN: "2"}
WORDS = {Level.CRIT: "CRITICAL", Level.WARN: "WARNING", Level.OK: "OK", Level.UNKNOWN: "NO DATA"}
BAR = 20  # cells of a bar: the pool's capacity
NAME = 40  # a pool name longer than this (or than the width allows) loses its middle
LISTED = 5  # unmanaged disks and skipped items named, the rest counted
LEGEND = ("used", "provisioned, not used", "free", "provisioned beyond capacity")


@dataclass(frozen=True)
class Style:
    """How the screen is drawn: ANSI colours or not, block characters or ASCII."""

    colour: bool = False
    unicode: bool = True

    def paint(self, text: str, level: Level | str, bold: bool = False) -> str:
        code = ANSI[level] if isinstance(level, Level) else level
        codes = ";".join(c for c in ("1" if bold else "", code) if c)
        return f"\033[{codes}m{text}\033[0m" if self.colour and codes and text else text

    @property
    def dots(self) -> str:
        return "…" if self.unicode else "..."

    @property
    def marks(self) -> tuple[str, str, str, str, str, str]:
        """used, provisioned but unused, free, beyond capacity, bar start, bar end."""
        return ("█", "▒", "·", "▶", "▕", "▏") if self.unicode else ("#", "=", ".", ">", "[", "]")


def render(summary: Summary, config: Config, style: Style = Style(), width: int = 100) -> str:
    """The whole screen: one block per host, then hosts that could not be reached."""
    blocks = [_host(host, summary, config, style, width) for host in summary.hosts]
    unreachable = [s for s in summary.skips if s.kind == "host"]
    if unreachable:
        blocks.append(_skipped("unreachable", unreachable, style, width))
    legend = "  ".join(f"{m} {w}" for m, w in zip(style.marks[:4], LEGEND, strict=True))
    blocks.append([style.paint(legend, "2")])
    return "\n\n".join("\n".join(lines) for lines in blocks if lines)


def _host(host: str, summary: Summary, config: Config, style: Style, width: int) -> list[str]:
    pools = [p for p in summary.pools if p.host == host and p.type != "unmanaged"]
    limits = {p.pool: config.for_pool(p.pool, p.host) for p in pools}
    judged = [(p, assess(p, limits[p.pool])) for p in pools]
    uri = next((h.uri for h in summary.inventory.hosts if h.host == host), "")
    when = summary.collected_at.strftime("%Y-%m-%d %H:%M:%S %Z")
    lines = [style.paint(f"{host}", "", bold=True) + (f"  {uri}" if uri else "") + f"  {when}"]
    lines += _verdict(judged, style, width)
    if judged:
        lines += ["", *_pool_lines(judged, limits, style, width)]
    disks = [r for r in summary.disks if r.disk.host == host and not r.disk.managed]
    lines += _unmanaged(disks, style, width)
    skips = [s for s in summary.skips if s.host == host and s.kind != "host"]
    lines += _skipped("skipped", skips, style, width)
    lines += [f"  note: {n}" for n in summary.notices if n.startswith(uri or host)]
    return lines


def _verdict(judged: list[tuple[PoolSummary, Assessment]], style: Style, width: int) -> list[str]:
    """The headline and, worst first, each pool over a threshold with its reasons."""
    over = [(p, a) for p, a in judged if a.level in (Level.CRIT, Level.WARN)]
    over.sort(key=lambda pa: (SEVERITY[pa[1].level], pa[0].pool))
    idle = sum(a.level is Level.UNKNOWN for _, a in judged)
    worst = over[0][1].level if over else Level.OK
    if over:
        text = f"{len(over)} of {_count(len(judged))} over a threshold"
    else:
        n = len(judged) - idle
        text = f"{'all ' if n > 1 else ''}{_count(n)} within thresholds"
    if idle:
        text += f"; {idle} without figures"
    lines = ["  " + style.paint(WORDS[worst], worst, bold=True) + f"  {text}"]
    for p, a in over:
        reason = shorten(f"{p.pool}: {'; '.join(a.reasons)}", max(20, width - 10), style.dots)
        lines.append(f"    {style.paint(f'{a.level.value:<4}', a.level)}  {reason}")
    return lines


def _count(n: int) -> str:
    return f"{n} pool{'' if n == 1 else 's'}"


def _pool_lines(
    judged: list[tuple[PoolSummary, Assessment]],
    limits: dict[str, Thresholds],
    style: Style,
    width: int,
) -> list[str]:
    """A header and a line per pool: bar, used %, provisioned (ratio), usable free, capacity."""
    cells = max(8, min(BAR, width - 70))
    name_w = max(12, min(NAME, width - 60 - cells, max(width_of(p.pool) for p, _ in judged)))
    head = f"  {'pool':<{name_w}}  {'used and provisioned':<{cells + 3}}  {'used':>6}"
    head += f"  {'provisioned':>18}  {'usable free':>11}  {'capacity':>10}"
    lines = [style.paint(head, "2")]
    for p, a in judged:
        name = shorten(p.pool, name_w, style.dots)
        name += " " * (name_w - width_of(name))
        if a.used_percent is None or p.capacity is None:
            why = a.reasons[0] if a.reasons else p.state
            lines.append(f"  {name}  " + style.paint(why, Level.UNKNOWN))
            continue
        ratio = p.overcommit_ratio
        prov = f"{iec(p.provisioned)} ({ratio:.2f}x)" if ratio is not None else iec(p.provisioned)
        figures = f"{a.used_percent:>5.1f}%  {prov:>18}  {iec(p.usable_free):>11}"
        figures += f"  {iec(p.capacity):>10}"
        bar = _bar(a.used_percent, ratio, limits[p.pool], cells, style)
        lines.append(f"  {name}  {bar}  {figures}")
    return lines


def _bar(pct: float, ratio: float | None, t: Thresholds, cells: int, style: Style) -> str:
    """``cells`` for the capacity: used, then provisioned but unused, then free; a mark
    after the bar when more than the capacity is provisioned. Used space is coloured by its
    thresholds, the provisioned part and the mark by the overcommit thresholds."""
    used_m, prov_m, free_m, over_m, start, end = style.marks
    used = min(cells, round(pct / 100 * cells)) or (1 if pct > 0 else 0)
    prov = min(cells, round((ratio or 0.0) * cells))
    by_used = _level(pct, t.used_warn, t.used_crit)
    by_ratio = _level(ratio, t.overcommit_warn, t.overcommit_crit)
    body = style.paint(used_m * used, by_used)
    body += style.paint(prov_m * max(0, prov - used), "36" if by_ratio is Level.OK else by_ratio)
    body += style.paint(free_m * (cells - max(used, prov)), "2")
    beyond = style.paint(over_m, by_ratio) if ratio is not None and ratio > 1 else " "
    return f"{start}{body}{end}{beyond}"


def _level(value: float | None, warn: float, crit: float) -> Level:
    if value is None or value < warn:
        return Level.OK
    return Level.CRIT if value >= crit else Level.WARN


def _names(rows: Iterable[DiskReport]) -> list[str]:
    return [r.disk.name + (f" ({', '.join(r.used_by)})" if r.used_by else "") for r in rows]


def _unmanaged(disks: list[DiskReport], style: Style, width: int) -> list[str]:
    """How many disks no pool holds, their sizes, and the first few by name."""
    if not disks:
        return []
    head = f"  unmanaged disks: {len(disks)}"
    used = [r.disk.disk_size for r in disks if r.disk.disk_size is not None]
    virtual = [r.disk.virtual_size for r in disks if r.disk.virtual_size is not None]
    if used or virtual:
        head += f", {iec(sum(used))} on disk, {iec(sum(virtual))} virtual"
    if len(used) < len(disks):
        head += f" ({len(disks) - len(used)} of unknown size)"
    names = _names(sorted(disks, key=lambda r: r.disk.path)[:LISTED])
    more = f", and {len(disks) - LISTED} more" if len(disks) > LISTED else ""
    listed = shorten(", ".join(names) + more, max(20, width - 4), style.dots)
    return ["", style.paint(head, Level.WARN) if style.colour else head, f"    {listed}"]


def _skipped(title: str, skips: list[Skip], style: Style, width: int) -> list[str]:
    """Items that could not be read, with their reasons (exit code 1)."""
    if not skips:
        return []
    lines = ["", "  " + style.paint(f"{title}: {len(skips)}", Level.WARN)]
    for s in skips[:LISTED]:
        named = f"{s.host} ({s.name})" if s.kind == "host" and s.host != s.name else s.name
        text = f"{s.kind} {named}: {s.reason}"
        lines.append("    " + shorten(text, max(20, width - 4), style.dots))
    if len(skips) > LISTED:
        lines.append(f"    and {len(skips) - LISTED} more (see `auditor volumes`)")
    return lines
