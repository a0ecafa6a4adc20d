"""The history database: one SQLite snapshot per run, one row per pool and per volume.

The file is identified by ``PRAGMA application_id`` and versioned by ``PRAGMA user_version``
(the schema is documented in the README). It runs in WAL mode and every write is one
``BEGIN IMMEDIATE`` transaction, so concurrent runs are safe. A file that is not ours
(corrupt, foreign, newer) raises ``HistoryError`` and is never written to.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditor.errors import HistoryError
from auditor.models import Summary
from auditor.report.rows import pool_rows, volume_rows

APPLICATION_ID = 0x41554454  # "AUDT"
SCHEMA_VERSION = 1
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another one

SCHEMA = (
    """CREATE TABLE snapshots (
  id              INTEGER PRIMARY KEY,
  collected_at    TEXT NOT NULL,     -- ISO-8601 UTC: when the figures were read (or --at)
  recorded_at     TEXT NOT NULL,     -- ISO-8601 UTC: when this row was written
  hosts           TEXT NOT NULL,     -- JSON list of the hosts read
  skipped         INTEGER NOT NULL,  -- items that could not be read
  auditor_version TEXT NOT NULL
)""",
    "CREATE INDEX snapshots_by_time ON snapshots (collected_at)",
    """CREATE TABLE pools (
  snapshot_id      INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  host             TEXT NOT NULL,
  pool             TEXT NOT NULL,
  type             TEXT NOT NULL,
  state            TEXT NOT NULL,
  capacity         INTEGER,
  allocation       INTEGER,
  available        INTEGER,
  volumes          INTEGER,
  thin             INTEGER,
  preallocated     INTEGER,
  unknown          INTEGER,
  provisioned      INTEGER,
  used             INTEGER,
  overcommit_ratio REAL,
  exposure         INTEGER,
  filesystem       TEXT NOT NULL,
  target           TEXT NOT NULL,
  autostart        INTEGER,          -- 0 or 1; NULL for a group row
  persistent       INTEGER,          -- 0 or 1; NULL for a group row
  members          TEXT NOT NULL     -- pools of a shared-fs group, ';'-joined
)""",
    "CREATE INDEX pools_by_snapshot ON pools (snapshot_id)",
    "CREATE INDEX pools_by_name ON pools (host, pool)",
    """CREATE TABLE volumes (
  snapshot_id  INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  host         TEXT NOT NULL,
  pool         TEXT NOT NULL,        -- '' for an unmanaged disk
  volume       TEXT NOT NULL,
  path         TEXT NOT NULL,
  format       TEXT NOT NULL,
  provisioning TEXT NOT NULL,
  virtual_size INTEGER,
  disk_size    INTEGER,
  growth       INTEGER,
  managed      INTEGER NOT NULL,     -- 0 or 1
  used_by      TEXT NOT NULL,        -- ';'-joined domain names
  backing_file TEXT NOT NULL,
  kind         TEXT NOT NULL,
  note         TEXT NOT NULL,
  physical     INTEGER               -- st_size of a file
)""",
    "CREATE INDEX volumes_by_snapshot ON volumes (snapshot_id)",
    """CREATE VIEW pool_series AS
  SELECT s.collected_at, p.* FROM pools p JOIN snapshots s ON s.id = p.snapshot_id""",
    """CREATE VIEW volume_series AS
  SELECT s.collected_at, v.* FROM volumes v JOIN snapshots s ON s.id = v.snapshot_id""",
)

POOL_FIELDS = (
    "host", "pool", "type", "state", "capacity", "allocation", "available", "volumes", "thin",
    "preallocated", "unknown", "provisioned", "used", "overcommit_ratio", "exposure",
    "filesystem", "target", "autostart", "persistent", "members",
)  # fmt: skip
VOLUME_FIELDS = (
    "host", "pool", "volume", "path", "format", "provisioning", "virtual_size", "disk_size",
    "growth", "managed", "used_by", "backing_file", "kind", "note", "physical",
)  # fmt: skip
SERIES_COLUMNS = ["collected_at", *POOL_FIELDS[: POOL_FIELDS.index("filesystem") + 1]]


def stamp(at: datetime) -> str:
    """A timestamp as stored: ISO-8601 in UTC with microseconds, so text order is time order."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


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


@dataclass(frozen=True)
class Earlier:
    """A host's most recent snapshot before some time: its pool and volume rows."""

    host: str
    collected_at: datetime
    pools: tuple[dict[str, Any], ...]
    volumes: tuple[dict[str, Any], ...]


