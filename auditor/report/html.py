"""The HTML page: jinja2 templates packaged as ``auditor.templates``, autoescape on.

The page is self-contained: its CSS and JS are inlined, and a Content-Security-Policy with
their SHA-256 hashes forbids every fetch and any other script.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files

from jinja2 import Environment, FunctionLoader, StrictUndefined
from markupsafe import Markup

from auditor.report.chart import chart, in_days, iso_date
from auditor.report.page import DOWN, VOLUME_CAP, Page, PoolStatus
from auditor.units import exact, iec, signed, signed_count

LEVELS = {
    "crit": "Critical",
    "warn": "Warning",
    "unknown": "No data",
    "ok": "OK",
    DOWN: "Unreachable",
}
HOST_NAMES = 8  # hosts named in the title and the header; a larger fleet is counted
BAR_WIDTH = 1000  # SVG user units of a bar's full length


def _source(name: str) -> str | None:
    resource = files("auditor.templates").joinpath(name)
    return resource.read_text(encoding="utf-8") if resource.is_file() else None


def num(value: float) -> str:
    """A threshold without trailing zeros: 80.0 → '80', 1.5 → '1.5'."""
    return f"{value:g}"


def hostlist(hosts: Sequence[str]) -> str:
    """The hosts' names, or their number beyond HOST_NAMES hosts."""
    return ", ".join(hosts) if len(hosts) <= HOST_NAMES else f"{len(hosts)} hosts"


def when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Bar:
    """x positions (0..BAR_WIDTH) of a pool's bar, scaled to max(capacity, provisioned)."""

    volumes: float  # Σ disk_size of the pool's volumes
    used: float  # capacity - available: volumes plus other files on the filesystem
    capacity: float
    provisioned: float
    warn: float  # used_warn and used_crit, as positions on the capacity
    crit: float


def bar(status: PoolStatus) -> Bar | None:
    """The geometry of a pool's bar; None when its capacity is not known."""
    p = status.pool
    if not p.capacity or p.usable_free is None:
        return None
    used = max(0, p.capacity - p.usable_free)
    scale = max(p.capacity, p.provisioned or 0, used)

    def x(n: float) -> float:
        return round(n * BAR_WIDTH / scale, 1)

    return Bar(
        volumes=x(min(p.used or 0, used)),
        used=x(used),
        capacity=x(p.capacity),
        provisioned=x(p.provisioned or 0),
        warn=x(p.capacity * status.limits["used_warn"] / 100),
        crit=x(p.capacity * status.limits["used_crit"] / 100),
    )


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FunctionLoader(_source),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
    )
    env.filters.update(
        iec=iec,
        exact=exact,
        signed=signed,
        signed_count=signed_count,
        when=when,
        num=num,
        hostlist=hostlist,
    )
    env.globals.update(
        bar=bar, levels=LEVELS, width=BAR_WIDTH, host_names=HOST_NAMES, volume_cap=VOLUME_CAP
    )
    env.filters.update(date=iso_date, in_days=in_days)  # the planning section
    env.globals.update(chart=chart)
    return env


def render(page: Page) -> str:
    """The report page as one HTML document."""
    env = environment()
    css = env.get_template("report.css.j2").render()
    js = env.get_template("report.js.j2").render()
    csp = (
        f"default-src 'none'; style-src {_hash(css)}; script-src {_hash(js)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    # Our own static CSS and JS, inlined verbatim: their hashes are in the CSP.
    inline = {"css": Markup(css), "js": Markup(js)}  # noqa: S704
    return env.get_template("report.html.j2").render(
        page=page, totals=page.totals, csp=csp, **inline
    )
