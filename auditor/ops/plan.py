"""Plans and outcomes: what an operation will do and what it did, in typed figures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from auditor.models import LibvirtCall, Request


class Action(StrEnum):
    """Every managed operation, as the CLI names it."""

    POOL_DEFINE = "pool define"
    POOL_BUILD = "pool build"
    POOL_START = "pool start"
    POOL_STOP = "pool stop"
    POOL_REFRESH = "pool refresh"
    POOL_AUTOSTART = "pool autostart"
    POOL_DELETE = "pool delete"
    POOL_UNDEFINE = "pool undefine"
    VOL_CREATE = "vol create"
    VOL_CLONE = "vol clone"
    VOL_RESIZE = "vol resize"
    VOL_DELETE = "vol delete"
    VOL_WIPE = "vol wipe"
    VOL_UPLOAD = "vol upload"
    VOL_DOWNLOAD = "vol download"
    VOL_ATTACH = "vol attach"
    VOL_DETACH = "vol detach"


class Unit(StrEnum):
    BYTES = "bytes"
    RATIO = "ratio"
    COUNT = "count"
    TEXT = "text"


class Figure(StrEnum):
    """A figure an operation changes; the value is its label."""

    VIRTUAL = "virtual size"
    DISK = "disk size"
    VOLUMES = "pool volumes"
    PROVISIONED = "pool provisioned"
    RATIO = "overcommit ratio"
    USABLE = "pool usable free"
    STATE = "pool state"
    AUTOSTART = "pool autostart"
    FILE_SIZE = "file size"
    FILE_DATA = "file disk size"
    TARGETS = "domain disks"

    @property
    def unit(self) -> Unit:
        return _UNITS.get(self, Unit.TEXT)


_UNITS = {
    Figure.VIRTUAL: Unit.BYTES,
    Figure.DISK: Unit.BYTES,
    Figure.PROVISIONED: Unit.BYTES,
    Figure.USABLE: Unit.BYTES,
    Figure.FILE_SIZE: Unit.BYTES,
    Figure.FILE_DATA: Unit.BYTES,
    Figure.RATIO: Unit.RATIO,
    Figure.VOLUMES: Unit.COUNT,
}

Value = int | float | str | None
Figures = Mapping[Figure, Value]


@dataclass(frozen=True)
class Change:
    """One figure before and after; ``None`` is "does not exist" or "not known"."""

    figure: Figure
    before: Value
    after: Value


def changes(before: Figures, after: Figures, order: Iterable[Figure]) -> tuple[Change, ...]:
    return tuple(Change(f, before.get(f), after.get(f)) for f in order)


@dataclass(frozen=True)
class Plan:
    """What an operation will do; ``request`` None means there is nothing to do."""

    action: Action
    subject: str  # "POOL/VOLUME", "POOL" or "DOMAIN"
    summary: str  # one sentence: what will be done
    request: Request | None
    calls: tuple[LibvirtCall, ...] = ()  # built by the adapter: exactly what apply runs
    changes: tuple[Change, ...] = ()  # expected
    notes: tuple[str, ...] = ()
    confirm: str = ""  # what is lost: apply needs yes=True
    pool: str | None = None  # whose figures change
    volume: str | None = None  # the volume measured after apply
    domain: str | None = None
    transfer: int | None = None  # bytes a stream will carry (upload, download)
    force: bool = False  # the in-use guards were overridden for defined domains and overlays

    @property
    def call(self) -> str:
        """The libvirt calls in words."""
        return "; ".join(map(str, self.calls))


def nothing(
    action: Action, subject: str, why: str, *, pool: str | None = None, volume: str | None = None
) -> Plan:
    """A plan that does nothing, saying why."""
    return Plan(action, subject, f"nothing to do: {why}", None, pool=pool, volume=volume)


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    done: str  # one sentence: what was done
    calls: tuple[LibvirtCall, ...]  # the calls made
    changes: tuple[Change, ...]  # measured before and after
    notes: tuple[str, ...] = ()