class History:
    """An open history database; use ``History.open`` and close it (or use ``with``)."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> History:
        """Open (and with ``create``, make) the history at ``path``; refuse anything else."""
        where = str(path)
        if not create and not Path(where).is_file():
            raise HistoryError(f"no history at {where}", "run auditor report or snapshot first")
        if create:
            try:
                Path(where).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryError(f"cannot create the folder of {where}: {exc.strerror}") from exc
        with _errors(where):
            conn = sqlite3.connect(where, timeout=BUSY_TIMEOUT, isolation_level=None)
        history = cls(conn, where)
        try:
            with _errors(where):
                history._prepare(create)
        except BaseException:
            conn.close()
            raise
        return history

    def _identity(self) -> tuple[int, int, bool]:
        """(application_id, user_version, whether the file holds any table), read in one
        transaction so that another run's initialisation is seen whole or not at all."""
        own = not self._conn.in_transaction
        if own:
            self._conn.execute("BEGIN")
        try:
            app = self._conn.execute("PRAGMA application_id").fetchone()[0]
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            if own:
                self._conn.execute("COMMIT")
        return int(app), int(version), bool(tables)

    def _check(self, app: int, version: int, tables: bool) -> bool:
        """Whether the file is ours (True) or empty (False); raise for anything else."""
        if app == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path}: history schema {version} is newer than this auditor's "
                    f"({SCHEMA_VERSION})",
                    "upgrade auditor; the file was not modified",
                )
            return True
        if app or version or tables:
            raise HistoryError(
                f"{self.path} is an SQLite database of another program, not an auditor history",
                "pass another --history path; the file was not modified",
            )
        return False

    def _prepare(self, create: bool) -> None:
        ours = self._check(*self._identity())
        if not ours and not create:
            raise HistoryError(f"{self.path} is empty, not an auditor history")
        self._conn.execute("PRAGMA foreign_keys = ON")
        if self._conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._conn.execute("PRAGMA journal_mode = WAL")
        if not ours:
            with self.transaction():
                if not self._check(*self._identity()):  # another run may have made it meanwhile
                    for statement in SCHEMA:
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``): committed if the block succeeds."""
        with _errors(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.rollback()
            raise
        with _errors(self.path):
            self._conn.execute("COMMIT")

    def record(self, summary: Summary, version: str) -> int:
        """Append one snapshot of ``summary`` (inside the caller's transaction, if any)."""
        if not self._conn.in_transaction:
            with self.transaction():
                return self.record(summary, version)
        with _errors(self.path):
            cur = self._conn.execute(
                "INSERT INTO snapshots (collected_at, recorded_at, hosts, skipped, "
                "auditor_version) VALUES (?, ?, ?, ?, ?)",
                (stamp(summary.collected_at), stamp(datetime.now(UTC)),
                 json.dumps(list(summary.hosts)), len(summary.skips), version),
            )  # fmt: skip
            sid = cur.lastrowid
            assert sid is not None
            members = {(p.host, p.pool, p.type): ";".join(p.members) for p in summary.pools}
            self._insert("pools", POOL_FIELDS, sid, [
                r | {"members": members[(r["host"], r["pool"], r["type"])]}
                for r in pool_rows(summary)
            ])  # fmt: skip
            self._insert("volumes", VOLUME_FIELDS, sid, [
                r | {"used_by": ";".join(r["used_by"]), "managed": int(r["managed"])}
                for r in volume_rows(summary)
            ])  # fmt: skip
        return sid

    def _insert(
        self, table: str, fields: tuple[str, ...], sid: int, rows: list[dict[str, Any]]
    ) -> None:
        names = ", ".join(fields)
        marks = ", ".join(f":{f}" for f in fields)
        sql = f"INSERT INTO {table} (snapshot_id, {names}) VALUES ({sid}, {marks})"  # noqa: S608
        self._conn.executemany(sql, rows)

    def earlier(self, hosts: tuple[str, ...], before: datetime) -> list[Earlier]:
        """Each host's most recent snapshot collected before ``before``."""
        out = []
        with _errors(self.path):
            for host in hosts:
                found = self._conn.execute(
                    "SELECT id, collected_at FROM snapshots s WHERE collected_at < ? AND EXISTS "
                    "(SELECT 1 FROM json_each(s.hosts) WHERE value = ?) "
                    "ORDER BY collected_at DESC, id DESC LIMIT 1",
                    (stamp(before), host),
                ).fetchone()
                if found is None:
                    continue
                sid, at = found
                pools = self._rows("pools", POOL_FIELDS, sid, host)
                volumes = self._rows("volumes", VOLUME_FIELDS, sid, host)
                out.append(Earlier(host, datetime.fromisoformat(at), pools, volumes))
        return out

    def _rows(
        self, table: str, fields: tuple[str, ...], sid: int, host: str
    ) -> tuple[dict[str, Any], ...]:
        names = ", ".join(fields)
        sql = f"SELECT {names} FROM {table} WHERE snapshot_id = ? AND host = ?"  # noqa: S608
        rows = self._conn.execute(sql, (sid, host))
        return tuple(dict(zip(fields, row, strict=True)) for row in rows)

    def series(
        self, pool: str | None = None, since: datetime | None = None, host: str | None = None
    ) -> list[dict[str, Any]]:
        """Pool rows of every snapshot, oldest first, with their ``collected_at``."""
        sql = (
            f"SELECT {', '.join(SERIES_COLUMNS)} FROM pool_series "  # noqa: S608
            "WHERE (:pool IS NULL OR pool = :pool) AND (:host IS NULL OR host = :host) "
            "AND (:since IS NULL OR collected_at >= :since) "
            "ORDER BY collected_at, snapshot_id, host, pool"
        )
        params = {"pool": pool, "host": host, "since": stamp(since) if since else None}
        with _errors(self.path):
            cur = self._conn.execute(sql, params)
            return [dict(zip(SERIES_COLUMNS, row, strict=True)) for row in cur]

    def count(self) -> int:
        """Number of snapshots."""
        with _errors(self.path):
            return int(self._conn.execute("SELECT count(*) FROM snapshots").fetchone()[0])


@contextmanager
def _errors(path: str) -> Iterator[None]:
    """sqlite3 errors → one clear HistoryError line."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise HistoryError(
                f"{path} is locked by another run for more than {BUSY_TIMEOUT:g} s"
            ) from exc
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            raise HistoryError(
                f"{path} is corrupt or not an SQLite database ({text})",
                "move it away or pass another --history path; it was not modified",
            ) from exc
        raise HistoryError(f"{path}: {text}") from exc
