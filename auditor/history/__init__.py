"""The history of the figures: which store a location opens, and how its times are written.

The store protocol and its value types are ``HistoryStore`` and friends in
``auditor.interfaces``; ``sqlite`` is the embedded store, ``postgres`` the central one. Every
store has the same schema (README, "History") at the same version.
"""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditor.errors import HistoryError
from auditor.interfaces import HistoryStore, PoolPoint, SeriesPoint, VolumePoint
from auditor.models import LABEL_PREFIX, Summary

SCHEMA_VERSION = 2  # of the tables every store holds; a store refuses a newer one

_POOL_FIELDS = [f.name for f in fields(PoolPoint)]
SERIES_COLUMNS = ["collected_at", *_POOL_FIELDS[: _POOL_FIELDS.index("filesystem") + 1]]
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
POSTGRES_SCHEMES = ("postgresql", "postgres")
_USERINFO = re.compile(r"(://[^/?#@:\s]*):[^/?#\s]*@")  # up to the last @ of the authority
_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#\s]*")


def open_history(where: str | Path, *, create: bool = True) -> HistoryStore:
    """Open the history at ``where``: an SQLite file, or a ``postgresql://`` URL (its password
    from ``~/.pgpass`` or ``PGPASSWORD``); with ``create``, make it if missing."""
    url = _URL.match(str(where))
    if url and url.group(1).lower() in POSTGRES_SCHEMES:
        from auditor.history.postgres import PostgresHistory  # psycopg: only when asked for

        return PostgresHistory.open(str(where), create=create)
    if url:
        raise HistoryError(
            f"no history store for {url.group(1)}:// locations",
            "pass the path of a file or a postgresql:// URL",
        )
    from auditor.history.sqlite import SqliteHistory  # here: it imports this module

    return SqliteHistory.open(where, create=create)


def masked(where: str | Path) -> str:
    """A history location (or any text holding URLs) as it may be printed: every URL's
    password, in its user part or a ``password=`` parameter, replaced by ``***``."""
    return _PASSWORD.sub(r"\1***", _USERINFO.sub(r"\1:***@", str(where)))


def recorded(summary: Summary) -> tuple[list[PoolPoint], list[VolumePoint]]:
    """The points a snapshot of ``summary`` records, each with its host's labels, volumes in
    the order of the volumes CSV (host, managed first, pool, name): what every store writes."""
    labels = {host: tuple(own.items()) for host, own in summary.host_labels.items()}
    volumes = sorted(
        (VolumePoint.of(r, labels.get(r.disk.host, ())) for r in summary.disks),
        key=lambda v: (v.host, v.pool == "", v.pool, v.volume),
    )
    return [PoolPoint.of(p, labels.get(p.host, ())) for p in summary.pools], volumes


def stamp(at: datetime) -> str:
    """A timestamp as stored: ISO-8601 in UTC with microseconds, so text order is time order."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def series_row(s: SeriesPoint) -> dict[str, Any]:
    """A series point as ``auditor history`` prints it: the ``SERIES_COLUMNS``."""
    return {"collected_at": stamp(s.collected_at)} | {
        name: getattr(s.point, name) for name in SERIES_COLUMNS[1:]
    }


def series_table(points: list[SeriesPoint]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows and columns ``auditor history`` prints: ``SERIES_COLUMNS`` with a
    ``label_KEY`` column after ``host`` per label key of the points ('' where absent)."""
    keys = [LABEL_PREFIX + k for k in dict.fromkeys(k for s in points for k, _ in s.point.labels)]
    at = SERIES_COLUMNS.index("host") + 1
    columns = [*SERIES_COLUMNS[:at], *keys, *SERIES_COLUMNS[at:]]
    rows = []
    for s in points:
        row = series_row(s) | {k: "" for k in keys}
        row |= {LABEL_PREFIX + k: v for k, v in s.point.labels}
        rows.append({c: row[c] for c in columns})
    return rows, columns


def parse_time(text: str) -> datetime:
    """ISO-8601 date or date-time; without an offset it is UTC."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO-8601 date or time") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


_RELATIVE = re.compile(r"(\d+)([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``2w`` (before ``now``) or an ISO-8601 date or time."""
    m = _RELATIVE.fullmatch(text.strip())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    return parse_time(text)
